#!/usr/bin/env bash
# Wheels for the lent GPU machine (Python 3.12, x86-64, no package index), which lacks
# pydantic, mlxtend and Optuna (with its dependencies; `bench profile --search` needs it):
# downloads them into .whl/ (git-ignored, ~6 MB); gpu_check.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0 mlxtend==0.25.0 \
    optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.0.58 greenlet==3.5.6 colorlog==6.12.0 Mako==1.4.3 \
    MarkupSafe==3.0.4 tqdm==4.70.1
ls .whl
