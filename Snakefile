# tunebench: the workflow's table of contents. The grid comes from params.yaml through
# tunebench.spec.grid.expand (the same function the tests and the report use).
#   snakemake --cores N                          # the params.yaml profile (quick) -> reports/quick/
#   snakemake --cores N --config profile=smoke   # every rule on tiny data -> reports/smoke/
import importlib.util
import os
import sys

SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SRC)  # run from a checkout even without `pip install -e .`
# Every job runs the interpreter that runs Snakemake, with this checkout's src/ first on its
# path, whatever PATH holds (a bare `python` found the system's, which lacks tunebench).
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
if importlib.util.find_spec("torch") is None:
    sys.exit(f"tunebench: Snakemake runs under {sys.executable}, which has no torch; run the project's "
             "own Snakemake instead: `make setup`, then `.venv/bin/snakemake --cores N` (or `make report`)")

from tunebench.spec import claims as tb_claims
from tunebench.spec import config as tb_config
from tunebench.core.data import DATASETS

configfile: "params.yaml"

PARAMS = tb_config.validate(config, tuple(DATASETS))  # fails fast, naming the bad key
CLAIMS = tb_claims.load(PARAMS.claims, PARAMS, root=workflow.basedir)  # the claims files, checked against the grid

report: "workflow/report/workflow.rst"

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/ablate.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{REPORT_DIR}/report.md",
        METRICS,
