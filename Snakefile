# tunebench: the workflow's table of contents. The grid comes from params.yaml through
# tunebench.grid.expand (the same function the tests and the report use).
#   snakemake --cores N                       # default (quick) profile -> reports/report.md
#   snakemake --cores N --config profile=full   # -> reports/full/report.md (its report_dir)
import sys

sys.path.insert(0, "src")  # run from a checkout even without `pip install -e .`

from tunebench import config as tb_config
from tunebench.data import DATASETS

configfile: "params.yaml"

PARAMS = tb_config.validate(config, tuple(DATASETS))  # fails fast, naming the bad key

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/ablate.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{PARAMS.active.report_dir}/report.md",
        "results/metrics.json",
