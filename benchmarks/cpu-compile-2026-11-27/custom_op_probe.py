"""Probe: can the fused layer be a torch.library.custom_op, so that torch.compile could take
a step that uses the Triton kernels? The engine differentiates each run with torch.func.grad
inside torch.func.vmap; this registers the layer (here on popconv's torch backend, no GPU
needed) as two custom ops with register_autograd and register_vmap rules, then tries the
engine's transform, eagerly and through torch.compile(fullgraph=True).

    python benchmarks/cpu-compile-2026-11-27/custom_op_probe.py

torch 2.14.1 (2026-11-27): vmap(grad) over the op fails at once, because custom_op's
autograd registration is an autograd.Function without the setup_context that functorch
transforms require: "In order to use an autograd.Function with functorch transforms ...
it must override the setup_context staticmethod". So the layer stays an autograd.Function
(which works under vmap(grad), but which Dynamo cannot trace there)."""
import torch, time
from torch.func import vmap, grad_and_value
from tunebench import popconv

@torch.library.custom_op("tbproto::fwd", mutates_args=())
def fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    y, code, _ = popconv.BACKENDS[backend][0](x, w, b)
    return y, code

@fwd.register_fake
def _(x, w, b, backend):
    K, N, C, H, W = x.shape
    CO = w.shape[1]
    return x.new_empty(K, N, CO, H // 2, W // 2), x.new_empty(K, N, CO, H // 2, W // 2, dtype=torch.int8)

@torch.library.custom_op("tbproto::bwd", mutates_args=())
def bwd(gy: torch.Tensor, code: torch.Tensor, x: torch.Tensor, w: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw, db = popconv.BACKENDS[backend][1](gy, code, x, w, True)
    return dx, dw, db

@bwd.register_fake
def _(gy, code, x, w, backend):
    return torch.empty_like(x), torch.empty_like(w), w.new_empty(w.shape[:2])

def setup(ctx, inputs, output):
    x, w, b, backend = inputs
    ctx.save_for_backward(x, w, output[1]); ctx.backend = backend

def backward(ctx, gy, gcode):
    x, w, code = ctx.saved_tensors
    dx, dw, db = bwd(gy, code, x, w, ctx.backend)
    return dx, dw, db, None

fwd.register_autograd(backward, setup_context=setup)

def pop(t, d, K):
    return t.expand(K, *t.shape) if d is None else t.movedim(d, 0)

@fwd.register_vmap
def _(info, in_dims, x, w, b, backend):
    K = info.batch_size
    return fwd(pop(x, in_dims[0], K), pop(w, in_dims[1], K), pop(b, in_dims[2], K), backend), (0, 0)

@bwd.register_vmap
def _(info, in_dims, gy, code, x, w, backend):
    K = info.batch_size
    return bwd(*(pop(t, d, K) for t, d in zip((gy, code, x, w), in_dims[:4])), backend), (0, 0, 0)

def layer(x, w, b):  # one run
    y, code = fwd(x[None], w[None], b[None], "torch")
    return y[0]

K, N, C, CO, H, W = 3, 4, 2, 8, 8, 8
g = torch.Generator().manual_seed(0)
x = torch.randn(K, N, C, H, W, generator=g); w = torch.randn(K, CO, C, 3, 3, generator=g); b = torch.randn(K, CO, generator=g)
v = torch.randn(K, N, CO, H//2, W//2, generator=g)
loss = lambda x, w, b, v: (layer(x, w, b) * v).sum()
ref = lambda x, w, b, v: (popconv.reference(x, w, b) * v).sum()
step = vmap(grad_and_value(loss, argnums=(0, 1, 2)))
try:
    got = step(x, w, b, v)
except RuntimeError as err:
    print(f"torch {torch.__version__}: vmap(grad) over the custom op failed: {str(err).splitlines()[0]}")
    raise SystemExit(1)
want = vmap(grad_and_value(ref, argnums=(0, 1, 2)))(x, w, b, v)
for a, c in zip(got[0], want[0]): torch.testing.assert_close(a, c)
print("eager ok")
cstep = torch.compile(lambda x, w, b, v: step(x, w, b, v), fullgraph=True, dynamic=False)
t = time.time(); got2 = cstep(x, w, b, v); print("compile", time.time() - t)
for a, c in zip(got2[0], want[0]): torch.testing.assert_close(a, c)
print("compiled ok")
