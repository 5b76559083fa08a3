"""registers mode: the fused Triton kernels of the reference CNN compiled for an H100/H200
(sm_90) without a GPU (tunebench.kernels.sass_cost), with ptxas's registers per thread, spilled bytes
and shared memory, the resident warps per SM, the tensor-core instruction and the
asynchronous copies, per precision and tile set, and the warp-instructions one training
step issues."""

from __future__ import annotations

from tunebench.core import models
from tunebench.kernels import fused_conv as fused_conv, sass_cost as sass_cost
from tunebench.bench.common import ARCHS, tile_label
from tunebench.bench.kernels import fused_conv_layers

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
            with fused_conv.tiles(**sizes):
                for layer, (C, CO, H, W) in enumerate(fused_conv_layers(ARCHS["cnn"], FMNIST_SHAPE)):
                    for r in sass_cost.compile_report(C, CO, H, W, dtype, input_precision):
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
                 issue_bound_ms=1e3 * n / sass_cost.H100_WARP_INSTRUCTIONS_PER_S) for (p, t), n in totals.items()]


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
