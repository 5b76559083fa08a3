"""The report: provenance, the verdict table of each advice source with the forest plot, where
the sources disagree, how verdicts are reached and what the seeds can resolve, the
calibration of the verdict code, then one section per claim (its quote, setup, figures,
contrasts and, where the source gave numbers, ours beside them) and the search section.
A pure function of tables (`build`): the CLI reads and writes the files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tunebench.analysis import calibration, judge, stats
from tunebench.core import engine
from tunebench.spec import grid
from tunebench.reporting import markdown, plots
from tunebench.spec.claims import Claim, Claims, metric_label
from tunebench.spec.config import Params

CALIBRATION_SIMULATIONS = 1000  # A/A data sets per family
POWER_SIMULATIONS = 300  # data sets per planted effect


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
        "seeds by dimension": "; ".join(f"{d}: {len(v)}" for d, v in params.active.dimension_seeds.items()
                                        if d in {dim for _, dim in grid.jobs(params)}),
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


def render_header(prov: dict, datasets: list[dict], claims: Claims) -> str:
    ds = pd.DataFrame([{"dataset": d["dataset"], "source": d["source"], "train/val/test": f"{d['train']}/{d['val']}/{d['test']}",
                        "content sha256": f"`{d['content_sha256'][:16]}`", "raw sha256": f"`{d['raw_sha256'][:16]}`"}
                       for d in datasets])
    lines = [
        "# tunebench report",
        "",
        "Tuning advice put to an empirical test: "
        + "; ".join(f"{s.cite}" + (f" ({s.url})" if s.url else "") for s in claims.sources.values())
        + ". Every claim is an ablation with paired seeds; each source's primary contrasts form a family "
        "whose family-wise error rate Holm's correction controls, and the calibration section shows it does.",
        "",
        "## Provenance",
        "",
        f"- profile **{prov['profile']}**, seeds {prov['seeds']}"
        + (f" ({prov['seeds by dimension']})" if prov.get("seeds by dimension") else "")
        + " (paired: seed s gives every arm the same data order, initial draw stream, dropout masks and augmentation)"
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

Each claim quotes its source and names its contrasts: treatment arms against control arms of one
dimension on one metric, with the sign the advice predicts (or "at least as good", a
non-inferiority test against a margin; or "no difference", an equivalence test). Per contrast
and workload:
- **Pairing.** The per-seed difference treatment - control (seed s gives every arm the same
  data order, initial draws, dropout masks and augmentation).
- **The best arm of a set** ("adam at its best lr") is chosen on validation, on seeds disjoint
  from the ones compared: the seeds are split into two folds, each fold's arm chosen on the
  other fold's validation scores (cross-fitting), so a larger arm set gains nothing from the
  choice.
- **Effect and interval.** The mean difference with a 95% Student-t interval.
- **Test.** The paired t-test; for a count metric (epochs or trials to a target, divergence)
  or where every seed gives the same difference, an exact sign-flip permutation test (its p
  cannot go below 2/2^n). The Wilcoxon signed-rank p is shown beside it as a cross-check.
- **Equivalence.** Two one-sided tests against ± the contrast's equivalence margin.
- **Family.** Exactly one contrast per claim and workload is *primary*; a source's primaries
  form its family, and Holm's correction controls the family-wise error rate over their tests
  of a difference and of a stated magnitude (and, separately, over their equivalence tests).
  Holm rather than Benjamini-Hochberg: a reader may cite any one verdict on its own, and only
  a family-wise guarantee covers that. Other contrasts are descriptive: unadjusted p-values,
  marked as such.

Per workload, from its primary contrast, first match wins:
- **supported**: the predicted sign, the interval excludes 0 (or the non-inferiority bound),
  adjusted p < 0.05 (for a "no difference" prediction: the equivalence test passes);
- **refuted**: the opposite sign (or worse than the margin allows) with adjusted p < 0.05, or,
  where the source states a magnitude on this dataset, the interval wholly below half of it
  with the magnitude test's adjusted p < 0.05;
- **no effect**: the interval within ± the equivalence margin (the equivalence test passes);
- **unresolved**: anything else, with the reason.

Per claim: the split over workloads and one word: the word every workload shares; **mixed**
where one workload is supported and another refuted; otherwise **partly** followed by the
strongest word present (refuted before supported before no effect). Diverged runs (a
non-finite loss) are data: they count at chance accuracy and infinite loss, and each arm's
divergence rate is shown. A time to a target never reached counts as budget + 1, a stand-in
each such contrast reports ("reached target T/C"); a contrast neither arm reached on any seed
is *not measured*: no test, no place in the family. The figures' bars are 95% Student-t
intervals over seeds.
"""


