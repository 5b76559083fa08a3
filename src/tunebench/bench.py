"""Throughput, profile and kernel timing: `python -m tunebench.bench [throughput|profile|kernels|registers] ...`.

throughput (default): samples/s on one device, in one process, for the reference CNN
(conv32-conv64-fc128) and an MLP (2x256) on Fashion-MNIST-shaped data:
  (a) the PyTorch tutorial loop: torchvision FashionMNIST + DataLoader(batch 64) + torch.optim.SGD,
  (b) the engine with one run (engine.train_population, batch 512),
  (c) the engine with populations of K runs (model-samples/s = K x samples/s).
profile: wall time of every ablation job of a params.yaml profile, trained in-process.
kernels: where one engine epoch of a population spends its time, per kernel (torch.profiler;
device time on CUDA, CPU time on a CPU): what to speed up next.
registers: the fused Triton kernels compiled for an H100/H200 (sm_90) without a GPU, with
ptxas's registers per thread, spilled bytes and shared memory, the resident warps per SM,
the tensor-core instruction and the asynchronous copies, per precision and tile set.
Results go to results/bench/*.json (written atomically)."""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tunebench import data, devices, engine, models, popconv, sm90
from tunebench.config import RunConfig

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


def forward_flops(cfg: RunConfig, shape: models.DataShape) -> float:
    """FLOPs of one example's forward pass (FlopCounterMode counts 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = models.build(cfg, shape, 0)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, *shape.in_shape), torch.zeros((), dtype=torch.int64))
    return float(fc.get_total_flops())


# ---------------------------------------------------------------- (a) the tutorial loop
def torchvision_root(raw_dir: Path, tmp: Path) -> tuple[Path | None, str]:
    """A root that torchvision.datasets.FashionMNIST(root, download=False) can read: it wants
    root/FashionMNIST/raw/<name>-ubyte unpacked, so .gz files are unpacked into `tmp`."""
    names = [f.removesuffix(".gz") for f in data.IDX_FILES.values()]
    base = raw_dir / "fashion_mnist"
    if all((base / "FashionMNIST" / "raw" / n).is_file() for n in names):
        return base, f"torchvision layout in {base}"
    for d in (base, base / "FashionMNIST" / "raw", *data.FASHION_MNIST_SYSTEM_DIRS):
        if all((d / f).is_file() for f in data.IDX_FILES.values()):
            out = tmp / "FashionMNIST" / "raw"
            out.mkdir(parents=True, exist_ok=True)
            for f in data.IDX_FILES.values():
                with gzip.open(d / f, "rb") as src, open(out / f.removesuffix(".gz"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
            return tmp, f"{d}/*.gz unpacked into a temporary torchvision root"
    return None, "NO Fashion-MNIST files found: random TensorDataset of the same shape"


def tutorial_loop(cfg: RunConfig, dev: torch.device, dataset, samples: int, warmup: int = 10) -> tuple[int, float]:
    """The PyTorch quickstart loop: batches of 64 from a DataLoader (0 workers, shuffled,
    PIL -> ToTensor per image), moved to the device each step. Returns (samples, seconds)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=0)
    net = models.build(cfg, models.DataShape((1, 28, 28), 10), 0).to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=cfg.resolved_lr)
    key = torch.zeros((), dtype=torch.int64, device=dev)

    def batches():
        while True:
            yield from loader

    def step(x, y):
        x, y = x.to(dev), y.to(dev)
        loss = F.cross_entropy(net(x, key), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    it = batches()
    for _ in range(warmup):
        step(*next(it))
    sync(dev)
    t0, n = time.perf_counter(), 0
    while n < samples:
        x, y = next(it)
        step(x, y)
        n += len(y)
    sync(dev)
    return n, time.perf_counter() - t0


# ---------------------------------------------------------------- (b), (c) the engine
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


def throughput(args, dev: torch.device, save=lambda result: None) -> dict:
    """All rows of the table; `save` gets the partial result after every row, so a run cut
    short by a timeout still leaves what it measured."""
    import torchvision

    cpu = dev.type == "cpu"
    samples = args.samples or (2048 if cpu else 60_000)
    pops = [int(k) for k in (args.populations or ("4,8" if cpu else "4,16,64")).split(",") if int(k) > 1]
    shape = models.DataShape((1, 28, 28), 10)
    meta = {"device": device_slug(dev), "torch": torch.__version__, "precision": args.precision,
            "threads": torch.get_num_threads(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            # Set here, before any row, as the engine sets it for its own: the tutorial loop then
            # runs under the same allocator (glibc keeps freed memory, devices.retain_freed_host_memory).
            "host_memory_retained": cpu and devices.retain_freed_host_memory(),
            "timed": "(a): steady-state steps after 10 warm-up batches, incl. DataLoader/ToTensor and host->device "
                     "copies; (b),(c): one engine epoch after a warm-up call, incl. end-of-epoch eval "
                     f"({EVAL_N} val + {EVAL_N} test + {EVAL_N} train examples/run, forward only); model building excluded"
                     + ("; with --compile, the largest population's rows (eager and compiled): the second of two "
                        "epochs, the first compiling and warming up" if args.compile != "off" else "")
                     + ("; the CNN's rows (c) stack runs on this CPU to show what stacking costs here, but the engine "
                        f"trains a CNN on images of more than {engine.CPU_CNN_STACK_MAX_PIXELS} pixels one run at a "
                        "time on a CPU (engine.CPU_CNN_STACK_MAX_PIXELS), so the pipeline runs at row (b)'s rate"
                        if cpu and "cnn" in args.models.split(",") else "")}
    dd, meta["engine_data"] = fmnist_device_data(Path(args.raw_dir), samples, dev)
    result = {"meta": meta, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        root, meta["tutorial_data"] = torchvision_root(Path(args.raw_dir), Path(tmp))
        if root is not None:
            ds = torchvision.datasets.FashionMNIST(str(root), train=True, download=False,
                                                   transform=torchvision.transforms.ToTensor())
        else:
            g = torch.Generator().manual_seed(0)
            ds = torch.utils.data.TensorDataset(torch.rand(60_000, 1, 28, 28, generator=g),
                                                torch.randint(0, 10, (60_000,), generator=g))
        for arch in args.models.split(","):
            cfg = ARCHS[arch].model_copy(update={"batch_size": args.batch})
            flops = 3 * forward_flops(cfg, shape)  # a training step ~ forward + 2x forward for backward
            base = None

            def add(row: str, K: int, batch: int, precision: str, n=None, s=None, skipped=None, conv=None, tiles=None,
                    loss=None, compiled=False):
                nonlocal base
                r = dict(model=arch, row=row, K=K, batch=batch, precision=precision)
                if compiled:  # the step through torch.compile (engine._CompiledStep)
                    r["compiled"] = True
                if conv is not None:  # engine rows of the CNN: which convolution, which Triton tiles
                    r.update(conv=conv, tiles=tiles or {})
                if skipped:
                    r["skipped"] = skipped
                else:
                    base = base or n / s
                    r.update(samples=n, seconds=s, samples_per_s=n / s, vs_tutorial=n / s / base,
                             tflops=n / s * flops / 1e12, train_flops_per_sample=flops)
                    if loss is not None:
                        r["train_loss"] = loss
                        loss_vs_eager(loss_vs_default_tiles(result["rows"] + [r]))
                result["rows"].append(r)
                log(f"  {arch} {row}: " + (f"skipped ({skipped})" if skipped else f"{n / s:,.0f} samples/s"))
                save(result)

            set_precision(None)
            n, s = tutorial_loop(cfg, dev, ds, args.tutorial_samples or min(samples, 10_000))
            add("(a) tutorial DataLoader+SGD", 1, 64, "torch default", n, s)
            set_precision(args.precision)
            # Largest activation: the first conv's output (cnn) or the input (mlp), per example.
            per_ex = cfg.width * 28 * 28 if arch == "cnn" else max(28 * 28, cfg.width)
            convs = conv_variants(args.conv or "native", args.triton_tiles) if arch == "cnn" else [("native", {})]
            graph_modes = SWITCH[args.graphs]
            graph_modes = graph_modes if dev.type == "cuda" else [False]  # graphs are CUDA-only
            compile_modes = SWITCH[args.compile]
            for compiled, (conv_impl, tile_sizes), graphs, K in itertools.product(compile_modes, convs, graph_modes,
                                                                                   [1] + pops):
                # Compiled rows (last, so a time limit cuts them first): the largest population and
                # the default tiles only, as each shape is compiled afresh (tens of seconds).
                if compiled and (K != max([1] + pops) or tile_sizes):
                    continue
                tile_text = "".join(f" {k}{v}" for k, v in tile_sizes.items())
                how = ((f" [{conv_impl}{tile_text} conv]" if arch == "cnn" else "") + (" [CUDA graph]" if graphs else "")
                       + (" [compiled]" if compiled else ""))
                label = ("(b) engine, one run" if K == 1 else f"(c) engine, population {K}") + how
                conv_kw = dict(conv=conv_impl, tiles=tile_sizes) if arch == "cnn" else {}
                conv_kw["compiled"] = compiled
                if K * cfg.batch_size * per_ex >= 2**31:  # 32-bit indexing limit of some kernels
                    add(label, K, cfg.batch_size, args.precision, skipped="an activation would exceed 2**31 elements", **conv_kw)
                    continue
                # --max-model-samples bounds a row's work (K x samples) so big populations
                # stay within a time budget; 20+ steps per run are still steady state.
                n_run = min(len(dd.y_train), (args.max_model_samples or 10**12) // K)
                n_run = max(cfg.batch_size, n_run // cfg.batch_size * cfg.batch_size)
                engine_log: list[str] = []
                try:
                    with popconv.tiles(**tile_sizes):
                        # In a table with compiled rows, its largest population's eager rows are
                        # timed as the compiled ones are: the second of two epochs.
                        n, s, loss = engine_epoch(cfg, K, dd, args.precision, n_run, conv_impl, graphs, compiled,
                                                  log=engine_log.append,
                                                  second_epoch=args.compile != "off" and K == max([1] + pops))
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    add(label, K, cfg.batch_size, args.precision, skipped="CUDA out of memory", **conv_kw)
                    continue
                except Exception as err:  # noqa: BLE001  a kernel limit or a Triton compile error: the row says so, the table goes on
                    add(label, K, cfg.batch_size, args.precision, skipped=f"{type(err).__name__}: {str(err)[:120]}", **conv_kw)
                    continue
                fallback = [m.strip() for m in engine_log if "torch.compile of the step failed" in m]
                if fallback:  # it trained eagerly: not a compiled row
                    add(label, K, cfg.batch_size, args.precision, skipped=fallback[0][:200], **conv_kw)
                    continue
                add(label, K, cfg.batch_size, args.precision, n, s, loss=loss, **conv_kw)
    return result


def loss_vs_default_tiles(rows: list[dict]) -> list[dict]:
    """Sets `loss_vs_default_tiles` on each measured row of a Triton tile set: its mean
    training loss relative to the default tiles' row of the same model, K, precision and
    CUDA-graph mode (same seeds, data and samples; only the kernels differ, so only
    rounding should). A wrong kernel variant shows here, in the same table as its speed,
    before anyone makes it the default. Rows in place; returns them."""
    def key(r):
        return r["model"], r["K"], r["precision"], "[CUDA graph]" in r["row"]
    default = {key(r): r["train_loss"] for r in rows
               if r.get("conv") == "triton" and not r.get("tiles") and not r.get("compiled") and "train_loss" in r}
    for r in rows:
        if r.get("tiles") and "train_loss" in r and key(r) in default:
            r["loss_vs_default_tiles"] = r["train_loss"] / default[key(r)] - 1
    return rows


def loss_vs_eager(rows: list[dict]) -> list[dict]:
    """Sets `loss_vs_eager` on each measured compiled row: its mean training loss relative to
    the same row (model, convolution, tiles, K, precision, graph mode) without torch.compile.
    Fused, reordered sums round differently, so only rounding should show. Rows in place."""
    def key(r):
        return (r["model"], r.get("conv"), tuple(sorted((r.get("tiles") or {}).items())), r["K"], r["precision"],
                "[CUDA graph]" in r["row"])
    eager = {key(r): r["train_loss"] for r in rows if not r.get("compiled") and "train_loss" in r}
    for r in rows:
        if r.get("compiled") and "train_loss" in r and key(r) in eager:
            r["loss_vs_eager"] = r["train_loss"] / eager[key(r)] - 1
    return rows


def _loss_agrees(r: dict, tolerance: float) -> bool:
    """Whether a row's loss agrees with its reference rows' (`not <=`: NaN disagrees); a row
    with nothing to compare with agrees."""
    return all(abs(r.get(k, 0.0)) <= tolerance for k in ("loss_vs_default_tiles", "loss_vs_eager"))


def print_table(rows: list[dict]) -> None:
    """The throughput table; `train loss` is the engine rows' mean over the epoch and runs, and
    a tile set's row adds how far it is from the default tiles' (should be rounding only)."""
    head = ("model", "row", "K", "batch", "precision", "samples", "seconds", "samples/s", "x tutorial", "TFLOP/s",
            "train loss")
    lines = [head]
    for r in rows:
        first = (r["model"], r["row"], str(r["K"]), str(r["batch"]), r["precision"])
        loss = f"{r['train_loss']:.4f}" if "train_loss" in r else "-"
        if "loss_vs_default_tiles" in r:
            loss += f" ({r['loss_vs_default_tiles']:+.2%} vs default tiles)"
        if "loss_vs_eager" in r:
            loss += f" ({r['loss_vs_eager']:+.2%} vs eager)"
        lines.append(first + (("-",) * 6 if "skipped" in r else (
            str(r["samples"]), f"{r['seconds']:.2f}", f"{r['samples_per_s']:,.0f}", f"{r['vs_tutorial']:.2f}",
            f"{r['tflops']:.3f}", loss)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line, r in zip(lines, [{}] + rows):
        text = "  ".join(c.ljust(w) if i < 2 or i == len(head) - 1 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(line, widths))).rstrip()
        print(text + (f"  (skipped: {r['skipped']})" if "skipped" in r else ""))


def fastest_conv(rows: list[dict], default: str = "native") -> str:
    """The CNN convolution with the most samples/s at the largest population that every
    measured convolution reached (default tiles only): what a profile run should train with.
    `default` when no CNN engine row was measured."""
    measured = [r for r in rows if r.get("model") == "cnn" and r.get("conv") and not r.get("tiles")
                and not r.get("compiled") and "samples_per_s" in r]  # the pipeline does not compile
    by_conv: dict[str, dict[int, float]] = {}
    for r in measured:
        by_conv.setdefault(r["conv"], {})[r["K"]] = r["samples_per_s"]
    if not by_conv:
        return default
    K = max(set.intersection(*(set(ks) for ks in by_conv.values())) or {0})
    if K == 0:  # no population size in common: each convolution at its own largest
        return max(by_conv, key=lambda c: by_conv[c][max(by_conv[c])])
    return max(by_conv, key=lambda c: by_conv[c][K])


# A tile set changes only the order of the kernels' sums, so its epoch's mean training loss
# should match the default tiles' to rounding: well under 1% in bf16 over one epoch
# (same seeds and data). A wrong gradient moves it by far more (or to NaN).
LOSS_AGREEMENT = 0.01  # relative


def fastest_tiles(rows: list[dict], tolerance: float = LOSS_AGREEMENT) -> str | None:
    """The label of the Triton tile set ("G=1,B=1", or "default") whose CNN row has the most
    samples/s at the largest population measured with Triton, among the tile sets whose
    training loss agrees with the default tiles' (|loss_vs_default_tiles| <= tolerance): a
    fast but wrong variant is never picked. None when no Triton CNN row was measured."""
    tri = [r for r in rows if r.get("model") == "cnn" and r.get("conv") == "triton" and not r.get("compiled")
           and "samples_per_s" in r]
    if not tri:
        return None
    K = max(r["K"] for r in tri)
    ok = [r for r in tri if r["K"] == K and (not r.get("tiles") or abs(r.get("loss_vs_default_tiles", math.inf)) <= tolerance)]
    return tile_label(max(ok, key=lambda r: r["samples_per_s"]).get("tiles") or {}) if ok else None


CNN_TARGET = 3_000_000  # model-samples/s of the reference CNN on one H100 (issue 3's target)


def target_summary(rows: list[dict], target: float = CNN_TARGET, tolerance: float = LOSS_AGREEMENT) -> str:
    """One line: the fastest CNN population row (any convolution, tile set and compile mode
    whose loss agrees with its reference rows': the default tiles', the eager step's) against
    the target, with its ratio to the tutorial loop of the same table, and how many rows the
    loss check left out."""
    pop = [r for r in rows if r.get("model") == "cnn" and r.get("K", 1) > 1 and "samples_per_s" in r
           and _loss_agrees(r, tolerance)]
    if not pop:
        return "CNN population: no row measured"
    best = max(pop, key=lambda r: r["samples_per_s"])
    tiles = f" tiles {tile_label(best['tiles'])}" if best.get("conv") == "triton" else ""
    rejected = sum(1 for r in rows if r.get("model") == "cnn" and not _loss_agrees(r, tolerance))
    return (f"CNN population, fastest: {best['samples_per_s']:,.0f} model-samples/s ({best['precision']}, K={best['K']}, "
            f"{best.get('conv', '?')} conv{tiles}{', compiled' if best.get('compiled') else ''}), "
            f"{best['vs_tutorial']:.1f}x the tutorial loop; target "
            f"{target:,.0f}: {'MET' if best['samples_per_s'] >= target else 'not met'} "
            f"({best['samples_per_s'] / target:.2f}x)"
            + (f"; {rejected} row(s) left out: loss off the default tiles' or the eager step's by more than "
               f"{tolerance:.0%}" if rejected else ""))


# ---------------------------------------------------------------- kernels mode
def kernel_table(cfg: RunConfig, K: int, dd: engine.DeviceData, precision: str, n: int,
                 conv_impl: str = "native", top: int = 15) -> dict:
    """One engine epoch of K runs under torch.profiler, after a one-batch epoch outside it (so
    that Triton's compilation is not profiled; the profiled call's own one-batch warm-up is):
    the `top` operators and kernels by self time (device time on CUDA: the kernels; CPU time
    on a CPU: the ATen operators), each with its calls, milliseconds and share of the total.
    Eager steps (no CUDA graph): replay hides the kernels from the profiler, and a kernel's
    device time is the same either way."""
    from torch.profiler import ProfilerActivity, profile

    cuda = dd.x_train.is_cuda
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    engine_epoch(cfg, K, dd, precision, cfg.batch_size, conv_impl, cuda_graphs=False)  # compile, allocate
    with profile(activities=activities) as prof:
        samples, seconds, _ = engine_epoch(cfg, K, dd, precision, n, conv_impl, cuda_graphs=False)
    # torch >= 2.4 names device time "device"; older releases "cuda".
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if (getattr(e, attr, None) or 0) > 0]
    if cuda:  # device time belongs to kernels and copies, not to the CPU-side operators that launch them
        events = [e for e in events if getattr(e, "device_type", None) != torch.autograd.DeviceType.CPU] or events
    total_us = sum(getattr(e, attr) for e in events) or 1.0  # (no event: an empty table, not a division by 0)
    every = [dict(name=e.key, calls=e.count, ms=getattr(e, attr) / 1e3, share=getattr(e, attr) / total_us)
             for e in sorted(events, key=lambda e: -getattr(e, attr))]
    result = {"meta": {"device": device_slug(dd.x_train.device), "torch": torch.__version__, "model": cfg.model, "K": K,
                       "precision": precision, "conv": conv_impl, "samples": samples, "epoch_seconds": seconds,
                       "profiled_ms": total_us / 1e3, "time_kind": "device" if cuda else "cpu"},
              "rows": every[:top]}
    if conv_impl == "triton" and cfg.model == "cnn":
        result["fused_kernels"] = fused_kernels_in_epoch(cfg, dd, K, n, every)
    return result


def fused_kernels_in_epoch(cfg: RunConfig, dd: engine.DeviceData, K: int, n: int, rows: list[dict]) -> list[dict]:
    """fused_kernel_rates for kernel_table's profiled call: its one-batch warm-up and its
    n-example epoch, each with an end-of-epoch evaluation (val, test and up to EVAL_N
    training examples per run)."""
    shape = models.DataShape(tuple(dd.x_train.shape[1:]), dd.n_classes)
    evals = 2 * (len(dd.y_val) + len(dd.y_test) + min(EVAL_N, n))
    flops = fused_conv_flops(fused_conv_layers(cfg, shape), K, train_examples=n + cfg.batch_size, eval_examples=evals)
    return fused_kernel_rates(rows, flops)


# Each kind of fused kernel by the start of the name torch.profiler gives it (the
# channels-last variants, `_cl` and `_gcl`, share it). "unpool" (tiles G=1) only moves the
# gradient into place: its time counts, its FLOPs are none.
FUSED_KERNEL_KINDS = {"forward": "_fwd_kernel", "input grad": "_dgrad_kernel", "weight grad": "_wgrad_kernel",
                      "unpool": "_unpool_kernel"}


def fused_conv_layers(cfg: RunConfig, shape: models.DataShape) -> list[tuple[int, int, int, int]]:
    """(C, CO, H, W) of each convolution of the CNN that the fused kernels run (conv -> ReLU
    -> 2x2 max-pool, models.CNN.fusable), H x W its input, in the order of the layers. The
    net is built on the meta device: no memory, and no draw from the random generator."""
    with torch.device("meta"):
        net = models.CNN(cfg, shape)
    _, h, w = shape.in_shape
    layers = []
    for i, conv in enumerate(net.convs):
        if i in net.fusable:
            layers.append((conv.in_channels, conv.out_channels, h, w))
        if i in net.stage_ends:
            h, w = h // 2, w // 2
    return layers


def fused_conv_flops(layers: list[tuple[int, int, int, int]], K: int, train_examples: int,
                     eval_examples: int) -> dict[str, float]:
    """The floating-point operations each kind of fused kernel must do for K runs: a 3x3
    convolution at full resolution costs 2*9*C*CO*H*W per example (a multiply and an add per
    tap; the pool and ReLU are free beside it). Forward: every example, trained or evaluated.
    Weight gradient: every trained example. Input gradient: the same, but not for the first
    layer, whose input (the data) needs no gradient (popconv skips it)."""
    per_example = [2 * 9 * c * co * h * w for c, co, h, w in layers]
    return {"forward": float(K * (train_examples + eval_examples) * sum(per_example)),
            "input grad": float(K * train_examples * sum(per_example[1:])),
            "weight grad": float(K * train_examples * sum(per_example))}


def fused_kernel_rates(rows: list[dict], flops: dict[str, float]) -> list[dict]:
    """Per kind of fused kernel: its device time (every profiled kernel whose name holds the
    kind's prefix), the work it had to do, and the rate that gives: how far each kind is
    from the tensor cores' rate (an H100 reaches about 800 TFLOP/s on a large bf16 matrix
    product) says which kernel to rewrite first."""
    out = []
    for kind, prefix in FUSED_KERNEL_KINDS.items():
        ms = sum(r["ms"] for r in rows if prefix in r["name"])
        if ms > 0:
            work = flops.get(kind, 0.0)
            out.append(dict(kind=kind, ms=ms, tflop=work / 1e12, tflops=work / (ms * 1e9) if work else None))
    return out


def print_kernels(result: dict) -> None:
    m = result["meta"]
    tiles = f" tiles {m['tiles']}" if m.get("tiles", "default") != "default" else ""
    if "skipped" in result:
        print(f"{m['model']} K={m['K']} {m['precision']} conv={m['conv']}{tiles} on {m['device']}: "
              f"skipped ({result['skipped']})")
        return
    print(f"{m['model']} K={m['K']} {m['precision']} conv={m['conv']}{tiles} on {m['device']}: "
          f"{m['profiled_ms']:.1f} ms of "
          f"{m['time_kind']} time in one epoch of {m['samples']} model-samples")
    for r in result["rows"]:
        print(f"  {r['share']:6.1%} {r['ms']:9.2f} ms {r['calls']:7d}x  {r['name'][:100]}")
    for r in result.get("fused_kernels", []):
        rate = (f"{r['tflop']:.2f} TFLOP -> {r['tflops']:.1f} TFLOP/s" if r["tflops"]
                else "no arithmetic (data movement)")
        print(f"  fused {r['kind']:>11}: {r['ms']:9.2f} ms, {rate}")


# ---------------------------------------------------------------- registers mode
FMNIST_SHAPE = models.DataShape((1, 28, 28), 10)  # the reference CNN's input: one 28 x 28 channel, 10 classes
# --kernel-precisions name -> (the data's Triton type, tl.dot input precision)
KERNEL_PRECISIONS = {"bf16": ("bf16", "ieee"), "tf32": ("fp32", "tf32"), "fp32": ("fp32", "ieee")}


def register_table(precisions: list[str], tile_sets: list[dict[str, int]]) -> list[dict]:
    """ptxas's resource report (registers per thread, spilled bytes, shared memory, resident
    warps per SM, tensor-core instruction, asynchronous copies) of every fused kernel of the
    reference CNN, compiled for an H100/H200 (sm_90) without a GPU, per precision and tile
    set ({} = the defaults). A kernel at 255 registers that spills to local memory
    runs few warps per SM and waits on memory: the first thing to fix before timing tiles."""
    rows = []
    for precision in precisions:
        dtype, input_precision = KERNEL_PRECISIONS[precision]
        for sizes in tile_sets:
            with popconv.tiles(**sizes):
                for layer, (C, CO, H, W) in enumerate(fused_conv_layers(ARCHS["cnn"], FMNIST_SHAPE)):
                    for r in sm90.compile_report(C, CO, H, W, dtype, input_precision):
                        # in_step: launched in training; the first layer's input (the data)
                        # takes no gradient, so its input-gradient kernel never runs (nor an
                        # unpooling that only that kernel would read).
                        rows.append({"precision": precision,
                                     "tiles": tile_label(sizes),
                                     "layer": layer, "in_step": layer > 0 or r["launched_without_dx"],
                                     **r})
    return rows


def step_instructions(rows: list[dict]) -> list[dict]:
    """Per precision and tile set: the warp-instructions the fused kernels issue in one
    training step of the reference CNN (compile_report's launch, 128 runs x 512 examples:
    every kernel of every layer once; the first layer has no input gradient), and the time
    that takes at least at an H100's issue rate. A lower bound on the kernels' time (they
    also wait on memory), and a like-for-like count to compare tile sets and kernel
    variants without a GPU."""
    totals: dict[tuple[str, str], float] = {}
    for r in (r for r in rows if r["in_step"]):
        key = (r["precision"], r["tiles"])
        totals[key] = totals.get(key, 0.0) + r["warp_instructions"]
    return [dict(precision=p, tiles=t, warp_instructions=n,
                 issue_bound_ms=1e3 * n / sm90.H100_WARP_INSTRUCTIONS_PER_S) for (p, t), n in totals.items()]


def print_registers(rows: list[dict]) -> None:
    print(f"{'precision':9s} {'tiles':12s} {'layer':8s} {'kernel':13s} {'warps':>5s} {'registers':>9s} "
          f"{'spilled B':>9s} {'shared KiB':>10s} {'warps/SM':>8s} {'mma':8s} {'cp.async':>8s} {'SASS':>5s} "
          f"{'loop':>5s} {'G warp-ins':>10s}  block sizes")
    for r in rows:
        blocks = " ".join(f"{k.removeprefix('BLOCK_')}={v}" for k, v in r["blocks"].items())
        print(f"{r['precision']:9s} {r['tiles']:12s} {r['C']:>2d}->{r['CO']:<3d}{' ' if r['in_step'] else '*'} "
              f"{r['kernel']:13s} {r['warps']:5d} "
              f"{r['registers']:9d} {r['spill_store_bytes']:9d} {r['shared_bytes'] / 1024:10.1f} {r['warps_per_sm']:8d} "
              f"{r['mma']:8s} {r['async_copies']:8d} {r['sass_instructions']:5d} {r['loop_instructions']:5d} "
              f"{r['warp_instructions'] / 1e9:10.2f}  {blocks}")
    print("* not launched in training (the first layer's input gradient, and an unpooling only it would read)")
    print("one training step of 128 runs x 512 examples, the fused kernels it launches (issue bound: 132 SMs x 4 "
          "warp-instructions a cycle at 1.98 GHz):")
    for t in step_instructions(rows):
        print(f"  {t['precision']:9s} {t['tiles']:12s} {t['warp_instructions'] / 1e9:6.2f} G warp-instructions, "
              f">= {t['issue_bound_ms']:5.1f} ms")


# ---------------------------------------------------------------- profile mode
STARTUP_SNIPPET = (
    "import sys, torch, tunebench.cli, tunebench.engine, tunebench.ablate, tunebench.search; "
    "d = torch.device(sys.argv[1]); torch.zeros(1, device=d).sum().item()"
)


def process_startup_seconds(dev: torch.device, repeats: int = 3) -> float:
    """What every Snakemake training job pays before its first step, measured: a fresh
    Python process importing torch and tunebench's training modules and initialising the
    device (CUDA context). Median of `repeats`."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", STARTUP_SNIPPET, dev.type], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def profile_params(params, dev: torch.device, precision: str, raw_dir: Path, conv_impl: str = "auto",
                   max_seconds: float | None = None, save=lambda result: None, cuda_graphs: bool = True,
                   include_search: bool = False, concurrent_groups: int | None = None,
                   max_search_seconds: float | None = None, resume: dict | None = None,
                   compile_step: str = "off") -> dict:
    """Train every ablation job of params' active profile, one train_population call per
    (workload, dimension) as the pipeline does, then (include_search) every search job
    (workload x strategy, all study seeds, in-memory Optuna storage, as `tunebench search`
    does with its journal); seconds per job include building the models and every epoch's
    evaluation, not data loading (timed separately). Also measures one process start-up
    (process_startup_seconds), so the JSON gives the pipeline's serial total: jobs + one
    start-up per job.
    max_seconds: start no ablation job after this much wall time (the result says how many
    ran); max_search_seconds: likewise for the search jobs, counted from the first of them
    (so that a short device lease samples both kinds); `save` gets the partial result after
    every job.
    resume: an earlier partial result of the same profile, device, precision and convolution
    (a device lease too short for the whole profile): its jobs are kept, not run again, its
    start-up is reused, and total_seconds adds this call's wall time to the earlier one's.
    compile_step: "on": the ablation jobs' steps through torch.compile (engine._CompiledStep),
    compilation included in each job's seconds, as a pipeline job would pay it; "both": each
    ablation job eagerly (its `seconds`), then compiled (`compiled_seconds`), side by side in
    one run; "off": eagerly. The search jobs stay eager."""
    from tunebench import grid

    # fp32 runs as the pipeline does, with PyTorch's defaults (TF32 for cuDNN convolutions,
    # not for matmuls); tf32/bf16 as in throughput mode.
    set_precision(None if precision == "fp32" else precision)
    ds, prof = params.data, params.active
    cache: dict[str, engine.DeviceData] = {}
    jobs, search_jobs, load_s = [], [], {}
    all_jobs = list(grid.jobs(params))
    settings = params.search_settings()
    all_search = [(w, st) for w in settings.workloads for st in settings.strategies] if include_search else []
    meta = {"device": device_slug(dev), "profile": params.profile, "precision": precision, "torch": torch.__version__,
            "conv_impl": conv_impl, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "data_seconds": load_s,
            "jobs_total": len(all_jobs), "runs_total": sum(len(grid.job_runs(params, w, d)) for w, d in all_jobs),
            "search_jobs_total": len(all_search), "concurrent_groups": concurrent_groups or "engine default",
            "compile_step": compile_step}
    result = {"meta": meta, "jobs": jobs, "search_jobs": search_jobs}
    earlier_seconds = 0.0
    if resume is not None:
        old = resume["meta"]
        for key in ("device", "profile", "precision", "conv_impl", "compile_step"):
            if old.get(key, "off" if key == "compile_step" else None) != meta[key]:
                raise ValueError(f"--resume: the earlier result's {key} is {old.get(key)!r}, this run's {meta[key]!r}")
        jobs += [{**j, "call": old["time"]} for j in resume["jobs"]]
        search_jobs += [{**j, "call": old["time"]} for j in resume.get("search_jobs", [])]
        meta.update(startup_seconds=old["startup_seconds"], resumed=[*old.get("resumed", []), old["time"]])
        load_s.update(old["data_seconds"])  # (meta's data_seconds; data loaded again here overwrites its entry)
        earlier_seconds = old.get("total_seconds", 0.0)
        log(f"resuming {old['time']}: {len(jobs)} ablation and {len(search_jobs)} search jobs already timed")
    else:
        meta["startup_seconds"] = process_startup_seconds(dev)
    log(f"process start-up (imports + device init): {meta['startup_seconds']:.1f}s per job")
    done_jobs = {(j["workload"], j["dimension"]) for j in jobs}
    done_search = {(j["workload"], j["strategy"]) for j in search_jobs}
    t_all = time.perf_counter()

    def device_data(workload: str) -> engine.DeviceData:
        name = params.workloads[workload].dataset
        if name not in cache:
            t0 = time.perf_counter()
            user = ds.user.get(name)
            spec = data.DATASETS.get(name)
            task = spec.task if spec else user["task"]
            kind = spec.kind if spec else user["kind"]
            ctx = data.LoadContext(raw_dir, ds.allow_download, ds.download_timeout_s, ds.synthetic_seed)
            raw = data.load_raw(name, ctx, user)
            p = data.prepare(raw, name, task, kind, ds.val_fraction, ds.split_seed, *prof.caps(name))
            cache[name] = engine.to_device(p, dev)
            load_s[name] = time.perf_counter() - t0
        return cache[name]

    def out_of_time(t_start: float, budget: float | None) -> bool:
        if budget is not None and time.perf_counter() - t_start > budget:
            log(f"time budget of {budget:.0f}s spent: {len(jobs)} of {len(all_jobs)} ablation jobs and "
                f"{len(search_jobs)} of {len(all_search)} search jobs ran")
            return True
        return False

    def record(kind_list: list, row: dict, seconds: float) -> None:
        kind_list.append({**row, "seconds": seconds})
        done = len(jobs) + len(search_jobs)
        meta.update(total_seconds=earlier_seconds + time.perf_counter() - t_all,
                    complete=len(jobs) == len(all_jobs) and len(search_jobs) == len(all_search),
                    runs_done=sum(j["runs"] for j in jobs),
                    serial_pipeline_seconds=sum(j["seconds"] for j in jobs + search_jobs) + done * meta["startup_seconds"])
        save(result)

    for wl, dim in all_jobs:
        if (wl, dim) in done_jobs:
            continue
        if out_of_time(t_all, max_seconds):
            break
        dd = device_data(wl)
        runs = grid.job_runs(params, wl, dim)
        seconds = {}
        for compiled in SWITCH[compile_step]:
            t0 = time.perf_counter()
            res = engine.train_population([r.config for r in runs], [r.seed for r in runs], dd,
                                          precision="bf16" if precision == "bf16" else "fp32", conv_impl=conv_impl,
                                          cuda_graphs=cuda_graphs, concurrent_groups=concurrent_groups,
                                          compile_step=compiled)
            sync(dev)
            seconds[compiled] = time.perf_counter() - t0
        s = seconds[compile_step == "on"]
        row = dict(workload=wl, dimension=dim, runs=len(runs), diverged=sum(r.diverged for r in res),
                   epochs=sum(len(r.epochs) for r in res))
        if compile_step == "both":
            row["compiled_seconds"] = seconds[True]
        log(f"{wl}/{dim}: {len(runs)} runs, {s:.1f}s" + (f", compiled {seconds[True]:.1f}s" if len(seconds) == 2 else ""))
        record(jobs, row, s)
    if all_search:
        import optuna

        from tunebench import search

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study created
    t_search = time.perf_counter()
    for wl, strategy in all_search:
        if (wl, strategy) in done_search:
            continue
        if out_of_time(t_search, max_search_seconds):
            break
        dd = device_data(wl)
        storage = optuna.storages.InMemoryStorage()
        t0 = time.perf_counter()
        df = search.run_job(params, wl, strategy, dd, storage)
        search.frame_importances(storage, df)
        sync(dev)
        s = time.perf_counter() - t0
        log(f"search {wl}/{strategy}: {len(df)} trials, {s:.1f}s")
        record(search_jobs, dict(workload=wl, strategy=strategy, trials=len(df)), s)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tunebench.bench", description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", default="throughput", choices=("throughput", "profile", "kernels", "registers"))
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16"))
    ap.add_argument("--samples", type=int, default=None, help="timed samples per run (default 2048 CPU, 60000 CUDA; at most 54000 engine)")
    ap.add_argument("--populations", default=None, help="comma list of K (default 4,8 CPU; 4,16,64 CUDA; "
                    "kernels: the first K, default 4 CPU, 128 CUDA)")
    ap.add_argument("--max-model-samples", type=int, default=None, help="cap K x samples of a row (time budget)")
    ap.add_argument("--tutorial-samples", type=int, default=None, help="timed samples of (a) (default min(samples, 10000))")
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--batch", type=int, default=512, help="engine batch size")
    ap.add_argument("--conv", default=None, help="throughput: CNN convolutions to time, comma list of "
                    "native,gemm,triton; profile: the one to train with (default: the engine's choice)")
    ap.add_argument("--triton-tiles", default=None, help="throughput: tile sets of the fused Triton kernels to time, "
                    "';'-separated, each a comma list of P, M, S, R (tile sizes), W (warps) and L (1: channels-last "
                    "forward and weight gradient), G (1: the backward reads the gradient unpooled once, "
                    "channels-last), B (1: a bordered channels-last forward), A (1: a one-channel layer's weight "
                    "gradient over the pooled pixels), T (1, with G=1: a kernel row's three taps a weight-gradient "
                    "program), e.g. "
                    "'P=64,W=8;G=1'; kernels: profiled besides the defaults; registers: compiled besides the defaults")
    ap.add_argument("--kernel-precisions", default="bf16,tf32", help="registers: comma list of bf16, tf32, fp32")
    ap.add_argument("--max-seconds", type=float, default=None, help="profile: start no ablation job after this many seconds")
    ap.add_argument("--max-search-seconds", type=float, default=None, help="profile: start no search job after this "
                    "many seconds of search jobs")
    ap.add_argument("--resume", default=None, help="profile: an earlier profile JSON of this profile and device "
                    "whose jobs are kept, not run again (a device lease too short for the whole profile)")
    ap.add_argument("--search", action="store_true", help="profile: time the search jobs too (after the ablations)")
    ap.add_argument("--concurrent-groups", type=int, default=None, help="profile: ablation groups trained side by side "
                    "(default: the engine's, engine.CUDA_CONCURRENT_GROUPS on CUDA, 1 on a CPU)")
    ap.add_argument("--graphs", default="on", choices=("on", "off", "both"), help="CUDA graph replay of the step (CUDA only; "
                    "profile: on unless off)")
    ap.add_argument("--compile", default="off", choices=("off", "on", "both"), help="throughput: the step through "
                    "torch.compile (fullgraph; a step that cannot compile trains eagerly and its row says so): rows at "
                    "the largest population with the default tiles, after the others; profile: on compiles the "
                    "ablation jobs' steps, compilation timed; both times each job eagerly, then compiled")
    ap.add_argument("--raw-dir", default="data/raw")
    ap.add_argument("--out-dir", default="results/bench")
    ap.add_argument("--profile", default=None, help="profile mode: quick|full (default: params.yaml's `profile`)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir)
    if args.mode == "registers":  # static: compiles, runs nothing, needs no GPU
        if "triton" not in popconv.BACKENDS:
            print("error: registers mode needs Triton, which is not installed", file=sys.stderr)
            return 2
        if os.environ.get("TRITON_INTERPRET") == "1":
            print("error: registers mode compiles the kernels for a GPU; unset TRITON_INTERPRET", file=sys.stderr)
            return 2
        unknown = set(args.kernel_precisions.split(",")) - set(KERNEL_PRECISIONS)
        if unknown:
            print(f"error: --kernel-precisions: unknown {sorted(unknown)}; known: {', '.join(KERNEL_PRECISIONS)}",
                  file=sys.stderr)
            return 2
        tile_sets = [sizes for _, sizes in conv_variants("triton", args.triton_tiles)]  # the defaults ({}) first
        bad = sorted({name for sizes in tile_sets for name in sizes} - set(popconv.TILE_NAMES))
        if bad:
            print(f"error: --triton-tiles: unknown tile name(s) {bad}; known: {', '.join(popconv.TILE_NAMES)}",
                  file=sys.stderr)
            return 2
        rows = register_table(args.kernel_precisions.split(","), tile_sets)
        print_registers(rows)
        path = out_dir / "registers-sm90.json"
        atomic_json(path, {"meta": {"arch": 90, "triton": popconv.triton.__version__, "torch": torch.__version__},
                           "rows": rows, "steps": step_instructions(rows)})
        print(f"wrote {path}")
        return 0
    dev = torch.device(args.device) if args.device else engine.default_device()
    if args.mode == "kernels":
        samples = args.samples or (2048 if dev.type == "cpu" else 30_000)
        K = int((args.populations or ("4" if dev.type == "cpu" else "128")).split(",")[0])
        dd, source = fmnist_device_data(Path(args.raw_dir), samples, dev)
        n_run = min(len(dd.y_train), (args.max_model_samples or 10**12) // K)
        n = max(args.batch, n_run // args.batch * args.batch)  # whole batches
        set_precision(args.precision)
        results = {}
        for arch in args.models.split(","):
            cfg = ARCHS[arch].model_copy(update={"batch_size": args.batch})
            variants = conv_variants(args.conv or "native", args.triton_tiles) if arch == "cnn" else [("native", {})]
            for conv, sizes in variants:
                tiles = tile_label(sizes)
                try:
                    with popconv.tiles(**sizes):
                        res = kernel_table(cfg, K, dd, args.precision, n, conv)
                except Exception as err:  # noqa: BLE001  Triton missing or failing: say so, go on with the next
                    res = {"meta": {"device": device_slug(dev), "model": arch, "K": K, "precision": args.precision,
                                    "conv": conv}, "skipped": f"{type(err).__name__}: {str(err)[:200]}", "rows": []}
                res["meta"].update(data=source, tiles=tiles)
                results[f"{arch}-{conv}{'-' + tiles if sizes else ''}-{args.precision}-K{K}"] = res
                print_kernels(res)
        path = out_dir / f"kernels-{device_slug(dev)}.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        atomic_json(path, {**(old if isinstance(old, dict) else {}), **results})
        print(f"wrote {path}")
    elif args.mode == "throughput":
        path = out_dir / f"throughput-{device_slug(dev)}.json"
        # One file per device, one entry per precision: reruns at other precisions add to it.
        old = json.loads(path.read_text()) if path.is_file() else {}
        old = old if isinstance(old, dict) else {}
        # A table with compiled rows is an entry of its own ("bf16+compile"), beside the plain one.
        entry = args.precision + ("" if args.compile == "off" else "+compile")
        result = throughput(args, dev, save=lambda r: atomic_json(path, {**old, entry: r}))
        m = result["meta"]
        print(f"device {m['device']}, torch {m['torch']}, {m['threads']} CPU threads, precision {args.precision}"
              + (", freed host memory kept (glibc)" if m["host_memory_retained"] else ""))
        print(f"tutorial data: {m['tutorial_data']}\nengine data: {m['engine_data']}")
        print_table(result["rows"])
        print(f"timed: {m['timed']}\nwrote {path}")
    else:
        from tunebench import config

        params = config.load(args.params, profile=args.profile)
        suffix = {"off": "", "on": "-compile", "both": "-compile-vs-eager"}[args.compile]
        path = out_dir / f"profile-{params.profile}-{device_slug(dev)}{suffix}.json"
        conv = args.conv or "auto"
        resume = None
        if args.resume:
            try:
                resume = json.loads(Path(args.resume).read_text())
            except (OSError, ValueError) as err:
                raise SystemExit(f"--resume {args.resume}: cannot read an earlier profile result ({err})") from err
        result = profile_params(params, dev, args.precision, Path(args.raw_dir), conv, args.max_seconds,
                                save=lambda r: atomic_json(path, r), cuda_graphs=args.graphs != "off",
                                include_search=args.search, concurrent_groups=args.concurrent_groups,
                                max_search_seconds=args.max_search_seconds, resume=resume,
                                compile_step=args.compile)
        for j in result["jobs"]:
            print(f"{j['workload']:>20s} / {j['dimension']:<20s} {j['runs']:4d} runs {j['seconds']:8.1f}s"
                  + (f"  compiled {j['compiled_seconds']:8.1f}s ({j['compiled_seconds'] / j['seconds']:.2f}x)"
                     if "compiled_seconds" in j else ""))
        for j in result["search_jobs"]:
            print(f"{j['workload']:>20s} / search {j['strategy']:<13s} {j['trials']:4d} trials {j['seconds']:6.1f}s")
        m = result["meta"]
        print(f"total {m.get('total_seconds', 0):.1f}s for {len(result['jobs'])} of {m['jobs_total']} ablation jobs "
              f"({m.get('runs_done', 0)} of {m['runs_total']} runs) and {len(result['search_jobs'])} of "
              f"{m['search_jobs_total']} search jobs; data loading {sum(m['data_seconds'].values()):.1f}s")
        print(f"process start-up {m['startup_seconds']:.1f}s per job: one job at a time, these jobs take "
              f"{m.get('serial_pipeline_seconds', 0):.0f}s")
        both = [j for j in result["jobs"] if "compiled_seconds" in j]
        if both:  # measured in this run, side by side
            eager_s, compiled_s = sum(j["seconds"] for j in both), sum(j["compiled_seconds"] for j in both)
            print(f"torch.compile: {len(both)} ablation jobs took {compiled_s:.1f}s compiled (compilation included) "
                  f"vs {eager_s:.1f}s eager: {compiled_s / eager_s:.2f}x")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
