"""The report: verdict table on top, then one section per claim with its setup, figure,
table and (C01, C03, C04) the post's numbers beside ours; the search section; provenance."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from tunebench import engine, grid, judge, plots, stats
from tunebench.claims import CLAIMS, SOURCE
from tunebench.config import Params

PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scipy", "statsmodels", "optuna", "seaborn", "snakemake", "dvc")


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    if isinstance(x, float) and np.isinf(x):
        return "∞" if x > 0 else "-∞"
    if isinstance(x, (float, np.floating)):
        if abs(x) < 1e-12:  # float noise of a zero difference (e.g. 4e-18)
            return f"{0.0:.{digits}f}"
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
    return str(x)


def _p(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)


def recipe_table(params: Params, dimension: str) -> pd.DataFrame:
    """One row per workload of a dimension: the settings its arms share after every layer
    of params.yaml (the active profile's overrides included), the model first. A setting
    that only another workload's layers set is "–" (RunConfig's default, which a model
    may not use: a softmax regression has no width)."""
    rows = {wl: grid.shared_settings(params, wl, dimension) for wl in params.dimensions[dimension].workloads}
    keys = list(dict.fromkeys(["model", *(k for settings in rows.values() for k in settings)]))
    return pd.DataFrame([{"workload": wl, **{k: settings.get(k, "–") for k in keys}} for wl, settings in rows.items()])


# On one machine nothing trains between two jobs of one pipeline run for longer than a
# job's start-up (imports and data loading, ~5 s); a gap this long means separate runs
# (or, on a cluster, jobs waiting in the queue).
SEPARATE_RUNS_GAP_S = 120.0


def training_wall_spans(tables: list[tuple[float, float]], gap_s: float = SEPARATE_RUNS_GAP_S) -> list[float]:
    """Wall time of the training, from (finish time, training seconds) per training table:
    each table trained from its time less its seconds to its time. Overlapping or nearly
    touching intervals (gaps under ``gap_s``) are one pipeline run; one span per run, in
    time order. Not from the prepared data's times: a rerun that changes only training
    settings keeps data prepared hours before (the quick profile's first 5-seed report said
    10,733 s for a 10.5-minute run), and a rerun of a few dimensions keeps the other
    dimensions' tables (one such report said 5,307 s for 1.5 hours between two runs). A
    job's process start-up (imports, ~5 s) is not in its seconds."""
    spans: list[list[float]] = []
    for start, done in sorted((done - seconds, done) for done, seconds in tables):
        if spans and start - spans[-1][1] < gap_s:
            spans[-1][1] = max(spans[-1][1], done)
        else:
            spans.append([start, done])
    return [max(0.0, done - start) for start, done in spans]


def wall_note(spans: list[float]) -> str:
    if len(spans) <= 1:
        return (f"pipeline wall time {spans[0] if spans else 0.0:.0f} s "
                "(first training job's start to the last training table)")
    return (f"the training tables were written in {len(spans)} bursts with nothing training for over "
            f"{SEPARATE_RUNS_GAP_S:.0f} s between them (separate pipeline runs, or jobs waiting in a cluster's "
            "queue), so there is no one wall time: the bursts took " + ", ".join(f"{s:.0f}" for s in spans) + " s")


def provenance(params: Params, datasets: list[dict], devices: list[str], wall: dict) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports", ":!dvc.lock"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", ""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "absent"
    return {
        "commit": (commit or "unknown") + (" (with local changes)" if dirty else ""),
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "profile": params.profile,
        "seeds": params.active.seeds,
        "devices": sorted(set(devices)),
        "precision": cuda_precision_note(),
        "python": platform.python_version(),
        "versions": versions,
        "datasets": datasets,
        **wall,
    }


