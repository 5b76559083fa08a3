# One job per dataset the profile uses: data/prepared/<profile>/<dataset>.npz and a summary.
rule prepare_data:
    input:
        code=code("prepare_data"),
        user=user_file,
    output:
        arrays=layout.prepared(P, "{dataset}"),
        summary=layout.prepared_summary(P, "{dataset}"),
    params:
        settings=data_settings,
        profile=profile_flag(),
    log:
        LOGS + "/prepare/{dataset}.log",
    shell:
        "{TB} prepare {params.profile} --dataset {wildcards.dataset} --out {output.arrays}"
        " --summary {output.summary} 2> {log}"


rule prepare_all:
    input:
        all_prepared(),
