rule aggregate:
    input:
        tables=ablation_tables(),
        code=code("aggregate"),
    output:
        "results/runs.parquet",
    log:
        "logs/aggregate.log",
    shell:
        "python -m tunebench.cli aggregate --out {output} {input.tables} 2> {log}"


rule report:
    input:
        runs="results/runs.parquet",
        ablations=ablation_tables(),
        search=search_tables(),
        importance=search_importances(),
        data=all_prepared(),
        code=code("report"),
    output:
        report=f"{PARAMS.active.report_dir}/report.md",  # the profile's report_dir (params.yaml)
        figures=directory(f"{PARAMS.active.report_dir}/figures"),
        verdicts="results/verdicts.csv",
        contrasts="results/contrasts.csv",
        metrics="results/metrics.json",
    params:
        profile=profile_flag(),
    log:
        "logs/report.log",
    shell:
        "python -m tunebench.cli report {params.profile} --runs {input.runs} --ablations {input.ablations} --search {input.search}"
        " --importance {input.importance} --datasets {input.data} --verdicts {output.verdicts}"
        " --contrasts {output.contrasts} --metrics {output.metrics} --report {output.report}"
        " --figures {output.figures} 2> {log}"