def resolution_note(contrasts: pd.DataFrame, alpha: float = stats.ALPHA) -> str:
    """Per family, what its seeds can resolve: the smallest effect, in standard deviations of
    the per-seed difference, that passes Holm's first step over the family's tests, and the
    smallest p an exact sign-flip test can reach with those seeds."""
    prim = judge.primary_contrasts(contrasts)
    tested = prim[prim["p"].notna()] if not prim.empty else prim
    if tested.empty:
        return ""
    rows = []
    for source, fam in tested.groupby("source", sort=False):
        m = len(fam) + int(fam["p_magnitude"].notna().sum())
        for n, k in fam["n"].value_counts().sort_index().items():
            rows.append({"family": source, "tests in the family": m, "seeds": int(n), "primary contrasts": int(k),
                         "smallest resolvable effect (SD)": f"{stats.smallest_resolvable_effect(int(n), m, alpha):.2f}",
                         "smallest sign-flip p": f"{stats.sign_flip_floor(int(n)):.2g}",
                         "first Holm step needs p <": f"{alpha / m:.2g}"})
    return ("**What the seeds can resolve.** Holm's first step over a family of m tests needs p < "
            f"{alpha}/m: a mean paired difference of at least the resolvable effect below, in standard "
            "deviations of the per-seed difference (a count metric's exact test needs its smallest p "
            "below that bound too). An unresolved verdict does not show that an effect is absent, only "
            "that it is smaller or noisier than that; the equivalence test says when it is absent.\n\n"
            + markdown.table(pd.DataFrame(rows)))


def predicted(expected: float, margin: float | None = None, equivalence: float | None = None) -> str:
    """What the advice predicts of the effect (treatment - control), as the verdict rule
    tests it: its sign, a non-inferiority bound, or equivalence within a margin."""
    if expected == 0:
        return f"within ±{_fmt(equivalence)}" if equivalence is not None else "0"
    if margin is not None and np.isfinite(margin):
        return f"> {_fmt(-margin)}" if expected > 0 else f"< {_fmt(margin)}"
    return "> 0" if expected > 0 else "< 0"


def _effect_text(r: pd.Series, unmeasured: bool) -> str:
    if unmeasured:
        return f"{r['workload']}: not measured (neither arm reached the target)"
    return f"{r['workload']}: {_fmt(r['effect'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"


def verdict_table(contrasts: pd.DataFrame, claims_v: pd.DataFrame, claims: Claims, source: str) -> str:
    """One row per claim of `source`: its summary word and split, each workload's primary
    effect, what the advice predicts of it, the adjusted p and the workload's verdict, the
    seeds, and any descriptive (secondary) refutation."""
    rows = []
    prim = judge.primary_contrasts(contrasts)
    unmeasured = judge.not_measured(prim)
    secondary = contrasts[~contrasts["primary"].astype(bool)] if len(contrasts) else contrasts
    for claim in claims:
        if claims.source_of[claim.id].id != source:
            continue
        overall = claims_v[(claims_v["claim"] == claim.id) & (claims_v["workload"] == "all")].iloc[0]
        mine = prim[prim["claim"] == claim.id] if len(prim) else prim
        refuted = secondary[(secondary["claim"] == claim.id) & (secondary["verdict"] == "refuted")] if len(secondary) else secondary
        rows.append({
            "claim": f"[{claim.id}](#{claim.id.lower()})", "advice": claim.paraphrase,
            "verdict": f"**{overall['verdict']}**" + (f"<br>{overall['detail']}" if overall["verdict"] != "not run" else ""),
            "primary effect [95% CI] per workload": "<br>".join(_effect_text(r, unmeasured[i]) for i, r in mine.iterrows()) or "–",
            "advice predicts": "<br>".join(predicted(r["expected"], r.get("margin"), r["equivalence"]) for _, r in mine.iterrows()) or "–",
            "adj. p": "<br>".join(_p(r["p_adj"]) for _, r in mine.iterrows()) or "–",
            "per workload": "<br>".join(r["verdict"] for _, r in mine.iterrows()) or "–",
            "seeds": "<br>".join(str(int(r["n"])) for _, r in mine.iterrows()) or "–",
            "secondary refutations (descriptive)": "<br>".join(
                f"{r['contrast']} on {r['workload']}: {_fmt(r['effect'])}" for _, r in refuted.iterrows()) or "–",
        })
    return markdown.table(pd.DataFrame(rows))


