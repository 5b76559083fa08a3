"""Tests for tunebench.kernels.fused_conv, the fused conv3x3 + bias + ReLU + 2x2 max-pool of a whole
population: every backend against the unfused PyTorch function, values and gradients,
under vmap(grad) as the engine calls it. On a CPU the Triton kernels run in Triton's
interpreter (tests/conftest.py), so the shapes are tiny but cover every masked edge: a
single input channel, channel counts that do not fill a tile, odd image sizes, inputs shared
by all runs, a split pixel reduction, ties and NaN."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

from tunebench.kernels import fused_conv as fused_conv

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = sorted(fused_conv.BACKENDS)
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
    return lambda x, w, b: fused_conv.conv_relu_pool(x, w, b, backend)


def value_and_grads(fn, x, w, b, v):
    """The population's outputs and the gradients for every input, as the engine's step
    computes them: vmap over runs of grad of each run's loss."""
    return vmap(fn)(x, w, b), vmap(grad(loss_of(fn), argnums=(0, 1, 2)))(x, w, b, v)


def assert_close(got, want):
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def assert_equals_unfused(y, grads, x, w, b, v):
    """y and the gradients (x, w, b) of a fused layer under vmap(grad) equal the unfused one's."""
    want, grads_ref = value_and_grads(fused_conv.reference, x, w, b, v)
    assert_close(y, want)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


# Each backend at each kernel layout it has: the torch reference; Triton at fused_conv's default
# layout flags (G=1,B=1,A=1,T=1) and at the gathering kernels (fused_conv.GATHERING: all four
# flags 0), which each flag's own tests below compare against.
LAYOUT_TILES = {"default": {}, "gathering": fused_conv.GATHERING}
LAYOUTS = [(b, layout) for b in BACKENDS for layout in (LAYOUT_TILES if b == "triton" else ["default"])]
LAYOUT_IDS = [b if layout == "default" else f"{b}-{layout}" for b, layout in LAYOUTS]


@pytest.fixture
def layout(request):
    """The layout named by the test's parameter (LAYOUT_TILES) in force for the whole test."""
    with fused_conv.tiles(**LAYOUT_TILES[request.param]):
        yield request.param


@pytest.fixture
def gathering():
    """The gathering kernels in force: the tests of one layout flag switch it on from there,
    and compare with what they computed before."""
    with fused_conv.tiles(**fused_conv.GATHERING):
        yield


