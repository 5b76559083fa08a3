#!/usr/bin/env bash
# One-shot GPU check, run once by a session that has a lent GPU (ends within ~8 minutes).
#
#   1. the engine and model tests, on CUDA where the tests allow (tests/test_engine.py puts
#      its data on CUDA when available; the golden numbers and unit tests stay on CPU);
#   2. python -m tunebench.bench throughput at fp32, bf16 and tf32, populations 16..256.
#
# Data: copy the four Fashion-MNIST files into data/raw/fashion_mnist/ first:
#   mkdir -p data/raw/fashion_mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/raw/fashion_mnist/
# data/raw/ is git-ignored, so pass it to the device machine explicitly (about 30 MB), e.g.
#   run(command="bash scripts/gpu_check.sh", carry=["data/raw/fashion_mnist"], timeout_s=560)
# Without the files the bench falls back to random data of the same shape and says so.
#
# Everything goes under ${OUT:-results/gpu_check}: env.txt, pytest.log, pytest.xml,
# bench-<precision>.log, bench/throughput-<device>.json, summary.txt.
# Needs python3 with torch, torchvision, numpy, scikit-learn, pydantic, pyyaml, pytest
# (no snakemake/dvc/optuna); set PY to use another interpreter.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_check}"
PY="${PY:-python3}"
export PYTHONPATH=src
mkdir -p "$OUT"
failed=()
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

# Steps run under `timeout` and never abort the script: a failure is recorded and the
# remaining steps still run (the device time is spent either way).
step() {  # step NAME SECONDS LOGFILE CMD...
    local name=$1 secs=$2 logf=$3; shift 3
    echo "=== [$(elapsed)s] $name (limit ${secs}s)" | tee -a "$OUT/summary.txt"
    local rc=0
    timeout --kill-after=10 "$secs" "$@" > >(tee "$logf") 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "    TIMED OUT after ${secs}s" | tee -a "$OUT/summary.txt"
        echo "    FAILED (exit $rc): $name" | tee -a "$OUT/summary.txt"
        failed+=("$name")
    fi
}

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not available"
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    "$PY" -c 'import torchvision, sklearn, pydantic, yaml, pytest; print("imports ok")' 2>&1 || echo "MISSING a module: some steps will fail"
    ls -l data/raw/fashion_mnist/ 2>&1 || echo "NO data/raw/fashion_mnist: the bench will say which data it used"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    # 30k samples per run, at most 2M model-samples per row: seconds per row on an H100.
    SAMPLES=30000; POPS=16,64,128,256; MAX_MS=2000000
else  # a dry run of this script on a CPU machine: same steps, tiny sizes
    echo "WARNING: no CUDA device; running the steps on CPU with tiny sizes" | tee -a "$OUT/summary.txt"
    SAMPLES=1024; POPS=2; MAX_MS=2048
fi

step "pytest engine+models" 200 "$OUT/pytest.log" \
    "$PY" -m pytest -p no:cacheprovider --junitxml "$OUT/pytest.xml" tests/test_engine.py tests/test_models.py

# mlp first: the cheap model finishes even if the large CNN populations hit the time limit;
# the bench rewrites its JSON after every row, so a timeout keeps the rows measured so far.
for prec in fp32 bf16 tf32; do
    limit=90; [ "$prec" = fp32 ] && limit=120
    step "bench throughput $prec" "$limit" "$OUT/bench-$prec.log" \
        "$PY" -m tunebench.bench throughput --precision "$prec" --samples "$SAMPLES" \
        --populations "$POPS" --max-model-samples "$MAX_MS" --models mlp,cnn --out-dir "$OUT/bench"
done

echo "=== [$(elapsed)s] done" | tee -a "$OUT/summary.txt"
# The tables, together, from the JSON (which also holds the rows of a run that timed out).
"$PY" - "$OUT/bench" <<'PYEOF' 2>&1 | tee -a "$OUT/summary.txt" || true
import json, sys
from pathlib import Path
from tunebench.bench import print_table
for f in sorted(Path(sys.argv[1]).glob("throughput-*.json")):
    for prec, res in json.loads(f.read_text()).items():
        m = res["meta"]
        print(f"--- {f.name} {prec}: tutorial data: {m.get('tutorial_data')}; engine data: {m.get('engine_data')}")
        print_table(res["rows"])
PYEOF
grep -E "passed|failed|error" "$OUT/pytest.log" | tail -n 1 | tee -a "$OUT/summary.txt" || true
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED steps: ${failed[*]}" | tee -a "$OUT/summary.txt"
    exit 1
fi