def disagreements(claims: Claims, claims_v: pd.DataFrame) -> str:
    """Where two sources' claims contradict each other: both verdicts, and which the data favour."""
    overall = claims_v[claims_v["workload"] == "all"].set_index("claim")["verdict"]
    rows = []
    for claim in claims:
        for other in claim.disagrees_with:
            if other not in claims.by_id:
                continue
            a, b = overall.get(claim.id, "not run"), overall.get(other, "not run")
            rows.append({"claim": f"[{claim.id}](#{claim.id.lower()}) ({claims.source_of[claim.id].id})",
                         "says": claim.paraphrase, "verdict": a,
                         "against": f"[{other}](#{other.lower()}) ({claims.source_of[other].id})",
                         "which says": claims.by_id[other].paraphrase, "its verdict": b,
                         "the data favour": _favoured(claim.id, a, other, b)})
    if not rows:
        return ""
    return "## Where the sources disagree\n\n" + markdown.table(pd.DataFrame(rows)) + "\n"


def _favoured(a_id: str, a: str, b_id: str, b: str) -> str:
    """A claim holds where supported (or partly, unrefuted) and fails where refuted or shown
    absent; the data favour the one that holds where the other does not."""
    holds = {"supported": 2, "partly supported": 1}
    fails = {"refuted": 2, "partly refuted": 1, "no effect": 1, "mixed": 0}
    score_a = holds.get(a, 0) - fails.get(a, 0)
    score_b = holds.get(b, 0) - fails.get(b, 0)
    if "not run" in (a, b):
        return "not run in this profile"
    if score_a == score_b:
        return "neither (the data do not separate them)"
    return a_id if score_a > score_b else b_id


def calibration_section(contrasts: pd.DataFrame) -> tuple[str, dict, Figure | None]:
    """The verdict code on simulated A/A data sets shaped like each family (calibration), its
    false-positive rate with an exact binomial interval, and the power curve."""
    families = calibration.specs(contrasts)
    if not families:
        return "", {}, None
    rows, curves = [], {}
    for i, (source, family) in enumerate(families.items()):
        aa = calibration.aa_rate(family, CALIBRATION_SIMULATIONS, seed=i)
        lo, hi = aa["familywise_ci"]
        plo, phi = aa["per_contrast_ci"]
        rows.append({"family": source, "primary contrasts": aa["contrasts"], "A/A data sets": aa["simulations"],
                     "family-wise false positives [95% CI]": f"{aa['familywise']:.3f} [{lo:.3f}, {hi:.3f}]",
                     "per contrast [95% CI]": f"{aa['per_contrast']:.4f} [{plo:.4f}, {phi:.4f}]",
                     "calibrated (interval at or below 5%)": "yes" if lo <= stats.ALPHA else "**no**",
                     "A/A verdicts": ", ".join(f"{w} {v:.1%}" for w, v in aa["shares"].items())})
        curves[source] = calibration.power_curve(family, POWER_SIMULATIONS, seed=100 + i)
    text = ("## Calibration\n\n"
            "The verdict code above (cross-fitted selection, the t and sign-flip tests, non-inferiority, "
            "equivalence, magnitude, Holm's correction) run on simulated data sets shaped like each family: "
            "every primary contrast with its seeds, arm-set sizes, metric kind, margins and the spread of its "
            "real per-seed differences, with no arm different from another (A/A). A false positive is a "
            "difference supported, or a refutation by the opposite sign, where there is none. Holm promises "
            f"a family-wise rate of at most {stats.ALPHA:.0%}; the interval is exact (Clopper-Pearson).\n\n"
            + markdown.table(pd.DataFrame(rows)) + "\n\n"
            "Power: the share of simulated data sets in which a contrast with a planted effect of delta "
            "standard deviations of its per-seed difference (the others null) comes out supported, through "
            "the family's correction.\n\n"
            + markdown.table(pd.concat([c.assign(family=f) for f, c in curves.items()])[
                ["family", "delta_sd", "power", "ci_low", "ci_high", "simulations"]].round(3)) + "\n")
    return text, curves, plots.power_figure(curves)


