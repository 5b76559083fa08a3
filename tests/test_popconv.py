"""Tests for tunebench.popconv, the fused conv3x3 + bias + ReLU + 2x2 max-pool of a whole
population: every backend against the unfused PyTorch function, values and gradients,
under vmap(grad) as the engine calls it. On a CPU the Triton kernels run in Triton's
interpreter (tests/conftest.py), so the shapes are tiny but cover every masked edge: a
single input channel, channel counts that do not fill a tile, odd image sizes, inputs shared
by all runs, a split pixel reduction, ties and NaN."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

from tunebench import popconv

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = sorted(popconv.BACKENDS)
# (K runs, N examples, C in, CO out, H, W)
SHAPES = [(2, 3, 1, 4, 8, 8), (3, 2, 3, 5, 7, 6), (2, 2, 20, 40, 6, 5)]


@pytest.fixture(autouse=True)
def strict_fp32():
    """Both sides in exact fp32 (cuDNN and the kernels would otherwise use TF32 on CUDA)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def tensors(K, N, C, CO, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=g).to(DEVICE)  # noqa: E731
    return make(K, N, C, H, W), make(K, CO, C, 3, 3) / (3 * C**0.5), make(K, CO), make(K, N, CO, H // 2, W // 2)


def loss_of(fn):
    return lambda x, w, b, v: (fn(x, w, b) * v).sum()


def fused(backend):
    return lambda x, w, b: popconv.conv_relu_pool(x, w, b, backend)


def value_and_grads(fn, x, w, b, v):
    """The population's outputs and the gradients for every input, as the engine's step
    computes them: vmap over runs of grad of each run's loss."""
    return vmap(fn)(x, w, b), vmap(grad(loss_of(fn), argnums=(0, 1, 2)))(x, w, b, v)


def assert_close(got, want):
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "K{}-N{}-C{}-CO{}-{}x{}".format(*s))
def test_fused_equals_unfused_with_gradients(backend, shape):
    x, w, b, v = tensors(*shape)
    y, grads = value_and_grads(fused(backend), x, w, b, v)
    y_ref, grads_ref = value_and_grads(popconv.reference, x, w, b, v)
    assert y.shape == y_ref.shape == v.shape
    assert_close(y, y_ref)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


@pytest.mark.skipif("triton" not in popconv.BACKENDS, reason="Triton is not installed")
@pytest.mark.parametrize("shape, block_r", [((2, 3, 32, 24, 6, 6), 32), ((2, 2, 32, 8, 5, 7), 16)],
                         ids=["C32-slice32", "C32-two-slices-a-tap-odd-size"])
def test_channels_last_kernels_equal_the_default_bit_for_bit(shape, block_r, monkeypatch):
    """tiles(L=1): the forward and the weight gradient read a channels-last copy of the
    input, tap by tap (loads that can be vectorised on a GPU). Same reduction slices in the
    same order, so the same values, window codes and gradients to the bit, and the
    gradients still equal the unfused layer's. The weight-gradient reduction is split over
    programs (as on a GPU at batch 512), which the channels-last kernel must follow too."""
    monkeypatch.setattr(popconv, "WGRAD_PIXELS_PER_SPLIT", 16)
    x, w, b, v = tensors(*shape)
    C, CO = shape[2], shape[3]
    with popconv.tiles(R=block_r):
        y, code = popconv._triton_forward(x, w, b)
        grads = popconv._triton_backward(v, y, code, x, w, need_dx=True)
        with popconv.tiles(L=1):
            launches = popconv._launches(C, CO, "ieee")
            assert launches["fwd"][0] is popconv._fwd_kernel_cl and launches["wgrad"][0] is popconv._wgrad_kernel_cl
            y_cl, code_cl = popconv._triton_forward(x, w, b)
            grads_cl = popconv._triton_backward(v, y_cl, code_cl, x, w, need_dx=True)
            got, vmapped_grads = value_and_grads(fused("triton"), x, w, b, v)
    assert torch.equal(y_cl, y) and torch.equal(code_cl, code)
    for g_cl, g in zip(grads_cl, grads):  # dx, dw, db
        assert torch.equal(g_cl, g)
    want, grads_ref = value_and_grads(popconv.reference, x, w, b, v)
    assert_close(got, want)
    for g, g_ref in zip(vmapped_grads, grads_ref):
        assert_close(g, g_ref)


