"""Training engine: a population of runs trained together, one vmapped step for all.

Design:
- All data lives on the device; batches are gathered by index, no DataLoader.
- Runs that share an architecture and batch shape form a group; within a group the
  parameters, buffers (batch-norm statistics, dropout p) and optimizer states are stacked
  along a leading run axis K and one `vmap(grad(...))` call trains all K runs.
- Per-run hyperparameters are tensors of shape (K,): learning rate (times a per-run
  schedule multiplier), L1, L2, momentum; dropout p is a per-run buffer.
- Seeds are paired: seed s gives every arm the same data subset, batch order, dropout masks
  and augmentation (counter-based hashing, models.hash_uniform).
- Divergence is checked on the device each step (non-finite loss or gradient): the run is
  frozen (its parameters and state stop changing) and the others go on. The host reads
  the flags once per epoch; there is no host synchronisation inside an epoch.
- Every tensor the step touches lives at a fixed address and is updated in place, so on
  CUDA the step is captured once as a CUDA graph and replayed: several times the throughput
  for small models, launch-bound without it; no change for large CNN populations, which are
  compute-bound (benchmarks/h100-2026-11-26/NOTES.md).
- group_trainer is the epoch loop between a _Population (the device state and its step)
  and _Runs (the host's rows, early stopping and plateau schedules).
- A single run is a population of one: `train(config, data, seed)`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
import types
from dataclasses import dataclass, field
from typing import Callable, Generator

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from tunebench.core import devices
from tunebench.spec.config import ConfigError, RunConfig
from tunebench.core.models import FUSED_CONV, DataShape, build, hash_uniform, output_units, penalised

# Settings that may differ between the runs of one population; everything else of a
# RunConfig shapes the computation and so defines the group.
PER_RUN_FIELDS = frozenset(
    {"init", "embed_init", "lr", "lr_scale", "momentum", "l2", "l2_convention", "l1", "clip_norm", "dropout", "schedule",
     "plateau_patience", "patience", "restore_best", "target_accuracy", "replicate"}
)
# A replicate's random streams start this far from its seed's (any seed a profile uses is far below).
REPLICATE_STRIDE = 1_000_000
EVAL_TRAIN_EXAMPLES = 512  # train accuracy (for the train-test gap) on this many, eval mode
AUGMENT_SALT = 10_007  # hash stream of augmentation, apart from the dropout salts (0..~300)
_INT31 = 2**31 - 1
# The CNN convolution on CUDA per precision, chosen by `python -m tunebench.bench`: the fused
# Triton kernels of the optional layer tunebench.kernels (registered in models.FUSED_CONV when
# imported), at their default layout flags, in both precisions; they beat cuDNN's grouped
# convolutions several times over for populations of CNNs, with the same training loss
# (benchmarks/h200-2026-11-28/NOTES.md). CPUs always use F.conv2d (oneDNN), the faster there.
CUDA_CONV_IMPL = {"fp32": "triton", "bf16": "triton"}
CONV_IMPLS = ("native", "gemm", "triton")


def resolve_conv_impl(conv_impl: str, precision: str, device_type: str) -> str:
    """The convolution a population uses: "auto" means CUDA_CONV_IMPL[precision] on CUDA where
    those kernels are registered (tunebench.kernels imported), and F.conv2d ("native")
    elsewhere; any other name is taken as given (group_trainer checks it)."""
    if precision not in CUDA_CONV_IMPL:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(CUDA_CONV_IMPL)}")
    if conv_impl == "auto":
        return CUDA_CONV_IMPL[precision] if device_type == "cuda" and CUDA_CONV_IMPL[precision] in FUSED_CONV else "native"
    return conv_impl


@dataclass
class DeviceData:
    """A prepared dataset's six arrays as tensors on one device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int  # 0: regression
    name: str = ""

    @property
    def regression(self) -> bool:
        return self.n_classes == 0


def to_device(prepared, device: str | torch.device) -> DeviceData:
    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a)).to(device)

    return DeviceData(
        t(prepared.x_train), t(prepared.y_train), t(prepared.x_val), t(prepared.y_val),
        t(prepared.x_test), t(prepared.y_test), int(prepared.n_classes), prepared.name,
    )


def default_device() -> torch.device:
    """CUDA where available, unless TUNEBENCH_DEVICE says otherwise (the variable the
    Snakefile also reads to decide whether training jobs share a GPU; see devices)."""
    wanted = devices.requested()
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{devices.DEVICE_ENV}=cuda, but torch {torch.__version__} sees no CUDA device")
    return torch.device(wanted or ("cuda" if torch.cuda.is_available() else "cpu"))


@dataclass
class RunResult:
    seed: int
    config: RunConfig
    epochs: list[dict] = field(default_factory=list)  # one dict per trained epoch
    diverged_epoch: int | None = None  # 1-based epoch in which the loss went non-finite
    stopped_epoch: int | None = None  # early stopping: last epoch trained
    population: int = 1  # runs trained together with this one

    @property
    def diverged(self) -> bool:
        return self.diverged_epoch is not None


def group_key(cfg: RunConfig) -> tuple:
    return tuple((k, v) for k, v in cfg.model_dump().items() if k not in PER_RUN_FIELDS)


