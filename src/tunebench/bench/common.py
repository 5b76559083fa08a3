"""What the benchmark's modes share: the two architectures timed, the device and precision
settings, Fashion-MNIST on the device, one timed engine epoch, the tile-set arguments of
the fused kernels, and atomic JSON output."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from tunebench.core import data, engine
from tunebench.spec.config import RunConfig

ARCHS = {  # the reference CNN of the tutorial-era posts, and a mid-sized MLP
    "cnn": RunConfig(model="cnn", depth=2, width=32, optimizer="sgd", lr=0.05, batch_size=512, epochs=1),
    "mlp": RunConfig(model="mlp", depth=2, width=256, optimizer="sgd", lr=0.05, batch_size=512, epochs=1),
}


EVAL_N = 128  # val/test examples per run: tiny, so the timed epoch is almost all training


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def device_slug(dev: torch.device) -> str:
    name = "cpu" if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def set_precision(precision: str | None) -> None:
    """None: PyTorch's defaults (what a tutorial user gets: TF32 off for matmuls, on for
    cuDNN convs). fp32/bf16: strict fp32 outside autocast. tf32: TF32 for matmuls and convs."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = True if precision is None else tf32


def atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=str)
        os.replace(tmp, path)  # readers see the old or the new file, never half of one
    finally:
        Path(tmp).unlink(missing_ok=True)


def conv_variants(convs: str, triton_tiles: str | None) -> list[tuple[str, dict[str, int]]]:
    """--conv native,triton --triton-tiles "P=64,W=8;R=64" -> [(native, {}), (triton, {}),
    (triton, {P: 64, W: 8}), (triton, {R: 64})]: each tile set of the fused kernels is its
    own row, after the default tiles' row, so that a tile set is always compared with the
    defaults in the same run (on an H100 a sweep without that row needed a second call)."""
    out = []
    for conv in convs.split(","):
        out.append((conv, {}))
        if conv == "triton" and triton_tiles:
            for variant in triton_tiles.split(";"):
                sizes = dict(item.split("=") for item in variant.split(",") if item)
                sizes = {k.strip(): int(v) for k, v in sizes.items()}
                if sizes and (conv, sizes) not in out:
                    out.append((conv, sizes))
    return out


# An on|off|both option (--graphs, --compile) as the settings to run, off first.
SWITCH = {"off": [False], "on": [True], "both": [False, True]}


def tile_label(sizes: dict[str, int]) -> str:
    """{"G": 1, "B": 1} -> "G=1,B=1"; {} -> "default": how rows and result keys name a tile set."""
    return ",".join(f"{k}={v}" for k, v in sizes.items()) or "default"


def engine_epoch(cfg: RunConfig, K: int, dd: engine.DeviceData, precision: str, n: int,
                 conv_impl: str = "native", cuda_graphs: bool = True,
                 compile_step: bool = False, log=None, second_epoch: bool = False) -> tuple[int, float, float]:
    """One timed epoch of K runs after a short warm-up call of the same shape (kernel
    selection, allocator). Timed: the epoch as the engine reports it (epoch_seconds x K:
    all training steps + end-of-epoch eval on EVAL_N val, test and train examples per
    run, forward only: about EVAL_N training-sample equivalents), not model building.
    n: training samples per run (the first n of dd). Returns (model-samples, seconds, the
    runs' mean training loss over the epoch: NaN if one diverged), the loss so that rows
    which should train alike (other kernels, same seeds and data) can be seen to.
    compile_step: torch.compile the step (engine._CompiledStep). Each call compiles afresh (a
    new step function), so a compiled row needs second_epoch.
    second_epoch: no warm-up call; the runs train two epochs and the second is timed (the
    first compiles, captures and warms up); the loss is still the first epoch's, comparable
    with a one-epoch row's (constant learning rate).
    log: gets the engine's log lines (e.g. a step that could not be compiled)."""
    cfgs, seeds = [cfg.model_copy(update={"epochs": 2})] * K if second_epoch else [cfg] * K, list(range(K))
    dd = engine.DeviceData(dd.x_train[:n], dd.y_train[:n], dd.x_val, dd.y_val, dd.x_test, dd.y_test, dd.n_classes)
    p = "bf16" if precision == "bf16" else "fp32"
    warm = engine.DeviceData(dd.x_train[: cfg.batch_size], dd.y_train[: cfg.batch_size],
                             dd.x_val, dd.y_val, dd.x_test, dd.y_test, dd.n_classes)
    saved = engine.EVAL_TRAIN_EXAMPLES
    engine.EVAL_TRAIN_EXAMPLES = EVAL_N  # shrink the per-epoch train-accuracy eval, as val/test
    try:
        kw = dict(precision=p, max_chunk=K, conv_impl=conv_impl, cuda_graphs=cuda_graphs, compile_step=compile_step,
                  log=log)
        if not second_epoch:
            engine.train_population(cfgs, seeds, warm, **kw)
        res = engine.train_population(cfgs, seeds, dd, **kw)
    finally:
        engine.EVAL_TRAIN_EXAMPLES = saved
    n = len(dd.y_train)
    steps = n // cfg.batch_size if n % cfg.batch_size < 2 else n // cfg.batch_size + 1
    loss = sum(r.epochs[0]["train_loss"] for r in res) / K
    timed = res[0].epochs[-1]  # a run that diverged in the first epoch has one row: NaN loss says so
    return K * min(n, steps * cfg.batch_size), timed["epoch_seconds"] * K, loss


def fmnist_device_data(raw_dir: Path, n: int, dev: torch.device) -> tuple[engine.DeviceData, str]:
    ctx = data.LoadContext(raw_dir, False, 1.0)
    try:
        raw = data.load_raw("fashion_mnist", ctx)
        # max_train/max_test keep just what is timed; prepare() standardises like a real run.
        p = data.prepare(raw, "fashion_mnist", "multiclass", "image", 0.1, 0, max_train=max(n, 10), max_test=EVAL_N)
        return engine.to_device(p, dev), raw.source
    except data.DataError as err:
        log(f"warning: {err}; using random data")
        g = torch.Generator().manual_seed(0)
        t = lambda m: (torch.randn(m, 1, 28, 28, generator=g).to(dev), torch.randint(0, 10, (m,), generator=g).to(dev))  # noqa: E731
        return engine.DeviceData(*t(n), *t(EVAL_N), *t(EVAL_N), 10, "random"), "RANDOM data (no Fashion-MNIST files)"
