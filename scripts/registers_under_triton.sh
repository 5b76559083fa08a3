#!/usr/bin/env bash
# The fused kernels' machine code counted (python -m tunebench.bench registers) under another
# Triton release than the installed one, no GPU needed. Why: Triton's compiler decides the
# code, and releases differ. This project's torch 2.14.1 brings Triton 3.8.0; the lent GPU
# machines' torch 2.11 brings Triton 3.6.0 (torch 2.11.0's requirement), so what a GPU session
# times is 3.6.0's code, and a kernel variant must compile under it.
#
#   scripts/registers_under_triton.sh VERSION OUT_DIR [TILE_SETS] [PRECISIONS]
#   e.g. scripts/registers_under_triton.sh 3.6.0 benchmarks/sm90-sass-2026-11-27/triton-3.6.0
#
# Downloads the Triton wheel for this Python with pip (~200 MB; once, into
# ${TRITON_CACHE:-~/.cache/tunebench}/triton-VERSION), then runs the registers mode with that
# Triton first on PYTHONPATH. TILE_SETS: as --triton-tiles (default: every variant the notes
# count); PRECISIONS: as --kernel-precisions (default bf16,tf32). Writes OUT_DIR/registers.txt
# (the printed table) and OUT_DIR/registers-sm90.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: $0 VERSION OUT_DIR [TILE_SETS] [PRECISIONS]" >&2
    exit 2
fi
version=$1 out=$2
tiles=${3:-"G=1;G=1,B=1;L=1;G=1,L=1;A=1;G=1,B=1,A=1;G=1,B=1,A=1,P=64;G=1,B=1,A=1,T=1;G=1,B=1,A=1,T=1,P=64"}
precisions=${4:-bf16,tf32}
PY="${PY:-.venv/bin/python}"
site="${TRITON_CACHE:-$HOME/.cache/tunebench}/triton-$version"
if ! PYTHONPATH="$site" "$PY" -c "import triton, sys; sys.exit(triton.__version__ != '$version')" 2> /dev/null; then
    wheels=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$wheels" "triton==$version"
    rm -rf "$site.partial"
    "$PY" -m pip install -q --no-deps --no-compile --target "$site.partial" "$wheels"/triton-*.whl
    rm -rf "$site" "$wheels" && mv "$site.partial" "$site"  # complete or absent, never half there
fi
mkdir -p "$out"
# TRITON_INTERPRET unset: the registers mode compiles for sm_90 and refuses the interpreter.
env -u TRITON_INTERPRET PYTHONPATH="$site:src${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m tunebench.bench registers \
    --kernel-precisions "$precisions" --triton-tiles "$tiles" --out-dir "$out" | tee "$out/registers.txt.partial"
mv "$out/registers.txt.partial" "$out/registers.txt"
