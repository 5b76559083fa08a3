"""Memory safety of the fused Triton kernels (tunebench.kernels.fused_conv), checked in Triton's
interpreter: every load and store a kernel makes, on every lane its mask lets through,
must fall inside one of the arrays its launch was passed, and every array a kernel reads
must have been written first.

Why: the kernel variants (tiles G, B, A and T, all four on by default) have run on a GPU
in one cut-short call only, and a GPU session is short (scripts/gpu_check.sh). An address
outside its array is, on a GPU, an "illegal memory access" that ends the CUDA context and
every row timed after it; or a silent read of another array's bytes, which an equality
test misses wherever the value is masked away afterwards. The interpreter runs the same kernel code on the CPU, lane by
lane, so each address can be checked there: the closest a CPU gets to compute-sanitizer's
memcheck. Uninitialised memory (torch.empty) is filled with NaN (integers: 127, no window
code) for the check, so a read of an element nobody wrote shows up in the results.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

from tunebench.kernels import fused_conv as fused_conv

pytestmark = pytest.mark.skipif(
    "triton" not in fused_conv.BACKENDS or os.environ.get("TRITON_INTERPRET") != "1",
    reason="addresses are checked in Triton's interpreter (CPU runs); on CUDA the kernels compile")

if "triton" in fused_conv.BACKENDS and os.environ.get("TRITON_INTERPRET") == "1":
    import triton
    import triton.language as tl
    from triton.runtime import interpreter


@dataclass
class Access:
    kernel: str
    op: str  # "load" or "store"
    address: int
    nearest: str  # the argument whose extent is closest, and how far outside it (bytes)


@dataclass
class MemoryCheck:
    """What the hooks saw: per kernel the masked-on loads and stores, and those outside
    every array argument of their launch."""
    accesses: dict[str, int] = field(default_factory=dict)
    violations: list[Access] = field(default_factory=list)
    kernel: str = ""
    extents: list[tuple[int, int, str]] = field(default_factory=list)  # (first byte, end byte, argument)

    def check(self, op: str, ptrs, mask, itemsize: int) -> None:
        addresses = np.asarray(ptrs, dtype=np.uint64)
        on = np.broadcast_to(np.asarray(mask, dtype=bool), addresses.shape)
        addresses = addresses[on].astype(np.int64)  # host addresses fit in 63 bits
        self.accesses[self.kernel] = self.accesses.get(self.kernel, 0) + addresses.size
        if addresses.size == 0:
            return
        inside = np.zeros(addresses.shape, dtype=bool)
        for first, end, _ in self.extents:
            inside |= (addresses >= first) & (addresses + itemsize <= end) & ((addresses - first) % itemsize == 0)
        for address in np.unique(addresses[~inside])[:8].tolist():  # a few per access suffice to name the bug
            def outside(extent):
                first, end, _ = extent
                return first - address if address < first else address + itemsize - end
            name = min(self.extents, key=outside)
            self.violations.append(Access(self.kernel, op, address, f"{name[2]} ({outside(name):+d} B)"))


def extent(t: torch.Tensor) -> tuple[int, int]:
    """The bytes a tensor's elements span: [data_ptr, data_ptr + (1 + sum((size-1) x stride)) x itemsize)."""
    if t.numel() == 0:
        return t.data_ptr(), t.data_ptr()
    assert min(t.stride()) >= 0
    span = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + span * t.element_size()


SENTINELS = {torch.int8: 127, torch.int32: 2**31 - 1, torch.int64: 2**62}  # floats: NaN


def filled(t: torch.Tensor) -> torch.Tensor:
    return t.fill_(float("nan") if t.is_floating_point() else SENTINELS.get(t.dtype, 0))


