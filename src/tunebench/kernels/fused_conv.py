"""Fused population convolution for the CNN: conv3x3 (stride 1, padding 1) + bias + ReLU +
2x2 max-pool for K runs at once, as Triton kernels (implicit GEMM; the run index is the
grid's third axis).

Why: under vmap a population's F.conv2d becomes a grouped convolution, and ReLU and the
pool are separate passes over the convolution's full-size output. On an H100 that held the
reference CNN at 0.51M model-samples/s; by the byte count in
benchmarks/h100-2026-11-26/NOTES.md, unfused passes alone cap it near 3M. Here the
full-size output never reaches device memory in the forward pass: each program computes
the four pixels of its pooling windows, stores their max after ReLU and, in one byte, which
of the four it was and whether ReLU zeroed it; the backward kernels route the output's
gradient from that byte as it comes, with no masked copy of it (_relu_coded).

`conv_relu_pool(x, weight, bias)` is the same function as
F.max_pool2d(F.relu(F.conv2d(x, weight, bias, padding=1)), 2) (ties and NaN resolved as
max_pool2d does: the first maximum in row-major order; NaN wins, the last NaN where there
are several, which is where its gradient goes), and it works inside
torch.func.vmap(grad(...)), the engine's step: it is an autograd.Function whose vmap rule
hands the whole population to one kernel launch.

Layout variants of the Triton kernels, chosen by tiles() (same function, bit-identical
where they slice the reduction alike): L=1 a channels-last forward and weight gradient; G=1
a backward that unpools the gradient once into a zero-bordered channels-last array and
reads it row by row; B=1 a forward on a zero-bordered channels-last input; A=1 a
one-input-channel layer's weight gradient summed over the pooled pixels, gathering the
input at each window's argmax (equal within rounding: other sums); T=1 (with G=1) a kernel
row's three taps a weight-gradient program. G, B, A and T are on by default: 4.7x the
kernels without them (GATHERING) on an H200 in bf16, 7.8x cuDNN
(benchmarks/h200-2026-11-28/NOTES.md). tunebench.kernels.sass_cost counts each one's machine
instructions (benchmarks/sass_cost-sass-2026-11-27/NOTES.md).

Backends, each a pair of functions on population tensors (leading run axis K):
- "triton": the kernels below (CUDA; on a CPU only with TRITON_INTERPRET=1 set before the
  import, which the tests use on tiny shapes);
- "torch": a grouped F.conv2d and autograd-free gradients (torch.nn.grad), the reference
  the kernels are tested against.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

from tunebench.core.models import FusedConv, autocast_operands, register_fused_conv

try:  # Triton ships with torch's CUDA wheels on Linux; elsewhere only the torch backend exists.
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the platform
    HAS_TRITON = False

# Tile sizes (elements). Fixed, not autotuned: BLOCK_R sets the order of each dot product's
# summation, so a timing-based choice could change float rounding between two runs of one
# configuration. tl.dot needs every tile dimension >= 16.
BLOCK_P = 32  # pooled output pixels per forward program (x4 conv pixels)
BLOCK_M = 64  # input pixels per dgrad program
BLOCK_S = 64  # pixels reduced per wgrad iteration
BLOCK_R = 32  # reduction slice: (tap, channel) pairs per iteration (16 where 9 x channels <= 16)
MAX_SPLIT = 16  # wgrad: programs sharing one run's pixel reduction (partials summed after)
WGRAD_PIXELS_PER_SPLIT = 8192  # pixels per wgrad program before the reduction is split
NUM_WARPS = 4  # threads per program / 32
# 1: the forward and the weight gradient of a layer whose input channels fill whole
# reduction slices (C % BLOCK_R == 0) read a channels-last copy of its input, tap by tap, so
# that each row of a slice is BLOCK_R adjacent channels: loads Triton can vectorise and
# pipeline (cp.async), which the gathered bf16 elements of the default layout never are.
# The same sums in the same order.
CHANNELS_LAST = 0
# The four layout flags below are all on by default (G=1,B=1,A=1,T=1): with them the
# reference CNN's population trains several times faster than with the gathering kernels
# (all four 0, GATHERING below), in bf16 and in TF32, at the same training loss to float
# tolerance (benchmarks/h200-2026-11-28/NOTES.md). Each flag's kernels are tested against the
# gathering ones (tests/test_fused_conv.py).
# 1: the backward pass first unpools the gradient once, into a zero-bordered channels-last
# array (K, N, H+2, W+2, CO) of the conv output's gradient, and the input- and weight-gradient
# kernels read that array (and a zero-bordered channels-last copy of the input) row by row:
# contiguous loads, no border masks. With 0 they decode the pooled gradient and its window
# code at every (pixel, tap) they reduce over, 9x over: in ptxas's sm_90 code that decoding is
# most of the instructions of the two kernels, which issue 30 of a bf16 CNN step's 36 G
# warp-instructions (benchmarks/sass_cost-sass-2026-11-27). Costs one write and two reads of that
# array.
GRAD_CL = 1
# 1: the forward reads a zero-bordered channels-last copy of its input, compiled for the image
# size (_fwd_kernel_b): no border masks, no divisions by run-time sizes; any channel count.
# Takes the place of CHANNELS_LAST's forward.
BORDERED_FORWARD = 1
# 1: a layer with one input channel (the first: a grayscale image) reduces its weight
# gradient over the pooled pixels, gathering the input at each window's argmax
# (_wgrad_kernel_pooled), instead of over every conv pixel of a gradient that is zero at
# three of each window's four. Its reduction is 9 long per output, too short for a matrix
# product. With GRAD_CL it also spares the first layer's unpooled array (3.8 GB at 128 runs x
# 512 examples in bf16, written and read a step), whose only reader it was.
ARGMAX_WGRAD = 1
# 1 (with GRAD_CL, where C % BLOCK_R == 0): a weight-gradient program takes a kernel row's
# three taps (_wgrad_kernel_gcl_row), so each tile of the unpooled gradient is loaded and
# transposed by a third as many programs. The same sums: bit-identical.
ROW_WGRAD = 1
# The kernels before the four flags: each decodes the pooled gradient and gathers its input
# where it reduces. The reference every flag's kernels are tested against, and the bench's
# baseline row: tiles(**GATHERING).
GATHERING = {"G": 0, "B": 0, "A": 0, "T": 0}
TILE_NAMES = {"P": "BLOCK_P", "M": "BLOCK_M", "S": "BLOCK_S", "R": "BLOCK_R", "W": "NUM_WARPS", "L": "CHANNELS_LAST",
              "G": "GRAD_CL", "B": "BORDERED_FORWARD", "A": "ARGMAX_WGRAD", "T": "ROW_WGRAD"}


@contextlib.contextmanager
def tiles(**sizes: int):
    """Other tile sizes for a while, by short name (P, M, S, R: BLOCK_*; W: NUM_WARPS;
    L: CHANNELS_LAST; G: GRAD_CL; B: BORDERED_FORWARD; A: ARGMAX_WGRAD; T: ROW_WGRAD), e.g. tiles(P=64, W=8): what `python -m tunebench.bench
    --triton-tiles` sweeps on a GPU."""
    unknown = set(sizes) - set(TILE_NAMES)
    if unknown:
        raise ValueError(f"unknown tile name(s) {sorted(unknown)}; known: {', '.join(TILE_NAMES)}")
    module = globals()
    saved = {TILE_NAMES[k]: module[TILE_NAMES[k]] for k in sizes}
    module.update({TILE_NAMES[k]: int(v) for k, v in sizes.items()})
    try:
        yield
    finally:
        module.update(saved)


def current_tiles() -> tuple[tuple[str, int], ...]:
    """The tile sizes and layout flags in force, by short name: part of what a population's
    memory depends on (G=1 adds the unpooled gradient arrays), so engine.max_population
    measures each setting on its own."""
    module = globals()
    return tuple((name, int(module[var])) for name, var in TILE_NAMES.items())


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The unfused function, for one run: what conv_relu_pool must equal."""
    return F.max_pool2d(F.relu(F.conv2d(x, weight, bias, padding=1)), 2)


