# One job per (search unit, strategy): all study seeds. A unit is a workload in the main
# search space, or "<workload>~<space>" in a named one (search.spaces). The Optuna journal is deliberately not
# an output (Snakemake deletes outputs before a rerun): an interrupted job resumes from it.
rule run_search:
    input:
        data=workload_data,
        code=code("run_search"),
    output:
        table=layout.search_table(P, "{workload}", "{strategy}"),
        importance=layout.search_table(P, "{workload}", "{strategy}").replace(".parquet", ".importance.json"),
    benchmark:
        layout.benchmark(layout.search_table(P, "{workload}", "{strategy}"))
    params:
        settings=search_job_settings,
        profile=profile_flag(),
        journal=search_journal,
    resources:
        gpu=train_gpus,  # 1 on a GPU machine or cluster, 0 on a CPU-only machine
    threads: TRAIN_THREADS
    log:
        LOGS + "/search/{workload}/{strategy}.log",
    shell:
        "{TB} search {params.profile} --workload {wildcards.workload}"
        " --strategy {wildcards.strategy} --data {input.data} --out {output.table}"
        " --importance {output.importance} --journal {params.journal} --threads {threads} 2> {log}"


rule search_all:
    input:
        search_tables(),
