#!/usr/bin/env bash
# The default pipeline on a CPU-only machine, two ways, one after the other, from the same
# commit, each in a fresh clone (nothing shared but the venv):
#   threads: the earlier rule, one training job at a time with every core as its threads
#            (snakemake --cores N --set-threads ... --set-resources ...:gpu=1, gpu slots 1)
#   slots:   the rule now, training jobs side by side, one core and one thread each
#            (plain snakemake --cores N)
# It prints each run's wall time from Snakemake's log, their ratio, and how many runs'
# metrics and claims' verdicts differ between the two (thread counts change float sums).
#   bash benchmarks/cpu-pipeline-2026-11-27/slots_vs_threads.sh [OUT_DIR]   (~25 min on 2 cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$repo/results/bench/pipeline-slots-vs-threads}"
cores="${CORES:-$(nproc)}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export TUNEBENCH_DEVICE=cpu  # both ways on the CPU, also on a machine with a GPU
for way in threads slots; do
    git clone -q "$repo" "$work/$way"
    extra=()
    if [ "$way" = threads ]; then
        extra=(--set-threads "run_ablation=$cores" "run_search=$cores"
               --set-resources run_ablation:gpu=1 run_search:gpu=1 --resources gpu=1)
    fi
    echo "== $way: snakemake --cores $cores ${extra[*]}"
    (cd "$work/$way" && snakemake --cores "$cores" "${extra[@]}" > "$out/$way.log" 2>&1)
    python -m tunebench.snakelog "$out/$way.log" --json "$out/$way.json" | head -n 1
    cp "$work/$way/results/runs.parquet" "$out/$way-runs.parquet"
    cp "$work/$way/results/verdicts.csv" "$out/$way-verdicts.csv"
done
python "$here/compare.py" "$out"
