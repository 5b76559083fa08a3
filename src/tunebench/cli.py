"""Command-line adapters: read files, call the pure functions, write files atomically.
This is the only module that touches paths (besides data loaders' own sources).

Every output is written to a temporary file in the same folder and renamed into place,
so an interrupted or failed job never leaves a partial file that looks complete, and a
bad input fails before anything already computed is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from tunebench.config import ConfigError


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextmanager
def atomic_path(path: Path):
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise SystemExit(f"error: cannot write {path}: {err.strerror}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def _params(args):
    from tunebench import config

    return config.load(args.params, profile=getattr(args, "profile", None))


def cmd_check(args) -> None:
    from tunebench.grid import expand, jobs

    params = _params(args)
    print(f"{args.params}: ok (profile {params.profile}: {len(jobs(params))} ablation jobs, {len(expand(params))} runs)")


def cmd_prepare(args) -> None:
    from tunebench import data

    params = _params(args)
    prof, ds = params.active, params.data
    user = ds.user.get(args.dataset)
    spec = data.DATASETS.get(args.dataset)
    task = spec.task if spec else (user or {}).get("task", "multiclass")
    kind = spec.kind if spec else (user or {}).get("kind", "tabular")
    ctx = data.LoadContext(Path(args.raw_dir), ds.allow_download, ds.download_timeout_s, ds.synthetic_seed)
    raw = data.load_raw(args.dataset, ctx, user)
    log(f"{args.dataset}: source = {raw.source}")
    prepared = data.prepare(raw, args.dataset, task, kind, ds.val_fraction, ds.split_seed, *prof.caps(args.dataset))
    data.save_prepared(prepared, Path(args.out))
    log(f"{args.dataset}: train {len(prepared.y_train)}, val {len(prepared.y_val)}, test {len(prepared.y_test)}, hash {prepared.content_hash[:12]}")


def _device_data(path: str):
    from tunebench import data, engine

    prepared = data.load_prepared(Path(path))
    return engine.to_device(prepared, engine.default_device()), prepared.content_hash


def cmd_ablate(args) -> None:
    from tunebench.ablate import run_job

    params = _params(args)
    if args.workload not in params.workloads or args.dimension not in params.dimensions:
        raise ConfigError(f"unknown workload {args.workload!r} or dimension {args.dimension!r}")
    _threads(args.threads)
    dd, data_hash = _device_data(args.data)
    out = Path(args.out)
    # Per-group checkpoints beside the results: a killed job resumes at the group level.
    ckpt = out.parent.parent / ".checkpoints" / out.parent.name / out.stem
    df = run_job(params, args.workload, args.dimension, dd, precision=args.precision, data_hash=data_hash,
                 checkpoint_dir=ckpt, log=log)
    with atomic_path(out) as tmp:
        df.to_parquet(tmp, index=False)
    shutil.rmtree(ckpt, ignore_errors=True)  # the job's table now holds every group


def cmd_search(args) -> None:
    from tunebench import journals, search

    params = _params(args)
    _threads(args.threads)
    dd, _ = _device_data(args.data)
    settings = params.search_settings()
    storage = search.open_storage(settings, Path(args.journal))
    df = search.run_job(params, args.workload, args.strategy, dd, storage, log=log)
    imp = search.frame_importances(storage, df)
    with atomic_path(Path(args.out)) as tmp:
        df.to_parquet(tmp, index=False)
    if args.importance:
        with atomic_path(Path(args.importance)) as tmp:
            tmp.write_text(json.dumps(imp, indent=1, sort_keys=True))
    if not settings.storage:
        # Only now that this code's table is written: another code's journals would never
        # be resumed by this code (journals.py).
        for old in journals.stale(args.journal):
            old.unlink(missing_ok=True)
            log(f"deleted {old}: a journal of other search code")


def cmd_aggregate(args) -> None:
    import pandas as pd

    from tunebench.aggregate import summarize

    frames = []
    for path in args.inputs:
        try:
            frames.append(pd.read_parquet(path))
        except Exception as err:  # noqa: BLE001 - name the file whatever the parser says
            raise SystemExit(f"error: cannot read {path}: {err}") from None
    runs = summarize(pd.concat(frames, ignore_index=True))
    with atomic_path(Path(args.out)) as tmp:
        runs.to_parquet(tmp, index=False)
    log(f"aggregated {len(runs)} runs from {len(args.inputs)} tables")


def cmd_report(args) -> None:
    from tunebench import report

    params = _params(args)
    report.build(params, args, atomic_path, log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tunebench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, fn, *flags):
        p = sub.add_parser(name)
        p.add_argument("--params", default="params.yaml")
        p.add_argument("--profile", default=None, help="override params.yaml's `profile`")
        for f in flags:
            p.add_argument(f"--{f}", required=f not in ("threads", "precision", "raw-dir", "importance"))
        p.set_defaults(fn=fn)
        return p

    add("check", cmd_check)
    add("prepare", cmd_prepare, "dataset", "out", "raw-dir")
    add("ablate", cmd_ablate, "workload", "dimension", "data", "out", "threads", "precision")
    add("search", cmd_search, "workload", "strategy", "data", "out", "journal", "importance", "threads")
    agg = sub.add_parser("aggregate")
    agg.add_argument("--out", required=True)
    agg.add_argument("inputs", nargs="+")
    agg.set_defaults(fn=cmd_aggregate)
    rep = add("report", cmd_report, "runs", "verdicts", "contrasts", "metrics", "report", "figures")
    rep.add_argument("--ablations", nargs="*", default=[])
    rep.add_argument("--search", nargs="*", default=[])
    rep.add_argument("--importance", nargs="*", default=[])
    rep.add_argument("--datasets", nargs="*", default=[])
    rep.add_argument("--wall-seconds", type=float, default=None)
    args = ap.parse_args(argv)
    if getattr(args, "raw_dir", None) is None and args.cmd == "prepare":
        args.raw_dir = "data/raw"
    if getattr(args, "threads", None):
        args.threads = int(args.threads)
    if hasattr(args, "precision") and args.precision is None:
        args.precision = "fp32"
    try:
        args.fn(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from tunebench.data import DataError

        if isinstance(err, DataError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