# ---------------------------------------------------------------- losses and targets
def task_targets(y: torch.Tensor, cfg: RunConfig, n_classes: int) -> torch.Tensor:
    if cfg.task == "binary":
        return (y >= n_classes // 2).long()  # first half of the classes vs the second
    return y


def task_loss(out: torch.Tensor, y: torch.Tensor, cfg: RunConfig,
              y_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Per-example loss of the output head (softmax: cross-entropy; sigmoid: binary
    cross-entropy, one-vs-rest for multi-class; linear: squared error to the target or
    one-hot), shape (N,). A sigmoid regression head maps onto y_range = (low, high), the
    training targets' range (regression_range): its outputs can then reach every target, and
    its squared error is in the target's units, as the linear head's is."""
    if cfg.task == "regression":
        low, high = y_range
        pred = low + (high - low) * torch.sigmoid(out[:, 0]) if cfg.head == "sigmoid" else out[:, 0]
        return (pred - y) ** 2
    if cfg.head == "softmax":
        return F.cross_entropy(out, y, reduction="none")
    # One-hot by comparison: F.one_hot calls .item() (its class count), which grad-of-vmap rejects.
    classes = torch.arange(out.shape[1], device=out.device)
    target = (y[:, None] == classes).to(out.dtype) if out.shape[1] > 1 else y[:, None].to(out.dtype)
    if cfg.head == "sigmoid":
        return F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(1)
    return ((out - target) ** 2).sum(1)


def regression_range(y_train: torch.Tensor) -> tuple[float, float]:
    """The interval a sigmoid regression head maps onto: the training targets' range widened
    by 5% of it on each side, so the extreme targets are reachable at a finite logit."""
    low, high = float(y_train.min()), float(y_train.max())
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def predictions(out: torch.Tensor) -> torch.Tensor:
    if out.shape[-1] == 1:  # one output unit: binary by threshold (logit 0 / value 0.5)
        return (out[..., 0] > 0).long()
    return out.argmax(-1)


def _linear_head_threshold(out, cfg):
    # A linear head regresses the 0/1 label, so its decision threshold is 0.5, not 0.
    return out - 0.5 if (cfg.head == "linear" and out.shape[-1] == 1) else out


# ---------------------------------------------------------------- optimizers
def _bcast(h: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return h.view(-1, *([1] * (p.dim() - 1)))


def init_state(name: str, params: dict) -> dict:
    zeros = lambda: {k: torch.zeros_like(v) for k, v in params.items()}  # noqa: E731
    if name == "sgd":
        return {}
    if name in ("momentum", "adagrad", "rmsprop"):
        return {"buf": zeros()}
    if name == "adadelta":
        return {"sq": zeros(), "acc": zeros()}
    return {"m": zeros(), "v": zeros()}  # adam


def optimizer_step(name: str, params, grads, state, lr, momentum, step: torch.Tensor):
    """One update of every run; the same arithmetic as torch.optim's single-tensor path
    (checked by tests/test_engine.py against torch.optim). lr, momentum: (K,); step: the
    1-based step count as a 0-dim device tensor (a Python int would be baked into a
    captured CUDA graph)."""
    new_p, new_s = {}, {k: {} for k in state}
    if name == "adam":  # bias corrections in float64, as torch.optim computes them on the host
        stepf = step.double()
        bc1 = 1 - torch.pow(0.9, stepf)
        sqrt_bc2 = (1 - torch.pow(0.999, stepf)).sqrt()
    for k, p in params.items():
        g, a = grads[k], _bcast(lr, p)
        if name == "sgd":
            new_p[k] = p - a * g
        elif name == "momentum":  # torch SGD(momentum, dampening 0): buf = g, then mu*buf + g
            # The buffer starts at zero, so mu*0 + g == g exactly on the first step.
            buf = state["buf"][k] * _bcast(momentum, p) + g
            new_s["buf"][k], new_p[k] = buf, p - a * buf
        elif name == "adagrad":  # eps 1e-10, initial accumulator 0
            s = state["buf"][k] + g * g
            new_s["buf"][k], new_p[k] = s, p - a * g / (s.sqrt() + 1e-10)
        elif name == "rmsprop":  # alpha 0.99, eps 1e-8
            s = 0.99 * state["buf"][k] + 0.01 * g * g
            new_s["buf"][k], new_p[k] = s, p - a * g / (s.sqrt() + 1e-8)
        elif name == "adadelta":  # rho 0.9, eps 1e-6
            sq = 0.9 * state["sq"][k] + 0.1 * g * g
            delta = (state["acc"][k] + 1e-6).sqrt() / (sq + 1e-6).sqrt() * g
            new_s["sq"][k], new_s["acc"][k] = sq, 0.9 * state["acc"][k] + 0.1 * delta * delta
            new_p[k] = p - a * delta
        else:  # adam: betas (0.9, 0.999), eps 1e-8
            m = 0.9 * state["m"][k] + 0.1 * g
            v = 0.999 * state["v"][k] + 0.001 * g * g
            denom = v.sqrt() / sqrt_bc2 + 1e-8
            new_s["m"][k], new_s["v"][k], new_p[k] = m, v, p - (a / bc1) * m / denom
    return new_p, new_s


def _assign_where(mask: torch.Tensor, dst: dict, new: dict) -> None:
    """dst[k] <- new[k] where mask (per run), in place: the tensors keep their storage, so a
    captured CUDA graph reads and writes the same addresses on every replay."""
    for k, v in dst.items():
        v.copy_(torch.where(_bcast(mask, v), new[k], v))


# ---------------------------------------------------------------- schedules
def lr_multiplier(schedule: str, epoch: int, epochs: int, plateau_mult: float) -> float:
    """Multiplier of the base lr for 0-based `epoch`."""
    if schedule.startswith("step_"):
        factor = float(schedule.split("_")[1])
        milestones = (round(0.5 * epochs), round(0.75 * epochs))
        return factor ** sum(epoch >= m for m in milestones if m > 0)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "linear":  # linear decay from 1 toward 0 over the epochs
        return 1.0 - epoch / epochs
    if schedule.startswith("plateau_"):
        return plateau_mult
    return 1.0


# ---------------------------------------------------------------- augmentation
def augment(x: torch.Tensor, kind: str, keys: torch.Tensor) -> torch.Tensor:
    """On-device augmentation of a (K, B, C, H, W) batch; keys: (K,) int64 per-run streams.
    shift: random translation by up to H/14 pixels (2 px on 28x28) with zero padding;
    flip: horizontal flip with probability 1/2."""
    if kind == "none" or x.dim() != 5:
        return x
    K, B, C, H, W = x.shape
    flat = x.reshape(K * B, C, H, W)
    u = vmap(lambda key: hash_uniform(key, AUGMENT_SALT, torch.Size((B, 3)), x.device))(keys).reshape(K * B, 3)
    if kind in ("shift", "both"):
        pad = max(1, H // 14)
        padded = F.pad(flat, (pad, pad, pad, pad))
        dy = (u[:, 0] * (2 * pad + 1)).long()
        dx = (u[:, 1] * (2 * pad + 1)).long()
        rows = (torch.arange(H, device=x.device)[None, :] + dy[:, None])[:, :, None]
        cols = (torch.arange(W, device=x.device)[None, :] + dx[:, None])[:, None, :]
        n = torch.arange(K * B, device=x.device)[:, None, None]
        flat = padded.permute(0, 2, 3, 1)[n, rows, cols].permute(0, 3, 1, 2)
    if kind in ("flip", "both"):
        flat = torch.where((u[:, 2] < 0.5)[:, None, None, None], flat.flip(-1), flat)
    return flat.reshape(K, B, C, H, W)


# ---------------------------------------------------------------- the population loop
def _data_shape(data: DeviceData, cfg: RunConfig) -> DataShape:
    n_out = output_units(cfg.task, cfg.head, data.n_classes)
    vocab = int(max(data.x_train.max(), data.x_test.max(), data.x_val.max())) + 1 if cfg.model == "embedbag" else 0
    return DataShape(tuple(data.x_train.shape[1:]), n_out, vocab)


def _subset(n: int, fraction: float, seed: int) -> torch.Tensor:
    """The training examples a run uses: the first `fraction` of a seed-fixed permutation,
    so smaller fractions are nested in larger ones."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10_007 * seed + 1))
    return perm[: max(2, round(fraction * n))]


def _order(subset: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + 17) % _INT31)
    return subset[torch.randperm(len(subset), generator=g)]


def _evaluate(forward_eval, params, buffers, x, y, cfg, per_run_x: bool, chunk: int, y_range=(0.0, 1.0)):
    """Mean loss and accuracy of every run on (x, y); x shared by all runs unless per_run_x."""
    K = next(iter(params.values())).shape[0]
    loss_sum = torch.zeros(K, device=x.device)
    correct = torch.zeros(K, device=x.device)
    n = x.shape[1] if per_run_x else x.shape[0]
    for start in range(0, n, chunk):
        if per_run_x:
            xb, yb = x[:, start : start + chunk], y[:, start : start + chunk]
            out = vmap(forward_eval, in_dims=(0, 0, 0))(params, buffers, xb)
        else:
            xb, yb = x[start : start + chunk], y[start : start + chunk]
            out = vmap(forward_eval, in_dims=(0, 0, None))(params, buffers, xb)
            yb = yb.expand(K, *yb.shape)
        out = out.float()
        losses = vmap(lambda o, t: task_loss(o, t, cfg, y_range))(out, yb)
        loss_sum += losses.sum(1)
        if cfg.task != "regression":
            correct += (predictions(_linear_head_threshold(out, cfg)) == yb).float().sum(1)
    acc = correct / n if cfg.task != "regression" else torch.full_like(correct, float("nan"))
    return loss_sum / n, acc


def train_group(cfgs: list[RunConfig], seeds: list[int], data: DeviceData, **kw) -> list[RunResult]:
    """Train runs that share group_key(config) together; returns one result per run (the
    keyword arguments of group_trainer)."""
    trainer = group_trainer(cfgs, seeds, data, **kw)
    while True:
        try:
            next(trainer)
        except StopIteration as done:
            return done.value


def _check_conv_impl(conv_impl: str, cfgs: list[RunConfig], data: DeviceData) -> None:
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl {conv_impl!r}: expected one of {', '.join(CONV_IMPLS)}")
    if conv_impl == "triton" and cfgs[0].model == "cnn":
        if conv_impl not in FUSED_CONV:
            raise ValueError("conv_impl 'triton' needs the fused kernels: import tunebench.kernels, which registers "
                             "them (the command line does where it trains on a GPU)")
        if not FUSED_CONV[conv_impl].available(data.x_train.device):
            raise ValueError(f"conv_impl 'triton' needs a CUDA device and Triton (device here: {data.x_train.device}; "
                             "TRITON_INTERPRET=1 runs the kernels slowly on a CPU, for tests)")


def _eval_marks(full_steps: int, steps_per_epoch: int, evals_per_epoch: int) -> tuple[dict[int, int], list[float]]:
    """Validation points inside an epoch: {full steps done -> column} at the fractions
    j / evals_per_epoch of the epoch's steps, and every column's fraction (the epoch's end,
    1.0, being the last)."""
    marks = sorted({min(full_steps, max(1, round(j * steps_per_epoch / evals_per_epoch)))
                    for j in range(1, evals_per_epoch)})
    marks = [m for m in marks if m < steps_per_epoch]
    return {m: i for i, m in enumerate(marks)}, [m / steps_per_epoch for m in marks] + [1.0]


class _Population:
    """One group's state on the device and its training step. Parameters, buffers
    (batch-norm statistics, dropout p) and optimizer states are stacked along the run axis K;
    per-run hyperparameters are (K,) tensors. Every tensor the step reads or writes lives at
    a fixed address and is updated in place, so one captured CUDA graph can replay the whole
    step (the ~10^2-10^3 kernel launches of a vmapped step cost more than the arithmetic for
    small models). On the CPU the same step simply runs eagerly."""

    def __init__(self, cfgs: list[RunConfig], seeds: list[int], data: DeviceData, *, precision: str,
                 conv_impl: str, eval_chunk: int | None):
        device = self.device = data.x_train.device
        self.data, self.cfgs, self.seeds = data, cfgs, seeds
        cfg0 = self.cfg0 = cfgs[0]
        K = self.K = len(cfgs)
        models = [build(c, _data_shape(data, cfg0), s) for c, s in zip(cfgs, seeds)]
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().to(device) for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        self.skeleton = models[0].to(device)
        self.skeleton.conv_impl = conv_impl
        self.skeleton.use_dropout = any(c.dropout > 0 for c in cfgs)
        self.weight_names = [k for k, v in self.params.items() if penalised(k, v[0])]
        self.has_stats = any(k != "drop_p" for k in self.buffers)

        self.y_train = task_targets(data.y_train, cfg0, data.n_classes)
        self.y_val = task_targets(data.y_val, cfg0, data.n_classes)
        self.y_test = task_targets(data.y_test, cfg0, data.n_classes)
        self.y_range = regression_range(self.y_train) if cfg0.task == "regression" else (0.0, 1.0)

        self.subsets = [_subset(data.x_train.shape[0], cfg0.train_fraction, s) for s in seeds]
        n_sub = len(self.subsets[0])

        def per_run(values):
            return torch.tensor(values, device=device, dtype=torch.float32)

        self.lr = per_run([c.resolved_lr for c in cfgs])
        self.l1 = per_run([c.l1 for c in cfgs])
        # The coefficient on sum(w^2) added to the mean loss, per the run's convention.
        self.l2 = per_run([c.l2 if c.l2_convention == "mean_loss" else c.l2 / (2 * n_sub) for c in cfgs])
        self.mom = per_run([c.momentum for c in cfgs])
        self.clip = per_run([c.clip_norm or math.inf for c in cfgs])
        self.seed_t = torch.tensor(seeds, device=device, dtype=torch.int64)
        self.use_l1, self.use_l2 = any(c.l1 > 0 for c in cfgs), any(c.l2 > 0 for c in cfgs)
        self.use_clip = any(c.clip_norm is not None for c in cfgs)  # static: the norms cost a pass over the gradients
        self.opt_state = init_state(cfg0.optimizer, self.params)
        # No weight-cast cache: cached casts would outlive a captured graph's replays.
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=(precision == "bf16"),
                                       cache_enabled=False)
        self.step_fn = vmap(grad_and_value(self.loss, has_aux=True), in_dims=(0, 0, 0, 0, 0, 0, 0))

        self.bs = bs = min(cfg0.batch_size, n_sub)
        self.steps_per_epoch = n_sub // bs if (n_sub % bs) < 2 else n_sub // bs + 1  # a batch of 1 breaks batch norm
        self.full_steps = n_sub // bs
        self.has_tail = self.steps_per_epoch > self.full_steps  # the short last batch (another shape: eager)
        self.eval_idx = torch.stack([s[:EVAL_TRAIN_EXAMPLES] for s in self.subsets]).to(device)
        self.eval_chunk = eval_chunk or max(64, 32_768 // K)
        self.marks, self.fractions = _eval_marks(self.full_steps, self.steps_per_epoch, cfg0.evals_per_epoch)

        # The step's in-place state.
        self.active = torch.ones(K, dtype=torch.bool, device=device)
        self.diverged = torch.zeros(K, dtype=torch.bool, device=device)
        self.step_t = torch.zeros((), dtype=torch.int64, device=device)  # 1-based after the first step
        self.batch_i = torch.zeros((), dtype=torch.int64, device=device)  # full batch within the epoch
        self.lr_epoch = self.lr.clone()
        self.loss_sum = torch.zeros(K, device=device)
        self.grad_sq = torch.zeros(K, len(self.weight_names), device=device)
        self.order_full = torch.empty(K, self.full_steps, bs, dtype=torch.int64, device=device)
        self.order_tail = torch.empty(K, n_sub - self.full_steps * bs, dtype=torch.int64, device=device)
        self.sub_val = torch.zeros(K, len(self.fractions), device=device)

    def loss(self, p, b, x, y, key, l1_k, l2_k):
        """One run's penalised loss on its batch (vmapped over the runs), and its data loss."""
        with self.autocast:
            out = functional_call(self.skeleton, (p, b), (x, key))
        data_loss = task_loss(out.float(), y, self.cfg0, self.y_range).mean()
        penalty = 0.0
        if self.use_l2:  # skipped when no run of the group uses it: the sums cost a pass over weights
            penalty = penalty + l2_k * sum(p[w].pow(2).sum() for w in self.weight_names)
        if self.use_l1:
            penalty = penalty + l1_k * sum(p[w].abs().sum() for w in self.weight_names)
        return data_loss + penalty, data_loss

    def forward_eval(self, p, b, x):
        with self.autocast:
            return functional_call(self.skeleton, (p, b), (x, torch.zeros((), dtype=torch.int64, device=self.device)))

    def train_step(self, idx: torch.Tensor) -> None:
        """One step of every run on its batch idx (K, B); no host synchronisation."""
        params, buffers, active = self.params, self.buffers, self.active
        self.step_t.add_(1)
        xb = self.data.x_train[idx]  # (K, B, ...)
        yb = self.y_train[idx]
        keys = (self.seed_t * 1_000_003 + self.step_t) % _INT31
        xb = augment(xb, self.cfg0.augment, keys)
        old_buffers = {k: v.clone() for k, v in buffers.items()} if self.has_stats else None
        grads, (_, data_loss) = self.step_fn(params, buffers, xb, yb, keys, self.l1, self.l2)
        norms = torch.stack([grads[w].flatten(1).pow(2).sum(1) for w in self.weight_names], 1)
        finite = torch.isfinite(data_loss) & torch.isfinite(norms.sum(1))
        if self.use_clip:  # scale every gradient of a run by min(1, clip / its global norm)
            total = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads.values()], 1).sum(1).sqrt()
            scale = torch.clamp(self.clip / (total + 1e-6), max=1.0)
            grads = {k: g * _bcast(scale, g) for k, g in grads.items()}
        self.diverged.logical_or_(active & ~finite)
        active.logical_and_(finite)
        new_params, new_state = optimizer_step(self.cfg0.optimizer, params, grads, self.opt_state, self.lr_epoch,
                                               self.mom, self.step_t)
        _assign_where(active, params, new_params)
        for name in self.opt_state:
            _assign_where(active, self.opt_state[name], new_state[name])
        if self.has_stats:  # frozen runs keep their batch-norm statistics
            _assign_where(~active, buffers, old_buffers)
        self.loss_sum.add_(torch.where(active, data_loss.detach(), 0.0))
        self.grad_sq.add_(torch.where(active[:, None], norms, 0.0))

    def start_epoch(self, epoch: int, mult: list[float]) -> None:
        """The epoch's learning rates (base x schedule multiplier) and batch order; counters reset."""
        K, bs, full = self.K, self.bs, self.full_steps
        self.lr_epoch.copy_(self.lr * torch.tensor(mult, device=self.device, dtype=torch.float32))
        order = torch.stack([_order(s, seed, epoch) for s, seed in zip(self.subsets, self.seeds)]).to(self.device)
        self.order_full.copy_(order[:, : full * bs].reshape(K, full, bs))
        self.order_tail.copy_(order[:, full * bs :])
        self.loss_sum.zero_()
        self.grad_sq.zero_()
        self.batch_i.zero_()

    def _evaluate(self, x, y, per_run_x: bool = False):
        return _evaluate(self.forward_eval, self.params, self.buffers, x, y, self.cfg0, per_run_x, self.eval_chunk,
                         self.y_range)

    def validate_inside_epoch(self, column: int) -> None:
        """A validation accuracy inside the epoch (evals_per_epoch), kept on the device."""
        self.skeleton.eval()
        with torch.no_grad():
            self.sub_val[:, column] = self._evaluate(self.data.x_val, self.y_val)[1]
        self.skeleton.train()

    def end_of_epoch(self) -> dict[str, torch.Tensor]:
        """Evaluate every run on validation, test and a train sample, and freeze runs whose
        parameters went non-finite; the epoch's metrics, still on the device."""
        data = self.data
        self.skeleton.eval()
        with torch.no_grad():
            val_loss, val_acc = self._evaluate(data.x_val, self.y_val)
            test_loss, test_acc = self._evaluate(data.x_test, self.y_test)
            tr_loss, tr_acc = self._evaluate(data.x_train[self.eval_idx], self.y_train[self.eval_idx], per_run_x=True)
            self.sub_val[:, -1] = val_acc
            # Parameters can overflow to inf without a non-finite loss in the same step.
            params_finite = torch.stack([torch.isfinite(v.flatten(1)).all(1) for v in self.params.values()]).all(0)
        self.skeleton.train()
        self.diverged.logical_or_(self.active & ~params_finite)
        self.active.logical_and_(params_finite)  # in place: the captured step reads this tensor
        return dict(loss=self.loss_sum / self.steps_per_epoch, val_loss=val_loss, val_acc=val_acc, test_loss=test_loss,
                    test_acc=test_acc, train_eval_loss=tr_loss, train_acc=tr_acc, active=self.active.float(),
                    diverged=self.diverged.float(), grad=(self.grad_sq / self.steps_per_epoch).sqrt(),
                    sub_val=self.sub_val)