def _reached(r: pd.Series) -> str:
    """The share of seeds each arm reached the target on, for a time-to-target contrast."""
    t, c = r.get("treatment_reached"), r.get("control_reached")
    if t is None or c is None or pd.isna(t) or pd.isna(c):
        return "–"
    return f"{t:.0%}/{c:.0%}"


def _edge_note(r: pd.Series) -> str:
    notes = [f"{side} at its grid's edge: {r[f'{side}_edge']}" for side in ("treatment", "control")
             if isinstance(r.get(f"{side}_edge"), str) and r.get(f"{side}_edge")]
    return "".join(f"<br>**{n}**" for n in notes)


def edge_choices(contrasts: pd.DataFrame) -> pd.DataFrame:
    """Every best-of-grid choice (a side of a contrast that chose among several arms): claim,
    contrast, workload, side, the chosen arm and where it sits at its grid's edge ("" if not)."""
    rows = []
    for _, r in contrasts.iterrows():
        for side in ("treatment", "control"):
            arms = r.get(f"{side}_arms")
            if arms is None or pd.isna(arms) or int(arms) < 2:
                continue
            edge = r.get(f"{side}_edge")
            rows.append({"claim": r["claim"], "contrast": r["contrast"], "workload": r["workload"], "side": side,
                         "chosen arm": r[side], "at the edge": edge if isinstance(edge, str) else ""})
    return pd.DataFrame(rows, columns=["claim", "contrast", "workload", "side", "chosen arm", "at the edge"])


def edge_section(contrasts: pd.DataFrame) -> str:
    """The grid-edge check: a best arm at the end of its grid may have its optimum outside
    the grid, and a comparison with it then tests the grid, not the advice."""
    choices = edge_choices(contrasts) if len(contrasts) else edge_choices(pd.DataFrame())
    if choices.empty:
        return ""
    at_edge = choices[choices["at the edge"] != ""]
    head = ("## Grid-edge check\n\n"
            "A contrast that compares \"the best arm\" of a set chose it on the selection seeds' validation "
            "score. Where the chosen value of a numeric setting (learning rate, penalty, patience, depth, ...) is "
            "the smallest or largest its dimension's grid holds, the optimum may lie outside the grid and the "
            "comparison would test the grid, not the advice (no early stopping and no clipping count as "
            "unbounded). ")
    if at_edge.empty:
        return head + f"**None of the {len(choices)} best-of-grid choices in this report sits at a grid edge.**\n"
    return (head + f"**{len(at_edge)} of the {len(choices)} best-of-grid choices sit at a grid edge**; "
            "their contrasts are marked in the claims' tables:\n\n" + markdown.table(at_edge) + "\n")


def target_rows(runs: pd.DataFrame, claims: Claims) -> pd.DataFrame:
    """For each workload and dimension that a time-to-target contrast reads: the target, the
    arm that reached it on the most seeds (then sooner), that share, and its median time to
    it in epochs. A target is informative where the best arm reaches it on most seeds, and
    not at the first point measured."""
    dims = {d for claim in claims for c in claim.contrasts if c.metric in judge.REACHED and not c.search
            for d in c.treatment.dimensions}
    rows = []
    if runs.empty or "reached_target" not in runs:
        return pd.DataFrame(rows)
    for (wl, dim), g in runs[runs["dimension"].isin(dims)].groupby(["workload", "dimension"], sort=True):
        if g["reached_target"].isna().all():
            continue
        per_arm = g.groupby("arm").agg(reached=("reached_target", "mean"), median=("epochs_to_target", "median"))
        best = per_arm.sort_values(["reached", "median"], ascending=[False, True]).iloc[0]
        first = _first_point(g)
        ok = best["reached"] > 0.5 and best["median"] > first
        rows.append({"workload": wl, "dimension": dim, "target": _fmt(float(g["target_accuracy"].iloc[0])),
                     "best arm": best.name, "seeds reaching it": f"{best['reached']:.0%}",
                     "median epochs to it": _fmt(float(best["median"]), 2) if best["reached"] > 0.5 else "never (budget + 1)",
                     "first point measured": _fmt(first, 2),
                     "informative": "yes" if ok else ("**no: reached on few seeds**" if best["reached"] <= 0.5
                                                      else "**no: reached at the first point**")})
    return pd.DataFrame(rows)


