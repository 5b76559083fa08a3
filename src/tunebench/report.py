"""The report: verdict table on top, then one section per claim with its setup, figure,
table and (C01, C03, C04) the post's numbers beside ours; the search section; provenance
and compute. A pure function of tables (`build`): the CLI reads and writes the files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tunebench import engine, grid, judge, markdown, plots, stats
from tunebench.claims import CLAIMS, SOURCE
from tunebench.config import Params

VERDICT_KINDS = ("supported", "refuted", "inconclusive", "mixed", "not run")


@dataclass
class Inputs:
    """What a report is drawn from: the tables a pipeline run leaves (and `dvc pull` restores)."""

    runs: pd.DataFrame  # one row per run (aggregate.summarize)
    epochs: pd.DataFrame  # the ablation tables: one row per run-epoch
    search: pd.DataFrame  # the search tables: one row per trial
    importance: dict  # study -> {param: fANOVA importance}
    datasets: list[dict]  # prepared datasets' summaries (data.summary)
    jobs: pd.DataFrame  # one row per training job: its table and Snakemake benchmark (s, max_rss, ...)
    drawn_by: str = "unknown"  # the commit that draws the report
    generated: str = ""  # when (UTC)
    analysis_versions: dict = field(default_factory=dict)  # package -> version, of the drawing environment


@dataclass
class Outputs:
    text: str  # report.md
    figures: dict[str, Figure]  # name -> figure (figures/<name>.png)
    contrasts: pd.DataFrame
    verdicts: pd.DataFrame
    provenance: pd.DataFrame  # item, value
    metrics: dict


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


def recipe_table(params: Params, dimension: str) -> pd.DataFrame:
    """One row per workload of a dimension: the settings its arms share after every layer
    of params.yaml (the active profile's overrides included), the model first. A setting
    that only another workload's layers set is "–" (RunConfig's default, which a model
    may not use: a softmax regression has no width)."""
    rows = {wl: grid.shared_settings(params, wl, dimension) for wl in grid.dimension_workloads(params, dimension)}
    keys = list(dict.fromkeys(["model", *(k for settings in rows.values() for k in settings)]))
    return pd.DataFrame([{"workload": wl, **{k: settings.get(k, "–") for k in keys}} for wl, settings in rows.items()])


# On one machine nothing trains between two jobs of one pipeline run for longer than a
# job's start-up (imports and data loading, ~5 s); a gap this long means separate runs
# (or, on a cluster, jobs waiting in the queue).
SEPARATE_RUNS_GAP_S = 120.0


def wall_spans(intervals: list[tuple[float, float]], gap_s: float = SEPARATE_RUNS_GAP_S) -> list[float]:
    """Wall time of the training from (start, end) per training job, in unix seconds: jobs
    overlapping or nearly touching (gaps under ``gap_s``) are one pipeline run; one span per
    run, in time order. Each job's end is the time its table was written (recorded in the
    table, so a redrawn report states the same) and its start that less its wall seconds
    (Snakemake's benchmark file). Not from the prepared data's times: a rerun that changes
    only training settings keeps data prepared hours before."""
    spans: list[list[float]] = []
    for start, done in sorted(intervals):
        if spans and start - spans[-1][1] < gap_s:
            spans[-1][1] = max(spans[-1][1], done)
        else:
            spans.append([start, done])
    return [max(0.0, done - start) for start, done in spans]


def wall_note(spans: list[float]) -> str:
    if not spans:
        return "no training job's wall time recorded"
    if len(spans) == 1:
        return f"pipeline wall time {spans[0]:.0f} s (first training job's start to the last training table)"
    return (f"the training tables were written in {len(spans)} bursts with nothing training for over "
            f"{SEPARATE_RUNS_GAP_S:.0f} s between them (separate pipeline runs, or jobs waiting in a cluster's "
            "queue), so there is no one wall time: the bursts took " + ", ".join(f"{s:.0f}" for s in spans) + " s")


def job_table(inputs: Inputs) -> pd.DataFrame:
    """One row per training job: its table, kind (ablation or search), the training seconds
    its table records, its wall seconds and peak memory (Snakemake's `benchmark:`), and
    when it finished (recorded in its table)."""
    rows = []
    for _, j in inputs.jobs.iterrows():
        parts = str(j["table"]).split("/")
        kind, wl, name = parts[-3], parts[-2], parts[-1].removesuffix(".parquet")
        if kind == "ablations" and not inputs.epochs.empty:
            t = inputs.epochs[(inputs.epochs["workload"] == wl) & (inputs.epochs["dimension"] == name)]
            seconds = float(t["epoch_seconds"].sum())
        elif kind == "search" and not inputs.search.empty:
            t = inputs.search[(inputs.search["workload"] == wl) & (inputs.search["strategy"] == name)]
            seconds = float(t["seconds"].sum())
        else:
            t, seconds = pd.DataFrame(), float("nan")
        finished = float(t["job_finished"].max()) if "job_finished" in t and len(t) else float("nan")
        rows.append({"table": j["table"], "kind": kind.removesuffix("s"), "job": f"{wl}/{name}",
                     "training_s": seconds, "wall_s": float(j["s"]), "max_rss_mb": float(j.get("max_rss", np.nan)),
                     "finished": finished})
    return pd.DataFrame(rows, columns=["table", "kind", "job", "training_s", "wall_s", "max_rss_mb", "finished"])


def compute_summary(jobs: pd.DataFrame) -> dict:
    """Training seconds, the jobs' wall seconds (process start-up, data loading and
    evaluation included), the share of the jobs' time spent training, the pipeline's wall
    time and the peak memory of a job."""
    timed = jobs[np.isfinite(jobs["finished"])]
    training = float(jobs["training_s"].sum())
    wall = float(jobs["wall_s"].sum())
    return {
        "jobs": len(jobs),
        "ablation_seconds": float(jobs.loc[jobs["kind"] == "ablation", "training_s"].sum()),
        "search_seconds": float(jobs.loc[jobs["kind"] == "search", "training_s"].sum()),
        "job_seconds": wall,
        "training_share": training / wall if wall > 0 else float("nan"),
        "wall_spans": wall_spans(list(zip(timed["finished"] - timed["wall_s"], timed["finished"]))),
        "max_rss_mb": float(jobs["max_rss_mb"].max()) if len(jobs) else float("nan"),
    }


def _recorded(frames: list[pd.DataFrame], column: str) -> list[str]:
    values = set()
    for f in frames:
        if column in f:
            values |= set(f[column].dropna().astype(str))
    return sorted(values)


def provenance(params: Params, inputs: Inputs, compute: dict) -> dict:
    """What the report states of how its numbers came about. Everything but `drawn_by` and
    `generated` comes from the tables, so a redraw from the same tables states the same."""
    frames = [inputs.epochs, inputs.search]
    envs = [json.loads(e) for e in _recorded(frames, "env")]
    keys = dict.fromkeys(k for e in envs for k in e)
    trained_with = {k: sorted({e.get(k, "?") for e in envs}) for k in keys}
    s = params.search_settings()
    return {
        "profile": params.profile,
        "seeds": params.active.seeds,
        "search study seeds": s.study_seeds if len(inputs.search) else [],
        "trained at commit": _recorded(frames, "commit") or ["unknown"],
        "devices": _recorded(frames, "device") or ["unknown"],
        "precision": cuda_precision_note(),
        "trained with": ", ".join(f"{k} {'/'.join(v)}" for k, v in trained_with.items()) or "unknown",
        "analysed with": ", ".join(f"{k} {v}" for k, v in inputs.analysis_versions.items()) or "unknown",
        "drawn by commit": inputs.drawn_by,
        "generated": inputs.generated,
        **compute,
    }


def cuda_precision_note() -> str:
    """How the engine computes, from its own settings: fp32 with PyTorch's defaults, which
    on CUDA allow TF32 in convolutions (cuDNN's, or the fused Triton kernels, which follow
    the same switch) and not in matmuls."""
    conv = {"native": "cuDNN", "gemm": "im2col + GEMM", "triton": "fused Triton conv+ReLU+pool"}[engine.CUDA_CONV_IMPL["fp32"]]
    return (f"fp32 (on CUDA: PyTorch defaults, TF32 in the CNN convolutions only ({conv}); step replayed as a CUDA "
            f"graph; up to {engine.CUDA_CONCURRENT_GROUPS} architecture groups side by side)")


def render_header(prov: dict, datasets: list[dict]) -> str:
    ds = pd.DataFrame([{"dataset": d["dataset"], "source": d["source"], "train/val/test": f"{d['train']}/{d['val']}/{d['test']}",
                        "content sha256": f"`{d['content_sha256'][:16]}`", "raw sha256": f"`{d['raw_sha256'][:16]}`"}
                       for d in datasets])
    lines = [
        "# tunebench report",
        "",
        f"Tuning advice from {SOURCE}, put to an empirical test: every claim is an ablation with paired seeds, "
        "a 95% bootstrap interval, a paired t-test and Holm-corrected p-values.",
        "",
        "## Provenance",
        "",
        f"- profile **{prov['profile']}**, seeds {prov['seeds']} (paired: seed s gives every arm the same data order, "
        "initial draw stream, dropout masks and augmentation)"
        + (f"; search study seeds {prov['search study seeds']}" if prov["search study seeds"] else ""),
        f"- trained at commit `{', '.join(prov['trained at commit'])}` on {', '.join(prov['devices'])}; "
        f"precision: {prov['precision']}",
        f"- trained with {prov['trained with']}; analysed with {prov['analysed with']}",
        f"- compute: {prov['jobs']} training jobs, {prov['ablation_seconds']:.0f} s of training in ablation jobs and "
        f"{prov['search_seconds']:.0f} s in search jobs, {_share(prov['training_share'])} of the jobs' "
        f"{prov['job_seconds']:.0f} s of wall time (the rest: process start-up, data loading, evaluation); "
        + wall_note(prov["wall_spans"]) + (f"; peak memory of a job {prov['max_rss_mb']:.0f} MB"
                                            if np.isfinite(prov["max_rss_mb"]) else ""),
        f"- drawn by commit `{prov['drawn by commit']}`, "
        f"generated {prov['generated']}",
        "",
    ]
    if not ds.empty:
        lines += [markdown.table(ds), ""]
    return "\n".join(lines)


def _share(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:.0%}"


def provenance_table(prov: dict, datasets: list[dict]) -> pd.DataFrame:
    """The provenance as (item, value) rows, for the Snakemake report and provenance.csv."""
    rows = [{"item": k, "value": v if isinstance(v, str) else json.dumps(v)} for k, v in prov.items()]
    rows += [{"item": f"dataset {d['dataset']}", "value": json.dumps(d, sort_keys=True)} for d in datasets]
    return pd.DataFrame(rows)


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
    return markdown.table(pd.DataFrame(rows))


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
    return markdown.table(table)


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


def metrics(params: Params, contrasts: pd.DataFrame, claims_v: pd.DataFrame) -> dict:
    """DVC's metrics: short keys that stay the same from run to run, so `dvc metrics diff`
    and `dvc exp show` line two experiments (or profiles) up: the seeds, the count of each
    verdict, and each claim's primary effect per workload. (The profile is a param, which
    `dvc exp show` prints beside them.)"""
    overall = claims_v[claims_v["workload"] == "all"]["verdict"].value_counts()
    effects: dict[str, dict[str, float]] = {}
    for _, r in judge.primary_contrasts(contrasts).iterrows():
        if np.isfinite(r["effect"]):
            effects.setdefault(r["claim"], {})[r["workload"]] = round(float(r["effect"]), 4)
    return {"seeds": len(params.active.seeds),
            "verdicts": {k: int(overall.get(k, 0)) for k in VERDICT_KINDS}, "effect": effects}


def verdict_rows(contrasts: pd.DataFrame, claims_v: pd.DataFrame) -> pd.DataFrame:
    """verdicts.csv: each claim's verdict per workload and overall, beside the workload's
    primary effect, interval and adjusted p (a DVC plot draws them)."""
    prim = judge.primary_contrasts(contrasts)
    cols = ["effect", "ci_low", "ci_high", "p_holm", "metric", "contrast"]
    if prim.empty:
        return claims_v.assign(**{c: np.nan for c in cols}, label=claims_v["claim"] + " " + claims_v["workload"])
    out = claims_v.merge(prim[["claim", "workload", *cols]], on=["claim", "workload"], how="left")
    return out.assign(label=out["claim"] + " " + out["workload"])


def figures(params: Params, inputs: Inputs, contrasts: pd.DataFrame, target) -> dict[str, Figure]:
    """Every figure of the report, by name: the verdict forest plot, per dimension its arms,
    heatmap and learning curves, and the search figures."""
    from tunebench import search_report

    out: dict[str, Figure | None] = {"verdicts": plots.verdict_figure(contrasts)}
    first = first_metric()
    for dim in params.dimensions:
        d = inputs.runs[inputs.runs["dimension"] == dim] if len(inputs.runs) else inputs.runs
        if d.empty:
            continue
        metric = first.get(dim, "final_test_acc")
        out[f"{dim}-arms"] = plots.dimension_figure(d, metric)
        out[f"{dim}-heatmap"] = plots.heatmap_figure(d, metric)
        if not inputs.epochs.empty:
            out[f"{dim}-curves"] = plots.curves_figure(inputs.epochs[inputs.epochs["dimension"] == dim])
    if not inputs.search.empty:
        for name, fig in search_report.figures(inputs.search, target, params).items():
            out[f"search-{name}"] = fig
    return {k: v for k, v in out.items() if v is not None}


def first_metric() -> dict[str, str]:
    """Per dimension, the metric of the first contrast that reads it (what its figures plot)."""
    first: dict[str, str] = {}
    for claim in CLAIMS:
        for c in claim.contrasts:
            first.setdefault(c.treatment.dimension, c.metric)
    return first


def build(params: Params, inputs: Inputs) -> Outputs:
    """Judge, draw and render: tables in, the report's text, figures and tables out."""
    from tunebench import search_report

    runs, search_df = inputs.runs, inputs.search
    rows = judge.ablation_rows(runs, params)
    target = params.search_settings().target_accuracy
    if not search_df.empty:
        for r in search_report.comparisons(search_df, target, params):
            rows.append({**r, "margin": None, "stated": None, "treatment_diverged": np.nan, "control_diverged": np.nan,
                         "dataset": params.workloads[r["workload"]].dataset})
    contrasts = judge.judge(rows)
    claims_v = judge.claim_verdicts(contrasts)
    figs = figures(params, inputs, contrasts, target)
    paths = {name: f"figures/{name}.png" for name in figs}
    search_summary = search_report.summary(search_df, target, params) if not search_df.empty else pd.DataFrame()
    prov = provenance(params, inputs, compute_summary(job_table(inputs)))

    seeds = len(params.active.seeds)
    first = first_metric()
    ran = {dim for _, dim in grid.jobs(params)}
    parts = [render_header(prov, inputs.datasets), "## Verdicts", "", verdict_table(contrasts, claims_v, seeds), ""]
    if "verdicts" in paths:
        parts += [f"![every claim's primary effect per workload, signed so that right of 0 is as the advice predicts]"
                  f"({paths['verdicts']})", ""]
        if judge.not_measured(judge.primary_contrasts(contrasts)).any():
            parts += ["*A row marked (not measured) is a time to a target that neither arm reached on any seed:"
                      " it has no point, since its 0 [0, 0] is the budget + 1 stand-in's.*", ""]
    parts += [VERDICT_RULE, resolution_note(contrasts), ""]
    for claim in CLAIMS:
        sub = contrasts[contrasts["claim"] == claim.id] if not contrasts.empty else contrasts
        overall = claims_v[(claims_v["claim"] == claim.id) & (claims_v["workload"] == "all")].iloc[0]
        parts += [f"## {claim.id}", "", f"**Advice** ({SOURCE}): {claim.advice}", "",
                  f"**Prediction:** {claim.expect}. **Verdict: {overall['verdict']}**"
                  + (f" ({overall['detail']})" if overall["detail"] else ""), ""]
        if claim.notes:
            parts += [claim.notes, ""]
        if claim.post_numbers:
            parts += [f"**The post reported:** {claim.post_numbers}. **We measured:**", "",
                      post_vs_ours(claim.id, runs), ""]
        dims = list(dict.fromkeys(c.treatment.dimension for c in claim.contrasts))
        for dim in dims:
            if dim not in ran:
                parts += [f"*Setup:* dimension `{dim}` is not run in the {params.profile} profile.", ""]
                continue
            spec = params.dimensions[dim]
            d = runs[runs["dimension"] == dim]
            arm_grid = {**spec.grid, **params.active.grids.get(dim, {})}
            parts += [f"*Setup:* dimension `{dim}`, arms {json.dumps(arm_grid)}, "
                      f"workloads {', '.join(grid.dimension_workloads(params, dim))}; {seeds} seeds; "
                      f"compute {d['seconds'].sum():.0f} s. Every arm's other settings, as the runs used them "
                      f"({params.profile} profile; – : the run default):", "",
                      markdown.table(recipe_table(params, dim)), ""]
            for kind in ("arms", "heatmap", "curves"):
                if f"{dim}-{kind}" in paths:
                    parts += [f"![{dim} {kind}]({paths[f'{dim}-{kind}']})", ""]
            if not d.empty:
                parts += ["<details><summary>Per-arm table</summary>", "",
                          markdown.table(arm_summary(d, first.get(dim, "final_test_acc"))), "", "</details>", ""]
        if claim.search and not search_summary.empty:
            parts += ["See [the search section](#automatic-tuning-c25c28).", ""]
        if len(sub):
            parts += [contrast_table(sub), ""]
    if not search_df.empty:
        parts += search_report.render(search_df, search_summary, inputs.importance, paths, params)
    return Outputs(text="\n".join(parts) + "\n", figures=figs, contrasts=contrasts,
                   verdicts=verdict_rows(contrasts, claims_v), provenance=provenance_table(prov, inputs.datasets),
                   metrics=metrics(params, contrasts, claims_v))
