# Two entry points for a fresh machine (both idempotent):
#   make report   set up, then run the default pipeline -> reports/report.md
#   make test     set up, then run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
# Test files spread over this many pytest-xdist workers, one file to a worker at a time (so a
# module's fixtures are built once); 0 runs the suite in this process. On 2 cores: 520 s
# with 2 workers, 897 s with none, 556 s with 3 (one run each, 2026-11-28).
TEST_WORKERS ?= logical

.PHONY: setup report test bench clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	bash scripts/install_data.sh
	touch $@

report: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	@# SLURM, munge, PostgreSQL and the SLURM executor plugin for tests/test_cluster.py; where
	@# they cannot be installed (no root/apt) those tests skip and say why.
	-bash scripts/install_cluster.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: setup
	$(BIN)/python -m tunebench.bench throughput

clean-results:
	rm -rf results/ablations results/search results/runs.parquet .snakemake/incomplete