def cuda_precision_note() -> str:
    """How the engine computes, from its own settings: fp32 with PyTorch's defaults, which
    on CUDA allow TF32 in convolutions (cuDNN's, or the fused Triton kernels, which follow
    the same switch) and not in matmuls."""
    conv = {"native": "cuDNN", "gemm": "im2col + GEMM", "triton": "fused Triton conv+ReLU+pool"}[engine.CUDA_CONV_IMPL["fp32"]]
    return (f"fp32 (on CUDA: PyTorch defaults, TF32 in the CNN convolutions only ({conv}); step replayed as a CUDA "
            f"graph; up to {engine.CUDA_CONCURRENT_GROUPS} architecture groups side by side)")


def render_header(prov: dict) -> str:
    ds = pd.DataFrame(prov["datasets"])
    lines = [
        "# tunebench report",
        "",
        f"Tuning advice from {SOURCE}, put to an empirical test: every claim is an ablation with paired seeds, "
        "a 95% bootstrap interval, a paired t-test and Holm-corrected p-values.",
        "",
        "## Provenance",
        "",
        f"- commit `{prov['commit']}`, generated {prov['generated']}",
        f"- profile **{prov['profile']}**, seeds {prov['seeds']} (paired: seed s gives every arm the same data order, "
        "initial draw stream, dropout masks and augmentation)",
        f"- device: {', '.join(prov['devices'])}; precision: {prov['precision']}",
        f"- compute: {prov['ablation_seconds']:.0f} s of training in ablation jobs, {prov['search_seconds']:.0f} s in search jobs; "
        + wall_note(prov["wall_spans"]),
        f"- Python {prov['python']}; " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()),
        "",
    ]
    if not ds.empty:
        lines += [md_table(ds), ""]
    return "\n".join(lines)


VERDICT_RULE = """## How a verdict is reached

For each claim, workload and contrast: the per-seed difference treatment - control on the
claim's metric (seeds paired), its mean with a 95% percentile bootstrap interval
(scipy.stats.bootstrap), a two-sided paired t-test, and Holm's correction across every
contrast in this report (statsmodels). Where an arm set holds several arms (e.g. "adam at
its best lr"), the arm with the best mean *validation* score is picked and compared on
*test*. The verdict table gives each workload's primary effect in the metric's own units
and, beside it, what the advice predicts of it: its sign ("< 0" for "fewer epochs to the
target", "> 0" for "higher accuracy"), or the bound of a non-inferiority test. Then:
- **supported**: the effect has the predicted sign, its interval excludes 0, and the Holm-adjusted p < 0.05;
- **refuted**: the interval lies wholly on the other side of 0 (adjusted p < 0.05), or wholly below half the magnitude the post states (on MNIST, the post's data);
- **inconclusive**: anything else, with the reason.
"At least as good" claims are non-inferiority tests: supported when the interval of the
difference lies above -margin. A claim is **mixed** when its workloads (or contrasts)
disagree; the split is shown. Diverged runs (non-finite loss) count at chance accuracy and
infinite loss; divergence rates are listed per arm. Epochs (or trials) to the target count
as budget + 1 when the target is never reached: a stand-in, not a measurement, so every
such contrast shows the share of seeds each arm reached the target on ("reached target
T/C") and its reason counts the censored seeds (where one arm is censored the difference
understates the gap). A contrast that neither arm reached on any seed is **not measured**:
inconclusive, with no p and no place in Holm's family, rather than read as "no difference".
The interval alone is not trusted with few seeds (all n differences share a sign with
probability 2/2^n under no effect: 25% with 3 seeds, 6% with 5), hence the p gate.
A count (epochs, trials, divergence) can differ by the same amount on every seed; with no
variance the t-test's p is taken as 0, so such a contrast passes the p gate, and its
reason says so. The contrast tables give the Wilcoxon signed-rank p beside the t-test's,
as a distribution-free check: it cannot go below 2/2^n (0.25 with 3 seeds, 0.0625 with 5).
Figures show each arm's mean over seeds with a 95% Student-t interval (t(n-1) * sd / sqrt(n)),
not a bootstrap: with 3-5 seeds a percentile bootstrap covers well under 95%.
"""