@contextlib.contextmanager
def memory_check():
    """Checks every interpreted launch's loads and stores against its tensor arguments, and
    makes torch.empty / Tensor.new_empty return NaN-filled memory, for the duration."""
    seen = MemoryCheck()
    call, load, store = interpreter.GridExecutor.__call__, interpreter.InterpreterBuilder.create_masked_load, \
        interpreter.InterpreterBuilder.create_masked_store
    empty, new_empty = torch.empty, torch.Tensor.new_empty

    def launch(self, *args, **kwargs):
        named = {**dict(zip(self.arg_names, args)), **kwargs}
        seen.kernel = self.fn.__name__
        seen.extents = [(*extent(v), k) for k, v in named.items() if isinstance(v, torch.Tensor)]
        try:
            return call(self, *args, **kwargs)
        finally:
            seen.kernel, seen.extents = "", []

    def masked_load(self, ptrs, mask, other, *rest):
        seen.check("load", ptrs.data, mask.data, ptrs.get_element_ty().primitive_bitwidth // 8)
        return load(self, ptrs, mask, other, *rest)

    def masked_store(self, ptrs, value, mask, *rest):
        seen.check("store", ptrs.data, mask.data, ptrs.get_element_ty().primitive_bitwidth // 8)
        return store(self, ptrs, value, mask, *rest)

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(interpreter.GridExecutor, "__call__", launch)
        mp.setattr(interpreter.InterpreterBuilder, "create_masked_load", masked_load)
        mp.setattr(interpreter.InterpreterBuilder, "create_masked_store", masked_store)
        mp.setattr(torch, "empty", lambda *a, **kw: filled(empty(*a, **kw)))
        mp.setattr(torch.Tensor, "new_empty", lambda self, *a, **kw: filled(new_empty(self, *a, **kw)))
        yield seen
    finally:
        mp.undo()


if "triton" in fused_conv.BACKENDS and os.environ.get("TRITON_INTERPRET") == "1":
    @triton.jit
    def _copy_one_too_many(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        """A planted bug for the checker: reads x[n] (one past the end) and drops it."""
        i = tl.arange(0, BLOCK)
        v = tl.load(x_ptr + i, mask=i <= n, other=0.0)
        tl.store(y_ptr + i, v, mask=i < n)


def test_the_check_catches_a_read_one_element_past_the_end():
    """The checker can fail: a kernel whose result is right (the extra element is never
    stored) but which reads 4 bytes past its input, exactly what an equality test misses."""
    x, y = torch.arange(5.0), torch.zeros(5)
    with memory_check() as seen:
        _copy_one_too_many[(1,)](x, y, 5, BLOCK=8)
    assert torch.equal(y, x)
    assert seen.accesses == {"_copy_one_too_many": 6 + 5}
    assert [(a.kernel, a.op, a.address - x.data_ptr()) for a in seen.violations] == [("_copy_one_too_many", "load", 20)]
    assert seen.violations[0].nearest == "x_ptr (+4 B)"


def test_the_check_fills_uninitialised_memory():
    with memory_check():
        assert torch.isnan(torch.empty(3)).all() and (torch.empty(2, dtype=torch.int8) == 127).all()
        assert torch.isnan(torch.zeros(1).new_empty(4)).all()
    assert torch.empty(0).numel() == 0  # restored


# Every kernel and layout the tile flags select, each flag on its own from the gathering
# kernels (fused_conv.GATHERING) as well as the defaults (all four on), and the tile sizes that
# move the masked edges (a 64-pixel forward tile, 16-wide reduction slices):
# (K runs, N, C, CO, H, W).
_G0 = fused_conv.GATHERING
TILE_SETS = [{}, {"P": 64}, {"R": 16}, _G0, {**_G0, "L": 1}, {**_G0, "B": 1}, {**_G0, "G": 1},
             {**_G0, "G": 1, "B": 1}, {**_G0, "A": 1}, {**_G0, "G": 1, "B": 1, "A": 1}, {**_G0, "G": 1, "T": 1},
             {**_G0, "P": 64}, {**_G0, "R": 16}]
SHAPES = [(2, 3, 1, 5, 7, 6), (2, 2, 32, 24, 5, 7), (2, 2, 20, 40, 6, 5)]


def label(tile_set: dict) -> str:
    """"default" plus what differs from it; from the gathering kernels: "gathering" plus the
    flags switched on again."""
    base = "gathering" if set(_G0) <= set(tile_set) else "default"
    rest = [f"{k}{v}" for k, v in tile_set.items() if not (base == "gathering" and k in _G0 and v == 0)]
    return "-".join([base, *rest])


@pytest.mark.parametrize("shape", SHAPES, ids=["C1-CO5-odd-size", "C32-CO24-odd-size", "C20-CO40-odd-width"])
@pytest.mark.parametrize("tile_set", TILE_SETS, ids=label)
def test_kernels_stay_inside_their_arrays(tile_set, shape, monkeypatch):
    """Forward and backward (with and without the input's gradient) of one layer, the pixel
    reduction split over programs as on a GPU: no load or store outside the launch's
    arrays, every launched kernel checked, and the results (from NaN-filled scratch
    memory) equal the torch backend's."""
    monkeypatch.setattr(fused_conv, "WGRAD_PIXELS_PER_SPLIT", 16)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # "ieee" kernels: exact fp32, as the reference
    K, N, C, CO, H, W = shape
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(K, N, C, H, W, generator=g), torch.randn(K, CO, C, 3, 3, generator=g) / (3 * C**0.5)
    b, v = torch.randn(K, CO, generator=g), torch.randn(K, N, CO, H // 2, W // 2, generator=g)
    y_ref, code_ref, _ = fused_conv._torch_forward(x, w, b)
    grads_ref = fused_conv._torch_backward(v, code_ref, x, w, need_dx=True)
    with fused_conv.tiles(**tile_set):
        launches = fused_conv._launches(C, CO, "ieee", H, W)
        with memory_check() as seen:
            y, code, kept = fused_conv._triton_forward(x, w, b)  # kept: B=1 with G=1's bordered input
            grads = fused_conv._triton_backward(v, code, x, w, need_dx=True, x_bordered=kept)
            grads_no_dx = fused_conv._triton_backward(v, code, x, w, need_dx=False, x_bordered=kept)
    launched = {launches[name][0].fn.__name__ for name in ["fwd", *fused_conv._launched(launches, need_dx=True)]}
    assert set(seen.accesses) == launched and all(n > 0 for n in seen.accesses.values())
    assert not seen.violations, "outside the launch's arrays:\n" + "\n".join(map(str, seen.violations))
    assert torch.equal(code, code_ref)
    for got, want in zip([y, *grads, *grads_no_dx], [y_ref, *grads_ref, *grads_ref[1:]]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES[:2], ids=["C1-CO5-odd-size", "C32-CO24-odd-size"])
@pytest.mark.parametrize("tile_set", TILE_SETS, ids=label)
def test_kernels_stay_inside_an_input_shared_by_all_runs(tile_set, shape, monkeypatch):
    """One data batch for every run (vmap in_dims None: evaluation, and the first layer of
    runs that see the same batches) reaches the kernels as a stride-0 view along the run
    axis: the forward and the weight gradient must read it only where it lies."""
    monkeypatch.setattr(fused_conv, "WGRAD_PIXELS_PER_SPLIT", 16)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    K, N, C, CO, H, W = shape
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(N, C, H, W, generator=g), torch.randn(K, CO, C, 3, 3, generator=g) / (3 * C**0.5)
    b, v = torch.randn(K, CO, generator=g), torch.randn(K, N, CO, H // 2, W // 2, generator=g)

    def step(layer):
        loss = lambda w, b, v: (layer(x, w, b) * v).sum()  # noqa: E731
        return vmap(lambda w, b: layer(x, w, b))(w, b), vmap(grad(loss, argnums=(0, 1)))(w, b, v)

    with fused_conv.tiles(**tile_set), memory_check() as seen:
        y, grads = step(lambda x, w, b: fused_conv.conv_relu_pool(x, w, b, "triton"))
    y_ref, grads_ref = step(fused_conv.reference)
    assert seen.accesses and not seen.violations, "\n".join(map(str, seen.violations))
    for got, want in zip([y, *grads], [y_ref, *grads_ref]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
