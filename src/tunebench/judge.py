"""Claims x runs -> one row per (claim, contrast, workload) with the paired effect, its
interval, Holm-adjusted p and a verdict; then one verdict per claim and workload, and
one per claim (combined across workloads: 'mixed' when they disagree)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tunebench import grid, stats
from tunebench.claims import CLAIMS, Arms, Contrast
from tunebench.config import Params

POST_DATASET = "mnist"  # the post's stated magnitudes apply to its own data set
# Time-to-target metrics -> the run column saying whether the target was reached, or the
# metric holds the budget + 1 stand-in (aggregate.summarize_run).
REACHED = {"epochs_to_target": "reached_target"}


def matching(runs: pd.DataFrame, workload: str, arms: Arms) -> pd.DataFrame:
    sel = runs[(runs["workload"] == workload) & (runs["dimension"] == arms.dimension)]
    for key, values in arms.where:
        col = f"arm_{key}"
        if col not in sel:
            return sel.iloc[0:0]
        sel = sel[sel[col].astype(str).isin(values)]
    return sel


def pick(runs: pd.DataFrame, regression: bool) -> str | None:
    """The arm with the best mean validation score (accuracy; loss for regression)."""
    if runs.empty:
        return None
    score = -runs["final_val_loss"] if regression else runs["best_val_acc"]
    by_arm = {arm: score[g.index].to_numpy() for arm, g in runs.groupby("arm", sort=False)}
    return stats.best_of(by_arm, higher_is_better=True)


def per_seed(runs: pd.DataFrame, workload: str, arms: Arms, metric: str, regression: bool):
    """The picked arm, its metric per seed, its divergence rate, and per seed whether it
    reached the target (None unless the metric is a time to target)."""
    sel = matching(runs, workload, arms)
    arm = pick(sel, regression)
    if arm is None:
        return None, pd.Series(dtype=float), float("nan"), None
    chosen = sel[sel["arm"] == arm].set_index("seed")
    flag = REACHED.get(metric)
    reached = chosen[flag].astype(bool) if flag in chosen and chosen[flag].notna().all() else None
    return arm, chosen[metric].astype(float), float(chosen["diverged"].mean()), reached


def contrast_row(runs: pd.DataFrame, claim_id: str, c: Contrast, workload: str, regression: bool) -> dict | None:
    t_arm, t, t_div, t_reached = per_seed(runs, workload, c.treatment, c.metric, regression)
    c_arm, k, c_div, c_reached = per_seed(runs, workload, c.control, c.metric, regression)
    if t_arm is None or c_arm is None:
        return None
    seeds = sorted(set(t.index) & set(k.index))
    tv, cv = t.loc[seeds].to_numpy(), k.loc[seeds].to_numpy()
    label_t, label_c = t_arm, c_arm
    if c.minus is not None:  # interaction: (T - C) - (T2 - C2), paired by seed
        t2_arm, t2, _, _ = per_seed(runs, workload, c.minus[0], c.metric, regression)
        c2_arm, k2, _, _ = per_seed(runs, workload, c.minus[1], c.metric, regression)
        if t2_arm is None or c2_arm is None:
            return None
        seeds = sorted(set(seeds) & set(t2.index) & set(k2.index))
        tv = (t.loc[seeds] - k.loc[seeds]).to_numpy()
        cv = (t2.loc[seeds] - k2.loc[seeds]).to_numpy()
        label_t, label_c = f"({t_arm}) - ({c_arm})", f"({t2_arm}) - ({c2_arm})"
        t_reached = c_reached = None  # a difference of differences: no one arm to be censored
    row = {
        "claim": claim_id, "contrast": c.label, "workload": workload, "metric": c.metric,
        "treatment": label_t, "control": label_c, "expected": c.expected, "margin": c.margin,
        "stated": c.stated, "treatment_values": list(map(float, tv)), "control_values": list(map(float, cv)),
        "seeds": list(map(int, seeds)), "treatment_diverged": t_div, "control_diverged": c_div,
    }
    if t_reached is not None and c_reached is not None:
        row["treatment_reached"] = [bool(t_reached.loc[s]) for s in seeds]
        row["control_reached"] = [bool(c_reached.loc[s]) for s in seeds]
    return row


def ablation_rows(runs: pd.DataFrame, params: Params) -> list[dict]:
    rows = []
    for claim in CLAIMS:
        for c in claim.contrasts:
            if c.treatment.dimension not in params.dimensions:
                continue
            ran = grid.dimension_workloads(params, c.treatment.dimension)
            for wl in c.workloads or ran:
                if wl not in ran:
                    continue
                regression = params.workloads[wl].fixed.get("task") == "regression"
                row = contrast_row(runs, claim.id, c, wl, regression)
                if row is not None:
                    row["dataset"] = params.workloads[wl].dataset
                    rows.append(row)
    return rows


def judge(rows: list[dict], alpha: float = 0.05) -> pd.DataFrame:
    """Effects, intervals, Holm across every row, verdicts. A row of a time-to-target metric
    may carry treatment_reached / control_reached (per seed, whether the run reached the
    target rather than being counted as budget + 1): the verdict's reason then says how
    many seeds were censored, a contrast that neither arm ever reached is inconclusive
    ("not measured", not "no difference"), and the output holds the fractions reached."""
    out = []
    for r in rows:
        t = np.asarray(r["treatment_values"], float)
        k = np.asarray(r["control_values"], float)
        margin = r["margin"] or 0.0  # non-inferiority: test (d + margin) > 0
        shift = margin * r["expected"]
        eff = stats.paired_effect(t + shift, k)
        censoring = (stats.censoring_note(r["treatment_reached"], r["control_reached"])
                     if _has_flags(r.get("treatment_reached")) and _has_flags(r.get("control_reached")) else (False, ""))
        # Never reached by either arm: no test took place, so no p, and no place in Holm's
        # family (where a p of 1 would only tighten the correction for the others).
        p, p_w = (np.nan, np.nan) if censoring[0] else (eff.p_value, eff.p_wilcoxon)
        out.append({**r, "n": eff.n, "effect": eff.mean_diff - shift,
                    "ci_low": eff.ci_low - shift, "ci_high": eff.ci_high - shift,
                    "p": p, "p_wilcoxon": p_w, "has_infinite": eff.has_infinite,
                    "_eff": eff, "_margin": margin, "_censoring": censoring})
    df = pd.DataFrame(out)
    if df.empty:
        return df
    df["p_holm"] = stats.holm(df["p"].to_numpy())
    verdicts, reasons = [], []
    for _, r in df.iterrows():
        stated = r["stated"] if (r.get("dataset") == POST_DATASET and pd.notna(r["stated"])) else None
        v, why = stats.verdict(r["_eff"], r["p_holm"], int(r["expected"]), alpha=alpha, stated_effect=stated,
                               margin=r["_margin"])
        unmeasured, note = r["_censoring"]
        v, why = ("inconclusive", note) if unmeasured else (v, f"{why}; {note}" if note else why)
        verdicts.append(v)
        reasons.append(why)
    df["verdict"], df["reason"] = verdicts, reasons
    for side in ("treatment", "control"):  # per-seed flags -> the fraction of seeds reached
        col = f"{side}_reached"
        df[col] = [float(np.mean(x)) if _has_flags(x) else np.nan for x in df.get(col, [None] * len(df))]
    return df.drop(columns=["_eff", "_margin", "_censoring"])


def _has_flags(x) -> bool:
    return isinstance(x, (list, tuple, np.ndarray)) and len(x) > 0


def not_measured(contrasts: pd.DataFrame) -> pd.Series:
    """Per contrast row: a time-to-target contrast that neither arm reached on any seed, so
    its effect of 0 is the stand-in's, not a measurement (judge gives it no p)."""
    if contrasts.empty or "treatment_reached" not in contrasts or "control_reached" not in contrasts:
        return pd.Series(False, index=contrasts.index)
    return contrasts["treatment_reached"].eq(0.0) & contrasts["control_reached"].eq(0.0)


