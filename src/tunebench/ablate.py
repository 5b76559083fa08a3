"""One ablation job: all arms x seeds of one (workload, dimension) in one process,
returned as a tidy table with one row per run-epoch."""

from __future__ import annotations

import json
import time
from typing import Callable

import pandas as pd
import torch

from tunebench.config import Params
from tunebench.engine import DeviceData, RunResult, train_population
from tunebench.grid import Run, job_runs


def rows(run: Run, result: RunResult, n_classes: int) -> list[dict]:
    base = {
        "workload": run.workload,
        "dimension": run.dimension,
        "arm": run.arm,
        "seed": run.seed,
        **{f"arm_{k}": str(v) for k, v in run.factors},
        "diverged_epoch": result.diverged_epoch if result.diverged else pd.NA,
        "stopped_epoch": result.stopped_epoch if result.stopped_epoch is not None else pd.NA,
        "n_classes": n_classes,
        "target_accuracy": run.config.target_accuracy,
        "population": result.population,
        "config": json.dumps(run.config.model_dump(), sort_keys=True),
    }
    return [{**base, **epoch} for epoch in result.epochs]


def run_job(params: Params, workload: str, dimension: str, data: DeviceData, *, precision: str = "fp32",
            log: Callable[[str], None] | None = None) -> pd.DataFrame:
    runs = job_runs(params, workload, dimension)
    t0 = time.perf_counter()
    results = train_population([r.config for r in runs], [r.seed for r in runs], data, precision=precision, log=log)
    table = [row for run, res in zip(runs, results) for row in rows(run, res, data.n_classes)]
    df = pd.DataFrame(table)
    n_div = sum(r.diverged for r in results)
    if log:
        log(f"{workload}/{dimension}: {len(runs)} runs, {n_div} diverged, {time.perf_counter() - t0:.1f}s on {data.x_train.device}")
    df["device"] = str(data.x_train.device) if data.x_train.device.type == "cpu" else torch.cuda.get_device_name()
    return df
