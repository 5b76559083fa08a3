rule aggregate:
    input:
        tables=ablation_tables(),
        code=code("aggregate"),
    output:
        RESULTS + "/runs.parquet",
    log:
        LOGS + "/aggregate.log",
    shell:
        "{TB} aggregate --out {output} {input.tables} 2> {log}"


# The report reads tables only (no prepared arrays), so it redraws from the tables that
# `dvc pull` restores, without training: `make redraw`.
rule report:
    input:
        runs=RESULTS + "/runs.parquet",
        ablations=ablation_tables(),
        search=search_tables(),
        importance=search_importances(),
        datasets=prepared_summaries(),
        benchmarks=benchmarks(),
        claims=PARAMS.claims,
        code=code("report"),
    output:
        report=report(REPORT_DIR + "/report.md", category="Report", caption="../report/markdown.rst"),
        figures=report(directory(REPORT_DIR + "/figures"), patterns=["{figure}.png"], category=figure_category,
                       caption="../report/figure.rst"),
        verdicts=report(RESULTS + "/verdicts.csv", category="Verdicts", caption="../report/verdicts.rst"),
        contrasts=report(RESULTS + "/contrasts.csv", category="Verdicts", caption="../report/contrasts.rst"),
        provenance=report(RESULTS + "/provenance.csv", category="Provenance", caption="../report/provenance.rst"),
        metrics=RESULTS + "/metrics.json",
    params:
        profile=profile_flag(),
    log:
        LOGS + "/report.log",
    shell:
        "{TB} report {params.profile} --runs {input.runs} --ablations {input.ablations} --search {input.search}"
        " --importance {input.importance} --datasets {input.datasets} --benchmarks {input.benchmarks}"
        " --verdicts {output.verdicts} --contrasts {output.contrasts} --metrics {output.metrics}"
        " --provenance {output.provenance} --report {output.report} --figures {output.figures} 2> {log}"


# The active profile's metrics at one path, for `dvc metrics diff` and `dvc exp show` to
# compare across experiments and profiles; its `profile` param reruns it when the profile changes.
rule current_metrics:
    localrule: True
    input:
        RESULTS + "/metrics.json",
    output:
        METRICS,
    params:
        profile=P,
    shell:
        "cp {input} {output}"