class _Runs:
    """The host's side of a group: each run's result rows, and its early stopping and
    plateau schedule, which look at the validation score once per epoch."""

    def __init__(self, cfgs: list[RunConfig], pairing_seeds: list[int]):
        self.cfgs = cfgs
        K = len(cfgs)
        self.results = [RunResult(seed=s, config=c, population=K) for c, s in zip(cfgs, pairing_seeds)]
        self.regression = cfgs[0].task == "regression"
        self.plateau_mult = [1.0] * K
        self.best_score = [-math.inf] * K
        self.since_best = [0] * K  # epochs without improvement (early stopping)
        self.since_best_plateau = [0] * K

    def lr_multipliers(self, epoch: int, n_epochs: int) -> list[float]:
        return [lr_multiplier(c.schedule, epoch, n_epochs, self.plateau_mult[i]) for i, c in enumerate(self.cfgs)]

    def record(self, epoch: int, host: dict[str, np.ndarray], seconds: float, mult: list[float],
               steps_per_epoch: int, fractions: list[float], active: torch.Tensor) -> None:
        """Append each still-running run's row for `epoch` (0-based); a run that diverged or
        stops early is marked inactive in `active` (the device's flags)."""
        K = len(self.results)
        for k, res in enumerate(self.results):
            if res.diverged_epoch is not None or res.stopped_epoch is not None:
                continue
            if host["diverged"][k]:
                res.diverged_epoch = epoch + 1
                res.epochs.append(_diverged_row(epoch + 1, seconds, K))
                continue
            row = {
                "epoch": epoch + 1,
                "train_loss": float(host["loss"][k]),
                "train_acc": float(host["train_acc"][k]),
                "val_loss": float(host["val_loss"][k]),
                "val_acc": float(host["val_acc"][k]),
                "test_loss": float(host["test_loss"][k]),
                "test_acc": float(host["test_acc"][k]),
                "lr": float(self.cfgs[k].resolved_lr * mult[k]),
                "steps": (epoch + 1) * steps_per_epoch,  # optimizer updates so far
                "grad_norms": [float(g) for g in host["grad"][k]],
                # Validation accuracy at these fractions of the epoch's steps (the last: its end).
                "val_fractions": fractions,
                "val_accs": [float(a) for a in host["sub_val"][k]],
                "diverged": False,
                "epoch_seconds": seconds / K,  # the population's wall time, shared equally
            }
            if any(not math.isfinite(row[m]) for m in ("val_loss", "test_loss")):
                # Finite training loss but non-finite evaluation: overflow at eval time.
                res.diverged_epoch = epoch + 1
                res.epochs.append(_diverged_row(epoch + 1, seconds, K))
                active[k] = False
                continue
            res.epochs.append(row)
            if self._stops(k, -row["val_loss"] if self.regression else row["val_acc"]):
                res.stopped_epoch = epoch + 1
                active[k] = False

    def _stops(self, k: int, score: float) -> bool:
        """Update run k's plateau schedule with its epoch's validation score; whether its
        early stopping ends it now."""
        improved = score > self.best_score[k] + 1e-9
        self.best_score[k] = max(self.best_score[k], score)
        self.since_best[k] = 0 if improved else self.since_best[k] + 1
        self.since_best_plateau[k] = 0 if improved else self.since_best_plateau[k] + 1
        cfg = self.cfgs[k]
        if cfg.schedule.startswith("plateau_") and self.since_best_plateau[k] >= cfg.plateau_patience:
            self.plateau_mult[k] *= float(cfg.schedule.split("_")[1])
            self.since_best_plateau[k] = 0
        return cfg.patience is not None and self.since_best[k] >= cfg.patience