@pytest.mark.skipif("triton" not in popconv.BACKENDS, reason="Triton is not installed")
def test_channels_last_only_where_channels_fill_whole_slices():
    with popconv.tiles(L=1):
        assert popconv._launches(1, 32, "ieee")["fwd"][0] is popconv._fwd_kernel  # the first layer: 1 channel
        assert popconv._launches(20, 40, "ieee")["fwd"][0] is popconv._fwd_kernel  # 20 % 32 != 0
        assert popconv._launches(64, 64, "ieee")["fwd"][0] is popconv._fwd_kernel_cl
        assert popconv._launches(1, 32, "ieee")["wgrad"][0] is popconv._wgrad_kernel
        assert popconv._launches(64, 64, "ieee")["wgrad"][0] is popconv._wgrad_kernel_cl


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_shared_by_all_runs_and_not_differentiated(backend):
    """The first layer's input: a data batch (not differentiated), which evaluation shares
    between all runs (vmap in_dims None)."""
    x, w, b, v = tensors(3, 2, 2, 16, 6, 6)
    shared = vmap(lambda w, b: popconv.conv_relu_pool(x[0], w, b, backend))(w, b)
    assert_close(shared, vmap(lambda w, b: popconv.reference(x[0], w, b))(w, b))
    dw = vmap(grad(lambda w, b, x, v: (popconv.conv_relu_pool(x, w, b, backend) * v).sum()))(w, b, x, v)
    dw_ref = vmap(grad(lambda w, b, x, v: (popconv.reference(x, w, b) * v).sum()))(w, b, x, v)
    assert_close(dw, dw_ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_run_without_vmap(backend):
    x, w, b, v = (t[0] for t in tensors(1, 3, 2, 16, 6, 8))
    grads = grad(loss_of(fused(backend)), argnums=(0, 1, 2))(x, w, b, v)
    for g, g_ref in zip(grads, grad(loss_of(popconv.reference), argnums=(0, 1, 2))(x, w, b, v)):
        assert_close(g, g_ref)


@pytest.mark.skipif("triton" not in popconv.BACKENDS, reason="Triton is not installed")
def test_weight_gradient_split_over_programs(monkeypatch):
    """Large batches split each run's pixel reduction over several programs (partial sums
    added afterwards); force the split on a tiny batch."""
    monkeypatch.setattr(popconv, "WGRAD_PIXELS_PER_SPLIT", 64)
    x, w, b, v = tensors(2, 4, 3, 16, 8, 8)  # 256 pixels per run: 4 programs each
    _, grads = value_and_grads(fused("triton"), x, w, b, v)
    _, grads_ref = value_and_grads(popconv.reference, x, w, b, v)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_route_the_gradient_to_the_first_maximum(backend):
    """Zero weights: every pixel of a window equals its bias, a four-way tie. max_pool2d's
    gradient goes to the first pixel in row-major order, so must the fused one's; a
    negative bias gives ReLU's zero gradient."""
    x, w, b, v = tensors(2, 2, 2, 16, 4, 4)
    w = torch.zeros_like(w)
    b = torch.linspace(-1, 1, b.numel(), device=DEVICE).view_as(b)
    _, grads = value_and_grads(fused(backend), x, w, b, v)
    _, grads_ref = value_and_grads(popconv.reference, x, w, b, v)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_propagates_as_in_max_pool(backend):
    """A diverged run must stay visibly diverged: NaN wins the max, as in max_pool2d."""
    x, w, b, _ = tensors(2, 1, 1, 16, 4, 4)
    x[0, 0, 0, 1, 1] = float("nan")
    y = vmap(fused(backend))(x, w, b)
    y_ref = vmap(popconv.reference)(x, w, b)
    torch.testing.assert_close(y, y_ref, equal_nan=True)
    assert torch.isnan(y[0]).any() and not torch.isnan(y[1]).any()


@pytest.mark.skipif(DEVICE.type != "cuda", reason="bf16 kernels are checked on CUDA (the interpreter lacks bf16 dot)")
def test_bf16_under_autocast_close_to_unfused():
    """Under bf16 autocast the kernels take bf16 operands, accumulate in fp32 and pick each
    window's maximum from the fp32 sums. The reference is therefore fp32 math on the same
    bf16-rounded operands, not an all-bf16 computation: rounding the conv output to bf16
    before the pool turns near-ties into different argmaxes, and so routes gradients to
    other pixels (on an H200 an all-bf16 reference differed in 6.3% of the input gradients,
    by up to 0.9; the same comparison between two references on a CPU gives 6.4% and 0.9).
    A few windows may still pick another argmax from fp32 summation order: at most 0.1% of
    elements may differ by more than bf16 rounding."""
    x, w, b, v = tensors(4, 32, 32, 64, 14, 14)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, grads = value_and_grads(fused("triton"), x, w, b, v)
    assert y.dtype == torch.bfloat16
    y_ref, grads_ref = value_and_grads(popconv.reference, *(t.bfloat16().float() for t in (x, w, b, v)))
    for got, want in zip((y, *grads), (y_ref, *grads_ref)):
        scale = want.abs().max()
        off = ~torch.isclose(got.float(), want, rtol=2e-2, atol=2e-2 * scale)
        assert off.float().mean() <= 1e-3, (off.float().mean(), (got.float() - want).abs().max(), scale)


def test_unknown_backend_is_a_clear_error():
    x, w, b, _ = (t[0] for t in tensors(1, 1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="backend 'cudnn'"):
        popconv.conv_relu_pool(x, w, b, "cudnn")


# Compiles each kernel for an H100/H200 (sm_90) with Triton's own compiler and ptxas, no GPU
# needed (`python -m tunebench.bench registers`): a kernel that only the interpreter accepts
# (which the tests above use on a CPU) fails here, in CI, rather than on a lent GPU. Run in a
# fresh process, because this session's kernels were defined under the interpreter.
@pytest.mark.skipif("triton" not in popconv.BACKENDS, reason="Triton is not installed")
def test_kernels_compile_for_sm90_and_report_registers(tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tunebench.bench", "registers", "--kernel-precisions", "bf16,tf32,fp32",
                           "--triton-tiles", "W=8", "--out-dir", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "registers-sm90.json").read_text())["rows"]
    # 3 precisions x 2 tile sets (default, W=8) x 2 layers x 3 kernels, each compiled to a cubin
    assert len(rows) == 36 and all(r["cubin_bytes"] > 0 for r in rows)
    assert all(0 < r["registers"] <= 255 and r["spill_store_bytes"] >= 0 and r["shared_bytes"] > 0 for r in rows)
    assert all(r["warps_per_sm"] == popconv.resident_warps(r["registers"], r["shared_bytes"], r["warps"]) for r in rows)
    assert {(r["precision"], r["dtype"], r["input_precision"]) for r in rows} == {
        ("bf16", "bf16", "ieee"), ("tf32", "fp32", "tf32"), ("fp32", "fp32", "ieee")}
    # The tile sizes compiled are the ones the launches use.
    fwd = next(r for r in rows if r["kernel"] == "fwd" and r["C"] == 32 and r["tiles"] == "default")
    assert fwd["blocks"] == {"BLOCK_P": popconv.BLOCK_P, "BLOCK_CO": 64, "BLOCK_R": popconv.BLOCK_R}
    assert fwd["warps"] == popconv.NUM_WARPS
    assert {r["warps"] for r in rows if r["tiles"] == "W=8"} == {8}
    # bf16 and TF32 dot products run on tensor cores (wgmma or mma.sync); exact fp32 cannot.
    assert all(r["mma"] in ("wgmma", "mma.sync") for r in rows if r["precision"] in ("bf16", "tf32"))
    assert all(r["mma"] == "none" for r in rows if r["precision"] == "fp32")
    assert all(r["async_copies"] >= 0 for r in rows)
    assert "registers" in proc.stdout and "spilled B" in proc.stdout


@pytest.mark.parametrize("registers, shared, warps, resident", [
    (255, 6144, 4, 8),     # 256 registers x 128 threads: 2 programs fill the register file
    (127, 6144, 8, 16),    # half the registers, twice the warps: 2 programs of 8 warps
    (244, 73728, 8, 8),    # registers allow 1 program of 8 warps (3 by shared memory)
    (40, 120 * 1024, 4, 4),  # shared memory allows 1 program
    (32, 0, 4, 64),        # the 64-warp cap
])
def test_resident_warps_per_sm(registers, shared, warps, resident):
    assert popconv.resident_warps(registers, shared, warps) == resident


def test_registers_mode_refuses_the_interpreter_and_unknown_precisions(monkeypatch, capsys):
    from tunebench import bench

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert bench.main(["registers"]) == 2
    assert "unset TRITON_INTERPRET" in capsys.readouterr().err or "triton" not in popconv.BACKENDS
    monkeypatch.delenv("TRITON_INTERPRET")
    assert bench.main(["registers", "--kernel-precisions", "bf16,fp8"]) == 2
    err = capsys.readouterr().err
    assert "fp8" in err or "not installed" in err
    assert bench.main(["registers", "--triton-tiles", "W=8;Q=2"]) == 2
    err = capsys.readouterr().err
    assert "'Q'" in err or "not installed" in err
