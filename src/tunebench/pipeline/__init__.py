"""The edges that touch files and processes: the command line (cli), the files of a profile
(layout), the modules each rule depends on (stages), Optuna journals (journals), Snakemake's
log and locks (snakelog, locks). The top layer."""