def resolution_note(contrasts: pd.DataFrame, alpha: float = 0.05) -> str:
    """What this report's seeds can resolve: the smallest effect, in seed standard
    deviations of the paired difference, that passes even Holm's first step over this
    report's family, for the seeds the contrasts have and for 5 and 10. Without it a
    reader of a 3-seed report full of "inconclusive" cannot tell "no effect" from "too
    few seeds to see one"."""
    tested = contrasts[contrasts["p"].notna()] if not contrasts.empty else contrasts
    if tested.empty:
        return ""
    family, n = len(tested), int(tested["n"].max())
    sizes = ", ".join(f"{stats.smallest_resolvable_effect(k, family, alpha):.1f} with {k}"
                      for k in sorted({n, 5, 10}))
    return (f"**What {n} seeds can resolve.** The Holm family here holds {family} contrasts, so the "
            f"most significant one needs p < {alpha}/{family}: a mean paired difference of at least "
            f"{stats.smallest_resolvable_effect(n, family, alpha):.1f} standard deviations of the per-seed "
            f"difference to be supported or refuted at all ({sizes} seeds; a difference the same on "
            "every seed passes by the zero-variance rule above). So an inconclusive verdict does not "
            "show that an effect is absent, only that it is smaller than that or noisier; more seeds "
            "resolve smaller ones.")


def predicted(expected: float, margin: float | None = None) -> str:
    """What the advice predicts of the effect (treatment - control), as the verdict rule
    tests it: its sign, or for a non-inferiority claim ("at least as good") the bound the
    interval must clear. The table prints the raw effect, whose predicted sign depends on
    the claim (C05's "faster" is fewer epochs, < 0; C19's "SGD takes longer" more, > 0),
    so a reader needs this beside it."""
    if margin is not None and np.isfinite(margin):
        return f"> {_fmt(-margin)}" if expected > 0 else f"< {_fmt(margin)}"
    return "> 0" if expected > 0 else "< 0"


def verdict_table(contrasts: pd.DataFrame, claims_v: pd.DataFrame, seeds: int) -> str:
    rows = []
    primary = judge.primary_contrasts(contrasts)
    unmeasured = judge.not_measured(primary)
    for claim in CLAIMS:
        overall = claims_v[(claims_v["claim"] == claim.id) & (claims_v["workload"] == "all")]
        v = overall["verdict"].iloc[0] if len(overall) else "inconclusive"
        sub = contrasts[contrasts["claim"] == claim.id] if not contrasts.empty else contrasts
        effects, predictions, ps = [], [], []
        for i, r in primary[primary["claim"] == claim.id].iterrows() if len(primary) else []:
            effects.append(f"{r['workload']}: not measured (neither arm reached the target)" if unmeasured[i]
                           else f"{r['workload']}: {_fmt(r['effect'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]")
            predictions.append(predicted(r["expected"], r.get("margin")))
            ps.append(_p(r["p_holm"]))
        n = int(sub["n"].max()) if len(sub) else seeds
        rows.append({"claim": f"[{claim.id}](#{claim.id.lower()})", "advice": claim.advice, "verdict": f"**{v}**",
                     "primary effect [95% CI] per workload": "<br>".join(effects) or "–",
                     "advice predicts": "<br>".join(predictions) or "–",
                     "adj. p": "<br>".join(ps) or "–", "seeds": n})
    return md_table(pd.DataFrame(rows))


def _decided(r: pd.Series) -> str:
    """A supported or refuted verdict, with the note a zero-variance difference needs (its
    other reasons are the row's own columns)."""
    note = stats.same_on_every_seed_note(int(r["n"]), r["effect"], r["ci_low"], r["ci_high"], r.get("p_wilcoxon"))
    return f"{r['verdict']}: {note}" if note else r["verdict"]


def _reached(r: pd.Series) -> str:
    """The share of seeds each arm reached the target on, for a time-to-target contrast."""
    t, c = r.get("treatment_reached"), r.get("control_reached")
    if t is None or c is None or pd.isna(t) or pd.isna(c):
        return "–"
    return f"{t:.0%}/{c:.0%}"


