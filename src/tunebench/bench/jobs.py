"""jobs mode: the wall time of every ablation job (and search job) of a params.yaml
profile, trained in-process as the pipeline trains it, plus one fresh process's start-up,
which every Snakemake job pays."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tunebench.core import data, engine
from tunebench.bench.common import SWITCH, device_slug, log, set_precision, sync

STARTUP_SNIPPET = (
    "import sys, torch, tunebench.pipeline.cli, tunebench.core.engine, tunebench.studies.ablate, tunebench.studies.search; "
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


def time_jobs(params, dev: torch.device, precision: str, raw_dir: Path, conv_impl: str = "auto",
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
    from tunebench.spec import grid

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

        from tunebench.studies import search

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
