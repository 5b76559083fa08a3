"""Command-line adapters: read files, call the pure functions, write files atomically.
The only module that touches the pipeline's paths (besides the data loaders' own sources).

Every output is written to a temporary file in the same folder and renamed into place,
so an interrupted or failed job never leaves a partial file that looks complete, and a
bad input fails before anything already computed is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from tunebench.spec.config import ConfigError


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


def progress(total: int, unit: str, desc: str):
    """A tqdm bar on stderr: live on a terminal, a line every 30 s in a job's log file."""
    from tqdm import tqdm

    live = sys.stderr.isatty()
    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, mininterval=0.5 if live else 30.0,
                ascii=not live, dynamic_ncols=live)


def commit() -> str:
    """The checkout's commit, "+" if it has local changes to tracked files outside the
    published reports; "unknown" outside a git checkout. Each training table records the
    commit that trained it, so a redrawn report states it unchanged."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports",
                                ":!dvc.lock", ":!dvc-remote"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def _params(args):
    from tunebench.spec import config

    return config.load(args.params, profile=getattr(args, "profile", None))


def _claims(args, params):
    """The claims files params.yaml lists (paths relative to it), checked against its grid."""
    from tunebench.spec import claims

    return claims.load(params.claims, params, root=Path(args.params).resolve().parent)


def cmd_check(args) -> None:
    from tunebench.core import data
    from tunebench.spec import grid

    params = _params(args)
    claims = _claims(args, params)
    root = Path(args.params).resolve().parent
    for name in grid.datasets_used(params):
        if name in params.data.user:
            data.check_user_file(name, params.data.user[name].path, root)
    print(f"{args.params}: ok (profile {params.profile}: {len(grid.jobs(params))} ablation jobs, "
          f"{len(grid.expand(params))} runs; {len(claims.items)} claims from {len(claims.sources)} sources)")


def cmd_prepare(args) -> None:
    from tunebench.core import data

    params = _params(args)
    prof, ds = params.active, params.data
    user = ds.user.get(args.dataset)
    spec = data.DATASETS.get(args.dataset)
    task = spec.task if spec else user.task if user else "multiclass"
    kind = spec.kind if spec else user.kind if user else "tabular"
    ctx = data.LoadContext(Path(args.raw_dir), ds.allow_download, ds.download_timeout_s, ds.synthetic_seed)
    raw = data.load_raw(args.dataset, ctx, user.model_dump() if user else None)
    log(f"{args.dataset}: source = {raw.source}")
    prepared = data.prepare(raw, args.dataset, task, kind, ds.val_fraction, ds.split_seed, *prof.caps(args.dataset))
    data.save_prepared(prepared, Path(args.out))
    if args.summary:
        with atomic_path(Path(args.summary)) as tmp:
            tmp.write_text(json.dumps(data.summary(prepared), indent=1, sort_keys=True) + "\n")
    log(f"{args.dataset}: train {len(prepared.y_train)}, val {len(prepared.y_val)}, test {len(prepared.y_test)}, "
        f"hash {prepared.content_hash[:12]}")


def _device_data(path: str):
    from tunebench.core import data, engine

    device = engine.default_device()
    if device.type == "cuda":  # the fused CNN kernels, an optional layer: registered on import
        import tunebench.kernels  # noqa: F401
    prepared = data.load_prepared(Path(path))
    return engine.to_device(prepared, device), prepared.content_hash


# Versions a training job records in its table (the training environment; the report
# states them, and those of its own environment, which computes the analysis).
TRAINING_PACKAGES = ("python", "torch", "numpy", "optuna")
ANALYSIS_PACKAGES = ("pandas", "scipy", "statsmodels", "matplotlib", "seaborn")


def versions(packages) -> dict[str, str]:
    """Installed versions of `packages` ("python" is the interpreter's)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in packages:
        try:
            out[pkg] = platform.python_version() if pkg == "python" else version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _stamp(df, code: str):
    """The table's provenance columns: the commit and package versions that trained it and
    when its job finished (unix seconds), read by the report so that a redraw states the same."""
    return df.assign(commit=code, env=json.dumps(versions(TRAINING_PACKAGES), sort_keys=True), job_finished=time.time())


def cmd_ablate(args) -> None:
    from tunebench.spec import grid
    from tunebench.studies.ablate import run_job

    params = _params(args)
    if args.workload not in params.workloads or args.dimension not in params.dimensions:
        raise ConfigError(f"unknown workload {args.workload!r} or dimension {args.dimension!r}")
    code = commit()
    _threads(args.threads)
    dd, data_hash = _device_data(args.data)
    out = Path(args.out)
    # Per-group checkpoints beside the results: a killed job resumes at the group level.
    ckpt = out.parent.parent / ".checkpoints" / out.parent.name / out.stem
    n = len(grid.job_runs(params, args.workload, args.dimension))
    with progress(n, "run", f"{args.workload}/{args.dimension}") as bar:
        df = run_job(params, args.workload, args.dimension, dd, precision=args.precision, data_hash=data_hash,
                     checkpoint_dir=ckpt, log=log, advance=bar.update)
    with atomic_path(out) as tmp:
        _stamp(df, code).to_parquet(tmp, index=False)
    shutil.rmtree(ckpt, ignore_errors=True)  # the job's table now holds every group


def cmd_search(args) -> None:
    from tunebench.pipeline import journals, stages
    from tunebench.studies import search

    params = _params(args)
    code = commit()
    _threads(args.threads)
    dd, _ = _device_data(args.data)
    settings = params.search_settings().for_unit(args.workload)
    storage = search.open_storage(settings, Path(args.journal))
    shown = settings.storage or args.journal
    log(f"Optuna storage: {shown} (open it with: optuna-dashboard {shown})")
    n = settings.trials * len(settings.study_seeds)
    with progress(n, "trial", f"{args.workload}/{args.strategy}") as bar:
        df = search.run_job(params, args.workload, args.strategy, dd, storage, log=log, advance=bar.update,
                            code=stages.code_digest("run_search"))
    imp = search.frame_importances(storage, df)
    with atomic_path(Path(args.out)) as tmp:
        _stamp(df, code).to_parquet(tmp, index=False)
    if args.importance:
        with atomic_path(Path(args.importance)) as tmp:
            tmp.write_text(json.dumps(imp, indent=1, sort_keys=True))
    if not settings.storage:
        # Only now that this code's table is written: another code's journals would never
        # be resumed by this code (journals.py).
        for old in journals.stale(args.journal):
            old.unlink(missing_ok=True)
            log(f"deleted {old}: a journal of other search code")


def _read_parquet(path: str):
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - name the file whatever the parser says
        raise SystemExit(f"error: cannot read {path}: {err}") from None


def cmd_aggregate(args) -> None:
    import pandas as pd

    from tunebench.analysis.aggregate import summarize

    runs = summarize(pd.concat([_read_parquet(p) for p in args.inputs], ignore_index=True))
    with atomic_path(Path(args.out)) as tmp:
        runs.to_parquet(tmp, index=False)
    log(f"aggregated {len(runs)} runs from {len(args.inputs)} tables")


def _benchmark(path: str, table: str) -> dict:
    """One row of a job's Snakemake benchmark file (wall seconds `s`, peak memory, CPU
    seconds), named by the table its job wrote."""
    import pandas as pd

    try:
        row = pd.read_csv(path, sep="\t").iloc[0].to_dict()
    except Exception as err:  # noqa: BLE001
        raise SystemExit(f"error: cannot read {path}: {err}") from None
    return {"table": table, **row}


def cmd_report(args) -> None:
    import pandas as pd

    from tunebench.reporting import report

    params = _params(args)
    ablations = [_read_parquet(p) for p in args.ablations]
    searches = [_read_parquet(p) for p in args.search]
    importance = {}
    for p in args.importance:
        importance.update(json.loads(Path(p).read_text()))
    tables = {p.removesuffix(".parquet") for p in args.ablations + args.search}
    jobs = [_benchmark(b, t + ".parquet") for b in args.benchmarks for t in [b.removesuffix(".benchmark.tsv")] if t in tables]
    inputs = report.Inputs(
        runs=_read_parquet(args.runs),
        epochs=pd.concat(ablations, ignore_index=True) if ablations else pd.DataFrame(),
        search=pd.concat(searches, ignore_index=True) if searches else pd.DataFrame(),
        importance=importance,
        datasets=[json.loads(Path(p).read_text()) for p in args.datasets],
        jobs=pd.DataFrame(jobs),
        drawn_by=commit(),
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        analysis_versions=versions(ANALYSIS_PACKAGES),
    )
    out = report.build(params, _claims(args, params), inputs)
    fig_dir = Path(args.figures)
    fig_dir.mkdir(parents=True, exist_ok=True)
    for stale in set(fig_dir.glob("*.png")) - {fig_dir / f"{name}.png" for name in out.figures}:
        stale.unlink()  # a figure this report no longer draws
    import matplotlib.pyplot as plt

    for name, fig in out.figures.items():
        with atomic_path(fig_dir / f"{name}.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None})
        plt.close(fig)
    out_cols = [c for c in out.contrasts.columns if c not in ("treatment_values", "control_values", "seeds")]
    with atomic_path(Path(args.contrasts)) as tmp:
        out.contrasts[out_cols].to_csv(tmp, index=False)
    with atomic_path(Path(args.verdicts)) as tmp:
        out.verdicts.to_csv(tmp, index=False)
    with atomic_path(Path(args.provenance)) as tmp:
        out.provenance.to_csv(tmp, index=False)
    with atomic_path(Path(args.metrics)) as tmp:
        tmp.write_text(json.dumps(out.metrics, indent=1, sort_keys=True, default=str) + "\n")
    with atomic_path(Path(args.report)) as tmp:
        tmp.write_text(out.text)
    log(f"report: {len(out.contrasts)} contrasts, {len(out.figures)} figures -> {args.report}")


def cmd_show(args) -> None:
    """One claim from the last report's tables of a profile: verdict, contrasts, figures."""
    import pandas as pd

    from tunebench.pipeline import layout

    params = _params(args)
    claims = _claims(args, params)
    profile = params.profile
    res = Path(layout.results(profile))
    verdicts_path, contrasts_path = res / "verdicts.csv", res / "contrasts.csv"
    for p in (verdicts_path, contrasts_path):
        if not p.is_file():
            raise SystemExit(f"error: {p} not found: no report of profile {profile!r} yet "
                             f"(make report PROFILE={profile})")
    claim = args.claim.upper()
    if claim not in claims.by_id:
        raise SystemExit(f"error: unknown claim {args.claim!r}; known: {', '.join(claims.by_id)}")
    c = claims.by_id[claim]
    verdicts = pd.read_csv(verdicts_path)
    contrasts = pd.read_csv(contrasts_path)
    mine = verdicts[verdicts["claim"] == claim]
    overall = mine[mine["workload"] == "all"]
    print(f"{claim}: {c.paraphrase}")
    print(f"source: {claims.source_of[claim].cite}")
    print(f"prediction: {c.prediction}")
    if len(overall):
        row = overall.iloc[0]
        detail = row.get("detail")
        print(f"verdict ({profile}): {row['verdict']}" + (f" ({detail})" if isinstance(detail, str) and detail else ""))
    rows = contrasts[contrasts["claim"] == claim]
    if len(rows):
        cols = [col for col in ("workload", "contrast", "primary", "metric", "effect", "ci_low", "ci_high", "p_adj",
                                "verdict") if col in rows]
        print()
        print(rows[cols].to_markdown(index=False, floatfmt=".4g"))
    figures = sorted(Path(layout.report_dir(profile), "figures").glob("*.png"))
    mine_figs = [f for f in figures if claim in claims.figure_group(f.stem).split(":")[0].replace(",", " ").split()]
    if mine_figs:
        print("\nfigures:")
        for f in mine_figs:
            print(f"  {f}")
    print(f"\nreport: {layout.report_dir(profile)}/report.md#{claim.lower()}")


def parser() -> argparse.ArgumentParser:
    """The command line: a subcommand per pipeline step, plus `check` and `show`."""
    ap = argparse.ArgumentParser(prog="tunebench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="command")

    def add(name, fn, summary):
        p = sub.add_parser(name, help=summary, description=summary)
        p.add_argument("--params", default="params.yaml", help="the experiment grid (default: %(default)s)")
        p.add_argument("--profile", default=None, help="a profile of params.yaml, instead of its `profile` key")
        p.set_defaults(fn=fn)
        return p

    add("check", cmd_check, "validate params.yaml (and user data files) and count the active profile's jobs and runs")
    p = add("prepare", cmd_prepare, "load one dataset, split and standardise it, write it as .npz")
    p.add_argument("--dataset", required=True, help="a built-in dataset or a data.user entry")
    p.add_argument("--out", required=True, help="the prepared arrays (.npz)")
    p.add_argument("--summary", default=None, help="also write its sizes, source and hashes here (.json)")
    p.add_argument("--raw-dir", default="data/raw", help="where raw files are looked for (default: %(default)s)")
    p = add("ablate", cmd_ablate, "train every arm x seed of one workload x dimension; one row per run-epoch")
    p.add_argument("--workload", required=True, help="a workload of params.yaml")
    p.add_argument("--dimension", required=True, help="a dimension of params.yaml")
    p.add_argument("--data", required=True, help="the workload's prepared dataset (.npz)")
    p.add_argument("--out", required=True, help="the table to write (.parquet)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="training precision (default: %(default)s)")
    p = add("search", cmd_search, "run every study seed of one workload x search strategy; one row per trial")
    p.add_argument("--workload", required=True,
                   help="a workload of search.workloads, or <workload>~<space> for a space of search.spaces")
    p.add_argument("--strategy", required=True, help="grid, random, coarse_to_fine, qmc, tpe or gp")
    p.add_argument("--data", required=True, help="the workload's prepared dataset (.npz)")
    p.add_argument("--out", required=True, help="the table to write (.parquet)")
    p.add_argument("--journal", required=True, help="the Optuna journal file (unless search.storage names a database)")
    p.add_argument("--importance", default=None, help="also write fANOVA parameter importances per study (.json)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    agg = sub.add_parser("aggregate", help="run-epoch tables -> one row per run with the claims' metrics",
                         description="run-epoch tables -> one row per run with the claims' metrics")
    agg.add_argument("--out", required=True, help="the runs table to write (.parquet)")
    agg.add_argument("inputs", nargs="+", help="ablation tables (.parquet)")
    agg.set_defaults(fn=cmd_aggregate)
    rep = add("report", cmd_report, "judge every claim and write the report, its figures and tables")
    rep.add_argument("--runs", required=True, help="the aggregated runs (.parquet)")
    rep.add_argument("--ablations", nargs="*", default=[], help="ablation tables (.parquet)")
    rep.add_argument("--search", nargs="*", default=[], help="search tables (.parquet)")
    rep.add_argument("--importance", nargs="*", default=[], help="search importances (.json)")
    rep.add_argument("--datasets", nargs="*", default=[], help="prepared datasets' summaries (.json)")
    rep.add_argument("--benchmarks", nargs="*", default=[], help="the training jobs' Snakemake benchmark files (.tsv)")
    rep.add_argument("--verdicts", required=True, help="verdict per claim and workload (.csv)")
    rep.add_argument("--contrasts", required=True, help="every contrast with effect, interval, p, verdict (.csv)")
    rep.add_argument("--provenance", required=True, help="commit, device, seeds, versions, data hashes (.csv)")
    rep.add_argument("--metrics", required=True, help="verdict counts and primary effects for DVC (.json)")
    rep.add_argument("--report", required=True, help="the markdown report")
    rep.add_argument("--figures", required=True, help="the folder of the report's figures")
    show = add("show", cmd_show, "print one claim's verdict, contrasts and figures from the last report's tables")
    show.add_argument("claim", help="a claim id, e.g. C11")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        from tunebench.core.data import DataError

        if isinstance(err, DataError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
