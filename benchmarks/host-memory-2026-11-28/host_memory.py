"""glibc's default allocator against devices.retain_freed_host_memory, timed in one run on
one machine: the engine's epoch of the reference CNN and of the MLP (python -m tunebench.bench
throughput's rows (b) and (c)) in fresh processes, one per allocator setting, alternating,
repeated. A fresh process each, because glibc's default (a dynamic mmap threshold) cannot be
restored once mallopt has been called. Also checks that both settings trained alike (the same
mean training loss, to the bit).

    python benchmarks/host-memory-2026-11-28/host_memory.py [--repeats 3] [--samples 2048] [--out FILE.json]

Prints per row: median samples/s of each setting, their ratio, and the epoch's CPU time in
user and system (kernel) mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS = [("cnn", 1), ("cnn", 4), ("mlp", 1), ("mlp", 8)]  # (model, population K)
MLP_SAMPLES_FACTOR = 8  # an MLP epoch of 2,048 samples lasts ~40 ms here: too short to time


def child(setting: str, samples: int, raw_dir: str) -> None:
    """One process: every row once, under one allocator setting; JSON on stdout."""
    import torch

    from tunebench import devices
    from tunebench.bench import common

    if setting == "default":  # the engine asks devices; say no, so glibc keeps its default
        devices.retain_freed_host_memory = lambda: False
    dd, _ = common.fmnist_device_data(Path(raw_dir), samples * MLP_SAMPLES_FACTOR, torch.device("cpu"))
    out = []
    for model, K in ROWS:
        t0 = os.times()
        n_run = samples * (MLP_SAMPLES_FACTOR if model == "mlp" else 1)
        n, seconds, loss = common.engine_epoch(common.ARCHS[model], K, dd, "fp32", n_run)
        t1 = os.times()
        out.append(dict(model=model, K=K, samples_per_s=n / seconds, loss=loss,
                        user_s=t1.user - t0.user, system_s=t1.system - t0.system))  # warm-up call included
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=2048, help="training samples per CNN run (MLP: 8x)")
    ap.add_argument("--raw-dir", default="data/raw")
    ap.add_argument("--out", default=None, help="JSON file for the rows (default: none)")
    ap.add_argument("--child", choices=["default", "retained"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.samples, args.raw_dir)
        return 0
    runs: dict[str, list[list[dict]]] = {"default": [], "retained": []}
    for r in range(args.repeats):
        for setting in (("default", "retained") if r % 2 == 0 else ("retained", "default")):
            cmd = [sys.executable, __file__, "--child", setting, "--samples", str(args.samples), "--raw-dir", args.raw_dir]
            runs[setting].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    import torch

    from tunebench import devices
    from tunebench.bench import common

    meta = dict(device=f"cpu ({devices.cpu_name()})", torch=torch.__version__, threads=torch.get_num_threads(),
                samples_per_run=args.samples, repeats=args.repeats, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    print(" ".join(f"{k}={v}" for k, v in meta.items()))
    rows = []
    for i, (model, K) in enumerate(ROWS):
        cell = {s: [run[i] for run in runs[s]] for s in runs}
        med = {s: {k: statistics.median(x[k] for x in cell[s]) for k in ("samples_per_s", "user_s", "system_s")} for s in cell}
        rows.append(dict(model=model, K=K, **{f"{s}_{k}": v for s in med for k, v in med[s].items()},
                         ratio=med["retained"]["samples_per_s"] / med["default"]["samples_per_s"],
                         same_loss=len({x["loss"] for s in cell for x in cell[s]}) == 1))
    print(f"{'model':<5} {'K':>3} {'default':>9} {'retained':>9} {'ratio':>6}  {'user/sys s default':>18}  "
          f"{'user/sys s retained':>19}  same loss")
    for r in rows:
        print(f"{r['model']:<5} {r['K']:>3} {r['default_samples_per_s']:>9,.0f} {r['retained_samples_per_s']:>9,.0f} "
              f"{r['ratio']:>6.2f}  {r['default_user_s']:>8.2f} / {r['default_system_s']:<7.2f}  "
              f"{r['retained_user_s']:>9.2f} / {r['retained_system_s']:<7.2f}  {r['same_loss']}")
    if args.out:
        common.atomic_json(Path(args.out), {"meta": meta, "rows": rows, "runs": runs})
    return 0 if all(r["same_loss"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