def _first_point(g: pd.DataFrame) -> float:
    """The first time (in epochs) a run measured its validation accuracy: 1 / evals_per_epoch."""
    evals = int(g["evals_per_epoch"].max()) if "evals_per_epoch" in g and g["evals_per_epoch"].notna().any() else 1
    return 1.0 / max(1, evals)


def target_section(runs: pd.DataFrame, claims: Claims) -> str:
    rows = target_rows(runs, claims)
    if rows.empty:
        return ""
    bad = int((rows["informative"] != "yes").sum())
    return ("## Targets\n\n"
            "Times to a target (epochs, steps, seconds) are informative only where the target is reached, and "
            "not at once: per workload and dimension, the arm that reached its target on the most seeds. "
            + (f"**{bad} target(s) are not informative as set.**" if bad else
               "Every target is reached by its best arm on most seeds, after the first point measured.")
            + "\n\n" + markdown.table(rows) + "\n")


def contrast_table(sub: pd.DataFrame) -> str:
    """Every contrast of a claim: the arms chosen, the effect and interval, the test and its p
    (adjusted for a primary, unadjusted for a descriptive one), Wilcoxon's p, divergence and
    targets reached, the verdict and its reason."""
    rows = []
    for _, r in sub.iterrows():
        primary = bool(r["primary"])
        rows.append({
            "workload": r["workload"],
            "contrast": r["contrast"] + ("" if primary else " *(descriptive)*")
            + (f"<br>*reading: {r['reading']}*" if r.get("reading") else ""),
            "arms (treatment vs control)": f"`{r['treatment']}` vs `{r['control']}`" + _edge_note(r),
            "metric": r["metric"], "effect [95% CI]": f"{_fmt(r['effect'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
            "test": r["test"], "p (adj.)": f"{_p(r['p'])} ({_p(r['p_adj'])})" if primary else _p(r["p"]),
            "p Wilcoxon": _p(r.get("p_wilcoxon")),
            "diverged T/C": f"{_fmt(r.get('treatment_diverged'), 2)}/{_fmt(r.get('control_diverged'), 2)}",
            "reached target T/C": _reached(r),
            "verdict": f"{r['verdict']}: {r['reason']}",
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


def _seeds_text(params: Params, dim: str) -> str:
    return f"{len(params.active.seeds_for(dim))} seeds"


def measured_table(claim: Claim, runs: pd.DataFrame, params: Params) -> str:
    """Our numbers beside the source's: per workload, each measured metric's mean for each
    labelled arm (or for each value of one grid key, `by`)."""
    tables = []
    for m in claim.measured:
        d = runs[runs["dimension"] == m.dimension] if len(runs) else runs
        if d.empty:
            continue
        rows, notes = [], []
        for wl in m.workloads or grid.dimension_workloads(params, m.dimension):
            w = d[d["workload"] == wl]
            if w.empty:
                continue
            if m.by is not None:
                for value, g in w.groupby(w[f"arm_{m.by}"].astype(float)):
                    rows.append({"workload": wl, m.by: f"{value:g}",
                                 **{label: _fmt(float(g[metric].mean())) for label, metric in m.metrics.items()}})
                continue
            means = {}
            for label, where in m.arms.items():
                sel = w
                for key, value in where.items():
                    sel = sel[sel[f"arm_{key}"].astype(str) == str(value)]
                means[label] = {name: float(sel[metric].mean()) for name, metric in m.metrics.items()}
                rows.append({"workload": wl, "arm": label, **{name: _fmt(v) for name, v in means[label].items()}})
            for name, value in m.closest.items():
                finite = {label: v[name] for label, v in means.items() if np.isfinite(v[name])}
                if finite:
                    label = min(finite, key=lambda a: abs(finite[a] - value))
                    notes.append(f"{wl}: closest to the source's {_fmt(value)} ({name}) is **{label}** "
                                 f"({_fmt(finite[label])}).")
        if rows:
            tables.append(markdown.table(pd.DataFrame(rows)) + ("\n\n" + " ".join(notes) if notes else ""))
    return "\n\n".join(tables)


def claim_section(claim: Claim, claims: Claims, params: Params, inputs: Inputs, contrasts: pd.DataFrame,
                  claims_v: pd.DataFrame, paths: dict, first: dict, search_anchor: str) -> list[str]:
    source = claims.source_of[claim.id]
    runs = inputs.runs
    sub = contrasts[contrasts["claim"] == claim.id] if not contrasts.empty else contrasts
    overall = claims_v[(claims_v["claim"] == claim.id) & (claims_v["workload"] == "all")].iloc[0]
    quote = claim.quote.replace("\n", " ")
    parts = [f"## {claim.id}", "", f"**Advice** ({source.cite}): {claim.paraphrase}", "",
             f"> {quote}" + (f"\n>\n> *{claim.translation.replace(chr(10), ' ')}*" if claim.translation else ""), "",
             f"**Prediction:** {claim.prediction}. **Verdict: {overall['verdict']}** ({overall['detail']})", ""]
    if claim.reading:
        parts += [f"**Reading tested:** {claim.reading}", ""]
    if claim.reported:
        measured = measured_table(claim, runs, params)
        parts += [f"**The source reported:** {claim.reported}." + (" **We measured:**" if measured else ""), ""]
        if measured:
            parts += [measured, ""]
    ran = {dim for _, dim in grid.jobs(params)}
    for dim in claim.dimensions():
        if dim not in ran:
            parts += [f"*Setup:* dimension `{dim}` is not run in the {params.profile} profile.", ""]
            continue
        spec = params.dimensions[dim]
        d = runs[runs["dimension"] == dim]
        arm_grid = {**spec.grid, **params.active.grids.get(dim, {})}
        parts += [f"*Setup:* dimension `{dim}`, arms {json.dumps(arm_grid)}, "
                  f"workloads {', '.join(grid.dimension_workloads(params, dim))}; {_seeds_text(params, dim)}; "
                  f"compute {d['seconds'].sum():.0f} s. Every arm's other settings, as the runs used them "
                  f"({params.profile} profile; – : the run default):", "",
                  markdown.table(recipe_table(params, dim)), ""]
        for kind in ("arms", "heatmap", "curves"):
            if f"{dim}-{kind}" in paths:
                parts += [f"![{dim} {kind}]({paths[f'{dim}-{kind}']})", ""]
        if not d.empty:
            parts += ["<details><summary>Per-arm table</summary>", "",
                      markdown.table(arm_summary(d, first.get(dim, "final_test_acc"))), "", "</details>", ""]
    if claim.search and len(inputs.search):
        parts += [f"See [the search section](#{search_anchor}).", ""]
    if len(sub):
        parts += [contrast_table(sub), ""]
    return parts


def metrics(params: Params, contrasts: pd.DataFrame, claims_v: pd.DataFrame) -> dict:
    """DVC's metrics: short keys that stay the same from run to run, so `dvc metrics diff`
    and `dvc exp show` line two experiments (or profiles) up: the seeds, the count of each
    summary word, and each claim's primary effect per workload. (The profile is a param,
    which `dvc exp show` prints beside them.)"""
    overall = claims_v[claims_v["workload"] == "all"]["verdict"].value_counts()
    effects: dict[str, dict[str, float]] = {}
    for _, r in judge.primary_contrasts(contrasts).iterrows():
        if np.isfinite(r["effect"]):
            effects.setdefault(r["claim"], {})[r["workload"]] = round(float(r["effect"]), 4)
    return {"seeds": len(params.active.seeds),
            "verdicts": {k: int(overall.get(k, 0)) for k in stats.SUMMARY_WORDS}, "effect": effects}


def verdict_rows(contrasts: pd.DataFrame, claims_v: pd.DataFrame) -> pd.DataFrame:
    """verdicts.csv: each claim's verdict per workload and overall, beside the workload's
    primary effect, interval and adjusted p (a DVC plot draws them)."""
    prim = judge.primary_contrasts(contrasts)
    cols = ["effect", "ci_low", "ci_high", "p_adj", "metric", "contrast"]
    if prim.empty:
        return claims_v.assign(**{c: np.nan for c in cols}, label=claims_v["claim"] + " " + claims_v["workload"])
    out = claims_v.merge(prim[["claim", "workload", *cols]], on=["claim", "workload"], how="left")
    return out.assign(label=out["claim"] + " " + out["workload"])


def figures(params: Params, claims: Claims, inputs: Inputs, contrasts: pd.DataFrame, target) -> dict[str, Figure]:
    """Every figure of the report, by name: the verdict forest plot, per dimension its arms,
    heatmap and learning curves, and the search figures."""
    from tunebench.reporting import search_report

    out: dict[str, Figure | None] = {"verdicts": plots.verdict_figure(contrasts)}
    first = claims.first_metric()
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


def build(params: Params, claims: Claims, inputs: Inputs) -> Outputs:
    """Judge, draw and render: tables in, the report's text, figures and tables out."""
    from tunebench.reporting import search_report

    runs, search_df = inputs.runs, inputs.search
    target = params.search_settings().target_accuracy
    studies = search_report.study_metrics(search_df, target, params) if not search_df.empty else pd.DataFrame()
    curves = search_report.best_so_far(search_df) if not search_df.empty else pd.DataFrame()
    contrasts = judge.judge(judge.rows(runs, studies, curves, claims, params))
    claims_v = judge.claim_verdicts(contrasts, claims)
    figs = figures(params, claims, inputs, contrasts, target)
    cal_text, _, power_fig = calibration_section(contrasts)
    if power_fig is not None:
        figs["calibration"] = power_fig
    paths = {name: f"figures/{name}.png" for name in figs}
    search_summary = search_report.summary(search_df, target, params) if not search_df.empty else pd.DataFrame()
    prov = provenance(params, inputs, compute_summary(job_table(inputs)))

    parts = [render_header(prov, inputs.datasets, claims), "## Verdicts", ""]
    for sid, source in claims.sources.items():
        parts += [f"### {source.cite}", "", verdict_table(contrasts, claims_v, claims, sid), ""]
    if "verdicts" in paths:
        parts += [f"![every claim's primary effect per workload, signed so that right of 0 is as the advice predicts; "
                  f"secondary refutations marked]({paths['verdicts']})", ""]
        if judge.not_measured(judge.primary_contrasts(contrasts)).any():
            parts += ["*A row marked (not measured) is a time to a target that neither arm reached on any seed:"
                      " it has no point, since its 0 [0, 0] is the budget + 1 stand-in's.*", ""]
    disagree = disagreements(claims, claims_v)
    if disagree:
        parts += [disagree, ""]
    parts += [VERDICT_RULE, resolution_note(contrasts), ""]
    if cal_text:
        parts += [cal_text, ""]
        if "calibration" in paths:
            parts += [f"![power of a primary contrast against its planted effect]({paths['calibration']})", ""]
    for section in (edge_section(contrasts), target_section(runs, claims)):
        if section:
            parts += [section, ""]
    first = claims.first_metric()
    search_anchor = search_report.ANCHOR
    for claim in claims:
        parts += claim_section(claim, claims, params, inputs, contrasts, claims_v, paths, first, search_anchor)
    if not search_df.empty:
        parts += search_report.render(search_df, search_summary, inputs.importance, paths, params,
                                      [c for c in claims if c.search])
    return Outputs(text="\n".join(parts) + "\n", figures=figs, contrasts=contrasts,
                   verdicts=verdict_rows(contrasts, claims_v), provenance=provenance_table(prov, inputs.datasets),
                   metrics=metrics(params, contrasts, claims_v))
