"""Throughput, per-job and kernel timing: `python -m tunebench.bench [throughput|jobs|kernels|registers] ...`.

The command line of tunebench.bench: parses the arguments, runs one mode (a module each)
and writes its JSON under --out-dir (results/bench/ by default), atomically."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from tunebench.core import engine
from tunebench.kernels import fused_conv as fused_conv
from tunebench.bench import jobs, kernels, registers, throughput
from tunebench.bench.common import (
    ARCHS,
    atomic_json,
    conv_variants,
    device_slug,
    fmnist_device_data,
    set_precision,
    tile_label,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tunebench.bench", description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", default="throughput", choices=("throughput", "jobs", "kernels", "registers"))
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
                    "native,gemm,triton; jobs: the one to train with (default: the engine's choice)")
    ap.add_argument("--triton-tiles", default=None, help="throughput: tile sets of the fused Triton kernels to time, "
                    "';'-separated, each a comma list of P, M, S, R (tile sizes), W (warps) and L (1: channels-last "
                    "forward and weight gradient), G (1: the backward reads the gradient unpooled once, "
                    "channels-last), B (1: a bordered channels-last forward), A (1: a one-channel layer's weight "
                    "gradient over the pooled pixels), T (1, with G=1: a kernel row's three taps a weight-gradient "
                    "program), e.g. "
                    "'P=64,W=8;G=1'; kernels: profiled besides the defaults; registers: compiled besides the defaults")
    ap.add_argument("--kernel-precisions", default="bf16,tf32", help="registers: comma list of bf16, tf32, fp32")
    ap.add_argument("--max-seconds", type=float, default=None, help="jobs: start no ablation job after this many seconds")
    ap.add_argument("--max-search-seconds", type=float, default=None, help="jobs: start no search job after this "
                    "many seconds of search jobs")
    ap.add_argument("--resume", default=None, help="jobs: an earlier jobs JSON of this profile and device "
                    "whose jobs are kept, not run again (a device lease too short for the whole profile)")
    ap.add_argument("--search", action="store_true", help="jobs: time the search jobs too (after the ablations)")
    ap.add_argument("--concurrent-groups", type=int, default=None, help="jobs: ablation groups trained side by side "
                    "(default: the engine's, engine.CUDA_CONCURRENT_GROUPS on CUDA, 1 on a CPU)")
    ap.add_argument("--graphs", default="on", choices=("on", "off", "both"), help="CUDA graph replay of the step (CUDA only; "
                    "jobs: on unless off)")
    ap.add_argument("--compile", default="off", choices=("off", "on", "both"), help="throughput: the step through "
                    "torch.compile (fullgraph; a step that cannot compile trains eagerly and its row says so): rows at "
                    "the largest population with the default tiles, after the others; jobs: on compiles the "
                    "ablation jobs' steps, compilation timed; both times each job eagerly, then compiled")
    ap.add_argument("--raw-dir", default="data/raw")
    ap.add_argument("--out-dir", default="results/bench")
    ap.add_argument("--profile", default=None, help="jobs mode: the experiment profile, quick|full (default: params.yaml's `profile`)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir)
    if args.mode == "registers":  # static: compiles, runs nothing, needs no GPU
        if "triton" not in fused_conv.BACKENDS:
            print("error: registers mode needs Triton, which is not installed", file=sys.stderr)
            return 2
        if os.environ.get("TRITON_INTERPRET") == "1":
            print("error: registers mode compiles the kernels for a GPU; unset TRITON_INTERPRET", file=sys.stderr)
            return 2
        unknown = set(args.kernel_precisions.split(",")) - set(registers.KERNEL_PRECISIONS)
        if unknown:
            print(f"error: --kernel-precisions: unknown {sorted(unknown)}; known: {', '.join(registers.KERNEL_PRECISIONS)}",
                  file=sys.stderr)
            return 2
        tile_sets = [sizes for _, sizes in conv_variants("triton", args.triton_tiles)]  # the defaults ({}) first
        bad = sorted({name for sizes in tile_sets for name in sizes} - set(fused_conv.TILE_NAMES))
        if bad:
            print(f"error: --triton-tiles: unknown tile name(s) {bad}; known: {', '.join(fused_conv.TILE_NAMES)}",
                  file=sys.stderr)
            return 2
        rows = registers.register_table(args.kernel_precisions.split(","), tile_sets)
        registers.print_registers(rows)
        path = out_dir / "registers-sass_cost.json"
        atomic_json(path, {"meta": {"arch": 90, "triton": fused_conv.triton.__version__, "torch": torch.__version__},
                           "rows": rows, "steps": registers.step_instructions(rows)})
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
                    with fused_conv.tiles(**sizes):
                        res = kernels.kernel_table(cfg, K, dd, args.precision, n, conv)
                except Exception as err:  # noqa: BLE001  Triton missing or failing: say so, go on with the next
                    res = {"meta": {"device": device_slug(dev), "model": arch, "K": K, "precision": args.precision,
                                    "conv": conv}, "skipped": f"{type(err).__name__}: {str(err)[:200]}", "rows": []}
                res["meta"].update(data=source, tiles=tiles)
                results[f"{arch}-{conv}{'-' + tiles if sizes else ''}-{args.precision}-K{K}"] = res
                kernels.print_kernels(res)
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
        result = throughput.throughput(args, dev, save=lambda r: atomic_json(path, {**old, entry: r}))
        m = result["meta"]
        print(f"device {m['device']}, torch {m['torch']}, {m['threads']} CPU threads, precision {args.precision}"
              + (", freed host memory kept (glibc)" if m["host_memory_retained"] else ""))
        print(f"tutorial data: {m['tutorial_data']}\nengine data: {m['engine_data']}")
        throughput.print_table(result["rows"])
        print(f"timed: {m['timed']}\nwrote {path}")
    else:
        from tunebench.spec import config

        params = config.load(args.params, profile=args.profile)
        suffix = {"off": "", "on": "-compile", "both": "-compile-vs-eager"}[args.compile]
        path = out_dir / f"jobs-{params.profile}-{device_slug(dev)}{suffix}.json"
        conv = args.conv or "auto"
        resume = None
        if args.resume:
            try:
                resume = json.loads(Path(args.resume).read_text())
            except (OSError, ValueError) as err:
                raise SystemExit(f"--resume {args.resume}: cannot read an earlier jobs result ({err})") from err
        result = jobs.time_jobs(params, dev, args.precision, Path(args.raw_dir), conv, args.max_seconds,
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
