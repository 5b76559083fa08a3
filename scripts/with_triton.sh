#!/usr/bin/env bash
# Runs a command with another Triton release first on PYTHONPATH, no GPU needed. Why:
# Triton's compiler decides the fused kernels' machine code, and releases differ. This
# project's torch 2.14.1 brings Triton 3.8.0; the lent GPU machines' torch 2.11 brings
# Triton 3.6.0 (torch 2.11.0's requirement), so what a GPU session times is 3.6.0's code.
#
#   scripts/with_triton.sh VERSION COMMAND...
#   # the machine code counted as the GPU machine's compiler makes it:
#   scripts/with_triton.sh 3.6.0 python -m tunebench.bench registers --kernel-precisions bf16,tf32 \
#       --triton-tiles "G=0,B=0,A=0,T=0;A=0,T=0" --out-dir benchmarks/sass_cost-sass-2026-11-27/triton-3.6.0
#   # the kernel tests in that release's interpreter (3.6.0's needs NumPy < 2.3):
#   NUMPY=2.2.6 scripts/with_triton.sh 3.6.0 python -m pytest tests/test_fused_conv.py tests/test_fused_conv_memory.py
#
# pip downloads the wheels (Triton ~200 MB) once, into a folder of their own:
# ${TRITON_CACHE:-~/.cache/tunebench}/triton-VERSION[-numpy-NUMPY]. `python` in COMMAND is
# the project's (.venv/bin/python, or PY). TRITON_INTERPRET is passed through as set, so the
# registers mode (which compiles for sm_90 and refuses the interpreter) runs as it is above.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: $0 VERSION COMMAND..." >&2
    exit 2
fi
version=$1; shift
PY="${PY:-.venv/bin/python}"
site="${TRITON_CACHE:-$HOME/.cache/tunebench}/triton-$version${NUMPY:+-numpy-$NUMPY}"
if [ ! -f "$site/.complete" ]; then
    rm -rf "$site"
    "$PY" -m pip install -q --no-deps --no-compile --only-binary=:all: --target "$site" \
        "triton==$version" ${NUMPY:+"numpy==$NUMPY"}
    touch "$site/.complete"  # a folder cut short by an interruption is made again
fi
[ "$1" = python ] && set -- "$PY" "${@:2}"
PYTHONPATH="$site:src${PYTHONPATH:+:$PYTHONPATH}" "$@"
