"""Model registry: softmax regression, MLP, small CNN, vanilla RNN over image rows, and an
EmbeddingBag text classifier. Every model takes the init scheme and activation as
parameters, and `forward(x, key)` where `key` is an int64 scalar that seeds the dropout
masks (counter-based, so a population under vmap and a single run draw the same masks
for the same seed and step; torch's global RNG would give each arm different masks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from tunebench.spec.config import RunConfig

_MASK32 = 0xFFFFFFFF


def hash_uniform(key: torch.Tensor, salt: int, shape: torch.Size, device) -> torch.Tensor:
    """Uniform [0, 1) numbers from (key, salt, element index) by an integer hash.

    Pure tensor ops, so it vmaps over a batched `key`; all products stay below 2**63
    (operands are < 2**32 and < 2**27), so int64 never overflows.
    """
    idx = torch.arange(math.prod(shape), device=device, dtype=torch.int64).view(shape)
    h = (idx + (key * 0x9E3779B1 + salt * 0x85EBCA6B)) & _MASK32
    for _ in range(3):  # three xor-shift-multiply rounds mix all bits (lowbias32 style)
        h = ((h ^ (h >> 16)) * 0x45D9F3B) & _MASK32
    h = h ^ (h >> 16)
    # Top 24 bits: exactly representable in float32, so u < 1 always (a 32-bit value would
    # round up to 2**32 and give u == 1.0, which indexes past a shifted image).
    return (h >> 8).to(torch.float32) * (1.0 / 16777216.0)


def hash_dropout(h: torch.Tensor, p: torch.Tensor, key: torch.Tensor, salt: int, training: bool) -> torch.Tensor:
    if not training:
        return h
    keep = hash_uniform(key, salt, h.shape, h.device) >= p
    return torch.where(keep, h / (1.0 - p), torch.zeros_like(h))


@dataclass(frozen=True)
class FusedConv:
    """A fused conv -> ReLU -> 2x2 max-pool for a whole population (an optional layer,
    tunebench.kernels, registers one when imported): the function, whether it can run on a
    device, and its current tile setting (part of a memory probe's key)."""

    conv_relu_pool: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    available: Callable[[torch.device], bool]
    tiles: Callable[[], object]


# conv_impl name -> its fused kernels; empty until tunebench.kernels is imported (the CLI does,
# where a GPU trains). The models and the engine only look them up here.
FUSED_CONV: dict[str, FusedConv] = {}


def register_fused_conv(name: str, impl: FusedConv) -> None:
    FUSED_CONV[name] = impl


def activation(name: str):
    return {
        "relu": F.relu,
        "leaky_relu": lambda t: F.leaky_relu(t, 0.01),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "gelu": F.gelu,
    }[name]


@dataclass(frozen=True)
class DataShape:
    in_shape: tuple[int, ...]  # per example: (C, H, W) images, (D,) tabular, (L,) tokens
    n_out: int  # output units
    vocab: int = 0  # tokens only


def output_units(task: str, head: str, n_classes: int) -> int:
    if task == "multiclass":
        return n_classes
    if task == "binary":
        return 2 if head == "softmax" else 1
    return 1


class Net(nn.Module):
    """Base: holds the dropout probability as a buffer, so it is per run in a population."""

    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.act = activation(cfg.activation)
        self.residual = cfg.residual
        self.register_buffer("drop_p", torch.tensor(float(cfg.dropout)))
        # Static switch: masks cost a hash per activation, so a population where no run
        # uses dropout skips them (the engine sets it for the whole population).
        self.use_dropout = cfg.dropout > 0

    def drop(self, h, key, salt):
        if not self.use_dropout:
            return h
        return hash_dropout(h, self.drop_p, key, salt, self.training)


class Softmax(Net):
    def __init__(self, cfg, shape: DataShape):
        super().__init__(cfg)
        self.out = nn.Linear(math.prod(shape.in_shape), shape.n_out)

    def forward(self, x, key):
        return self.out(x.flatten(1))


def residual_blocks(layers: list[int]) -> list[list[int]]:
    """Consecutive layer indices as residual blocks of two layers (a last odd one alone)."""
    return [layers[i : i + 2] for i in range(0, len(layers), 2)]


class MLP(Net):
    """depth hidden layers, each linear -> (batch norm) -> activation -> (dropout). With
    `residual`, the hidden layers after the first form pre-activation blocks (He et al.
    2016, "Identity mappings"): h <- h + W2 act(norm(W1 act(norm(h)))), the block's last
    layer initialised to zero (`zero_init`), so each block starts as the identity and a deep
    net starts as a shallow one; the output layer reads act(h)."""

    def __init__(self, cfg, shape: DataShape):
        super().__init__(cfg)
        d_in = math.prod(shape.in_shape)
        self.hidden = nn.ModuleList(nn.Linear(d_in if i == 0 else cfg.width, cfg.width) for i in range(cfg.depth))
        self.norms = nn.ModuleList(nn.BatchNorm1d(cfg.width) if cfg.batchnorm else nn.Identity() for _ in range(cfg.depth))
        self.out = nn.Linear(cfg.width if cfg.depth else d_in, shape.n_out)
        self.blocks = residual_blocks(list(range(1, cfg.depth))) if cfg.residual else []

    def zero_init(self) -> list[nn.Module]:
        """The layers that start at zero: each residual block's last."""
        return [self.hidden[b[-1]] for b in self.blocks]

    def forward(self, x, key):
        h = x.flatten(1)
        if not self.hidden:
            return self.out(h)
        h = self.drop(self.act(self.norms[0](self.hidden[0](h))), key, salt=0)
        if self.residual:
            for block in self.blocks:
                z = h
                for j in block:
                    z = self.hidden[j](self.drop(self.act(self.norms[j](z)), key, salt=j))
                h = h + z
            return self.out(self.act(h)) if self.blocks else self.out(h)
        for i in range(1, len(self.hidden)):
            h = self.drop(self.act(self.norms[i](self.hidden[i](h))), key, salt=i)
        return self.out(h)


def autocast_operands(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """The convolution's operands in autocast's dtype when autocast is on, else as given.
    Why: under torch.func.vmap, F.conv2d skips autocast (seen with torch 2.11 and 2.14: a
    vmapped conv under bf16 autocast returns fp32), so a population's "bf16" convolutions
    would silently run in fp32/TF32. Casting first makes them bf16, as for a single run."""
    if not torch.is_autocast_enabled(h.device.type):
        return h, weight, bias
    dtype = torch.get_autocast_dtype(h.device.type)
    return h.to(dtype), weight.to(dtype), bias.to(dtype) if bias is not None else None


def conv3x3_gemm(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 3x3, stride-1, padding-1 convolution as one matrix product: the nine shifted copies
    of the (zero-padded, channels-last) input are concatenated along channels (im2col) and
    multiplied by the kernel laid out as (9*C_in, C_out). Same function as F.conv2d(h,
    weight, bias, padding=1), summed in another order. Why: under vmap a population's
    F.conv2d becomes a grouped convolution, which cuDNN runs far below the GPU's matmul peak
    (benchmarks/h100-2026-11-26/NOTES.md); here vmap turns the product into one batched GEMM on the tensor cores.
    h: (N, C, H, W) in any memory layout; returns (N, C_out, H, W), contiguous (vmap cannot
    clone channels-last tensors, which batch norm's backward does)."""
    h, weight, bias = autocast_operands(h, weight, bias)  # cast once, before the 9x larger im2col copy
    n, c, height, width = h.shape
    padded = F.pad(h.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    cols = torch.cat([padded[:, dy : dy + height, dx : dx + width, :] for dy in range(3) for dx in range(3)], -1)
    kernel = weight.permute(2, 3, 1, 0).reshape(9 * c, weight.shape[0])  # rows ordered (dy, dx, c) like cols
    out = cols.reshape(n * height * width, 9 * c) @ kernel
    if bias is not None:
        out = out + bias
    return out.view(n, height, width, -1).permute(0, 3, 1, 2).contiguous()


class CNN(Net):
    """depth conv layers in two stages (width, then 2*width channels), a 2x2 max-pool after
    each stage, then fc(4*width) and the output layer. depth=2, width=32 is the reference
    conv32-conv64-fc128. Extra layers keep their stage's channels; with `residual` they form
    pre-activation blocks of two within their stage, as in models.MLP (the block's last conv
    starts at zero)."""

    def __init__(self, cfg, shape: DataShape):
        super().__init__(cfg)
        c_in, h, w = shape.in_shape
        extra = cfg.depth - 2
        n1, n2 = 1 + extra // 2, 1 + extra - extra // 2
        chans = [(c_in, cfg.width)] + [(cfg.width, cfg.width)] * (n1 - 1)
        chans += [(cfg.width, 2 * cfg.width)] + [(2 * cfg.width, 2 * cfg.width)] * (n2 - 1)
        self.stage_ends = {n1 - 1, n1 + n2 - 1}  # pool after these layer indices
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in chans)
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) if cfg.batchnorm else nn.Identity() for _, b in chans)
        self.fc = nn.Linear(2 * cfg.width * (h // 4) * (w // 4), 4 * cfg.width)
        self.fc_norm = nn.BatchNorm1d(4 * cfg.width) if cfg.batchnorm else nn.Identity()
        self.out = nn.Linear(4 * cfg.width, shape.n_out)
        # Residual blocks: the same-shape layers of each stage (all but its first layer).
        stages = [list(range(1, n1)), list(range(n1 + 1, n1 + n2))]
        self.blocks = [b for st in stages for b in residual_blocks(st)] if cfg.residual else []
        self.block_at = {b[0]: b for b in self.blocks}
        in_block = {j for b in self.blocks for j in b}
        # Layers that are exactly conv -> ReLU -> 2x2 max-pool (no batch norm, no block): the
        # "triton" implementation runs each as one fused kernel (fused_conv.conv_relu_pool).
        self.fusable = {
            i for i in self.stage_ends if cfg.activation == "relu" and not cfg.batchnorm and i not in in_block
        }
        # Static switch set by the engine: "native" (F.conv2d), "gemm" (conv3x3_gemm) or
        # "triton" (fusable layers fused, the others native).
        self.conv_impl = "native"

    def zero_init(self) -> list[nn.Module]:
        return [self.convs[b[-1]] for b in self.blocks]

    def conv(self, layer: nn.Conv2d, h: torch.Tensor) -> torch.Tensor:
        if self.conv_impl == "gemm":
            return conv3x3_gemm(h, layer.weight, layer.bias)
        return F.conv2d(*autocast_operands(h, layer.weight, layer.bias), padding=1)

    def forward(self, x, key):
        h, i = x, 0
        while i < len(self.convs):
            block = self.block_at.get(i)
            if block:
                z = h
                for j in block:
                    z = self.conv(self.convs[j], self.act(self.norms[j](z)))
                h, last = h + z, block[-1]
            elif self.conv_impl in FUSED_CONV and i in self.fusable:
                h = FUSED_CONV[self.conv_impl].conv_relu_pool(h, self.convs[i].weight, self.convs[i].bias)
                i += 1
                continue
            else:
                h, last = self.act(self.norms[i](self.conv(self.convs[i], h))), i
            if last in self.stage_ends:
                h = F.max_pool2d(h, 2)
            i = last + 1
        h = self.drop(self.act(self.fc_norm(self.fc(h.flatten(1)))), key, salt=100)
        return self.out(h)


class RNN(Net):
    """Vanilla (Elman) RNN reading an image row by row: h_t = act(W x_t + U h_{t-1} + b).
    Written out because nn.RNN offers no sigmoid."""

    def __init__(self, cfg, shape: DataShape):
        super().__init__(cfg)
        row = shape.in_shape[-1]
        self.inp = nn.ModuleList(nn.Linear(row if i == 0 else cfg.width, cfg.width) for i in range(max(cfg.depth, 1)))
        self.rec = nn.ModuleList(nn.Linear(cfg.width, cfg.width, bias=False) for _ in range(max(cfg.depth, 1)))
        self.out = nn.Linear(cfg.width, shape.n_out)

    def forward(self, x, key):
        seq = x.flatten(1, -2) if x.dim() > 3 else x  # (N, C*H, W): rows as time steps
        for layer, (inp, rec) in enumerate(zip(self.inp, self.rec)):
            h = seq.new_zeros(seq.shape[0], rec.in_features)
            outs = []
            for t in range(seq.shape[1]):
                h = self.act(inp(seq[:, t]) + rec(h))
                outs.append(h)
            seq = torch.stack(outs, 1)
        return self.out(self.drop(h, key, salt=200))


class EmbedBag(Net):
    """Mean of token embeddings, optional hidden layers, linear output (fastText-like)."""

    def __init__(self, cfg, shape: DataShape):
        super().__init__(cfg)
        self.embed = nn.Embedding(shape.vocab, cfg.embed_dim)
        self.hidden = nn.ModuleList(nn.Linear(cfg.embed_dim if i == 0 else cfg.width, cfg.width) for i in range(cfg.depth))
        self.out = nn.Linear(cfg.width if cfg.depth else cfg.embed_dim, shape.n_out)

    def forward(self, x, key):
        h = F.embedding(x, self.embed.weight).mean(1)
        for i, lin in enumerate(self.hidden):
            h = self.drop(self.act(lin(h)), key, salt=300 + i)
        return self.out(h)


MODELS = {"softmax": Softmax, "mlp": MLP, "cnn": CNN, "rnn": RNN, "embedbag": EmbedBag}


def _init_weight(w: torch.Tensor, scheme: str, activation_name: str, gen: torch.Generator):
    if scheme.startswith("normal_"):  # N(0, sigma^2), sigma from the name
        nn.init.normal_(w, 0.0, float(scheme.split("_")[1]), generator=gen)
    elif scheme == "zeros":
        nn.init.zeros_(w)
    elif scheme == "xavier_uniform":
        nn.init.xavier_uniform_(w, generator=gen)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(w, generator=gen)
    elif scheme == "kaiming_normal":
        nonlin = "leaky_relu" if activation_name == "leaky_relu" else "relu"
        nn.init.kaiming_normal_(w, nonlinearity=nonlin, generator=gen)
    elif scheme == "orthogonal":
        nn.init.orthogonal_(w, generator=gen)
    else:
        raise ValueError(f"unknown init scheme {scheme!r}")


def _init_embedding(w: torch.Tensor, scheme: str, gen: torch.Generator):
    if scheme == "glorot_uniform":  # TensorFlow's default initializer for embeddings
        nn.init.xavier_uniform_(w, generator=gen)
    elif scheme == "uniform_0.05":  # Keras' Embedding default
        nn.init.uniform_(w, -0.05, 0.05, generator=gen)
    elif scheme == "normal_1":  # torch.nn.Embedding's default
        nn.init.normal_(w, 0.0, 1.0, generator=gen)
    else:
        raise ValueError(f"unknown embedding init {scheme!r}")


def apply_init(model: nn.Module, cfg: RunConfig, gen: torch.Generator) -> None:
    """Apply cfg.init to every weight matrix/kernel; biases follow the scheme (normal_*
    draws them too, as the post's TensorFlow example did; others zero them).
    'default' keeps PyTorch's layer defaults. Embeddings follow cfg.embed_init."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                _init_embedding(module.weight, cfg.embed_init, gen)
            elif isinstance(module, (nn.Linear, nn.Conv2d)) and cfg.init != "default":
                _init_weight(module.weight, cfg.init, cfg.activation, gen)
                if module.bias is not None:
                    if cfg.init.startswith("normal"):
                        _init_weight(module.bias, cfg.init, cfg.activation, gen)
                    else:
                        nn.init.zeros_(module.bias)


def build(cfg: RunConfig, shape: DataShape, seed: int) -> nn.Module:
    """A freshly initialised model; deterministic for (cfg, shape, seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # PyTorch's default layer init draws from the global RNG
        model = MODELS[cfg.model](cfg, shape)
    gen = torch.Generator().manual_seed(seed)
    apply_init(model, cfg, gen)
    with torch.no_grad():  # residual blocks start as the identity, whatever the init scheme
        for layer in getattr(model, "zero_init", list)():
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def penalised(name: str, p: torch.Tensor) -> bool:
    """Weights that L1/L2 act on and whose gradient norms we report: matrices, kernels and
    embeddings, not biases or batch-norm scales."""
    return p.dim() >= 2
