"""Tests for tunebench.kernels.sass_cost: the fused kernels compiled for an H100/H200 (sm_90) without a
GPU, and the counts read from ptxas and the machine code (`python -m tunebench.bench
registers`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tunebench.kernels import fused_conv as fused_conv, sass_cost as sass_cost


def bench_registers(out_dir, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """`python -m tunebench.bench registers ARGS` in a fresh process (this session's kernels
    were defined under Triton's interpreter, which compiles nothing): its output and JSON."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tunebench.bench", "registers", *args, "--out-dir", str(out_dir)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((out_dir / "registers-sass_cost.json").read_text())


# Compiles each kernel for an H100/H200 (sm_90) with Triton's own compiler and ptxas, no GPU
# needed: a kernel that only the interpreter accepts (which tests/test_fused_conv.py uses on a
# CPU) fails here, in CI, rather than on a lent GPU.
@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
def test_kernels_compile_for_sm90_and_report_registers(tmp_path):
    proc, result = bench_registers(tmp_path, "--kernel-precisions", "bf16,tf32,fp32", "--triton-tiles", "W=8")
    rows = result["rows"]
    # 3 precisions x 2 tile sets (default, W=8) x 2 layers x 4 kernels (the forward, the
    # unpooling, the weight and input gradients), each compiled to a cubin
    assert len(rows) == 48 and all(r["cubin_bytes"] > 0 for r in rows)
    assert {(r["layer"], r["kernel"]) for r in rows} == {
        (0, "fwd-b"), (0, "unpool"), (0, "wgrad-pooled"), (0, "dgrad-gcl"),
        (1, "fwd-b"), (1, "unpool"), (1, "wgrad-gcl-row"), (1, "dgrad-gcl")}
    assert all(0 < r["registers"] <= 255 and r["spill_store_bytes"] >= 0 and r["shared_bytes"] > 0 for r in rows)
    assert all(r["warps_per_sm"] == sass_cost.resident_warps(r["registers"], r["shared_bytes"], r["warps"]) for r in rows)
    assert {(r["precision"], r["dtype"], r["input_precision"]) for r in rows} == {
        ("bf16", "bf16", "ieee"), ("tf32", "fp32", "tf32"), ("fp32", "fp32", "ieee")}
    # The tile sizes compiled are the ones the launches use.
    fwd = next(r for r in rows if r["kernel"] == "fwd-b" and r["C"] == 32 and r["tiles"] == "default")
    assert fwd["blocks"] == {"BLOCK_P": fused_conv.BLOCK_P, "BLOCK_CO": 64, "BLOCK_R": fused_conv.BLOCK_R}
    assert fwd["warps"] == fused_conv.NUM_WARPS
    assert {r["warps"] for r in rows if r["tiles"] == "W=8" and r["kernel"] != "unpool"} == {8}  # unpool: always 4
    # bf16 and TF32 dot products run on tensor cores (wgmma or mma.sync); exact fp32 cannot.
    # The unpooling and the one-channel weight gradient (9 taps a sum) have no dot product.
    products = [r for r in rows if r["kernel"] not in ("unpool", "wgrad-pooled")]
    assert all(r["mma"] in ("wgmma", "mma.sync") for r in products if r["precision"] in ("bf16", "tf32"))
    assert all(r["mma"] == "none" for r in rows if r["precision"] == "fp32")
    assert all(r["async_copies"] >= 0 for r in rows)
    assert "registers" in proc.stdout and "spilled B" in proc.stdout
    # The machine code's size and the launch's warp-instructions: every kernel has both, and
    # the loop-heavy ones (the weight gradient reduces over thousands of pixels) a loop.
    assert all(r["sass_instructions"] > 0 and 0 <= r["loop_instructions"] < r["sass_instructions"]
               and r["warp_instructions"] >= r["sass_instructions"] for r in rows)
    assert all(r["loop_instructions"] > 0 for r in rows if r["kernel"].startswith("wgrad"))
    steps = result["steps"]
    assert {(t["precision"], t["tiles"]) for t in steps} == {(p, t) for p in ("bf16", "tf32", "fp32")
                                                             for t in ("default", "W=8")}
    assert all(t["warp_instructions"] > 1e9 and t["issue_bound_ms"] > 0 for t in steps)


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
def test_bordered_kernels_issue_fewer_instructions(tmp_path):
    """What the layout flags are for, checked on the machine code without a GPU, each
    switched on in turn from the gathering kernels (all four 0) to the defaults (all 1):
    decoding the pooled gradient at every (pixel, tap) made the gathering backward kernels
    long; reading the unpooled array (G=1), the bf16 backward of the reference CNN issues
    well under half the warp-instructions (with the unpooling counted), and the whole step
    fewer. The bordered forward (B=1) cuts the forward's and so the step's further, and the
    first layer's weight gradient over the pooled pixels (A=1) further still: with it, that
    layer's unpooling is not launched. Three taps a weight-gradient program (T=1) load each
    gradient tile once for three dot products: fewer again."""
    gathering, only_g, g_b, g_b_a = "G=0,B=0,A=0,T=0", "B=0,A=0,T=0", "A=0,T=0", "T=0"
    proc, result = bench_registers(tmp_path, "--kernel-precisions", "bf16",
                                   "--triton-tiles", f"{gathering};{only_g};{g_b};{g_b_a}")
    backward = {t: sum(r["warp_instructions"] for r in result["rows"]
                       if r["tiles"] == t and not r["kernel"].startswith("fwd") and r["in_step"])
                for t in (gathering, only_g)}
    # The first layer's input gradient is compiled but never launched, so not counted; nor,
    # with A=1, its unpooling. Rows come in the order default, then --triton-tiles.
    assert [(r["tiles"], r["kernel"]) for r in result["rows"] if not r["in_step"]] == [
        ("default", "dgrad-gcl"), ("default", "unpool"), (gathering, "dgrad"), (only_g, "dgrad-gcl"),
        (g_b, "dgrad-gcl"), (g_b_a, "dgrad-gcl"), (g_b_a, "unpool")]
    assert {r["kernel"] for r in result["rows"] if r["tiles"] == only_g} == {"fwd", "wgrad-gcl", "dgrad-gcl", "unpool"}
    assert backward[only_g] < 0.5 * backward[gathering], backward
    steps = {t["tiles"]: t["warp_instructions"] for t in result["steps"]}
    assert steps[g_b] < steps[only_g] < steps[gathering]
    assert {r["kernel"] for r in result["rows"] if r["tiles"] == g_b} == {"fwd-b", "wgrad-gcl", "dgrad-gcl", "unpool"}
    assert steps["default"] < steps[g_b_a] < steps[g_b]
    wgrad = {r["kernel"]: r["warp_instructions"] for r in result["rows"] if r["layer"] == 1
             and r["tiles"] in (g_b_a, "default") and r["kernel"].startswith("wgrad")}
    assert wgrad["wgrad-gcl-row"] < 0.5 * wgrad["wgrad-gcl"], wgrad
    first_layer = {t: sum(r["warp_instructions"] for r in result["rows"] if r["tiles"] == t and r["layer"] == 0
                          and r["in_step"] and r["kernel"] != "fwd-b") for t in (g_b, g_b_a)}
    # A=1 drops the first layer's unpooling and its unpooled weight gradient: 0.38x under
    # Triton 3.8.0 (CI's), 0.504x under 3.6.0 (the GPU machines', where G=1,B=1's own
    # weight gradient is cheaper); a variant that lost the saving would be near 1x.
    assert first_layer[g_b_a] < 0.6 * first_layer[g_b], first_layer
    assert steps["default"] == sum(r["warp_instructions"] for r in result["rows"] if r["tiles"] == "default"
                                   and r["in_step"])
    assert "G warp-instructions" in proc.stdout


def test_sass_instruction_counts_find_the_longest_loop():
    sass = """
        .text.k:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   IMAD R2, R2, R3, RZ ;
.L_x_1:
        /*0020*/                   HGMMA.64x32x16.F32.BF16 R24, gdesc[UR12], R24 ;
        /*0030*/               @P0 BRA `(.L_x_1) ;
        /*0040*/                   ISETP.GE.AND P1, PT, R2, 0x10, PT ;
        /*0050*/               @P1 BRA `(.L_x_0) ;
        /*0060*/                   BRA `(.L_x_2) ;
.L_x_2:
        /*0070*/                   EXIT ;
"""
    # 8 instructions; the outer loop .L_x_0 spans 5 of them (the inner one, 2); the forward
    # branch to .L_x_2 is not a loop.
    assert sass_cost.sass_instruction_counts(sass) == (8, 5)
    assert sass_cost.sass_instruction_counts("") == (0, 0)


@pytest.mark.parametrize("registers, shared, warps, resident", [
    (255, 6144, 4, 8),     # 256 registers x 128 threads: 2 programs fill the register file
    (127, 6144, 8, 16),    # half the registers, twice the warps: 2 programs of 8 warps
    (244, 73728, 8, 8),    # registers allow 1 program of 8 warps (3 by shared memory)
    (40, 120 * 1024, 4, 4),  # shared memory allows 1 program
    (32, 0, 4, 64),        # the 64-warp cap
])
def test_resident_warps_per_sm(registers, shared, warps, resident):
    assert sass_cost.resident_warps(registers, shared, warps) == resident


def test_registers_mode_refuses_the_interpreter_and_unknown_precisions(monkeypatch, capsys):
    from tunebench import bench

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert bench.main(["registers"]) == 2
    assert "unset TRITON_INTERPRET" in capsys.readouterr().err or "triton" not in fused_conv.BACKENDS
    monkeypatch.delenv("TRITON_INTERPRET")
    assert bench.main(["registers", "--kernel-precisions", "bf16,fp8"]) == 2
    err = capsys.readouterr().err
    assert "fp8" in err or "not installed" in err
    assert bench.main(["registers", "--triton-tiles", "W=8;Q=2"]) == 2
    err = capsys.readouterr().err
    assert "'Q'" in err or "not installed" in err
