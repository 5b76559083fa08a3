rule prepare_data:
    input:
        code=code("prepare_data"),
    output:
        "data/prepared/{dataset}.npz",
    params:
        settings=data_settings,
        profile=profile_flag(),
    log:
        "logs/prepare/{dataset}.log",
    shell:
        "python -m tunebench.cli prepare {params.profile} --dataset {wildcards.dataset} --out {output} 2> {log}"


rule prepare_all:
    input:
        all_prepared(),