def primary_contrasts(contrasts: pd.DataFrame) -> pd.DataFrame:
    """Each claim's first (primary) contrast per workload, in the table's order: the rows of
    the report's verdict table and its forest plot."""
    if contrasts.empty:
        return contrasts
    return contrasts.groupby(["claim", "workload"], sort=False).head(1).reset_index(drop=True)


def claim_verdicts(contrasts: pd.DataFrame) -> pd.DataFrame:
    """One row per claim x workload (combined over its contrasts), and per claim overall."""
    rows = []
    for claim in CLAIMS:
        sub = contrasts[contrasts["claim"] == claim.id] if not contrasts.empty else contrasts
        if sub.empty:  # none of its dimensions (or no search) in this profile
            rows.append({"claim": claim.id, "workload": "all", "verdict": "not run", "detail": "not in this profile"})
            continue
        per_wl = {wl: stats.combine(g["verdict"].tolist()) for wl, g in sub.groupby("workload", sort=False)}
        for wl, v in per_wl.items():
            rows.append({"claim": claim.id, "workload": wl, "verdict": v, "detail": ""})
        split = ", ".join(f"{wl}: {v}" for wl, v in per_wl.items())
        rows.append({"claim": claim.id, "workload": "all", "verdict": stats.combine(list(per_wl.values())), "detail": split})
    return pd.DataFrame(rows)