def group_trainer(
    cfgs: list[RunConfig],
    seeds: list[int],
    data: DeviceData,
    *,
    precision: str = "fp32",
    eval_chunk: int | None = None,
    log: Callable[[str], None] | None = None,
    cuda_graphs: bool = True,
    conv_impl: str = "native",
    tag: str = "",
    compile_step: bool = False,
) -> Generator[None, int | None, list[RunResult]]:
    """train_group as a generator: it pauses once per epoch, after the epoch's steps and
    evaluation are queued on the device and before the host reads their results, and
    returns the results (StopIteration.value). train_population advances several of these
    in turn, each on its own CUDA stream, so one group's host read overlaps the other
    groups' queued work. What is sent in at a pause: the number of groups that trained
    during that epoch (its wall time is divided by it; None: 1).
    cuda_graphs: on CUDA, capture the training step once and replay it (no effect on CPU).
    conv_impl: the CNN's convolution, "native" (F.conv2d; cuDNN/oneDNN), "gemm" (im2col +
    batched matmul, see models.conv3x3_gemm) or "triton" (conv+ReLU+pool layers as one fused
    Triton kernel for the whole population, tunebench.kernels.fused_conv); the same function
    each way.
    tag: prefixed to the epoch log lines (which group they are about).
    compile_step: torch.compile the full-batch training step (see _CompiledStep); off by
    default, an option the benchmark times (`python -m tunebench.bench --compile both`).

    The device side is a _Population (state and step), the host side _Runs (rows, early
    stopping, plateau schedule); this function is the epoch loop between them."""
    _check_conv_impl(conv_impl, cfgs, data)
    assert len({group_key(c) for c in cfgs}) == 1, "runs of one population must share an architecture"
    # Every random stream of a run starts from its seed and replicate; results carry the seed
    # the pairing uses.
    stream_seeds = [s + REPLICATE_STRIDE * c.replicate for c, s in zip(cfgs, seeds)]
    pop = _Population(cfgs, stream_seeds, data, precision=precision, conv_impl=conv_impl, eval_chunk=eval_chunk)
    runs = _Runs(cfgs, list(seeds))
    K, cfg0 = pop.K, cfgs[0]

    full_step = _CompiledStep(pop.train_step, log) if compile_step else pop.train_step

    def full_batch_step() -> None:
        full_step(pop.order_full.index_select(1, pop.batch_i.view(1)).squeeze(1))
        pop.batch_i.add_(1)

    # Under 4 full batches per epoch the capture would cost about what it saves.
    use_graph = cuda_graphs and pop.full_steps >= 4
    run_full_batch = _GraphedStep(full_batch_step, pop.device, log) if use_graph else full_batch_step
    pop.skeleton.train()
    # A step budget (cfg.steps) sets the epochs: every batch size then takes the same number of
    # optimizer updates (the Playbook's batch-size claims compare at a step budget).
    n_epochs = cfg0.epochs if cfg0.steps is None else max(1, math.ceil(cfg0.steps / pop.steps_per_epoch))
    for epoch in range(n_epochs):
        t0 = time.perf_counter()
        mult = runs.lr_multipliers(epoch, n_epochs)
        pop.start_epoch(epoch, mult)
        for done in range(1, pop.full_steps + 1):
            run_full_batch()
            if done in pop.marks:
                pop.validate_inside_epoch(pop.marks[done])
        if pop.has_tail:
            pop.train_step(pop.order_tail)
        on_device = pop.end_of_epoch()
        # Pause outside every context manager (no_grad, autocast, a stream are global state
        # that the other groups' turns would inherit); then the one host read of the epoch.
        co_training = (yield) or 1
        host = {k: v.detach().float().cpu().numpy() for k, v in on_device.items()}
        # Wall time of the epoch; with groups training side by side, its share of it.
        seconds = (time.perf_counter() - t0) / co_training
        runs.record(epoch, host, seconds, mult, pop.steps_per_epoch, pop.fractions, pop.active)
        if log:
            log(
                f"  {tag}epoch {epoch + 1}/{n_epochs}: {int(host['active'].sum())}/{K} active, "
                f"{int(host['diverged'].sum())} diverged, {seconds:.2f}s"
            )
        if not bool(pop.active.any()):
            break
    return runs.results


