"""Tests for tunebench.core.models: shapes of every model and variant, the init schemes, seeded
determinism of build(), and the counter-based hash RNG behind dropout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from tunebench.core import models
from tunebench.spec.config import EMBED_INITS, INITS, RunConfig
from tunebench.core.models import DataShape, build, hash_dropout, hash_uniform

IMAGE = DataShape((1, 8, 8), 10)
TOKENS = DataShape((12,), 4, vocab=50)
KEY = torch.tensor(12345, dtype=torch.int64)


def cfg_for(model: str, **kw) -> RunConfig:
    base = {"model": model, "width": 16, "depth": 2}
    if model in ("softmax", "embedbag", "rnn"):
        base["depth"] = 1
    return RunConfig(**{**base, **kw})


def input_for(model: str, n: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if model == "embedbag":
        return torch.randint(0, TOKENS.vocab, (n, *TOKENS.in_shape), generator=g)
    return torch.randn(n, *IMAGE.in_shape, generator=g)


def shape_for(model: str) -> DataShape:
    return TOKENS if model == "embedbag" else IMAGE


# Every model, plus the architecture switches the config offers for it.
VARIANTS = [(m, {}) for m in models.MODELS] + [
    ("mlp", {"depth": 0}),
    ("mlp", {"depth": 3, "batchnorm": True}),
    ("mlp", {"depth": 3, "residual": True}),
    ("mlp", {"depth": 2, "dropout": 0.5}),
    ("cnn", {"batchnorm": True}),
    ("cnn", {"depth": 4, "residual": True}),
    ("cnn", {"depth": 3, "residual": True, "batchnorm": True, "dropout": 0.3}),
    ("rnn", {"depth": 2, "activation": "tanh", "dropout": 0.2}),
    ("embedbag", {"depth": 0}),
    ("embedbag", {"depth": 2, "dropout": 0.4}),
]


def _vid(v):
    m, kw = v
    return m + "".join(f"-{k}={x}" for k, x in kw.items())


@pytest.mark.parametrize("variant", VARIANTS, ids=[_vid(v) for v in VARIANTS])
def test_output_shape_train_and_eval(variant):
    name, kw = variant
    cfg = cfg_for(name, **kw)
    net = build(cfg, shape_for(name), seed=0)
    x = input_for(name)
    net.train()
    out = net(x, KEY)
    assert out.shape == (5, shape_for(name).n_out)
    assert torch.isfinite(out).all()
    out.sum().backward()  # every parameter is reachable from the output
    for n, p in net.named_parameters():
        assert p.grad is not None, n
    net.eval()
    with torch.no_grad():
        a, b = net(x, KEY), net(x, torch.tensor(999))
    assert torch.equal(a, b), "eval mode must not depend on the dropout key"


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v[1].get("dropout", 0) > 0], ids=_vid)
def test_dropout_masks_follow_the_key(variant):
    name, kw = variant
    net = build(cfg_for(name, **kw), shape_for(name), seed=0).train()
    x = input_for(name, 32)
    with torch.no_grad():
        a1, a2, b = net(x, KEY), net(x, KEY.clone()), net(x, KEY + 1)
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, b)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_build_deterministic_per_seed(name):
    cfg = cfg_for(name, init="xavier_uniform")
    for c in (cfg, cfg_for(name)):  # explicit init and PyTorch's defaults (global RNG)
        a = build(c, shape_for(name), 3).state_dict()
        torch.manual_seed(777)  # the global RNG state must not leak into build()
        b = build(c, shape_for(name), 3).state_dict()
        d = build(c, shape_for(name), 4).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert any(not torch.equal(a[k], d[k]) for k in a if a[k].is_floating_point())


def test_build_leaves_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build(cfg_for("cnn"), IMAGE, 1)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- init schemes
def _layers(net):
    return [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _fans(w):
    rf = w[0][0].numel() if w.dim() > 2 else 1
    return w.shape[1] * rf, w.shape[0] * rf


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("init", INITS)
def test_init_scheme(name, init):
    # width 64 so the statistical checks have a few thousand weights per layer
    cfg = cfg_for(name, init=init, width=64, activation="relu")
    net = build(cfg, shape_for(name), seed=1)
    layers = _layers(net)
    assert layers
    for m in layers:
        w = m.weight.detach()
        fan_in, fan_out = _fans(w)
        big = w.numel() >= 2000
        bias = m.bias.detach() if m.bias is not None else None
        if init == "zeros":
            assert torch.count_nonzero(w) == 0
            assert bias is None or torch.count_nonzero(bias) == 0
        elif init.startswith("normal_"):
            sd = float(init.split("_")[1])
            if big:
                assert w.std().item() == pytest.approx(sd, rel=0.06)
                assert abs(w.mean().item()) < 0.1 * sd
            if bias is not None and bias.numel() >= 64:  # normal_* draws biases too
                assert bias.std().item() == pytest.approx(sd, rel=0.35)
        elif init == "xavier_uniform":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert w.abs().max().item() <= bound * (1 + 1e-6)
            if big:
                assert w.abs().max().item() > 0.95 * bound
                assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.06)
        elif init == "xavier_normal":
            if big:
                assert w.std().item() == pytest.approx(math.sqrt(2.0 / (fan_in + fan_out)), rel=0.06)
        elif init == "kaiming_normal":
            if big:
                assert w.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.06)
        elif init == "orthogonal":
            flat = w.flatten(1)
            gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
            assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-4)
        elif init == "default":  # PyTorch: kaiming_uniform(a=sqrt(5)) -> bound 1/sqrt(fan_in)
            assert w.abs().max().item() <= 1 / math.sqrt(fan_in) * (1 + 1e-6)
        if init not in ("default",) and not init.startswith("normal_") and bias is not None:
            assert torch.count_nonzero(bias) == 0, "non-normal schemes zero the biases"


def test_orthogonal_square_layer():
    net = build(cfg_for("mlp", init="orthogonal", width=32, depth=2), IMAGE, 0)
    w = net.hidden[1].weight.detach()
    assert w.shape == (32, 32)
    assert torch.allclose(w @ w.T, torch.eye(32), atol=1e-5)
    assert torch.allclose(w.T @ w, torch.eye(32), atol=1e-5)


def test_kaiming_normal_leaky_relu_gain():
    net = build(cfg_for("mlp", init="kaiming_normal", width=256, depth=1, activation="leaky_relu"), IMAGE, 0)
    w = net.hidden[0].weight.detach()  # 256 x 64
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / 64), rel=0.05)


@pytest.mark.parametrize("embed_init", EMBED_INITS)
def test_embedding_init(embed_init):
    shape = DataShape((12,), 4, vocab=2000)
    cfg = cfg_for("embedbag", embed_init=embed_init, embed_dim=32)
    w = build(cfg, shape, 0).embed.weight.detach()
    assert w.shape == (2000, 32)
    if embed_init == "glorot_uniform":
        bound = math.sqrt(6.0 / (2000 + 32))
        assert w.abs().max().item() <= bound * (1 + 1e-6)
        assert w.abs().max().item() > 0.95 * bound
    elif embed_init == "uniform_0.05":
        assert w.abs().max().item() <= 0.05
        assert w.abs().max().item() > 0.049
        assert w.std().item() == pytest.approx(0.05 / math.sqrt(3), rel=0.05)
    else:
        assert w.std().item() == pytest.approx(1.0, rel=0.03)
    # The embedding init is independent of cfg.init.
    cfg2 = cfg.model_copy(update={"init": "zeros"})
    assert torch.equal(build(cfg2, shape, 0).embed.weight, build(cfg, shape, 0).embed.weight)


def test_penalised_selects_matrices_only():
    net = build(cfg_for("cnn", batchnorm=True), IMAGE, 0)
    chosen = {n for n, p in net.named_parameters() if models.penalised(n, p)}
    assert chosen and all(n.endswith("weight") for n in chosen)
    assert not any("norms" in n or "fc_norm" in n or n.endswith("bias") for n in chosen)
    assert {"convs.0.weight", "convs.1.weight", "fc.weight", "out.weight"} <= chosen


def test_output_units():
    assert models.output_units("multiclass", "softmax", 7) == 7
    assert models.output_units("binary", "softmax", 7) == 2
    assert models.output_units("binary", "sigmoid", 7) == 1
    assert models.output_units("regression", "linear", 0) == 1


# ---------------------------------------------------------------- hash RNG
def test_hash_uniform_range_and_uniformity():
    u = hash_uniform(torch.tensor(42), 3, torch.Size((200_000,)), "cpu")
    assert u.dtype == torch.float32
    assert u.min().item() >= 0.0 and u.max().item() < 1.0
    assert u.mean().item() == pytest.approx(0.5, abs=0.005)
    assert u.var().item() == pytest.approx(1 / 12, rel=0.02)
    counts = torch.histc(u, bins=20, min=0.0, max=1.0)
    assert (counts / len(u) - 0.05).abs().max().item() < 0.003
    # Neighbouring elements are not correlated (the hash mixes the counter).
    assert abs(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1].item()) < 0.01


def test_hash_uniform_streams_differ_by_key_and_salt():
    s = torch.Size((4, 1000))
    a = hash_uniform(torch.tensor(7), 0, s, "cpu")
    assert torch.equal(a, hash_uniform(torch.tensor(7), 0, s, "cpu"))
    for other in (hash_uniform(torch.tensor(8), 0, s, "cpu"), hash_uniform(torch.tensor(7), 1, s, "cpu")):
        assert (a == other).float().mean().item() < 0.01
        assert abs(torch.corrcoef(torch.stack([a.flatten(), other.flatten()]))[0, 1].item()) < 0.05


def test_hash_uniform_never_returns_one():
    # Regression: with 32-bit floats, key 203722 / salt 7 once hashed to 2**32 - 1xx and gave u == 1.0.
    u = hash_uniform(torch.tensor(203722), 7, torch.Size((64, 3)), "cpu")
    assert u.max().item() < 1.0


def test_hash_uniform_extreme_keys_do_not_overflow():
    big = torch.tensor(2**31 - 2)
    u = hash_uniform(big, 300, torch.Size((1000,)), "cpu")
    assert u.min().item() >= 0.0 and u.max().item() < 1.0


def test_hash_uniform_vmaps_like_a_loop():
    keys = torch.tensor([1, 2, 3])
    batched = torch.vmap(lambda k: hash_uniform(k, 5, torch.Size((10,)), "cpu"))(keys)
    looped = torch.stack([hash_uniform(k, 5, torch.Size((10,)), "cpu") for k in keys])
    assert torch.equal(batched, looped)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_hash_dropout_keep_rate_and_scaling(p):
    h = torch.ones(400, 250)
    pt = torch.tensor(p)
    out = hash_dropout(h, pt, KEY, 0, training=True)
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.01)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    assert torch.equal(out, hash_dropout(h, pt, KEY.clone(), 0, training=True))
    assert not torch.equal(out, hash_dropout(h, pt, KEY + 1, 0, training=True))
    assert not torch.equal(out, hash_dropout(h, pt, KEY, 1, training=True))
    assert torch.equal(hash_dropout(h, pt, KEY, 0, training=False), h)


def test_hash_dropout_p_zero_is_identity():
    h = torch.randn(50, 20)
    assert torch.equal(hash_dropout(h, torch.tensor(0.0), KEY, 0, training=True), h)


# ---------------------------------------------------------------- the GEMM convolution
@pytest.mark.parametrize("n,c_in,c_out,h,w,bias", [(4, 1, 8, 8, 8, True), (3, 5, 7, 6, 9, True), (2, 16, 32, 14, 14, False)])
def test_conv3x3_gemm_equals_conv2d(n, c_in, c_out, h, w, bias):
    """Fresh random inputs each shape; every output element compared (none left unwritten)."""
    g = torch.Generator().manual_seed(n * 100 + c_in)
    x = torch.randn(n, c_in, h, w, generator=g)
    weight = torch.randn(c_out, c_in, 3, 3, generator=g)
    b = torch.randn(c_out, generator=g) if bias else None
    out = models.conv3x3_gemm(x, weight, b)
    ref = torch.nn.functional.conv2d(x.double(), weight.double(), b.double() if bias else None, padding=1)
    assert out.shape == ref.shape
    rel = (out.double() - ref).norm() / ref.norm()
    assert rel < 1e-6, rel


def test_conv3x3_gemm_gradients_and_vmap_match_conv2d():
    g = torch.Generator().manual_seed(3)
    xs, ws, bs = torch.randn(3, 4, 6, 7, 7, generator=g), torch.randn(3, 5, 6, 3, 3, generator=g), torch.randn(3, 5, generator=g)

    def loss(conv, x, w, b):
        return (conv(x, w, b) ** 2).sum()

    native = lambda x, w, b: torch.nn.functional.conv2d(x, w, b, padding=1)  # noqa: E731
    ours = torch.func.vmap(torch.func.grad(lambda x, w, b: loss(models.conv3x3_gemm, x, w, b), argnums=(0, 1, 2)))(xs, ws, bs)
    ref = [torch.func.grad(lambda x, w, b: loss(native, x, w, b), argnums=(0, 1, 2))(xs[k], ws[k], bs[k]) for k in range(3)]
    for i in range(3):  # gradients of x, weight, bias; fp32 summation order differs
        want = torch.stack([r[i] for r in ref])
        assert (ours[i] - want).norm() / want.norm() < 1e-6


def test_conv3x3_gemm_under_bf16_autocast_is_close():
    g = torch.Generator().manual_seed(4)
    x, w, b = torch.randn(2, 8, 10, 10, generator=g), torch.randn(16, 8, 3, 3, generator=g), torch.randn(16, generator=g)
    ref = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = models.conv3x3_gemm(x, w, b)
    assert out.dtype == torch.bfloat16
    rel = (out.double() - ref).norm() / ref.norm()
    assert 0 < rel < 1e-2, rel  # bf16 operands: 1e-3..1e-2, never exact


@pytest.mark.parametrize("conv_impl", ["native", "gemm"])
def test_population_convolutions_follow_bf16_autocast(conv_impl):
    """A vmapped F.conv2d ignores autocast (torch 2.11, 2.14); the CNN's convolutions must
    still run in bf16 for a population under bf16 autocast, as for a single run."""
    net = build(cfg_for("cnn"), IMAGE, 0)
    net.conv_impl = conv_impl
    layer = net.convs[0]
    x = input_for("cnn", 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        single = net.conv(layer, x)
        population = torch.func.vmap(lambda h: net.conv(layer, h))(torch.stack([x, x]))
    assert single.dtype == population.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert torch.func.vmap(lambda h: net.conv(layer, h))(torch.stack([x, x])).dtype == torch.float32


@pytest.mark.parametrize("kw", [{}, {"batchnorm": True}, {"depth": 4, "residual": True, "dropout": 0.3}])
def test_cnn_gemm_forward_equals_native(kw):
    net = build(cfg_for("cnn", **kw), IMAGE, 0).train()
    x = input_for("cnn", 6)
    native = net(x, KEY)
    net.conv_impl = "gemm"
    torch.testing.assert_close(net(x, KEY), native, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw, fused", [
    ({}, {0, 1}),  # the reference CNN: both conv -> ReLU -> pool layers
    ({"depth": 4}, {1, 3}),  # pools after each stage's last layer only
    ({"depth": 3, "residual": True}, {0}),  # layer 2 adds a skip before its pool
    ({"batchnorm": True}, set()),  # batch norm sits between conv and ReLU
    ({"activation": "tanh"}, set()),
])
def test_cnn_layers_the_fused_kernel_may_replace(kw, fused):
    model = build(cfg_for("cnn", **kw), IMAGE, 0)
    assert model.fusable == fused


# ---------------------------------------------------------------- residual blocks
@pytest.mark.parametrize("layers, blocks", [
    ([], []), ([1], [[1]]), ([1, 2], [[1, 2]]), ([1, 2, 3], [[1, 2], [3]]), (list(range(1, 16)), None),
])
def test_residual_blocks_pair_the_layers(layers, blocks):
    got = models.residual_blocks(layers)
    assert [j for b in got for j in b] == layers and all(1 <= len(b) <= 2 for b in got)
    if blocks is not None:
        assert got == blocks


RESIDUAL = [("mlp", {"depth": 8}), ("mlp", {"depth": 5, "batchnorm": True, "dropout": 0.2}),
            ("cnn", {"depth": 6, "width": 4}), ("cnn", {"depth": 5, "width": 4, "batchnorm": True})]


@pytest.mark.parametrize("name, kw", RESIDUAL, ids=[_vid(v) for v in RESIDUAL])
@pytest.mark.parametrize("init", ["default", "kaiming_normal", "normal_1"])
def test_residual_blocks_start_as_the_identity(name, kw, init):
    """Each block's last layer starts at zero whatever the init scheme, so a residual net's
    output at initialisation does not depend on the blocks' other weights: scrambling them
    leaves it unchanged. Without `residual` the same scrambling changes the output."""
    x = input_for(name, 6)
    net = build(cfg_for(name, residual=True, init=init, **kw), IMAGE, 0).eval()
    zeroed = net.zero_init()
    assert zeroed and all(torch.count_nonzero(m.weight) == 0 and torch.count_nonzero(m.bias) == 0 for m in zeroed)
    before = net(x, KEY)
    firsts = [net.hidden[b[0]] if name == "mlp" else net.convs[b[0]] for b in net.blocks if len(b) == 2]
    assert firsts
    with torch.no_grad():
        for m in firsts:
            m.weight.normal_(0, 3.0)
    torch.testing.assert_close(net(x, KEY), before)
    plain = build(cfg_for(name, init=init, **kw), IMAGE, 0).eval()
    assert plain.zero_init() == []
    before = plain(x, KEY)
    with torch.no_grad():
        for i in (2, 3):
            (plain.hidden if name == "mlp" else plain.convs)[i].weight.normal_(0, 3.0)
    assert not torch.allclose(plain(x, KEY), before)


@pytest.mark.parametrize("name, kw", RESIDUAL, ids=[_vid(v) for v in RESIDUAL])
def test_gradients_reach_the_zeroed_layers(name, kw):
    """Zero is a start, not a dead end: the zeroed layers get a gradient at once (their
    input is the block's nonzero activations)."""
    net = build(cfg_for(name, residual=True, **kw), IMAGE, 0).train()
    loss = torch.nn.functional.cross_entropy(net(input_for(name, 8), KEY), torch.arange(8) % 10)
    loss.backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in net.zero_init())


def test_a_deep_residual_mlp_trains_where_the_plain_one_cannot_start():
    """Depth 16 under PyTorch's default init: the plain MLP's signal shrinks ~6x in variance
    per layer, so it stays at chance for these steps; the residual one learns."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :10].argmax(1))
    losses = {}
    for residual in (False, True):
        net = build(cfg_for("mlp", depth=16, width=32, residual=residual), IMAGE, 0).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        for _ in range(60):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x, KEY), y)
            loss.backward()
            opt.step()
        losses[residual] = loss.item()
    assert losses[True] < 0.8 * math.log(10) < losses[False]