# ---------------------------------------------------------------- torch backend (reference)
def _grouped_conv(x, weight, bias):
    """(K, N, C, H, W) x (K, CO, C, 3, 3) -> (K, N, CO, H, W): one grouped convolution."""
    K, N, C, H, W = x.shape
    CO = weight.shape[1]
    z = F.conv2d(x.transpose(0, 1).reshape(N, K * C, H, W), weight.reshape(K * CO, C, 3, 3),
                 bias.reshape(K * CO), padding=1, groups=K)
    return z.view(N, K, CO, H, W).transpose(0, 1)


def _windows(z: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., H//2, W//2, 4): each 2x2 window in row-major order."""
    *lead, H, W = z.shape
    PH, PW = H // 2, W // 2
    z = z[..., : 2 * PH, : 2 * PW].reshape(*lead, PH, 2, PW, 2)
    return z.movedim(-3, -2).reshape(*lead, PH, PW, 4)


def _relu_coded(y: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    """The window code both backends store beside y: bits 0-1 the argmax's place in its
    2x2 window (row-major), bit 2 set where y <= 0 (ReLU's zeros), where no gradient
    flows, as in ReLU's own backward (0 where its output is <= 0, even for a NaN
    gradient; a NaN output passes its gradient). With that bit, a backward pass reads the
    output's gradient as it comes: a pixel's gradient is grad_y where code == its place in
    the window, which a marked window's code never is; no ReLU-masked copy of grad_y, and
    no y to read."""
    return torch.where(y <= 0, argmax + 4, argmax).to(torch.int8)


def _torch_forward(x, weight, bias):
    z = _windows(_grouped_conv(x, weight, bias))
    # As max_pool2d's kernels (`val > max || isnan(val)` in window order): the first
    # maximum, or the last NaN where the window has one.
    nan = torch.isnan(z)
    last_nan = 3 - nan.flip(-1).to(torch.int8).argmax(-1, keepdim=True)
    argmax = torch.where(nan.any(-1, keepdim=True), last_nan, z.argmax(-1, keepdim=True))
    best = z.gather(-1, argmax).squeeze(-1)
    y = torch.where(best < 0, torch.zeros_like(best), best)
    return y, _relu_coded(y, argmax.squeeze(-1)), None  # nothing kept for the backward beyond x


def _unpool(grad_y: torch.Tensor, code: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Gradient of the pre-pool map: each pooled gradient at its window's argmax, none
    where the code says ReLU zeroed the window (_relu_coded)."""
    *lead, PH, PW = grad_y.shape
    onehot = code[..., None].long() == torch.arange(4, device=code.device)
    g = torch.where(onehot, grad_y[..., None], 0)
    g = g.reshape(*lead, PH, PW, 2, 2).movedim(-2, -3).reshape(*lead, 2 * PH, 2 * PW)
    return F.pad(g, (0, W - 2 * PW, 0, H - 2 * PH))  # odd sizes: the last row/column pools nowhere


def _torch_backward(grad_y, code, x, weight, need_dx: bool, x_bordered=None):
    K, N, C, H, W = x.shape
    CO = weight.shape[1]
    gz = _unpool(grad_y, code, H, W)  # (K, N, CO, H, W)
    gz_n = gz.transpose(0, 1).reshape(N, K * CO, H, W)
    x_n = x.transpose(0, 1).reshape(N, K * C, H, W)
    w_flat = weight.reshape(K * CO, C, 3, 3)
    dw = torch.nn.grad.conv2d_weight(x_n, w_flat.shape, gz_n, padding=1, groups=K).view_as(weight)
    db = gz.sum((1, 3, 4))
    if not need_dx:
        return dw, db
    dx = torch.nn.grad.conv2d_input(x_n.shape, w_flat, gz_n, padding=1, groups=K)
    return dx.view(N, K, C, H, W).transpose(0, 1), dw, db


# ---------------------------------------------------------------- triton backend
if HAS_TRITON:

    @triton.jit
    def _taps(r, channels):
        """A reduction index r = tap * channels + channel, tap = 3 * kernel row + kernel
        column -> (in range, channel, kernel row, kernel column)."""
        tap = r // channels
        return r < 9 * channels, r % channels, tap // 3, tap % 3

    @triton.jit
    def _window_dot(acc, x_row, oy, ox, row_ok, ty, tx, ci, r_ok, H, W, sxc, sxh, sxw, wv,
                    PRECISION: tl.constexpr):
        """acc + (implicit im2col rows of the conv pixels (oy, ox)) @ wv."""
        iy = oy[:, None] + ty[None, :] - 1
        ix = ox[:, None] + tx[None, :] - 1
        ok = row_ok[:, None] & r_ok[None, :] & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        a = tl.load(x_row[:, None] + ci[None, :] * sxc + iy * sxh + ix * sxw, mask=ok, other=0.0)
        return tl.dot(a, wv, acc, input_precision=PRECISION)

    @triton.jit
    def _take_max(best, code, z, q: tl.constexpr):
        better = (z > best) | (z != z)  # NaN wins, the last one, as in max_pool2d
        return tl.where(better, z, best), tl.where(better, q, code)

    @triton.jit
    def _pooled_tile(N, CO, PH, PW, BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr):
        """A forward program's tile: pooled pixels p over (n, py, px) x output channels co,
        their masks, and the top-left conv pixel (oy, ox) of each pooling window."""
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        co = tl.program_id(1) * BLOCK_CO + tl.arange(0, BLOCK_CO)
        n = p // (PH * PW)
        rem = p % (PH * PW)
        return p < N * PH * PW, co, co < CO, n, rem, 2 * (rem // PW), 2 * (rem % PW)

    @triton.jit
    def _pool_relu_store(acc0, acc1, acc2, acc3, b_ptr, y_ptr, code_ptr, k, sbk, sbo, p_ok, co, co_ok, n, rem,
                         N, CO, PH, PW):
        """Bias, the max of each window's four conv pixels (code: which one), then ReLU;
        stores y and code as (K, N, CO, PH, PW), contiguous. code's bit 2 is set where the
        stored y is <= 0 (ReLU's zeros): see _relu_coded."""
        bias = tl.load(b_ptr + k * sbk + co * sbo, mask=co_ok, other=0.0).to(tl.float32)[None, :]
        best = acc0 + bias
        code = tl.zeros(acc0.shape, dtype=tl.int32)
        best, code = _take_max(best, code, acc1 + bias, 1)
        best, code = _take_max(best, code, acc2 + bias, 2)
        best, code = _take_max(best, code, acc3 + bias, 3)
        out = tl.where(best < 0, 0.0, best).to(y_ptr.dtype.element_ty)  # ReLU after the max (they commute); keeps NaN
        code = tl.where(out <= 0, code + 4, code)  # y as stored (its dtype), NaN passing as in ReLU's backward
        off = ((k * N + n.to(tl.int64))[:, None] * CO + co[None, :]) * (PH * PW) + rem[:, None]
        ok = p_ok[:, None] & co_ok[None, :]
        tl.store(y_ptr + off, out, mask=ok)
        tl.store(code_ptr + off, code.to(tl.int8), mask=ok)

    @triton.jit
    def _fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, code_ptr,
                    N, C, H, W, CO, PH, PW,
                    sxk, sxn, sxc, sxh, sxw, swk, swo, swc, swh, sww, sbk, sbo,
                    BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_R: tl.constexpr,
                    PRECISION: tl.constexpr):
        k = tl.program_id(2).to(tl.int64)
        p_ok, co, co_ok, n, rem, oy, ox = _pooled_tile(N, CO, PH, PW, BLOCK_P, BLOCK_CO)
        x_row = x_ptr + k * sxk + n.to(tl.int64) * sxn
        acc0 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc2 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc3 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        for r0 in range(0, 9 * C, BLOCK_R):  # reduction index r = tap * C + channel
            r_ok, ci, ty, tx = _taps(r0 + tl.arange(0, BLOCK_R), C)
            wv = tl.load(w_ptr + k * swk + co[None, :] * swo + ci[:, None] * swc + ty[:, None] * swh + tx[:, None] * sww,
                         mask=r_ok[:, None] & co_ok[None, :], other=0.0)
            # The four pixels of each 2x2 window share the weight tile.
            acc0 = _window_dot(acc0, x_row, oy, ox, p_ok, ty, tx, ci, r_ok, H, W, sxc, sxh, sxw, wv, PRECISION)
            acc1 = _window_dot(acc1, x_row, oy, ox + 1, p_ok, ty, tx, ci, r_ok, H, W, sxc, sxh, sxw, wv, PRECISION)
            acc2 = _window_dot(acc2, x_row, oy + 1, ox, p_ok, ty, tx, ci, r_ok, H, W, sxc, sxh, sxw, wv, PRECISION)
            acc3 = _window_dot(acc3, x_row, oy + 1, ox + 1, p_ok, ty, tx, ci, r_ok, H, W, sxc, sxh, sxw, wv, PRECISION)
        _pool_relu_store(acc0, acc1, acc2, acc3, b_ptr, y_ptr, code_ptr, k, sbk, sbo, p_ok, co, co_ok, n, rem,
                         N, CO, PH, PW)

    @triton.jit
    def _window_dot_cl(acc, x_row, oy, ox, row_ok, ty, tx, ci, H, W, sxh, sxw, wv, PRECISION: tl.constexpr):
        """_window_dot for a channels-last input: one tap, BLOCK_R adjacent channels a row."""
        iy = oy + ty - 1
        ix = ox + tx - 1
        ok = row_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        a = tl.load(x_row[:, None] + (iy * sxh + ix * sxw)[:, None] + ci[None, :], mask=ok[:, None], other=0.0)
        return tl.dot(a, wv, acc, input_precision=PRECISION)

    @triton.jit
    def _fwd_kernel_cl(x_ptr, w_ptr, b_ptr, y_ptr, code_ptr,
                       N, H, W, CO, PH, PW, sxk, sxn, sxh, sxw, sbk, sbo,
                       C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_R: tl.constexpr,
                       PRECISION: tl.constexpr):
        """_fwd_kernel on x as (K, N, H, W, C) with unit channel stride and w as (K, 3, 3, C,
        CO) contiguous; C % BLOCK_R == 0. The reduction runs over r = tap * C + channel in
        slices of BLOCK_R, as in _fwd_kernel, so every sum is the same."""
        k = tl.program_id(2).to(tl.int64)
        p_ok, co, co_ok, n, rem, oy, ox = _pooled_tile(N, CO, PH, PW, BLOCK_P, BLOCK_CO)
        x_row = x_ptr + k * sxk + n.to(tl.int64) * sxn
        acc0 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc2 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc3 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        for tap in range(9):
            ty = tap // 3
            tx = tap % 3
            for c0 in tl.static_range(0, C, BLOCK_R):
                ci = c0 + tl.arange(0, BLOCK_R)
                wv = tl.load(w_ptr + ((k * 9 + tap) * C + ci[:, None]) * CO + co[None, :], mask=co_ok[None, :], other=0.0)
                acc0 = _window_dot_cl(acc0, x_row, oy, ox, p_ok, ty, tx, ci, H, W, sxh, sxw, wv, PRECISION)
                acc1 = _window_dot_cl(acc1, x_row, oy, ox + 1, p_ok, ty, tx, ci, H, W, sxh, sxw, wv, PRECISION)
                acc2 = _window_dot_cl(acc2, x_row, oy + 1, ox, p_ok, ty, tx, ci, H, W, sxh, sxw, wv, PRECISION)
                acc3 = _window_dot_cl(acc3, x_row, oy + 1, ox + 1, p_ok, ty, tx, ci, H, W, sxh, sxw, wv, PRECISION)
        _pool_relu_store(acc0, acc1, acc2, acc3, b_ptr, y_ptr, code_ptr, k, sbk, sbo, p_ok, co, co_ok, n, rem,
                         N, CO, PH, PW)

    @triton.jit
    def _bordered_window_dots(acc0, acc1, acc2, acc3, x_ptr, corner, col, row_ok, r_ok, wv,
                              W: tl.constexpr, C: tl.constexpr, PRECISION: tl.constexpr):
        """The four window pixels' dot products for one reduction slice: rows read from a
        bordered channels-last input at each pixel's tap-(0, 0) position plus `col`."""
        ok = row_ok[:, None] & r_ok[None, :]
        a = tl.load(x_ptr + corner[:, None] * C + col[None, :], mask=ok, other=0.0)
        acc0 = tl.dot(a, wv, acc0, input_precision=PRECISION)
        a = tl.load(x_ptr + (corner + 1)[:, None] * C + col[None, :], mask=ok, other=0.0)
        acc1 = tl.dot(a, wv, acc1, input_precision=PRECISION)
        a = tl.load(x_ptr + (corner + W + 2)[:, None] * C + col[None, :], mask=ok, other=0.0)
        acc2 = tl.dot(a, wv, acc2, input_precision=PRECISION)
        a = tl.load(x_ptr + (corner + W + 3)[:, None] * C + col[None, :], mask=ok, other=0.0)
        acc3 = tl.dot(a, wv, acc3, input_precision=PRECISION)
        return acc0, acc1, acc2, acc3

    @triton.jit
    def _fwd_kernel_b(x_ptr, w_ptr, b_ptr, y_ptr, code_ptr, N, CO, sbk, sbo,
                      H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, BLOCK_P: tl.constexpr,
                      BLOCK_CO: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr):
        """_fwd_kernel on a bordered channels-last input x (K, N, H+2, W+2, C) and w as (K, 3,
        3, C, CO), both contiguous, compiled for the image size: no border masks, and the
        pixel index's divisions by constants. Reduction r = tap * C + channel in slices of
        BLOCK_R, as in _fwd_kernel; where C % BLOCK_R == 0 a slice is one tap's adjacent
        channels (vector loads), else gathered."""
        k = tl.program_id(2).to(tl.int64)
        p_ok, co, co_ok, n, rem, oy, ox = _pooled_tile(N, CO, H // 2, W // 2, BLOCK_P, BLOCK_CO)
        corner = ((k * N + n.to(tl.int64)) * (H + 2) + oy) * (W + 2) + ox  # bordered (oy, ox): tap (0, 0)'s pixel
        acc0 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc2 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc3 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        w_k = w_ptr + k * 9 * C * CO
        if C % BLOCK_R == 0:
            for tap in range(9):
                for c0 in tl.static_range(0, C, BLOCK_R):
                    ci = c0 + tl.arange(0, BLOCK_R)
                    wv = tl.load(w_k + (tap * C + ci[:, None]) * CO + co[None, :], mask=co_ok[None, :], other=0.0)
                    col = ((tap // 3) * (W + 2) + tap % 3) * C + ci
                    acc0, acc1, acc2, acc3 = _bordered_window_dots(acc0, acc1, acc2, acc3, x_ptr, corner, col, p_ok,
                                                                   ci < C, wv, W, C, PRECISION)
        else:
            for r0 in range(0, 9 * C, BLOCK_R):
                r = r0 + tl.arange(0, BLOCK_R)
                r_ok, ci, ty, tx = _taps(r, C)
                wv = tl.load(w_k + r[:, None] * CO + co[None, :], mask=r_ok[:, None] & co_ok[None, :], other=0.0)
                col = (ty * (W + 2) + tx) * C + ci
                acc0, acc1, acc2, acc3 = _bordered_window_dots(acc0, acc1, acc2, acc3, x_ptr, corner, col, p_ok,
                                                               r_ok, wv, W, C, PRECISION)
        _pool_relu_store(acc0, acc1, acc2, acc3, b_ptr, y_ptr, code_ptr, k, sbk, sbo, p_ok, co, co_ok, n, rem,
                         N, CO, H // 2, W // 2)

    @triton.jit
    def _grad_z(gy_ptr, code_ptr, plane, oy, ox, ok, PH, PW):
        """Gradient of the pre-pool conv output at (oy, ox): the output's gradient where this
        pixel was its window's maximum and ReLU passed it (code == its place; _relu_coded),
        else 0. `plane`: the offset of each element's (run, example, channel) plane in the
        pooled arrays."""
        inside = ok & (oy >= 0) & (oy < 2 * PH) & (ox >= 0) & (ox < 2 * PW)
        off = plane + (oy // 2) * PW + ox // 2
        g = tl.load(gy_ptr + off, mask=inside, other=0.0).to(tl.float32)
        code = tl.load(code_ptr + off, mask=inside, other=-1).to(tl.int32)
        return tl.where(code == (oy % 2) * 2 + ox % 2, g, 0.0)

    @triton.jit
    def _dgrad_kernel(gy_ptr, code_ptr, w_ptr, dx_ptr,
                      N, C, H, W, CO, PH, PW,
                      swk, swo, swc, swh, sww,
                      BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
                      PRECISION: tl.constexpr):
        """dx[k, n, c, iy, ix] = sum over (co, ty, tx) of gz[k, n, co, iy+1-ty, ix+1-tx] * w[k, co, c, ty, tx]."""
        k = tl.program_id(2).to(tl.int64)
        m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # input pixel over (n, iy, ix)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        m_ok = m < N * H * W
        c_ok = c < C
        n = (m // (H * W)).to(tl.int64)
        iy = (m % (H * W)) // W
        ix = m % W
        acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
        for r0 in range(0, 9 * CO, BLOCK_R):  # reduction index r = tap * CO + out channel
            r_ok, co, ty, tx = _taps(r0 + tl.arange(0, BLOCK_R), CO)
            plane = ((k * N + n)[:, None] * CO + co[None, :]) * (PH * PW)
            gz = _grad_z(gy_ptr, code_ptr, plane, iy[:, None] + 1 - ty[None, :], ix[:, None] + 1 - tx[None, :],
                         m_ok[:, None] & r_ok[None, :], PH, PW)
            wv = tl.load(w_ptr + k * swk + co[:, None] * swo + c[None, :] * swc + ty[:, None] * swh + tx[:, None] * sww,
                         mask=r_ok[:, None] & c_ok[None, :], other=0.0)
            acc = tl.dot(gz.to(wv.dtype), wv, acc, input_precision=PRECISION)
        off = ((k * N + n)[:, None] * C + c[None, :]) * (H * W) + (iy * W + ix)[:, None]
        tl.store(dx_ptr + off, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])

    @triton.jit
    def _pixel_slice_grad(gy_ptr, code_ptr, k, j0, N, CO, PH, PW, co, co_ok, BLOCK_S: tl.constexpr):
        """BLOCK_S conv pixels j0.. over (n, oy, ox) of the pooled area, their mask, and the
        gradient of the pre-pool output there, (BLOCK_CO, BLOCK_S)."""
        j = j0 + tl.arange(0, BLOCK_S)
        j_ok = j < N * (2 * PH) * (2 * PW)  # pixels outside the pooled area have zero gradient
        n = (j // (4 * PH * PW)).to(tl.int64)
        oy = (j % (4 * PH * PW)) // (2 * PW)
        ox = j % (2 * PW)
        plane = ((k * N + n)[None, :] * CO + co[:, None]) * (PH * PW)
        gz = _grad_z(gy_ptr, code_ptr, plane, oy[None, :], ox[None, :], co_ok[:, None] & j_ok[None, :], PH, PW)
        return j_ok, n, oy, ox, gz

    @triton.jit
    def _store_wgrad_partials(dw_ptr, db_ptr, acc, db, k, s, SPLIT, CO, C, co, co_ok, r, r_ok):
        """The (K, SPLIT, CO, 9C) and (K, SPLIT, CO) fp32 partials; db from the first r tile."""
        part = (k * SPLIT + s) * CO + co
        tl.store(dw_ptr + part[:, None] * (9 * C) + r[None, :], acc, mask=co_ok[:, None] & r_ok[None, :])
        tl.store(db_ptr + part, db, mask=co_ok & (tl.program_id(1) == 0))

    @triton.jit
    def _wgrad_program(SPLIT, CO, BLOCK_CO: tl.constexpr, BLOCK_R: tl.constexpr):
        """A weight-gradient program's place: run k, pixel slice s (grid axis 2 is k * SPLIT +
        s), output channels co (and their mask) x reduction indices r."""
        k = (tl.program_id(2) // SPLIT).to(tl.int64)
        co = tl.program_id(0) * BLOCK_CO + tl.arange(0, BLOCK_CO)
        return k, tl.program_id(2) % SPLIT, co, co < CO, tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)

    @triton.jit
    def _wgrad_kernel(gy_ptr, code_ptr, x_ptr, dw_ptr, db_ptr,
                      N, C, H, W, CO, PH, PW, SPLIT, PIXELS_PER_SPLIT,
                      sxk, sxn, sxc, sxh, sxw,
                      BLOCK_CO: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
                      PRECISION: tl.constexpr):
        """Partial sums over one slice of the pixels: dw[k, s, co, r] (r = tap * C + c) and,
        from the programs of the first r tile, db[k, s, co]."""
        k, s, co, co_ok, r = _wgrad_program(SPLIT, CO, BLOCK_CO, BLOCK_R)
        r_ok, ci, ty, tx = _taps(r, C)
        acc = tl.zeros((BLOCK_CO, BLOCK_R), dtype=tl.float32)
        db = tl.zeros((BLOCK_CO,), dtype=tl.float32)
        for j0 in range(s * PIXELS_PER_SPLIT, (s + 1) * PIXELS_PER_SPLIT, BLOCK_S):
            j_ok, n, oy, ox, gz = _pixel_slice_grad(gy_ptr, code_ptr, k, j0, N, CO, PH, PW, co, co_ok, BLOCK_S)
            iy = oy[:, None] + ty[None, :] - 1
            ix = ox[:, None] + tx[None, :] - 1
            ok = j_ok[:, None] & r_ok[None, :] & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
            xv = tl.load(x_ptr + k * sxk + n[:, None] * sxn + ci[None, :] * sxc + iy * sxh + ix * sxw, mask=ok, other=0.0)
            acc = tl.dot(gz.to(xv.dtype), xv, acc, input_precision=PRECISION)
            db += tl.sum(gz, axis=1)
        _store_wgrad_partials(dw_ptr, db_ptr, acc, db, k, s, SPLIT, CO, C, co, co_ok, r, r_ok)


    @triton.jit
    def _wgrad_kernel_cl(gy_ptr, code_ptr, x_ptr, dw_ptr, db_ptr,
                         N, H, W, CO, PH, PW, SPLIT, PIXELS_PER_SPLIT,
                         sxk, sxn, sxh, sxw,
                         C: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
                         PRECISION: tl.constexpr):
        """_wgrad_kernel on x as (K, N, H, W, C) with unit channel stride; C % BLOCK_R == 0, so
        each program's reduction slice is one tap's BLOCK_R adjacent channels. The same
        partial sums in the same order."""
        pid_s = tl.program_id(2)
        k = (pid_s // SPLIT).to(tl.int64)
        s = pid_s % SPLIT
        co = tl.program_id(0) * BLOCK_CO + tl.arange(0, BLOCK_CO)
        r0 = tl.program_id(1) * BLOCK_R
        r = r0 + tl.arange(0, BLOCK_R)
        tap = r0 // C
        ty = tap // 3
        tx = tap % 3
        ci = r0 % C + tl.arange(0, BLOCK_R)
        co_ok = co < CO
        acc = tl.zeros((BLOCK_CO, BLOCK_R), dtype=tl.float32)
        db = tl.zeros((BLOCK_CO,), dtype=tl.float32)
        for j0 in range(s * PIXELS_PER_SPLIT, (s + 1) * PIXELS_PER_SPLIT, BLOCK_S):
            j_ok, n, oy, ox, gz = _pixel_slice_grad(gy_ptr, code_ptr, k, j0, N, CO, PH, PW, co, co_ok, BLOCK_S)
            iy = oy + ty - 1
            ix = ox + tx - 1
            ok = j_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
            xv = tl.load(x_ptr + k * sxk + (n * sxn + iy * sxh + ix * sxw)[:, None] + ci[None, :], mask=ok[:, None],
                         other=0.0)
            acc = tl.dot(gz.to(xv.dtype), xv, acc, input_precision=PRECISION)
            db += tl.sum(gz, axis=1)
        _store_wgrad_partials(dw_ptr, db_ptr, acc, db, k, s, SPLIT, CO, C, co, co_ok, r, r < 9 * C)


    @triton.jit
    def _unpool_kernel(gy_ptr, code_ptr, gz_ptr, db_ptr, N, CO,
                       H: tl.constexpr, W: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr):
        """Writes every element of the pooled area of gz (K, N, H+2, W+2, CO), contiguous, the
        rest of which is zeroed before (_zero_border): the gradient of the conv output at
        (oy, ox) goes to gz[k, n, oy+1, ox+1, co]. Each output gradient is stored at its
        window's argmax, zeros at the window's three other pixels, and all four where ReLU
        zeroed the window (_relu_coded). Also the bias gradient's partial sums, one per
        program, (K, programs on axis 0, CO) fp32: the sum of what it stored."""
        k = tl.program_id(2).to(tl.int64)
        p_ok, co, co_ok, n, rem, oy, ox = _pooled_tile(N, CO, H // 2, W // 2, BLOCK_P, BLOCK_CO)
        off = ((k * N + n.to(tl.int64))[:, None] * CO + co[None, :]) * ((H // 2) * (W // 2)) + rem[:, None]
        ok = p_ok[:, None] & co_ok[None, :]
        code = tl.load(code_ptr + off, mask=ok, other=4).to(tl.int32)
        g = tl.load(gy_ptr + off, mask=ok & (code < 4), other=0.0)  # a dead window's gradient is not read
        corner = ((k * N + n) * (H + 2) + oy + 1) * (W + 2) + ox + 1  # bordered (oy + 1, ox + 1)
        for q in tl.static_range(4):  # the window's pixels in row-major order, as the code counts them
            dst = gz_ptr + (corner + (q // 2) * (W + 2) + q % 2)[:, None] * CO + co[None, :]
            tl.store(dst, tl.where(code == q, g, 0.0).to(gz_ptr.dtype.element_ty), mask=ok)
        db = tl.sum(g.to(tl.float32), axis=0)
        tl.store(db_ptr + (k * tl.num_programs(0) + tl.program_id(0)) * CO + co, db, mask=co_ok)

    @triton.jit
    def _dgrad_kernel_gcl(gz_ptr, w_ptr, dx_ptr, N, C,
                          H: tl.constexpr, W: tl.constexpr, CO: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr, PRECISION: tl.constexpr):
        """_dgrad_kernel on the unpooled gradient gz (K, N, H+2, W+2, CO) and w as (K, 3, 3,
        CO, C), both contiguous: each tap's rows are BLOCK_R adjacent output channels of one
        bordered pixel, unmasked but for the tile's edge. The reduction runs over r = tap * CO
        + out channel in slices of BLOCK_R, as in _dgrad_kernel where CO % BLOCK_R == 0. The
        image size is a compile-time constant, as in _wgrad_kernel_gcl."""
        # Written as in _dgrad_kernel, not shared through a helper: moved into one, the
        # default kernel's machine code changed (ptxas: 48 spilled bytes, not 32).
        k = tl.program_id(2).to(tl.int64)
        m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # input pixel over (n, iy, ix)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        m_ok = m < N * H * W
        c_ok = c < C
        n = (m // (H * W)).to(tl.int64)
        iy = (m % (H * W)) // W
        ix = m % W
        # The bordered pixel (iy + 2, ix + 2): conv output (iy + 1, ix + 1), tap (0, 0)'s.
        centre = ((k * N + n) * (H + 2) + iy + 2) * (W + 2) + ix + 2
        acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
        for tap in range(9):
            row = centre - (tap // 3) * (W + 2) - tap % 3
            for c0 in tl.static_range(0, CO, BLOCK_R):
                co = c0 + tl.arange(0, BLOCK_R)
                gz = tl.load(gz_ptr + row[:, None] * CO + co[None, :], mask=m_ok[:, None] & (co < CO)[None, :],
                             other=0.0)
                wv = tl.load(w_ptr + ((k * 9 + tap) * CO + co[:, None]) * C + c[None, :],
                             mask=(co < CO)[:, None] & c_ok[None, :], other=0.0)
                acc = tl.dot(gz, wv, acc, input_precision=PRECISION)
        off = ((k * N + n)[:, None] * C + c[None, :]) * (H * W) + (iy * W + ix)[:, None]
        tl.store(dx_ptr + off, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & c_ok[None, :])

    @triton.jit
    def _bordered_pixel_slice(k, j0, N, H: tl.constexpr, W: tl.constexpr, BLOCK_S: tl.constexpr):
        """BLOCK_S conv pixels j0.. over (n, oy, ox) of run k's pooled area: their mask and the
        bordered pixel (oy, ox), tap (0, 0)'s input pixel, in (K, N, H+2, W+2) order."""
        PH: tl.constexpr = H // 2
        PW: tl.constexpr = W // 2
        j = j0 + tl.arange(0, BLOCK_S)
        j_ok = j < N * (2 * PH) * (2 * PW)
        n = (j // (4 * PH * PW)).to(tl.int64)
        oy = (j % (4 * PH * PW)) // (2 * PW)
        ox = j % (2 * PW)
        return j_ok, ((k * N + n) * (H + 2) + oy) * (W + 2) + ox

    @triton.jit
    def _wgrad_kernel_gcl(gz_ptr, x_ptr, dw_ptr, N, SPLIT, PIXELS_PER_SPLIT,
                          H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, CO: tl.constexpr,
                          BLOCK_CO: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, PRECISION: tl.constexpr):
        """_wgrad_kernel on the unpooled gradient gz (K, N, H+2, W+2, CO) and a bordered
        channels-last input x (K, N, H+2, W+2, C), both contiguous: every load a row of
        adjacent channels of one bordered pixel, no border masks. The same partial sums of dw
        over the same pixel slices, reduction tiles as in _wgrad_kernel; db comes from the
        unpooling (_unpool_kernel sums what it stores). The
        image size is a compile-time constant: the pixel index's divisions become
        multiplications."""
        k, s, co, co_ok, r = _wgrad_program(SPLIT, CO, BLOCK_CO, BLOCK_R)
        if C % BLOCK_R == 0:  # the slice is one tap's BLOCK_R adjacent channels: contiguous
            # Written so that the compiler sees the offsets are multiples of BLOCK_R (aligned
            # vector loads); (pid * BLOCK_R) % C hides that.
            tap = tl.program_id(1) // (C // BLOCK_R)
            r_ok = r < 9 * C
            x_col = ((tap // 3) * (W + 2) + tap % 3) * C + (tl.program_id(1) % (C // BLOCK_R)) * BLOCK_R \
                + tl.arange(0, BLOCK_R)
        else:
            r_ok, ci, ty, tx = _taps(r, C)
            x_col = (ty * (W + 2) + tx) * C + ci
        acc = tl.zeros((BLOCK_CO, BLOCK_R), dtype=tl.float32)
        for j0 in range(s * PIXELS_PER_SPLIT, (s + 1) * PIXELS_PER_SPLIT, BLOCK_S):
            j_ok, corner = _bordered_pixel_slice(k, j0, N, H, W, BLOCK_S)
            # (pixels, channels) as stored, transposed for the product. A channel mask only where
            # the tile overhangs CO: a mask that varies along a row stops vectorised loads.
            gz_ok = j_ok[:, None] & co_ok[None, :] if CO % BLOCK_CO else j_ok[:, None]
            gz = tl.load(gz_ptr + (corner + W + 3)[:, None] * CO + co[None, :], mask=gz_ok, other=0.0)
            xv = tl.load(x_ptr + corner[:, None] * C + x_col[None, :], mask=j_ok[:, None] & r_ok[None, :], other=0.0)
            acc = tl.dot(tl.trans(gz), xv, acc, input_precision=PRECISION)
        part = (k * SPLIT + s) * CO + co
        tl.store(dw_ptr + part[:, None] * (9 * C) + r[None, :], acc, mask=co_ok[:, None] & r_ok[None, :])

    @triton.jit
    def _wgrad_kernel_gcl_row(gz_ptr, x_ptr, dw_ptr, N, SPLIT, PIXELS_PER_SPLIT,
                              H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, CO: tl.constexpr,
                              BLOCK_CO: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
                              TAPS: tl.constexpr, PRECISION: tl.constexpr):
        """_wgrad_kernel_gcl where C % BLOCK_R == 0, with a kernel row's three taps (TAPS = 3)
        in one program: each tile of the unpooled gradient, loaded and transposed once, meets
        the three input tiles one pixel apart, instead of being loaded by three programs.
        Each (co, r) partial sum is the same dot products over the same pixel slices, in the
        same order: equal to _wgrad_kernel_gcl's to the bit."""
        k, s, co, co_ok, _ = _wgrad_program(SPLIT, CO, BLOCK_CO, BLOCK_R)
        ty = tl.program_id(1) // (C // BLOCK_R)  # the kernel row
        c0 = (tl.program_id(1) % (C // BLOCK_R)) * BLOCK_R
        x_col = ty * (W + 2) * C + c0 + tl.arange(0, BLOCK_R)  # tap (ty, 0)'s channels c0 + [0, BLOCK_R)
        acc0 = tl.zeros((BLOCK_CO, BLOCK_R), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK_CO, BLOCK_R), dtype=tl.float32)
        acc2 = tl.zeros((BLOCK_CO, BLOCK_R), dtype=tl.float32)
        for j0 in range(s * PIXELS_PER_SPLIT, (s + 1) * PIXELS_PER_SPLIT, BLOCK_S):
            j_ok, corner = _bordered_pixel_slice(k, j0, N, H, W, BLOCK_S)
            gz_ok = j_ok[:, None] & co_ok[None, :] if CO % BLOCK_CO else j_ok[:, None]
            gz = tl.trans(tl.load(gz_ptr + (corner + W + 3)[:, None] * CO + co[None, :], mask=gz_ok, other=0.0))
            x_at = x_ptr + corner[:, None] * C + x_col[None, :]
            acc0 = tl.dot(gz, tl.load(x_at, mask=j_ok[:, None], other=0.0), acc0, input_precision=PRECISION)
            acc1 = tl.dot(gz, tl.load(x_at + C, mask=j_ok[:, None], other=0.0), acc1, input_precision=PRECISION)
            acc2 = tl.dot(gz, tl.load(x_at + 2 * C, mask=j_ok[:, None], other=0.0), acc2, input_precision=PRECISION)
        # r = tap * C + channel, tap = 3 * ty + tx
        dst = dw_ptr + ((k * SPLIT + s) * CO + co)[:, None] * (9 * C) + (3 * ty * C + c0 + tl.arange(0, BLOCK_R))[None, :]
        tl.store(dst, acc0, mask=co_ok[:, None])
        tl.store(dst + C, acc1, mask=co_ok[:, None])
        tl.store(dst + 2 * C, acc2, mask=co_ok[:, None])

    @triton.jit
    def _tap_product(acc, g, x_ptr, at, ok, tap: tl.constexpr, W: tl.constexpr):
        """acc + g * the input at tap `tap` of the bordered pixels `at` (their tap (0, 0))."""
        xv = tl.load(x_ptr + at + (tap // 3) * (W + 2) + tap % 3, mask=ok, other=0.0)
        return acc + g * xv.to(tl.float32)

    @triton.jit
    def _wgrad_kernel_pooled(gy_ptr, code_ptr, x_ptr, dw_ptr, db_ptr, N, SPLIT, PIXELS_PER_SPLIT,
                             H: tl.constexpr, W: tl.constexpr, CO: tl.constexpr,
                             BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr):
        """The weight gradient of a layer with one input channel, reduced over the pooled
        pixels: each output gradient gy reaches only its window's argmax conv pixel, and
        none where ReLU zeroed the window (_relu_coded), so dw[co, tap] = sum over the live
        pooled pixels of gy * x[argmax + tap], a gather from the bordered input x (K, N,
        H+2, W+2), and db[co] the sum of their gy. No unpooled array, no zeros multiplied:
        a quarter of the conv pixels, the dead windows' loads skipped. Partial sums over
        PIXELS_PER_SPLIT pooled pixels, as (K, SPLIT, CO, 9) and (K, SPLIT, CO) fp32, summed
        over the tile's pixels once, after the loop. Products in fp32 FMA, not a matrix
        product: its reduction would be 9 long."""
        PH: tl.constexpr = H // 2
        PW: tl.constexpr = W // 2
        k, s, co, co_ok, _ = _wgrad_program(SPLIT, CO, BLOCK_CO, 16)  # no reduction tiles: r unused
        acc0 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc2 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc3 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc4 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc5 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc6 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc7 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc8 = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        acc_b = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        # Offsets within run k's arrays, in 32 bits: address arithmetic at half the
        # instructions of 64-bit offsets (a run's arrays hold < 2^31 elements).
        gy_run = gy_ptr + k * N * CO * (PH * PW)
        code_run = code_ptr + k * N * CO * (PH * PW)
        x_run = x_ptr + k * N * (H + 2) * (W + 2)
        for p0 in range(s * PIXELS_PER_SPLIT, (s + 1) * PIXELS_PER_SPLIT, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)  # pooled pixel over (n, py, px)
            p_ok = p < N * PH * PW
            n = p // (PH * PW)
            rem = p % (PH * PW)
            ok = p_ok[:, None] & co_ok[None, :]
            off = (n[:, None] * CO + co[None, :]) * (PH * PW) + rem[:, None]
            q = tl.load(code_run + off, mask=ok, other=4).to(tl.uint32)  # the argmax, row-major in the window
            live = ok & (q < 4)  # ReLU passed the window (_relu_coded): the others add nothing
            g = tl.load(gy_run + off, mask=live, other=0.0).to(tl.float32)
            acc_b += g
            # The argmax conv pixel (2 py + q // 2, 2 px + q % 2); its tap (0, 0) reads the
            # bordered pixel of the same coordinates.
            window = (n * (H + 2) + 2 * (rem // PW)) * (W + 2) + 2 * (rem % PW)
            at = window[:, None] + ((q >> 1) * (W + 2) + (q & 1)).to(tl.int32)
            acc0 = _tap_product(acc0, g, x_run, at, live, 0, W)
            acc1 = _tap_product(acc1, g, x_run, at, live, 1, W)
            acc2 = _tap_product(acc2, g, x_run, at, live, 2, W)
            acc3 = _tap_product(acc3, g, x_run, at, live, 3, W)
            acc4 = _tap_product(acc4, g, x_run, at, live, 4, W)
            acc5 = _tap_product(acc5, g, x_run, at, live, 5, W)
            acc6 = _tap_product(acc6, g, x_run, at, live, 6, W)
            acc7 = _tap_product(acc7, g, x_run, at, live, 7, W)
            acc8 = _tap_product(acc8, g, x_run, at, live, 8, W)
        dst = dw_ptr + ((k * SPLIT + s) * CO + co) * 9
        tl.store(dst + 0, tl.sum(acc0, axis=0), mask=co_ok)
        tl.store(dst + 1, tl.sum(acc1, axis=0), mask=co_ok)
        tl.store(dst + 2, tl.sum(acc2, axis=0), mask=co_ok)
        tl.store(dst + 3, tl.sum(acc3, axis=0), mask=co_ok)
        tl.store(dst + 4, tl.sum(acc4, axis=0), mask=co_ok)
        tl.store(dst + 5, tl.sum(acc5, axis=0), mask=co_ok)
        tl.store(dst + 6, tl.sum(acc6, axis=0), mask=co_ok)
        tl.store(dst + 7, tl.sum(acc7, axis=0), mask=co_ok)
        tl.store(dst + 8, tl.sum(acc8, axis=0), mask=co_ok)
        tl.store(db_ptr + (k * SPLIT + s) * CO + co, tl.sum(acc_b, axis=0), mask=co_ok)


def _tile(n: int, cap: int = 64) -> int:
    return max(16, min(cap, triton.next_power_of_2(n)))


def _reduction_tile(channels: int) -> int:
    # A single input channel (the first layer) has 9 products per output: a 32-wide slice
    # would be 72% padding.
    return 16 if 9 * channels <= 16 else BLOCK_R


def _precision(dtype: torch.dtype) -> str:
    # fp32 convolutions follow cuDNN's setting (TF32 by default on Ampere and later).
    return "tf32" if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 else "ieee"


def _triton_forward(x, weight, bias):
    """(y, code, the bordered input kept for the backward pass or None)."""
    K, N, C, H, W = x.shape
    CO = weight.shape[1]
    PH, PW = H // 2, W // 2
    y = torch.empty(K, N, CO, PH, PW, device=x.device, dtype=x.dtype)
    code = torch.empty(K, N, CO, PH, PW, device=x.device, dtype=torch.int8)
    launches = _launches(C, CO, _precision(x.dtype), H, W)
    kernel, tiles_, warps = launches["fwd"]
    grid = _grid("fwd", tiles_, K, N, C, H, W, CO)
    if kernel is _fwd_kernel_b:
        w_cl = weight.permute(0, 3, 4, 2, 1).contiguous()  # (K, 3, 3, C, CO)
        x_bordered = _bordered_channels_last(x)
        kernel[grid](x_bordered, w_cl, bias, y, code, N, CO, *bias.stride(), **tiles_, num_warps=warps)
        return y, code, x_bordered if _wgrad_reads_bordered_input(launches["wgrad"][0]) else None
    if kernel is _fwd_kernel_cl:
        x_cl = x.permute(0, 1, 3, 4, 2).contiguous()  # (K, N, H, W, C)
        w_cl = weight.permute(0, 3, 4, 2, 1).contiguous()  # (K, 3, 3, C, CO)
        kernel[grid](x_cl, w_cl, bias, y, code, N, H, W, CO, PH, PW, x_cl.stride(0), x_cl.stride(1), x_cl.stride(2),
                     x_cl.stride(3), *bias.stride(), **tiles_, num_warps=warps)
        return y, code, None
    kernel[grid](x, weight, bias, y, code, N, C, H, W, CO, PH, PW, *x.stride(), *weight.stride(), *bias.stride(),
                 **tiles_, num_warps=warps)
    return y, code, None


def _wgrad_reads_bordered_input(wgrad_kernel) -> bool:
    """Whether a weight-gradient kernel reads the input as _fwd_kernel_b does (bordered,
    channels-last, in the data's dtype): then the forward's copy is kept for it (B=1 with
    G=1), instead of the backward pass making it again: for the 32 -> 64 layer at 128 runs
    x 512 examples in bf16, 1.07 GB written (128 x 512 x 16 x 16 x 32 x 2 bytes) and 0.82 GB
    read a step, and one launch of the copy."""
    return wgrad_kernel in (_wgrad_kernel_gcl, _wgrad_kernel_gcl_row)


def _triton_backward(grad_y, code, x, weight, need_dx: bool, x_bordered=None):
    """(dx, dw, db), or (dw, db) without need_dx. x_bordered: the forward's bordered copy of
    x where it kept one (_triton_forward)."""
    K, N, C, H, W = x.shape
    CO = weight.shape[1]
    PH, PW = H // 2, W // 2
    # grad_y as it comes: the code masks ReLU's zeros (_relu_coded), so no masked copy.
    gy, code = grad_y.contiguous(), code.contiguous()
    launches = _launches(C, CO, _precision(x.dtype), H, W)
    kernel, tiles_, warps = launches["wgrad"]
    split, per_split = _wgrad_split(*_wgrad_reduction(tiles_, N, H, W))
    dw_part = torch.empty(K, split, CO, 9 * C, device=x.device, dtype=torch.float32)
    grid = _grid("wgrad", tiles_, K, N, C, H, W, CO)
    if "unpool" in _launched(launches, need_dx):  # GRAD_CL: the gradient unpooled once, channels-last
        gz = _zero_border(torch.empty(K, N, H + 2, W + 2, CO, device=x.device, dtype=x.dtype), 2 * PH, 2 * PW)
        unpool, unpool_tiles, unpool_warps = launches["unpool"]
        unpool_grid = _grid("unpool", unpool_tiles, K, N, C, H, W, CO)
        db_unpooled = torch.empty(K, unpool_grid[0], CO, device=x.device, dtype=torch.float32)
        unpool[unpool_grid](gy, code, gz, db_unpooled, N, CO, **unpool_tiles, num_warps=unpool_warps)
    if _wgrad_reads_bordered_input(kernel):  # db from the unpooling
        if x_bordered is None:
            x_bordered = _bordered_channels_last(x)
        kernel[grid](gz, x_bordered, dw_part, N, split, per_split, **tiles_, num_warps=warps)
        db_part = db_unpooled
    else:  # the other kernels sum db beside dw
        db_part = torch.empty(K, split, CO, device=x.device, dtype=torch.float32)
        if kernel is _wgrad_kernel_pooled:  # the gathered input in fp32 (exact): no conversion per product
            kernel[grid](gy, code, _bordered_channels_last(x, torch.float32), dw_part, db_part, N, split, per_split,
                         **tiles_, num_warps=warps)
        elif kernel is _wgrad_kernel_cl:
            x_cl = x.permute(0, 1, 3, 4, 2).contiguous()  # (K, N, H, W, C)
            kernel[grid](gy, code, x_cl, dw_part, db_part, N, H, W, CO, PH, PW, split, per_split, x_cl.stride(0),
                         x_cl.stride(1), x_cl.stride(2), x_cl.stride(3), **tiles_, num_warps=warps)
        else:
            kernel[grid](gy, code, x, dw_part, db_part, N, C, H, W, CO, PH, PW, split, per_split, *x.stride(),
                         **tiles_, num_warps=warps)
    # Fixed-order sums of the partials: deterministic, unlike atomics.
    dw = dw_part.sum(1).view(K, CO, 3, 3, C).permute(0, 1, 4, 2, 3).to(weight.dtype)
    db = db_part.sum(1).to(weight.dtype)
    if not need_dx:
        return dw, db
    dx = torch.empty(K, N, C, H, W, device=x.device, dtype=x.dtype)
    kernel, tiles_, warps = launches["dgrad"]
    grid = _grid("dgrad", tiles_, K, N, C, H, W, CO)
    if kernel is _dgrad_kernel_gcl:
        w_cl = weight.permute(0, 3, 4, 1, 2).contiguous()  # (K, 3, 3, CO, C)
        kernel[grid](gz, w_cl, dx, N, C, **tiles_, num_warps=warps)
    else:
        kernel[grid](gy, code, weight, dx, N, C, H, W, CO, PH, PW, *weight.stride(), **tiles_, num_warps=warps)
    return dx, dw, db


def _bordered_channels_last(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(K, N, C, H, W) -> (K, N, H+2, W+2, C), contiguous, with a zero border one pixel wide:
    the conv's padding, so that the kernels reading it need no border masks. In x's dtype
    unless another is given."""
    K, N, C, H, W = x.shape
    out = _zero_border(x.new_empty(K, N, H + 2, W + 2, C, dtype=dtype), H, W)
    out[:, :, 1 : H + 1, 1 : W + 1] = x.permute(0, 1, 3, 4, 2)
    return out


def _zero_border(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Zeroes t (K, N, R, S, C) outside rows 1..rows and columns 1..cols, in place: the part
    that the writes which follow leave alone. Zeroing the whole array first would write its
    bytes twice (3.8 GB for the first layer's gradient at 128 runs x 512 examples)."""
    t[:, :, :1] = 0
    t[:, :, rows + 1 :] = 0
    t[:, :, :, :1] = 0
    t[:, :, :, cols + 1 :] = 0
    return t


def _grid(name: str, tiles_: dict, K: int, N: int, C: int, H: int, W: int, CO: int) -> tuple[int, int, int]:
    """The launch grid of one kernel (by its _launches name) for K runs of N examples."""
    PH, PW = H // 2, W // 2
    if name in ("fwd", "unpool"):  # a program per BLOCK_P pooled pixels x BLOCK_CO channels
        return triton.cdiv(N * PH * PW, tiles_["BLOCK_P"]), triton.cdiv(CO, tiles_["BLOCK_CO"]), K
    if name == "wgrad":
        split, _ = _wgrad_split(*_wgrad_reduction(tiles_, N, H, W))
        # a program per BLOCK_R reduction indices (TAPS taps of them in _wgrad_kernel_gcl_row)
        r_tiles = triton.cdiv(9 * C, tiles_.get("BLOCK_R", 9 * C)) // tiles_.get("TAPS", 1)
        return triton.cdiv(CO, tiles_["BLOCK_CO"]), r_tiles, K * split
    if name == "dgrad":
        return triton.cdiv(N * H * W, tiles_["BLOCK_M"]), triton.cdiv(C, tiles_["BLOCK_C"]), K
    raise ValueError(f"no kernel named {name!r}")


def _wgrad_reduction(tiles_: dict, N: int, H: int, W: int) -> tuple[int, int]:
    """(pixels one run's weight gradient reduces over, pixels a loop trip takes):
    _wgrad_kernel_pooled (tiled by BLOCK_P) reduces over the pooled pixels, the others over
    the conv pixels of the pooled area."""
    if "BLOCK_P" in tiles_:
        return N * (H // 2) * (W // 2), tiles_["BLOCK_P"]
    return N * 4 * (H // 2) * (W // 2), tiles_["BLOCK_S"]


def _launched(launches: dict, need_dx: bool) -> list[str]:
    """The kernels (by _launches name) a backward pass launches for one layer: the input
    gradient only where the input takes one, the unpooling only where a kernel reads it."""
    names = ["wgrad", "dgrad"] if need_dx else ["wgrad"]
    readers = (_wgrad_kernel_gcl, _wgrad_kernel_gcl_row, _dgrad_kernel_gcl)  # of the unpooled gradient
    if "unpool" in launches and any(launches[n][0] in readers for n in names):
        names.insert(0, "unpool")
    return names


def _wgrad_split(n_pix: int, block_s: int) -> tuple[int, int]:
    """(programs sharing one run's pixel reduction, pixels each: a multiple of block_s)."""
    split = max(1, min(MAX_SPLIT, triton.cdiv(n_pix, WGRAD_PIXELS_PER_SPLIT)))
    return split, triton.cdiv(triton.cdiv(n_pix, split), block_s) * block_s


def _launches(C: int, CO: int, precision: str, H: int, W: int) -> dict:
    """kernel name -> (kernel, its compile-time arguments, warps) for one C -> CO layer at the
    current tiles: what the launches above use, and what sass_cost.compile_report compiles. With
    BORDERED_FORWARD the forward is _fwd_kernel_b; with GRAD_CL an "unpool" kernel runs
    before the _gcl weight and input gradients; with ARGMAX_WGRAD a one-channel layer's weight
    gradient is _wgrad_kernel_pooled."""
    block_r = _reduction_tile(C)
    channels_last = bool(CHANNELS_LAST) and C % block_r == 0
    out = {
        "fwd": (_fwd_kernel_cl, dict(C=C, BLOCK_P=BLOCK_P, BLOCK_CO=_tile(CO), BLOCK_R=block_r, PRECISION=precision),
                NUM_WARPS) if channels_last else
               (_fwd_kernel, dict(BLOCK_P=BLOCK_P, BLOCK_CO=_tile(CO), BLOCK_R=block_r, PRECISION=precision), NUM_WARPS),
        "wgrad": (_wgrad_kernel_cl, dict(C=C, BLOCK_CO=_tile(CO), BLOCK_R=block_r, BLOCK_S=BLOCK_S, PRECISION=precision),
                  NUM_WARPS) if channels_last else
                 (_wgrad_kernel, dict(BLOCK_CO=_tile(CO), BLOCK_R=block_r, BLOCK_S=BLOCK_S, PRECISION=precision), NUM_WARPS),
        "dgrad": (_dgrad_kernel, dict(BLOCK_M=BLOCK_M, BLOCK_C=_tile(C), BLOCK_R=_reduction_tile(CO), PRECISION=precision),
                  NUM_WARPS),
    }
    if BORDERED_FORWARD:
        out["fwd"] = (_fwd_kernel_b, dict(H=H, W=W, C=C, BLOCK_P=BLOCK_P, BLOCK_CO=_tile(CO), BLOCK_R=block_r,
                                          PRECISION=precision), NUM_WARPS)
    if GRAD_CL:
        # Not a matrix product: 4 warps, a forward program's pooled pixels. Every kernel on
        # the gradient array is compiled for the image size (a few sizes a model).
        out["unpool"] = (_unpool_kernel, dict(H=H, W=W, BLOCK_P=BLOCK_P, BLOCK_CO=_tile(CO)), 4)
        out["wgrad"] = (_wgrad_kernel_gcl, dict(H=H, W=W, C=C, CO=CO, BLOCK_CO=_tile(CO), BLOCK_R=block_r,
                                                BLOCK_S=BLOCK_S, PRECISION=precision), NUM_WARPS)
        out["dgrad"] = (_dgrad_kernel_gcl, dict(H=H, W=W, CO=CO, BLOCK_M=BLOCK_M, BLOCK_C=_tile(C),
                                                BLOCK_R=_reduction_tile(CO), PRECISION=precision), NUM_WARPS)
    if GRAD_CL and ROW_WGRAD and C % block_r == 0:
        out["wgrad"] = (_wgrad_kernel_gcl_row, {**out["wgrad"][1], "TAPS": 3}, NUM_WARPS)
    if ARGMAX_WGRAD and C == 1:
        out["wgrad"] = (_wgrad_kernel_pooled, dict(H=H, W=W, CO=CO, BLOCK_P=BLOCK_P, BLOCK_CO=_tile(CO)), NUM_WARPS)
    return out


BACKENDS = {"torch": (_torch_forward, _torch_backward)}
if HAS_TRITON:
    BACKENDS["triton"] = (_triton_forward, _triton_backward)


def available(device: torch.device) -> bool:
    """Whether the Triton kernels can run on `device`: a CUDA device, or any device under
    Triton's interpreter (TRITON_INTERPRET=1; slow, for tests)."""
    return "triton" in BACKENDS and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


# ---------------------------------------------------------------- autograd + vmap plumbing
def _population(t: torch.Tensor, dim: int | None, K: int) -> torch.Tensor:
    """The run axis first; an input shared by all runs is broadcast without a copy."""
    return t.expand(K, *t.shape) if dim is None else t.movedim(dim, 0)


class _ConvReluPool(torch.autograd.Function):
    """Outputs (y, code, kept): kept is what the backend's forward keeps for the backward
    pass beyond x (the Triton one's bordered input, _triton_forward), or None."""

    @staticmethod
    def forward(x, weight, bias, backend):
        y, code, kept = BACKENDS[backend][0](x[None], weight[None], bias[None])
        return y[0], code[0], None if kept is None else kept[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, backend = inputs
        _, code, kept = output
        ctx.save_for_backward(x, weight, code, kept)
        ctx.mark_non_differentiable(*(t for t in (code, kept) if t is not None))
        ctx.backend = backend

    @staticmethod
    def backward(ctx, grad_y, _grad_code, _grad_kept):
        x, weight, code, kept = ctx.saved_tensors
        need_dx = ctx.needs_input_grad[0]
        grads = _ConvReluPoolBackward.apply(grad_y, code, x, weight, kept, need_dx, ctx.backend)
        return (*grads, None) if need_dx else (None, *grads, None)

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, backend):
        K = info.batch_size
        y, code, kept = BACKENDS[backend][0](*(_population(t, d, K) for t, d in zip((x, weight, bias), in_dims[:3])))
        return (y, code, kept), (0, 0, None if kept is None else 0)


class _ConvReluPoolBackward(torch.autograd.Function):
    """The backward pass as its own Function, so that under vmap it, too, reaches the
    backend once for the whole population. Not differentiable (no double backward)."""

    @staticmethod
    def forward(grad_y, code, x, weight, kept, need_dx, backend):
        kept = None if kept is None else kept[None]
        grads = BACKENDS[backend][1](grad_y[None], code[None], x[None], weight[None], need_dx, kept)
        return tuple(g[0] for g in grads)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("conv_relu_pool has no second derivative")

    @staticmethod
    def vmap(info, in_dims, grad_y, code, x, weight, kept, need_dx, backend):
        K = info.batch_size
        grad_y, code, x, weight = (_population(t, d, K) for t, d in zip((grad_y, code, x, weight), in_dims[:4]))
        kept = None if kept is None else _population(kept, in_dims[4], K)
        grads = BACKENDS[backend][1](grad_y, code, x, weight, need_dx, kept)
        return grads, tuple(0 for _ in grads)


def conv_relu_pool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, backend: str = "triton") -> torch.Tensor:
    """max_pool2d(relu(conv2d(x, weight, bias, padding=1)), 2) for x (N, C, H, W), weight
    (CO, C, 3, 3), bias (CO,), in one fused pass (see the module's docstring). Under
    autocast the inputs are cast to its dtype first, as F.conv2d's would be."""
    if backend not in BACKENDS:
        raise ValueError(f"conv_relu_pool backend {backend!r} is not available here (have: {sorted(BACKENDS)})")
    x, weight, bias = autocast_operands(x, weight, bias)
    with torch.autocast(x.device.type, enabled=False):  # the torch backend's ops keep the dtype given
        return _ConvReluPool.apply(x, weight, bias, backend)[0]


# The engine finds these kernels through the models' registry (models.FUSED_CONV). Looked up
# by name at each call, so that what this module holds then (a tile experiment's or a test's
# replacement) is what runs.
register_fused_conv("triton", FusedConv(lambda *args, **kw: conv_relu_pool(*args, **kw),
                                        lambda device: available(device), lambda: current_tiles()))