def _loud_recompile_limit():
    """Dynamo's `fail_on_recompile_limit_hit` (raise, not silently run eagerly) where this
    torch has it."""
    config = torch._dynamo.config
    if "fail_on_recompile_limit_hit" in getattr(config, "_config", {}):
        return config.patch(fail_on_recompile_limit_hit=True)
    return contextlib.nullcontext()


class _CompiledStep:
    """The training step through torch.compile (Inductor), which can fuse the step's many
    small elementwise passes (activation gradients, gradient norms, the optimizer's update,
    the divergence masks) into fewer kernels. fullgraph=True: the whole step compiles as one
    graph or not at all, so a step that cannot be compiled (e.g. a custom kernel Inductor
    cannot trace) fails before any of it has run; then a log line, and the step runs
    eagerly from then on, with the same results. dynamic=False: the full batches share one
    shape (the short last batch of an epoch runs eagerly, not recompiled). Compiled code
    may round differently from eager code (fused, reordered sums): within float tolerance,
    not bit for bit (tests/test_engine.py)."""

    def __init__(self, step: Callable[[torch.Tensor], None], log: Callable[[str], None] | None):
        self.step, self.log = step, log
        # A code object of its own: Dynamo caches compiled code per code object, and every
        # group's step is the same method (_Population.train_step), so after `recompile_limit`
        # (8) groups in a process it would run the others eagerly, with a warning and no error.
        fn = getattr(step, "__func__", step)
        own = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        if isinstance(step, types.MethodType):
            own = types.MethodType(own, step.__self__)
        self.compiled: Callable[[torch.Tensor], None] | None = torch.compile(own, fullgraph=True, dynamic=False)

    def __call__(self, idx: torch.Tensor) -> None:
        if self.compiled is not None:
            try:
                with _loud_recompile_limit():  # should the limit still be hit: an error, so a log line
                    self.compiled(idx)
                return
            except torch.cuda.OutOfMemoryError:
                raise  # not a compile failure: train_population halves the population and retries
            except Exception as err:  # noqa: BLE001  any compile failure falls back to the eager step
                if self.log:
                    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
                    self.log(f"  torch.compile of the step failed ({type(err).__name__}: {first}); training this group eagerly")
                self.compiled = None
        self.step(idx)


