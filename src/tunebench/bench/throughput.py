"""throughput mode (the default): samples/s on one device, in one process, for the reference
CNN (conv32-conv64-fc128) and an MLP (2x256) on Fashion-MNIST-shaped data:
  (a) the PyTorch tutorial loop: torchvision FashionMNIST + DataLoader(batch 64) + torch.optim.SGD,
  (b) the engine with one run (engine.train_population, batch 512),
  (c) the engine with populations of K runs (model-samples/s = K x samples/s),
each row with its ratio to (a) and its TFLOP/s; then which convolution and which tile set
of the fused kernels was fastest with a loss that agrees, and the fastest CNN population
against issue 3's 3M model-samples/s target."""

from __future__ import annotations

import gzip
import itertools
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tunebench.core import data, devices, engine, models
from tunebench.kernels import fused_conv as fused_conv
from tunebench.bench.common import (
    ARCHS,
    EVAL_N,
    SWITCH,
    conv_variants,
    device_slug,
    engine_epoch,
    fmnist_device_data,
    log,
    set_precision,
    sync,
    tile_label,
)
from tunebench.spec.config import RunConfig


def forward_flops(cfg: RunConfig, shape: models.DataShape) -> float:
    """FLOPs of one example's forward pass (FlopCounterMode counts 2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = models.build(cfg, shape, 0)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, *shape.in_shape), torch.zeros((), dtype=torch.int64))
    return float(fc.get_total_flops())


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
                    with fused_conv.tiles(**tile_sizes):
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
