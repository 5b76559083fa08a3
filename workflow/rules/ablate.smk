# One job per (workload, dimension): all arms x seeds train in one process (a run is never
# a process: start-up and CUDA warm-up cost seconds, an epoch of a small net ~0.1 s).
rule run_ablation:
    input:
        workload_data,
    output:
        "results/ablations/{workload}/{dimension}.parquet",
    params:
        settings=job_settings,
        profile=profile_flag(),
    resources:
        gpu=1,
    threads: train_threads()  # the cores shared by the `gpu` slots
    log:
        "logs/ablations/{workload}/{dimension}.log",
    shell:
        "python -m tunebench.cli ablate {params.profile} --workload {wildcards.workload}"
        " --dimension {wildcards.dimension} --data {input} --out {output} --threads {threads} 2> {log}"


rule ablate_all:
    input:
        ablation_tables(),
