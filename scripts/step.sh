# Sourced by scripts/gpu_check.sh (and tests/test_bench.py): `step`, which runs one check
# under a time limit, and the `failed` list it fills. Needs $OUT (where summary.txt goes).
failed=()
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

# Steps run under `timeout` and never abort the script: a failure is recorded and the
# remaining steps still run (the device time is spent either way).
step() {  # step NAME SECONDS LOGFILE CMD...
    local name=$1 secs=$2 logf=$3; shift 3
    echo "=== [$(elapsed)s] $name (limit ${secs}s)" | tee -a "$OUT/summary.txt"
    local rc=0 began=$(date +%s)
    timeout --kill-after=10 "$secs" "$@" > "$logf" 2>&1 || rc=$?
    tail -n 3 "$logf"
    if [ "$rc" -ne 0 ]; then
        # 124: stopped by SIGTERM at the limit; 137 at or past it: SIGTERM did not stop it
        # within 10 s (Snakemake cleaning up its jobs), so SIGKILL did. 137 before the limit
        # is another kill (out of memory), not a time-out.
        if [ "$rc" -eq 124 ]; then
            echo "    TIMED OUT after ${secs}s" | tee -a "$OUT/summary.txt"
        elif [ "$rc" -eq 137 ] && [ $(( $(date +%s) - began )) -ge "$secs" ]; then
            echo "    TIMED OUT after ${secs}s (killed 10 s later: SIGTERM did not stop it)" | tee -a "$OUT/summary.txt"
        fi
        echo "    FAILED (exit $rc): $name" | tee -a "$OUT/summary.txt"
        failed+=("$name")
    fi
}