def contrast_table(sub: pd.DataFrame) -> str:
    rows = []
    for _, r in sub.iterrows():
        rows.append({
            "workload": r["workload"], "contrast": r["contrast"],
            "arms (treatment vs control)": f"`{r['treatment']}` vs `{r['control']}`",
            "metric": r["metric"], "effect [95% CI]": f"{_fmt(r['effect'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
            "p (adj.)": f"{_p(r['p'])} ({_p(r['p_holm'])})", "p Wilcoxon": _p(r.get("p_wilcoxon")),
            "diverged T/C": f"{_fmt(r.get('treatment_diverged'), 2)}/{_fmt(r.get('control_diverged'), 2)}",
            "reached target T/C": _reached(r),
            "verdict": f"{r['verdict']}: {r['reason']}" if r["verdict"] == "inconclusive" else _decided(r),
        })
    table = pd.DataFrame(rows)
    if (table["reached target T/C"] == "–").all():  # no time-to-target contrast here
        table = table.drop(columns="reached target T/C")
    return md_table(table)


def arm_summary(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    g = runs.groupby(["workload", "arm"], sort=False)
    out = g.agg(seeds=("seed", "nunique"), mean=(metric, "mean"), sd=(metric, "std"), diverged=("diverged", "mean"),
                seconds=("seconds", "sum")).reset_index()
    for c in ("mean", "sd"):
        out[c] = out[c].map(_fmt)
    out["diverged"] = out["diverged"].map(lambda x: f"{x:.0%}")
    out["seconds"] = out["seconds"].map(lambda x: f"{x:.1f}")
    if metric == "epochs_to_target" and "reached_target" in runs:  # a mean of stand-ins needs this beside it
        reached = g["reached_target"].mean().reset_index(drop=True)
        out.insert(out.columns.get_loc("sd") + 1, "reached target", reached.map(lambda x: "–" if pd.isna(x) else f"{x:.0%}"))
    return out.rename(columns={"mean": f"{metric} mean", "sd": "sd"})


def post_vs_ours(claim_id: str, runs: pd.DataFrame) -> str:
    def mean(dim, wl, arm, metric):
        d = runs[(runs["dimension"] == dim) & (runs["workload"] == wl) & (runs["arm"] == arm)]
        return d[metric].mean() if len(d) else float("nan")

    lines = []
    if claim_id == "C01":
        for wl in ("mnist_cnn", "fmnist_cnn"):
            lines.append(f"- {wl}: normal(0,1) {_fmt(mean('init', wl, 'init=normal_1', 'final_test_acc'))}, "
                         f"xavier_uniform {_fmt(mean('init', wl, 'init=xavier_uniform', 'final_test_acc'))} final test accuracy")
    elif claim_id == "C03":
        for wl in ("mnist_softmax", "fmnist_softmax"):
            lines.append(
                f"- {wl}: normal(0,1) {_fmt(mean('init', wl, 'init=normal_1', 'test_acc_epoch1'))} after epoch 1, "
                f"{_fmt(mean('init', wl, 'init=normal_1', 'final_test_acc'))} at the end; zeros "
                f"{_fmt(mean('init', wl, 'init=zeros', 'test_acc_epoch1'))} after epoch 1, "
                f"{_fmt(mean('init', wl, 'init=zeros', 'final_test_acc'))} at the end")
    elif claim_id == "C04":
        for wl, g in runs[runs["dimension"] == "lr_regression"].groupby("workload", sort=False):
            rate = g.groupby(g["arm_lr"].astype(float))["diverged"].mean()
            edge = rate[rate >= 0.5]
            stable = rate[rate == 0]
            lines.append(f"- {wl}: divergence rate by lr: " + ", ".join(f"{lr:g}: {r:.0%}" for lr, r in rate.items())
                         + f". Measured stability edge: largest lr with no divergence {stable.index.max() if len(stable) else '–'}, "
                         f"smallest lr diverging in most seeds {edge.index.min() if len(edge) else 'none in the grid'}")
    return "\n".join(lines)


def build(params: Params, args, atomic_path, log) -> None:
    """Read the tables, judge, draw, render; write every output atomically."""
    from tunebench import search_report

    runs = pd.read_parquet(args.runs)
    ablation_tables = [pd.read_parquet(p) for p in args.ablations]
    search_tables = [pd.read_parquet(p) for p in args.search]
    epochs = pd.concat(ablation_tables, ignore_index=True) if ablation_tables else pd.DataFrame()
    search_df = pd.concat(search_tables, ignore_index=True) if search_tables else pd.DataFrame()
    # (finish time, training seconds) per training table, for the wall time.
    timed_tables = [(Path(p).stat().st_mtime, float(t["epoch_seconds"].sum())) for p, t in zip(args.ablations, ablation_tables)]
    timed_tables += [(Path(p).stat().st_mtime, float(t["seconds"].sum())) for p, t in zip(args.search, search_tables)]
    importance = {}
    for p in args.importance:
        importance.update(json.loads(Path(p).read_text()))
    rows = judge.ablation_rows(runs, params)
    target = params.search_settings().target_accuracy
    if not search_df.empty:
        for r in search_report.comparisons(search_df, target, params):
            rows.append({**r, "margin": None, "stated": None, "treatment_diverged": np.nan, "control_diverged": np.nan,
                         "dataset": params.workloads[r["workload"]].dataset})
    contrasts = judge.judge(rows)
    claims_v = judge.claim_verdicts(contrasts)

    fig_dir = Path(args.figures)
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}

    def save(name, fig):
        if fig is None:
            return None
        path = fig_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plots.plt.close(fig)
        figures[name] = f"figures/{name}.png"
        return figures[name]

    save("verdicts", plots.verdict_figure(contrasts))
    # ---- figures per dimension
    first_metric = {}
    for claim in CLAIMS:
        for c in claim.contrasts:
            first_metric.setdefault(c.treatment.dimension, c.metric)
    for dim in params.dimensions:
        d = runs[runs["dimension"] == dim]
        if d.empty:
            continue
        metric = first_metric.get(dim, "final_test_acc")
        save(f"{dim}-arms", plots.dimension_figure(d, metric))
        save(f"{dim}-heatmap", plots.heatmap_figure(d, metric))
        if not epochs.empty:
            save(f"{dim}-curves", plots.curves_figure(epochs[epochs["dimension"] == dim]))
    search_summary = pd.DataFrame()
    if not search_df.empty:
        search_summary = search_report.summary(search_df, target, params)
        for name, fig in search_report.figures(search_df, target, params).items():
            save(f"search-{name}", fig)

    # ---- render
    datasets = []
    for p in args.datasets:
        from tunebench.data import load_prepared

        prep = load_prepared(Path(p))
        datasets.append({"dataset": prep.name, "source": prep.source, "train/val/test": f"{len(prep.y_train)}/{len(prep.y_val)}/{len(prep.y_test)}",
                         "content sha256": f"`{prep.content_hash[:16]}`", "raw sha256": f"`{prep.raw_hash[:16]}`"})
    # Wall time from the training tables' file times and their own training seconds, so a
    # report rendered again later (a changed figure) states the same time.
    wall = {"ablation_seconds": float(epochs["epoch_seconds"].sum()) if not epochs.empty else 0.0,
            "search_seconds": float(search_df["seconds"].sum()) if not search_df.empty else 0.0,
            "wall_spans": training_wall_spans(timed_tables)}
    devices = list(epochs["device"].unique()) if "device" in epochs else []
    prov = provenance(params, datasets, devices or ["unknown"], wall)
    seeds = len(params.active.seeds)
    parts = [render_header(prov), "## Verdicts", "", verdict_table(contrasts, claims_v, seeds), ""]
    if "verdicts" in figures:
        parts += [f"![every claim's primary effect per workload, signed so that right of 0 is as the advice predicts]"
                  f"({figures['verdicts']})", ""]
        if judge.not_measured(judge.primary_contrasts(contrasts)).any():
            parts += ["*A row marked (not measured) is a time to a target that neither arm reached on any seed:"
                      " it has no point, since its 0 [0, 0] is the budget + 1 stand-in's.*", ""]
    parts += [VERDICT_RULE, resolution_note(contrasts), ""]
    for claim in CLAIMS:
        sub = contrasts[contrasts["claim"] == claim.id] if not contrasts.empty else contrasts
        overall = claims_v[(claims_v["claim"] == claim.id) & (claims_v["workload"] == "all")].iloc[0]
        parts += [f"## {claim.id}", "", f"**Advice** ({SOURCE}): {claim.advice}", "",
                  f"**Prediction:** {claim.expect}. **Verdict: {overall['verdict']}**" + (f" ({overall['detail']})" if overall["detail"] else ""), ""]
        if claim.notes:
            parts += [claim.notes, ""]
        if claim.post_numbers:
            parts += [f"**The post reported:** {claim.post_numbers}. **We measured:**", "", post_vs_ours(claim.id, runs), ""]
        dims = list(dict.fromkeys(c.treatment.dimension for c in claim.contrasts))
        for dim in dims:
            if dim not in params.dimensions:
                continue
            spec = params.dimensions[dim]
            d = runs[runs["dimension"] == dim]
            arm_grid = {**spec.grid, **params.active.grids.get(dim, {})}
            parts += [f"*Setup:* dimension `{dim}`, arms {json.dumps(arm_grid)}, "
                      f"workloads {', '.join(spec.workloads)}; {seeds} seeds; compute {d['seconds'].sum():.0f} s. "
                      f"Every arm's other settings, as the runs used them ({params.profile} profile; – : the run default):", "",
                      md_table(recipe_table(params, dim)), ""]
            for kind in ("arms", "heatmap", "curves"):
                if f"{dim}-{kind}" in figures:
                    parts += [f"![{dim} {kind}]({figures[f'{dim}-{kind}']})", ""]
            if not d.empty:
                parts += ["<details><summary>Per-arm table</summary>", "", md_table(arm_summary(d, first_metric.get(dim, "final_test_acc"))), "", "</details>", ""]
        if claim.search and not search_summary.empty:
            parts += [f"See [the search section](#automatic-tuning-c25c28).", ""]
        if len(sub):
            parts += [contrast_table(sub), ""]
    if not search_df.empty:
        parts += search_report.render(search_df, search_summary, importance, figures, params)
    text = "\n".join(parts) + "\n"

    metrics = {
        "profile": params.profile,
        "verdicts": {r["claim"]: r["verdict"] for _, r in claims_v[claims_v["workload"] == "all"].iterrows()},
        "counts": claims_v[claims_v["workload"] == "all"]["verdict"].value_counts().to_dict(),
        "effects": {f"{r['claim']}/{r['workload']}/{r['contrast']}": round(float(r["effect"]), 6)
                    for _, r in contrasts.iterrows() if np.isfinite(r["effect"])},
        "seconds": {"ablation": round(wall["ablation_seconds"], 1), "search": round(wall["search_seconds"], 1)},
    }
    out_cols = [c for c in contrasts.columns if c not in ("treatment_values", "control_values", "seeds")]
    with atomic_path(Path(args.contrasts)) as tmp:
        contrasts[out_cols].to_csv(tmp, index=False)
    with atomic_path(Path(args.verdicts)) as tmp:
        claims_v.to_csv(tmp, index=False)
    with atomic_path(Path(args.metrics)) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, sort_keys=True, default=str))
    with atomic_path(Path(args.report)) as tmp:
        tmp.write_text(text)
    log(f"report: {len(contrasts)} contrasts, {len(figures)} figures -> {args.report}")
