"""One ablation job: all arms x seeds of one (workload, dimension) in one process,
returned as a tidy table with one row per run-epoch.

Checkpoints: each architecture group's rows are saved (atomically) under a checkpoint
folder as soon as the group finishes, keyed by a hash of its runs and the data; a job
killed part-way and rerun loads the finished groups instead of training them again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from tunebench.core import devices
from tunebench.spec.config import Params
from tunebench.core.engine import DeviceData, RunResult, group_key, train_population
from tunebench.spec.grid import Run, job_runs


def rows(run: Run, result: RunResult, n_classes: int) -> list[dict]:
    base = {
        "workload": run.workload,
        "dimension": run.dimension,
        "arm": run.arm,
        "seed": run.seed,
        **{f"arm_{k}": str(v) for k, v in run.factors},
        # float columns (NaN = never) so the table's types survive a parquet round trip
        "diverged_epoch": float(result.diverged_epoch) if result.diverged else float("nan"),
        "stopped_epoch": float(result.stopped_epoch) if result.stopped_epoch is not None else float("nan"),
        "n_classes": n_classes,
        "target_accuracy": run.config.target_accuracy,
        "population": result.population,
        "config": json.dumps(run.config.model_dump(), sort_keys=True),
    }
    return [{**base, **epoch} for epoch in result.epochs]


def device_label(device: torch.device) -> str:
    """What trained, as the tables and the report state it. On a CPU also the model, the
    vector instructions torch's kernels were chosen for, and the intra-op threads: each
    changes the order of float sums, so results are equal to the bit only where all three
    are (benchmarks/cpu-pipeline-2026-11-27/NOTES.md)."""
    if device.type != "cpu":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return (f"cpu ({devices.cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, "
            f"{threads} thread{'s' if threads > 1 else ''})")


def groups(runs: list[Run]) -> list[list[Run]]:
    out: dict[tuple, list[Run]] = {}
    for r in runs:
        out.setdefault(group_key(r.config), []).append(r)
    return list(out.values())


def group_id(group: list[Run], data_hash: str, precision: str) -> str:
    spec = [[r.run_id, r.config.model_dump()] for r in group] + [data_hash, precision, torch.__version__]
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_job(params: Params, workload: str, dimension: str, data: DeviceData, *, precision: str = "fp32",
            data_hash: str = "", checkpoint_dir: Path | None = None,
            log: Callable[[str], None] | None = None, advance: Callable[[int], object] | None = None) -> pd.DataFrame:
    """Train (or load from checkpoints) every run of the job, group by group; `advance(n)`
    is told each group's n runs as they finish (a progress bar)."""
    runs = job_runs(params, workload, dimension)
    t0 = time.perf_counter()
    frames, n_div = [], 0
    device = device_label(data.x_train.device)
    for group in groups(runs):
        ckpt = checkpoint_dir / f"{group_id(group, data_hash, precision)}.parquet" if checkpoint_dir else None
        if ckpt is not None and ckpt.exists():
            frames.append(pd.read_parquet(ckpt))
            if log:
                log(f"{len(group)} runs loaded from checkpoint {ckpt}")
            if advance:
                advance(len(group))
            continue
        results = train_population([r.config for r in group], [r.seed for r in group], data, precision=precision, log=log)
        n_div += sum(r.diverged for r in results)
        df = pd.DataFrame([row for run, res in zip(group, results) for row in rows(run, res, data.n_classes)])
        df["device"] = device
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            df.to_parquet(tmp, index=False)
            tmp.replace(ckpt)  # atomic: a checkpoint is complete or absent
        frames.append(df)
        if advance:
            advance(len(group))
    if log:
        log(f"{workload}/{dimension}: {len(runs)} runs, {n_div} newly diverged, {time.perf_counter() - t0:.1f}s on {device}")
    # Restore the grid's run order (arms x seeds as params.yaml lists them).
    order = {r.run_id: i for i, r in enumerate(runs)}
    df = pd.concat(frames, ignore_index=True)
    key = df["workload"] + "/" + df["dimension"] + "/" + df["arm"] + "/s" + df["seed"].astype(str)
    return df.assign(_o=key.map(order)).sort_values(["_o", "epoch"], kind="stable").drop(columns="_o").reset_index(drop=True)
