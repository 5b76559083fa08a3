# One job per (workload, dimension): all arms x seeds train in one process (a run is never
# a process: start-up and CUDA warm-up cost seconds, an epoch of a small net ~0.1 s).
rule run_ablation:
    input:
        data=workload_data,
        code=code("run_ablation"),
    output:
        layout.ablation_table(P, "{workload}", "{dimension}"),
    benchmark:
        layout.benchmark(layout.ablation_table(P, "{workload}", "{dimension}"))
    params:
        settings=job_settings,
        profile=profile_flag(),
    resources:
        gpu=train_gpus,  # 1 on a GPU machine or cluster, 0 on a CPU-only machine
    threads: TRAIN_THREADS
    log:
        LOGS + "/ablations/{workload}/{dimension}.log",
    shell:
        "{TB} ablate {params.profile} --workload {wildcards.workload}"
        " --dimension {wildcards.dimension} --data {input.data} --out {output} --threads {threads} 2> {log}"


rule ablate_all:
    input:
        ablation_tables(),
