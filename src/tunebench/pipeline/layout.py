"""Where each profile's files live, relative to the project root.

One profile's files never overwrite another's: every path holds the profile's name. The
Snakefile's rules, dvc.yaml (through `${profile}`), the CLI's `show` and the tests take their
paths from here, so the convention is written once.

    data/prepared/<profile>/<dataset>.npz      prepared arrays
    results/<profile>/datasets/<dataset>.json  their sizes, source and hashes
    results/<profile>/ablations/<workload>/<dimension>.parquet   one row per run-epoch
    results/<profile>/search/<workload>/<strategy>.parquet       one row per trial
    results/<profile>/{runs.parquet, contrasts.csv, verdicts.csv, metrics.json}
    reports/<profile>/report.md, reports/<profile>/figures/
    results/metrics.json                       the active profile's metrics (DVC compares it)
    logs/<profile>/...
"""

from __future__ import annotations

METRICS = "results/metrics.json"


def prepared(profile: str, dataset: str) -> str:
    return f"data/prepared/{profile}/{dataset}.npz"


def prepared_summary(profile: str, dataset: str) -> str:
    """Sizes, source and hashes of a prepared dataset: what the report states of it, small
    enough to travel with the results (the arrays stay where they were prepared)."""
    return f"results/{profile}/datasets/{dataset}.json"


def results(profile: str) -> str:
    return f"results/{profile}"


def ablation_table(profile: str, workload: str, dimension: str) -> str:
    return f"{results(profile)}/ablations/{workload}/{dimension}.parquet"


def search_table(profile: str, workload: str, strategy: str) -> str:
    return f"{results(profile)}/search/{workload}/{strategy}.parquet"


def benchmark(table: str) -> str:
    """Snakemake's `benchmark:` file of the job that writes `table` (wall time, memory)."""
    return table.removesuffix(".parquet") + ".benchmark.tsv"


def report_dir(profile: str) -> str:
    return f"reports/{profile}"


def logs(profile: str) -> str:
    return f"logs/{profile}"