class _GraphedStep:
    """Calls `step` through a CUDA graph: the first WARMUP calls run eagerly on a side
    stream (real steps; capture requires the warm-up), the next one captures the step and
    every call replays it. Where some op cannot be captured, a log line, and the step runs
    eagerly from then on. On a CPU device it simply calls `step`."""

    WARMUP = 2

    def __init__(self, step: Callable[[], None], device: torch.device, log: Callable[[str], None] | None):
        self.step, self.device, self.log = step, device, log
        self.enabled = device.type == "cuda"
        self.warm = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif not self.enabled:
            self.step()
        elif self.warm < self.WARMUP:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.step()
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.warm += 1
        else:
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self.step()  # recorded, not run
            except Exception as err:  # noqa: BLE001  any capture failure falls back to eager steps
                torch.cuda.synchronize()
                if self.log:
                    self.log(f"  CUDA graph capture failed ({type(err).__name__}: {err}); training this group eagerly")
                self.enabled = False
                self.step()
                return
            self.graph = graph
            graph.replay()


def _diverged_row(epoch: int, seconds: float, K: int) -> dict:
    nan = float("nan")
    return {
        "epoch": epoch, "train_loss": nan, "train_acc": nan, "val_loss": nan, "val_acc": nan,
        "test_loss": nan, "test_acc": nan, "lr": nan, "grad_norms": [], "val_fractions": [], "val_accs": [],
        "diverged": True,
        "epoch_seconds": seconds / K,
    }


