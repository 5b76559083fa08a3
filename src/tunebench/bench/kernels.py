"""kernels mode: where one engine epoch of a population spends its time, per kernel
(torch.profiler; device time on CUDA, CPU time on a CPU), and the fused convolution
kernels' rates in TFLOP/s: what to speed up next."""

from __future__ import annotations

import torch

from tunebench.core import engine, models
from tunebench.bench.common import EVAL_N, device_slug, engine_epoch
from tunebench.spec.config import RunConfig


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
    layer, whose input (the data) needs no gradient (fused_conv skips it)."""
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