@pytest.mark.parametrize("backend, layout", LAYOUTS, ids=LAYOUT_IDS, indirect=["layout"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "K{}-N{}-C{}-CO{}-{}x{}".format(*s))
def test_fused_equals_unfused_with_gradients(backend, layout, shape):
    x, w, b, v = tensors(*shape)
    y, grads = value_and_grads(fused(backend), x, w, b, v)
    y_ref, grads_ref = value_and_grads(fused_conv.reference, x, w, b, v)
    assert y.shape == y_ref.shape == v.shape
    assert_close(y, y_ref)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.parametrize("shape, block_r", [((2, 3, 32, 24, 6, 6), 32), ((2, 2, 32, 8, 5, 7), 16)],
                         ids=["C32-slice32", "C32-two-slices-a-tap-odd-size"])
@pytest.mark.usefixtures("gathering")
def test_channels_last_kernels_equal_the_gathering_kernels_bit_for_bit(shape, block_r, monkeypatch):
    """tiles(L=1): the forward and the weight gradient read a channels-last copy of the
    input, tap by tap (loads that can be vectorised on a GPU). Same reduction slices in the
    same order, so the same values, window codes and gradients to the bit, and the
    gradients still equal the unfused layer's. The weight-gradient reduction is split over
    programs (as on a GPU at batch 512), which the channels-last kernel must follow too."""
    monkeypatch.setattr(fused_conv, "WGRAD_PIXELS_PER_SPLIT", 16)
    x, w, b, v = tensors(*shape)
    C, CO = shape[2], shape[3]
    with fused_conv.tiles(R=block_r):
        y, code, _ = fused_conv._triton_forward(x, w, b)
        grads = fused_conv._triton_backward(v, code, x, w, need_dx=True)
        with fused_conv.tiles(L=1):
            launches = fused_conv._launches(C, CO, "ieee", *shape[4:])
            assert launches["fwd"][0] is fused_conv._fwd_kernel_cl and launches["wgrad"][0] is fused_conv._wgrad_kernel_cl
            y_cl, code_cl, _ = fused_conv._triton_forward(x, w, b)
            grads_cl = fused_conv._triton_backward(v, code_cl, x, w, need_dx=True)
            got, vmapped_grads = value_and_grads(fused("triton"), x, w, b, v)
    assert torch.equal(y_cl, y) and torch.equal(code_cl, code)
    for g_cl, g in zip(grads_cl, grads):  # dx, dw, db
        assert torch.equal(g_cl, g)
    assert_equals_unfused(got, vmapped_grads, x, w, b, v)


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.parametrize("shape", [(2, 3, 32, 64, 6, 6), (2, 2, 3, 32, 5, 7), (2, 3, 1, 4, 8, 8), (3, 2, 3, 5, 7, 6),
                                   (2, 2, 20, 40, 6, 5)],
                         ids=["C32-CO64", "CO32-odd-size", "C1-CO4", "CO5-odd-size", "C20-CO40-odd-width"])
@pytest.mark.usefixtures("gathering")
def test_unpooled_gradient_kernels_equal_the_gathering_kernels(shape, monkeypatch):
    """tiles(G=1): the backward pass unpools the gradient once into a bordered
    channels-last array, and the weight- and input-gradient kernels read it (and a bordered
    channels-last input) row by row. The weight gradient sums the same slices in the same
    order: equal to the bit. So does the input gradient where the output channels fill
    whole reduction slices (CO % 32 == 0); elsewhere its slices stop at each tap, so its
    sums differ by rounding. The bias gradient is the pooled gradient's sum, so it too
    differs by rounding only. All equal the unfused layer's, under vmap(grad), with the
    pixel reduction split over programs as on a GPU."""
    monkeypatch.setattr(fused_conv, "WGRAD_PIXELS_PER_SPLIT", 16)
    x, w, b, v = tensors(*shape)
    C, CO, H, W = shape[2:]
    y, code, _ = fused_conv._triton_forward(x, w, b)
    dx, dw, db = fused_conv._triton_backward(v, code, x, w, need_dx=True)
    with fused_conv.tiles(G=1):
        launches = fused_conv._launches(C, CO, "ieee", H, W)
        assert launches["wgrad"][0] is fused_conv._wgrad_kernel_gcl and launches["dgrad"][0] is fused_conv._dgrad_kernel_gcl
        assert launches["unpool"][0] is fused_conv._unpool_kernel
        dx_g, dw_g, db_g = fused_conv._triton_backward(v, code, x, w, need_dx=True)
        got, vmapped_grads = value_and_grads(fused("triton"), x, w, b, v)
    assert torch.equal(dw_g, dw)
    if CO % fused_conv._reduction_tile(CO) == 0:
        assert torch.equal(dx_g, dx)
    assert_close(dx_g, dx)
    assert_close(db_g, db)
    assert_equals_unfused(got, vmapped_grads, x, w, b, v)


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.parametrize("shape", [(2, 3, 32, 24, 6, 6), (2, 2, 32, 64, 5, 7), (2, 3, 1, 4, 8, 8), (3, 2, 3, 5, 7, 6),
                                   (3, 2, 3, 5, 8, 6), (2, 2, 20, 40, 6, 5), (2, 2, 16, 32, 7, 7)],
                         ids=["C32-slice32", "C32-CO64-odd-size", "C1", "C3-odd-size", "C3-even-size",
                              "C20-gathered-odd-width", "C16-gathered-odd-size"])
@pytest.mark.usefixtures("gathering")
def test_bordered_forward_equals_the_gathering_kernels_bit_for_bit(shape):
    """tiles(B=1): the forward reads a bordered channels-last input, compiled for the image
    size. The same reduction slices in the same order (tap by tap where the channels fill
    whole slices, gathered otherwise), so the same values and window codes to the bit; with
    G=1 as well, the whole layer under vmap(grad) equals the unfused one. C3-odd-size failed
    once on an H200 (benchmarks/h200-2026-11-28/NOTES.md); C3-even-size tells the channel
    count from the odd height there, and C16 is the pipeline's CNNs' second layer (width 16)."""
    x, w, b, v = tensors(*shape)
    C, CO, H, W = shape[2:]
    y, code, _ = fused_conv._triton_forward(x, w, b)
    with fused_conv.tiles(B=1):
        assert fused_conv._launches(C, CO, "ieee", H, W)["fwd"][0] is fused_conv._fwd_kernel_b
        y_b, code_b, _ = fused_conv._triton_forward(x, w, b)
        with fused_conv.tiles(G=1):
            got, grads = value_and_grads(fused("triton"), x, w, b, v)
    # What differs, if anything (on an H200 the C3-odd-size case failed once, in a log cut off
    # before pytest said why: benchmarks/h200-2026-11-28/NOTES.md).
    assert torch.equal(y_b, y), f"max |y_b - y| = {(y_b - y).abs().max():.3g}"
    assert torch.equal(code_b, code), f"{(code_b != code).sum()} of {code.numel()} window codes differ"
    assert_equals_unfused(got, grads, x, w, b, v)


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.parametrize(("tile_set", "copies_in_backward"),
                         [({"B": 1, "G": 1}, 0), ({"B": 1, "G": 1, "T": 1}, 0), ({"G": 1}, 1), ({"B": 1, "G": 1, "A": 1}, 1)],
                         ids=["B1-G1", "B1-G1-T1", "G1-forward-unbordered", "A1-fp32-gather"])
@pytest.mark.parametrize("vmapped", [True, False], ids=["population", "single-run"])
@pytest.mark.usefixtures("gathering")
def test_backward_reuses_the_forwards_bordered_input(tile_set, copies_in_backward, vmapped, monkeypatch):
    """With B=1 and G=1 the forward and the weight gradient read the same bordered
    channels-last input: the forward keeps its copy for the backward pass, which makes
    none (0 copies in the backward); where they read different arrays (an unbordered
    forward, or A=1's fp32 gather of the one-channel first layer) it makes its own. The
    gradients equal the unfused layer's either way, in a population and in a single run."""
    copies = []
    make_copy = fused_conv._bordered_channels_last
    monkeypatch.setattr(fused_conv, "_bordered_channels_last", lambda *a, **k: copies.append(a[0].shape) or make_copy(*a, **k))
    shape = (2, 3, 1, 4, 6, 6) if "A" in tile_set else (2, 3, 32, 24, 5, 7)
    x, w, b, v = tensors(*shape)
    if not vmapped:
        x, w, b, v = x[0], w[0], b[0], v[0]
    grad_fn = grad(loss_of(fused("triton")), argnums=(0, 1, 2))
    with fused_conv.tiles(**tile_set):
        vmap(fused("triton"))(x, w, b) if vmapped else fused("triton")(x, w, b)
        in_forward = len(copies)
        copies.clear()
        grads = vmap(grad_fn)(x, w, b, v) if vmapped else grad_fn(x, w, b, v)
    assert in_forward == ("B" in tile_set)
    assert len(copies) - in_forward == copies_in_backward
    grads_ref = (vmap(grad(loss_of(fused_conv.reference), argnums=(0, 1, 2))) if vmapped else
                 grad(loss_of(fused_conv.reference), argnums=(0, 1, 2)))(x, w, b, v)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.parametrize("shape", [(2, 3, 32, 64, 6, 6), (2, 2, 32, 24, 5, 7), (2, 2, 64, 16, 6, 6)],
                         ids=["C32-CO64", "C32-CO24-odd-size", "C64-two-slices-a-tap"])
@pytest.mark.usefixtures("gathering")
def test_row_weight_gradient_equals_the_unpooled_one_bit_for_bit(shape, monkeypatch):
    """tiles(G=1, T=1): a weight-gradient program takes a kernel row's three taps, each
    gradient tile loaded once for the three. Every partial sum is the same dot products in
    the same order as G=1's, so the same dw to the bit (the pixel reduction split over
    programs, as on a GPU); and the layer under vmap(grad) equals the unfused one."""
    monkeypatch.setattr(fused_conv, "WGRAD_PIXELS_PER_SPLIT", 16)
    x, w, b, v = tensors(*shape)
    C, CO, H, W = shape[2:]
    y, code, _ = fused_conv._triton_forward(x, w, b)
    with fused_conv.tiles(G=1):
        dx, dw, db = fused_conv._triton_backward(v, code, x, w, need_dx=True)
        with fused_conv.tiles(T=1):
            launches = fused_conv._launches(C, CO, "ieee", H, W)
            assert launches["wgrad"][0] is fused_conv._wgrad_kernel_gcl_row
            assert fused_conv._grid("wgrad", launches["wgrad"][1], *shape[:2], C, H, W, CO)[1] == 3 * C // 32
            dx_t, dw_t, db_t = fused_conv._triton_backward(v, code, x, w, need_dx=True)
            got, grads = value_and_grads(fused("triton"), x, w, b, v)
    assert torch.equal(dw_t, dw) and torch.equal(db_t, db) and torch.equal(dx_t, dx)
    assert_equals_unfused(got, grads, x, w, b, v)


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.usefixtures("gathering")
def test_row_weight_gradient_only_on_whole_channel_slices_of_the_unpooled_layout():
    with fused_conv.tiles(T=1):  # without G=1 there is no unpooled array to read
        assert fused_conv._launches(32, 64, "ieee", 14, 14)["wgrad"][0] is fused_conv._wgrad_kernel
    with fused_conv.tiles(G=1, T=1):
        assert fused_conv._launches(20, 40, "ieee", 8, 8)["wgrad"][0] is fused_conv._wgrad_kernel_gcl  # 20 % 32 != 0
        assert fused_conv._launches(1, 32, "ieee", 8, 8)["wgrad"][0] is fused_conv._wgrad_kernel_gcl


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.parametrize("shape", [(2, 3, 1, 4, 8, 8), (3, 2, 1, 5, 7, 6), (2, 4, 1, 40, 6, 9)],
                         ids=["C1-CO4", "C1-CO5-odd-size", "C1-CO40-two-channel-tiles-odd-width"])
@pytest.mark.parametrize("others", [{}, {"G": 1, "B": 1}], ids=["alone", "with-G1-B1"])
@pytest.mark.usefixtures("gathering")
def test_argmax_weight_gradient_equals_the_gathering_kernels(shape, others, monkeypatch):
    """tiles(A=1): a one-channel layer's weight gradient sums, over the pooled pixels, each
    pooled gradient times the input at its window's argmax + tap, instead of a product over
    every conv pixel. Other sums, so equal to the gathering kernels' within rounding, and the layer
    under vmap(grad) equals the unfused one; the pixel reduction split over programs as on
    a GPU. Where the input takes no gradient (the first layer), nothing else reads an
    unpooled array, so G=1 does not build one; where it does, the input gradient still gets it."""
    monkeypatch.setattr(fused_conv, "WGRAD_PIXELS_PER_SPLIT", 16)
    x, w, b, v = tensors(*shape)
    C, CO, H, W = shape[2:]
    y, code, _ = fused_conv._triton_forward(x, w, b)
    dx, dw, db = fused_conv._triton_backward(v, code, x, w, need_dx=True)
    with fused_conv.tiles(A=1, **others):
        launches = fused_conv._launches(C, CO, "ieee", H, W)
        assert launches["wgrad"][0] is fused_conv._wgrad_kernel_pooled
        assert fused_conv._launched(launches, need_dx=False) == ["wgrad"]
        assert fused_conv._launched(launches, need_dx=True) == (["unpool", "wgrad", "dgrad"] if others else
                                                            ["wgrad", "dgrad"])
        split, _ = fused_conv._wgrad_split(*fused_conv._wgrad_reduction(launches["wgrad"][1], shape[1], H, W))
        assert split > 1
        dw_a, db_a = fused_conv._triton_backward(v, code, x, w, need_dx=False)
        dx_a, dw_a2, _ = fused_conv._triton_backward(v, code, x, w, need_dx=True)
        got, vmapped_grads = value_and_grads(fused("triton"), x, w, b, v)
    assert_close(dw_a, dw)
    assert_close(db_a, db)
    assert torch.equal(dw_a2, dw_a)
    assert_close(dx_a, dx)
    assert_equals_unfused(got, vmapped_grads, x, w, b, v)


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.usefixtures("gathering")
def test_argmax_weight_gradient_in_bf16_equals_fp32_on_the_same_values():
    """The engine's bf16 step, which on a CPU only this kernel can take (it has no matrix
    product; the interpreter lacks bf16 ones): from bf16 gradients and inputs it gathers
    fp32 copies and sums in fp32, so its result is the fp32 run's on the same bf16 values,
    rounded once to bf16 at the end, to the bit."""
    x, w, b, v = tensors(2, 3, 1, 8, 8, 8)
    y, code, _ = fused_conv._triton_forward(x, w, b)
    with fused_conv.tiles(A=1):
        dw16, db16 = fused_conv._triton_backward(v.bfloat16(), code, x.bfloat16(), w.bfloat16(),
                                              need_dx=False)
        dw32, db32 = fused_conv._triton_backward(v.bfloat16().float(), code, x.bfloat16().float(), w, need_dx=False)
    assert dw16.dtype == db16.dtype == torch.bfloat16
    assert torch.equal(dw16, dw32.bfloat16()) and torch.equal(db16, db32.bfloat16())


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.usefixtures("gathering")
def test_argmax_weight_gradient_only_for_one_input_channel():
    """More input channels would make the gather C x longer per product, where the other
    kernels use a matrix product: A=1 leaves them alone."""
    with fused_conv.tiles(A=1):
        assert fused_conv._launches(1, 32, "ieee", 28, 28)["wgrad"][0] is fused_conv._wgrad_kernel_pooled
        assert fused_conv._launches(3, 32, "ieee", 28, 28)["wgrad"][0] is fused_conv._wgrad_kernel
    with fused_conv.tiles(A=1, G=1):
        assert fused_conv._launches(32, 64, "ieee", 14, 14)["wgrad"][0] is fused_conv._wgrad_kernel_gcl


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.usefixtures("gathering")
def test_unpooled_gradient_array_holds_each_window_gradient_at_its_argmax():
    """The array the G=1 kernels read: (K, N, H+2, W+2, CO), the conv output's gradient
    (torch backend's _unpool: none through ReLU's zeros) inside a zero border; zero too in
    the last row and column of an odd-sized map, which no window pools. The array starts
    uninitialised (here: NaN) and only its border is zeroed, so the kernel must write every
    other element, zeros included. Beside it, per program, the bias gradient's partial
    sums. The bordered input copy likewise."""
    x, w, b, v = tensors(2, 2, 3, 5, 7, 6)
    y, code, _ = fused_conv._triton_forward(x, w, b)
    assert (y == 0).any() and (y > 0).any()
    launches = fused_conv._launches(3, 5, "ieee", 7, 6)
    with fused_conv.tiles(G=1):
        unpool, tiles_, warps = fused_conv._launches(3, 5, "ieee", 7, 6)["unpool"]
        gz = fused_conv._zero_border(torch.full((2, 2, 9, 8, 5), float("nan")), 6, 6)
        grid = fused_conv._grid("unpool", tiles_, 2, 2, 3, 7, 6, 5)
        db = torch.full((2, grid[0], 5), float("nan"))
        unpool[grid](v, code, gz, db, 2, 5, **tiles_, num_warps=warps)
    want = fused_conv._unpool(v, code, 7, 6)  # (K, N, CO, H, W)
    assert torch.equal(want, fused_conv._unpool(v * (y > 0), code % 4, 7, 6))  # ReLU's mask, from the code
    assert "unpool" not in launches
    assert torch.equal(gz[:, :, 1:-1, 1:-1], want.permute(0, 1, 3, 4, 2))
    assert_close(db.sum(1), want.sum((1, 3, 4)))
    border = torch.ones(9, 8, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert not gz[:, :, border].any() and want[..., -1, :].eq(0).all()
    x_b = fused_conv._bordered_channels_last(x)
    assert torch.equal(x_b, torch.nn.functional.pad(x, (1, 1, 1, 1)).permute(0, 1, 3, 4, 2))
    assert x_b.is_contiguous()


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.usefixtures("gathering")
def test_channels_last_only_where_channels_fill_whole_slices():
    with fused_conv.tiles(L=1):
        assert fused_conv._launches(1, 32, "ieee", 8, 8)["fwd"][0] is fused_conv._fwd_kernel  # the first layer: 1 channel
        assert fused_conv._launches(20, 40, "ieee", 8, 8)["fwd"][0] is fused_conv._fwd_kernel  # 20 % 32 != 0
        assert fused_conv._launches(64, 64, "ieee", 8, 8)["fwd"][0] is fused_conv._fwd_kernel_cl
        assert fused_conv._launches(1, 32, "ieee", 8, 8)["wgrad"][0] is fused_conv._wgrad_kernel
        assert fused_conv._launches(64, 64, "ieee", 8, 8)["wgrad"][0] is fused_conv._wgrad_kernel_cl


@pytest.mark.parametrize("backend, layout", LAYOUTS, ids=LAYOUT_IDS, indirect=["layout"])
def test_input_shared_by_all_runs_and_not_differentiated(backend, layout):
    """The first layer's input: a data batch (not differentiated), which evaluation shares
    between all runs (vmap in_dims None)."""
    x, w, b, v = tensors(3, 2, 2, 16, 6, 6)
    shared = vmap(lambda w, b: fused_conv.conv_relu_pool(x[0], w, b, backend))(w, b)
    assert_close(shared, vmap(lambda w, b: fused_conv.reference(x[0], w, b))(w, b))
    dw = vmap(grad(lambda w, b, x, v: (fused_conv.conv_relu_pool(x, w, b, backend) * v).sum()))(w, b, x, v)
    dw_ref = vmap(grad(lambda w, b, x, v: (fused_conv.reference(x, w, b) * v).sum()))(w, b, x, v)
    assert_close(dw, dw_ref)


@pytest.mark.parametrize("backend, layout", LAYOUTS, ids=LAYOUT_IDS, indirect=["layout"])
def test_single_run_without_vmap(backend, layout):
    x, w, b, v = (t[0] for t in tensors(1, 3, 2, 16, 6, 8))
    grads = grad(loss_of(fused(backend)), argnums=(0, 1, 2))(x, w, b, v)
    for g, g_ref in zip(grads, grad(loss_of(fused_conv.reference), argnums=(0, 1, 2))(x, w, b, v)):
        assert_close(g, g_ref)


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
@pytest.mark.parametrize("layout", LAYOUT_TILES, indirect=True)
def test_weight_gradient_split_over_programs(layout, monkeypatch):
    """Large batches split each run's pixel reduction over several programs (partial sums
    added afterwards); force the split on a tiny batch."""
    monkeypatch.setattr(fused_conv, "WGRAD_PIXELS_PER_SPLIT", 64)
    x, w, b, v = tensors(2, 4, 3, 16, 8, 8)  # 256 pixels per run: 4 programs each
    _, grads = value_and_grads(fused("triton"), x, w, b, v)
    _, grads_ref = value_and_grads(fused_conv.reference, x, w, b, v)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


@pytest.mark.parametrize("backend, layout", LAYOUTS, ids=LAYOUT_IDS, indirect=["layout"])
def test_ties_route_the_gradient_to_the_first_maximum(backend, layout):
    """Zero weights: every pixel of a window equals its bias, a four-way tie. max_pool2d's
    gradient goes to the first pixel in row-major order, so must the fused one's; a
    negative bias gives ReLU's zero gradient."""
    x, w, b, v = tensors(2, 2, 2, 16, 4, 4)
    w = torch.zeros_like(w)
    b = torch.linspace(-1, 1, b.numel(), device=DEVICE).view_as(b)
    _, grads = value_and_grads(fused(backend), x, w, b, v)
    _, grads_ref = value_and_grads(fused_conv.reference, x, w, b, v)
    for g, g_ref in zip(grads, grads_ref):
        assert_close(g, g_ref)


@pytest.mark.parametrize("backend, layout", LAYOUTS, ids=LAYOUT_IDS, indirect=["layout"])
def test_nan_propagates_as_in_max_pool(backend, layout):
    """A diverged run must stay visibly diverged: NaN wins the max, as in max_pool2d; and
    its gradient flows back through the NaN as through the unfused layers (ReLU's
    backward passes a NaN output's gradient: fused_conv._relu_coded), NaN where theirs is.
    One exception: a one-channel layer's weight gradient over the pooled pixels (A=1, the
    default) multiplies only the argmax pixels' inputs, never a NaN input by a zero
    gradient as the unfused weight gradient does, so it is NaN at only the taps that read
    the NaN from an argmax (4 of run 0's 9 here, against all 9): still NaN in the run that
    diverged, finite in the other, and equal wherever both are finite."""
    x, w, b, v = tensors(2, 1, 1, 16, 4, 4)
    x[0, 0, 0, 1, 1] = float("nan")
    y, grads = value_and_grads(fused(backend), x, w, b, v)
    y_ref, grads_ref = value_and_grads(fused_conv.reference, x, w, b, v)
    torch.testing.assert_close(y, y_ref, equal_nan=True)
    assert torch.isnan(y[0]).any() and not torch.isnan(y[1]).any()
    pooled_wgrad = backend == "triton" and fused_conv._launches(1, 16, "ieee", 4, 4)["wgrad"][0] is fused_conv._wgrad_kernel_pooled
    assert pooled_wgrad == (layout == "default" and backend == "triton")
    for name, g, g_ref in zip(("dx", "dw", "db"), grads, grads_ref):
        if name == "dw" and pooled_wgrad:
            assert torch.isnan(g[0]).any() and torch.isfinite(g[1]).all()
            assert not (torch.isnan(g) & ~torch.isnan(g_ref)).any()
            both = torch.isfinite(g) & torch.isfinite(g_ref)
            g, g_ref = g[both], g_ref[both]
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert torch.isnan(grads[1][0]).any() and torch.isfinite(grads[0]).all()  # dw of run 0; every dx


RELU_CASES = {"torch": ("torch", {}), "triton": ("triton", {}), "triton-gathering": ("triton", fused_conv.GATHERING),
              "triton-G1-B1": ("triton", {"A": 0, "T": 0})}


@pytest.mark.parametrize("backend, tile_set", [c for c in RELU_CASES.values() if c[0] in BACKENDS],
                         ids=[name for name, c in RELU_CASES.items() if c[0] in BACKENDS])
@pytest.mark.parametrize("shape", [(2, 3, 1, 6, 8, 8), (2, 2, 3, 5, 7, 6)], ids=["C1", "C3-odd-size"])
def test_relu_zeros_pass_no_gradient_not_even_nan(backend, tile_set, shape):
    """The window code's bit 2 marks where ReLU zeroed the output (fused_conv._relu_coded),
    and the backward reads the incoming gradient unmasked: a window so marked must pass
    nothing, as the unfused ReLU's backward passes 0 where its output is 0, even for a NaN
    gradient. With NaN coming in at every dead window, every gradient stays finite and
    equals the unfused layer's."""
    x, w, b, v = tensors(*shape)
    b = b - 0.5  # more dead windows
    y_ref = vmap(fused_conv.reference)(x, w, b)
    dead = y_ref == 0
    assert dead.float().mean() > 0.2 and (~dead).any()
    v = torch.where(dead, float("nan"), v)
    y, code, _ = fused_conv.BACKENDS[backend][0](x, w, b)
    assert torch.equal(code >= 4, dead) and torch.equal(code >= 4, fused_conv._torch_forward(x, w, b)[1] >= 4)
    with fused_conv.tiles(**tile_set):
        got, grads = value_and_grads(fused(backend), x, w, b, v)
    _, grads_ref = value_and_grads(fused_conv.reference, x, w, b, v)
    for g, g_ref in zip(grads, grads_ref):
        assert torch.isfinite(g_ref).all() and torch.isfinite(g).all()
        assert_close(g, g_ref)


@pytest.mark.skipif(DEVICE.type != "cuda", reason="bf16 kernels are checked on CUDA (the interpreter lacks bf16 dot)")
@pytest.mark.parametrize("tile_set, layer", [({}, (32, 64, 14, 14)), ({}, (1, 32, 28, 28)),
                                             ({"A": 0, "T": 0}, (32, 64, 14, 14)), (fused_conv.GATHERING, (32, 64, 14, 14))],
                         ids=["default", "default-first-layer", "G=1,B=1", "gathering"])
def test_bf16_under_autocast_close_to_unfused(tile_set, layer):
    """Under bf16 autocast the kernels take bf16 operands, accumulate in fp32 and pick each
    window's maximum from the fp32 sums. The reference is therefore fp32 math on the same
    bf16-rounded operands, not an all-bf16 computation: rounding the conv output to bf16
    before the pool turns near-ties into different argmaxes, and so routes gradients to
    other pixels (on an H200 an all-bf16 reference differed in 6.3% of the input gradients,
    by up to 0.9; the same comparison between two references on a CPU gives 6.4% and 0.9).
    A few windows may still pick another argmax from fp32 summation order: at most 0.1% of
    elements may differ by more than bf16 rounding."""
    x, w, b, v = tensors(4, 32, *layer)
    with torch.autocast("cuda", dtype=torch.bfloat16), fused_conv.tiles(**tile_set):
        y, grads = value_and_grads(fused("triton"), x, w, b, v)
    assert y.dtype == torch.bfloat16
    y_ref, grads_ref = value_and_grads(fused_conv.reference, *(t.bfloat16().float() for t in (x, w, b, v)))
    for got, want in zip((y, *grads), (y_ref, *grads_ref)):
        scale = want.abs().max()
        off = ~torch.isclose(got.float(), want, rtol=2e-2, atol=2e-2 * scale)
        assert off.float().mean() <= 1e-3, (off.float().mean(), (got.float() - want).abs().max(), scale)


@pytest.mark.skipif("triton" not in fused_conv.BACKENDS, reason="Triton is not installed")
def test_default_layout_launches_the_kernels_measured_fastest():
    """fused_conv's defaults are the layout an H200 timed fastest (G=1,B=1,A=1,T=1): for the
    reference CNN, a bordered forward in both layers; the first (one channel, input not
    differentiated) reduces its weight gradient over the pooled pixels and unpools nothing;
    the second unpools its gradient once, then three taps a weight-gradient program and the
    unpooled input gradient."""
    assert {k: v for k, v in fused_conv.current_tiles() if k in fused_conv.GATHERING} == {"G": 1, "B": 1, "A": 1, "T": 1}
    first, second = fused_conv._launches(1, 32, "ieee", 28, 28), fused_conv._launches(32, 64, "ieee", 14, 14)
    assert (first["fwd"][0], first["wgrad"][0]) == (fused_conv._fwd_kernel_b, fused_conv._wgrad_kernel_pooled)
    assert fused_conv._launched(first, need_dx=False) == ["wgrad"]
    assert fused_conv._launched(second, need_dx=True) == ["unpool", "wgrad", "dgrad"]
    assert (second["fwd"][0], second["wgrad"][0], second["dgrad"][0]) == (
        fused_conv._fwd_kernel_b, fused_conv._wgrad_kernel_gcl_row, fused_conv._dgrad_kernel_gcl)
    with fused_conv.tiles(**fused_conv.GATHERING):
        assert [fused_conv._launches(32, 64, "ieee", 14, 14)[k][0] for k in ("fwd", "wgrad", "dgrad")] == [
            fused_conv._fwd_kernel, fused_conv._wgrad_kernel, fused_conv._dgrad_kernel]


def test_current_tiles_follow_the_tiles_in_force():
    """engine.max_population keys its memory probe on these: G=1's arrays change a
    population's memory."""
    default = dict(fused_conv.current_tiles())
    assert set(default) == set(fused_conv.TILE_NAMES) and default["G"] == 1 and default["B"] == 1
    with fused_conv.tiles(G=0, W=8):
        assert dict(fused_conv.current_tiles()) == {**default, "G": 0, "W": 8}
    assert dict(fused_conv.current_tiles()) == default
    with pytest.raises(ValueError, match="unknown tile name"):
        with fused_conv.tiles(Q=1):
            pass


def test_unknown_backend_is_a_clear_error():
    x, w, b, _ = (t[0] for t in tensors(1, 1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="backend 'cudnn'"):
        fused_conv.conv_relu_pool(x, w, b, "cudnn")