_CUDA_BYTES_PER_RUN: dict[tuple, float] = {}


def _arch_key(cfg: RunConfig, data: DeviceData) -> tuple:
    """What a probe's outcome depends on: the architecture and the batch's shape."""
    arch = ("model", "depth", "width", "embed_dim", "batchnorm", "residual", "batch_size", "augment", "task", "head")
    return tuple(getattr(cfg, f) for f in arch) + tuple(data.x_train.shape[1:]) + (str(data.x_train.dtype),)


def _probe_data(data: DeviceData, n_train: int, n_eval: int) -> DeviceData:
    """The first examples of each split: enough for a few probe steps."""
    n = min(data.x_train.shape[0], n_train)
    return DeviceData(
        data.x_train[:n], data.y_train[:n], data.x_val[:n_eval], data.y_val[:n_eval],
        data.x_test[:n_eval], data.y_test[:n_eval], data.n_classes, data.name,
    )


# A CNN on images of more pixels than this trains one run at a time on a CPU.
CPU_CNN_STACK_MAX_PIXELS = 255
CPU_MAX_POPULATION = 256


def _cpu_population(cfg: RunConfig, data: DeviceData) -> int:
    """On a CPU, whether stacking runs pays depends on the model: vmapped convolutions
    become grouped convolutions, which oneDNN runs slower than K separate ones on large
    images (measured, 2 cores, freed host memory kept: the reference CNN on 28x28 trains
    3,022 samples/s alone, 2,745 model-samples/s as a population of 4; python -m
    tunebench.bench), while on 8x8 digits stacking CNNs pays, as it does for MLPs (4-7x
    the tutorial loop) and RNNs. A fixed rule, not a timing probe: a choice that depended
    on the machine's load would change float rounding, and so the results, between two
    runs of the same configuration."""
    pixels = math.prod(data.x_train.shape[2:]) if data.x_train.dim() >= 4 else 0
    if cfg.model == "cnn" and pixels > CPU_CNN_STACK_MAX_PIXELS:
        return 1
    return CPU_MAX_POPULATION


def max_population(cfg: RunConfig, data: DeviceData, precision: str = "fp32", conv_impl: str = "native") -> int:
    """How many runs of this architecture fit at once. On CUDA: measured from one probe
    step's peak memory against free memory (the prototype died at 256 CNNs x batch 512),
    and kept under 2**31 elements per activation tensor (32-bit indexing limit). On CPU:
    a fixed cap; memory there is not the constraint."""
    if data.x_train.device.type != "cuda":
        return _cpu_population(cfg, data)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    # The fused kernels' tiles too, where they are loaded: their layouts differ in memory.
    fused = FUSED_CONV.get(conv_impl)
    key = _arch_key(cfg, data) + (precision, conv_impl, fused.tiles() if fused else None)
    if key not in _CUDA_BYTES_PER_RUN:  # one probe per architecture and process, tile setting
        probe = cfg.model_copy(update={"epochs": 1})
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_group([probe, probe], [0, 1], _probe_data(data, 4 * cfg.batch_size, 256), precision=precision,
                    eval_chunk=256, cuda_graphs=False, conv_impl=conv_impl)
        _CUDA_BYTES_PER_RUN[key] = max((torch.cuda.max_memory_allocated() - base) / 2, 1)
    # x1.5: a captured graph keeps its own memory pool beside the eager allocations.
    per_run = 1.5 * _CUDA_BYTES_PER_RUN[key]
    by_memory = int(0.6 * free / per_run)
    # Largest activation tensor per example: a CNN's second stage (2*width channels at full
    # resolution), else the input, a hidden layer, or an RNN's/EmbeddingBag's sequence.
    n_in = math.prod(data.x_train.shape[1:])
    if cfg.model == "cnn":
        per_example = 2 * cfg.width * n_in
    elif cfg.model in ("rnn", "embedbag"):
        per_example = max(n_in, data.x_train.shape[-1] * max(cfg.width, cfg.embed_dim))
    else:
        per_example = max(n_in, cfg.width)
    by_index = int((2**31 - 1) // (cfg.batch_size * per_example))
    return max(1, min(by_memory, by_index, 1024))


# Groups trained side by side on one GPU, each on its own CUDA stream, as long as their
# populations together fit the memory one full-size population may take (see
# train_population). Small groups (a few seeds of one architecture, or one search round's
# trials of one width) leave most of an H100 idle: the full profile's slowest jobs were
# MLP dimensions whose arms are different architectures (benchmarks/h100-2026-11-26/).
CUDA_CONCURRENT_GROUPS = 8


def train_population(
    cfgs: list[RunConfig],
    seeds: list[int],
    data: DeviceData,
    *,
    precision: str = "fp32",
    max_chunk: int | None = None,
    log: Callable[[str], None] | None = None,
    cuda_graphs: bool = True,
    conv_impl: str = "auto",
    concurrent_groups: int | None = None,
    compile_step: bool = False,
) -> list[RunResult]:
    """Train many runs: grouped by architecture, each group in memory-sized chunks.
    Results come back in the order of `cfgs`. conv_impl "auto": CUDA_CONV_IMPL[precision] on CUDA,
    "native" elsewhere (resolve_conv_impl; see group_trainer).

    concurrent_groups: chunks trained side by side (default CUDA_CONCURRENT_GROUPS on CUDA,
    1 elsewhere: a CPU gains nothing from it). A chunk of n runs whose architecture fits
    `cap` at once takes n/cap of the memory budget; chunks start while the running ones'
    shares add up to at most 1. Each group's arithmetic is the same whatever runs beside
    it, so results equal those of one group at a time (tests/test_engine.py).
    A chunk that runs out of CUDA memory (the memory sized at probe time can be taken since
    by other jobs on the GPU, `--resources gpu=N`) retries as two halves; a single run that
    does not fit is a real error.
    compile_step: each group's step through torch.compile (group_trainer; off by default:
    the pipeline does not compile, the benchmark times it)."""
    device = data.x_train.device
    if device.type == "cpu":
        devices.retain_freed_host_memory()  # faster CPU steps (see there)
    conv_impl = resolve_conv_impl(conv_impl, precision, device.type)
    concurrent_groups = concurrent_groups or (CUDA_CONCURRENT_GROUPS if device.type == "cuda" else 1)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cfgs):
        groups.setdefault(group_key(c), []).append(i)
    pending: list[tuple[list[int], int]] = []  # (members, how many of them fit at once)
    for members in groups.values():
        cap = max_chunk or max_population(cfgs[members[0]], data, precision, conv_impl)
        pending += [(members[start : start + cap], cap) for start in range(0, len(members), cap)]
    results: list[RunResult | None] = [None] * len(cfgs)
    running: list[dict] = []
    started = 0
    while pending or running:
        while pending and (not running or (len(running) < concurrent_groups and sum(r["share"] for r in running)
                                           + len(pending[0][0]) / pending[0][1] <= 1)):
            chunk, cap = pending.pop(0)
            c = cfgs[chunk[0]]
            started += 1
            tag = f"[{started}] " if concurrent_groups > 1 else ""
            if log:
                log(f"{tag}group {c.model} depth={c.depth} width={c.width} opt={c.optimizer}: {len(chunk)} runs at once")
            stream = torch.cuda.Stream(device) if device.type == "cuda" and concurrent_groups > 1 else None
            if stream is not None:  # the data and anything queued before must be ready for it
                stream.wait_stream(torch.cuda.current_stream(device))
            trainer = group_trainer([cfgs[i] for i in chunk], [seeds[i] for i in chunk], data, precision=precision,
                                    log=log, cuda_graphs=cuda_graphs, conv_impl=conv_impl, tag=tag,
                                    compile_step=compile_step)
            running.append({"chunk": chunk, "cap": cap, "share": len(chunk) / cap, "trainer": trainer, "stream": stream})
        for job in list(running):  # one epoch of each running group in turn
            chunk, trainer = job["chunk"], job["trainer"]
            fresh = inspect.getgeneratorstate(trainer) == inspect.GEN_CREATED  # a fresh generator takes None
            try:
                with torch.cuda.stream(job["stream"]):  # None: a no-op (CPU, or one group at a time)
                    trainer.send(None if fresh else len(running))
            except StopIteration as done:
                running.remove(job)
                for i, r in zip(chunk, done.value):
                    results[i] = r
            except torch.cuda.OutOfMemoryError:
                running.remove(job)
                if len(chunk) == 1:
                    raise
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if log:
                    log(f"  CUDA out of memory with {len(chunk)} runs; retrying as two populations")
                half = len(chunk) // 2
                pending[:0] = [(chunk[:half], job["cap"]), (chunk[half:], job["cap"])]
    return results  # type: ignore[return-value]


def train(config: RunConfig, data: DeviceData, seed: int = 0, **kw) -> RunResult:
    """One run: a population of one."""
    return train_population([config], [seed], data, **kw)[0]
