"""Claims x runs -> contrasts with their effects, tests and verdicts; then a verdict per
claim and workload (its primary contrast's) and a summary per claim.

For each contrast and workload the treatment and control arm sets become per-seed values:
an arm set of one arm gives that arm's metric; a larger set gives the metric of the arm with
the best validation score on the profile's selection seeds, which are never compared
(select.choose). The per-seed
differences then go through stats: the effect and its t interval, the difference test
(t or exact sign-flip), the equivalence test and, where the source states a magnitude on
this dataset, the magnitude test. A source's primary contrasts form its family: Holm over
their difference and magnitude tests, and over their equivalence tests; a secondary
contrast's verdict uses unadjusted p-values and is marked descriptive.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tunebench.analysis import stats
from tunebench.spec.claims import Claims, Contrast, Selector, contrast_workloads, is_count
from tunebench.spec.config import Params, SearchSettings
from tunebench.analysis.select import choose

# Time-to-target metrics -> the run column saying whether the target was reached (or the
# metric holds the budget + 1 stand-in; aggregate.summarize_run).
REACHED = {m: "reached_target" for m in ("epochs_to_target", "steps_to_target", "seconds_to_target")}
# Search metrics -> the study_metrics column holding the value (never reached: budget + 1).
SEARCH_COLUMNS = {"trials_to_target": "trials_to_target_capped", "seconds_to_target": "seconds_to_target_capped",
                  "best_val": "final_best_val"}


def _matching(runs: pd.DataFrame, workload: str, sel: Selector) -> pd.DataFrame:
    sub = runs[(runs["workload"] == workload) & (runs["dimension"] == sel.dimension)]
    for key, values in sel.where:
        col = f"arm_{key}"
        if col not in sub:
            return sub.iloc[0:0]
        sub = sub[sub[col].astype(str).isin(values)]
    return sub


def arm_matrices(runs: pd.DataFrame, workload: str, selectors, metric: str, regression: bool,
                 selection: frozenset[int] = frozenset()) -> dict | None:
    """The arms an arm set matches on one workload: the validation scores on the selection
    seeds, (k arms, s seeds), and on the compared seeds (those every arm has, the selection
    seeds apart) the metric, divergence and reached flags, (k arms, n seeds). A set of several
    arms without selection seeds has no fair choice: None."""
    frames = [(sel, _matching(runs, workload, sel)) for sel in selectors]
    frames = [(sel, f) for sel, f in frames if len(f)]
    if not frames:
        return None
    several = len({sel.dimension for sel, _ in frames}) > 1
    table = pd.concat([f.assign(_arm=(sel.dimension + ":" if several else "") + f["arm"]) for sel, f in frames],
                      ignore_index=True)
    arms = list(dict.fromkeys(table["_arm"]))
    seeds = sorted(set.intersection(*(set(table.loc[table["_arm"] == a, "seed"]) for a in arms)))
    compared = [s for s in seeds if s not in selection]
    chosen_on = [s for s in seeds if s in selection]
    if not compared or (len(arms) > 1 and not chosen_on):
        return None
    by = table.set_index(["_arm", "seed"])

    def matrix(col, on):
        return np.array([[float(by.loc[(a, s), col]) for s in on] for a in arms])

    # The validation score of the weights that are compared (the last epoch's, or the restored
    # best epoch's under restore_best), so the choice and the comparison see the same model.
    score = -matrix("final_val_loss", chosen_on) if regression else matrix("final_val_acc", chosen_on)
    flag = REACHED.get(metric)
    reached = matrix(flag, compared) if flag in table and table[flag].notna().all() else None
    edges = {a: grid_edge(runs, workload, table[table["_arm"] == a].iloc[0], table) for a in arms} if len(arms) > 1 else {}
    return {"arms": arms, "seeds": compared, "selection_seeds": chosen_on, "score": score,
            "metric": matrix(metric, compared), "diverged": matrix("diverged", compared), "reached": reached,
            "edges": edges}


def _grid_number(value: str) -> float | None:
    """A grid value as a number for the edge check: null (no early stopping, no clipping:
    unbounded) counts as +inf; text (an init's name, "default") and booleans are not numbers."""
    if value in ("None", "null"):
        return math.inf
    if value in ("True", "False"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def grid_edge(runs: pd.DataFrame, workload: str, arm: pd.Series, table: pd.DataFrame) -> str:
    """Where the best arm of a set sits at the edge of its dimension's grid: for each numeric
    factor that varies within the set, the chosen value being the smallest or largest value
    the dimension's grid has for it. Then the optimum may lie outside the grid, and a
    comparison with this arm tests the grid, not the advice. Returns "" or e.g.
    "lr=0.3 (grid max)"."""
    dim = arm["dimension"]
    grid = runs[(runs["workload"] == workload) & (runs["dimension"] == dim)]
    members = table[table["dimension"] == dim]
    notes = []
    for col in sorted(c for c in members.columns if c.startswith("arm_")):
        if members[col].isna().all() or members[col].astype(str).nunique() < 2:
            continue  # the selector fixes this factor: nothing was chosen along it
        value = _grid_number(str(arm[col]))
        numbers = [v for v in (_grid_number(str(x)) for x in grid[col].dropna().unique()) if v is not None]
        if value is None or len(numbers) < 2:
            continue
        if value <= min(numbers):
            notes.append(f"{col[4:]}={arm[col]} (grid min)")
        elif value >= max(numbers):
            notes.append(f"{col[4:]}={arm[col]} (grid max)")
    return ", ".join(notes)


def _chosen(m: dict) -> tuple[np.ndarray, str, float, np.ndarray | None, str]:
    """Per compared seed, the chosen arm's metric; the choice; its divergence rate; reached;
    where the choice sits at its grid's edge ("" if not, or if there was no choice)."""
    values, pick = choose(m["score"], m["metric"])
    arm = m["arms"][int(pick)]
    i = m["arms"].index(arm)
    reached = m["reached"][i].astype(bool) if m["reached"] is not None else None
    return values, arm, float(np.mean(m["diverged"][i])), reached, m["edges"].get(arm, "")


def _align(mats: list[dict]) -> list[dict]:
    """The matrices restricted to the compared seeds all of them have."""
    common = sorted(set.intersection(*(set(m["seeds"]) for m in mats)))
    out = []
    for m in mats:
        idx = [m["seeds"].index(s) for s in common]
        out.append({**m, "seeds": common, **{k: m[k][:, idx] for k in ("metric", "diverged")},
                    "reached": m["reached"][:, idx] if m["reached"] is not None else None})
    return out


def ablation_row(runs: pd.DataFrame, c: Contrast, workload: str, regression: bool,
                 selection: frozenset[int] = frozenset()) -> dict | None:
    sets = [c.treatment, c.control] + ([c.minus.treatment, c.minus.control] if c.minus else [])
    mats = [arm_matrices(runs, workload, s.selectors, c.metric, regression, selection) for s in sets]
    if any(m is None for m in mats):
        return None
    mats = _align(mats)
    if not mats[0]["seeds"]:
        return None
    chosen = [_chosen(m) for m in mats]
    (tv, t_arm, t_div, t_reached, t_edge), (cv, c_arm, c_div, c_reached, c_edge) = chosen[:2]
    row = {"treatment": t_arm, "control": c_arm, "treatment_diverged": t_div, "control_diverged": c_div,
           "seeds": list(map(int, mats[0]["seeds"])), "treatment_arms": len(mats[0]["arms"]),
           "control_arms": len(mats[1]["arms"]), "selection_seeds": len(mats[0]["selection_seeds"]),
           "treatment_edge": t_edge, "control_edge": c_edge}
    if c.minus is not None:  # an interaction: (T - C) - (T2 - C2), paired by seed
        (t2v, t2_arm, _, _, t2_edge), (c2v, c2_arm, _, _, c2_edge) = chosen[2:]
        tv, cv = tv - cv, t2v - c2v
        row.update(treatment=f"({t_arm}) - ({c_arm})", control=f"({t2_arm}) - ({c2_arm})",
                   treatment_diverged=np.nan, control_diverged=np.nan,
                   treatment_edge="; ".join(e for e in (t_edge, c_edge) if e),
                   control_edge="; ".join(e for e in (t2_edge, c2_edge) if e))
        t_reached = c_reached = None
    row.update(treatment_values=list(map(float, tv)), control_values=list(map(float, cv)))
    if t_reached is not None and c_reached is not None:
        row.update(treatment_reached=list(map(bool, t_reached)), control_reached=list(map(bool, c_reached)))
    return row


def _study_values(studies: pd.DataFrame, curves: pd.DataFrame, workload: str, arm_set, metric: str) -> pd.Series:
    """Per study seed, a strategy's study metric; for `budget: f`, its best validation
    accuracy after the first f x budget trials (its best-so-far curve)."""
    if arm_set.budget is not None:
        c = curves[(curves["workload"] == workload) & (curves["strategy"] == arm_set.strategy)]
        c = c[c["k"] == (c["budget"] * arm_set.budget).round().clip(lower=1)]
        return c.set_index("study_seed")["best_val"].astype(float)
    w = studies[(studies["workload"] == workload) & (studies["strategy"] == arm_set.strategy)]
    return w.set_index("study_seed")[SEARCH_COLUMNS[metric]].astype(float)


def search_row(studies: pd.DataFrame, curves: pd.DataFrame, c: Contrast, workload: str) -> dict | None:
    """Per study seed, the treatment and control strategies' study metric."""
    w = studies[studies["workload"] == workload]
    t = w[w["strategy"] == c.treatment.strategy].set_index("study_seed")
    k = w[w["strategy"] == c.control.strategy].set_index("study_seed")
    tv = _study_values(studies, curves, workload, c.treatment, c.metric)
    cv = _study_values(studies, curves, workload, c.control, c.metric)
    seeds = sorted(set(tv.index) & set(cv.index))
    if not seeds:
        return None
    row = {"treatment": c.treatment.describe(), "control": c.control.describe(), "seeds": [int(s) for s in seeds],
           "treatment_values": [float(tv.loc[s]) for s in seeds],
           "control_values": [float(cv.loc[s]) for s in seeds],
           "treatment_diverged": np.nan, "control_diverged": np.nan, "target": float(w["target"].iloc[0]),
           "treatment_arms": 1, "control_arms": 1}
    if c.metric in ("trials_to_target", "seconds_to_target"):
        row["treatment_reached"] = [bool(math.isfinite(t.loc[s, c.metric])) for s in seeds]
        row["control_reached"] = [bool(math.isfinite(k.loc[s, c.metric])) for s in seeds]
    return row


def rows(runs: pd.DataFrame, studies: pd.DataFrame, curves: pd.DataFrame, claims: Claims, params: Params) -> list[dict]:
    """One dict per contrast and workload that has runs: the per-seed values and the
    contrast's settings (judge's input). studies: one row per search study
    (search_report.study_metrics); curves: each study's best so far per trial count
    (search_report.best_so_far)."""
    out = []
    selection = frozenset(params.active.selection_seeds)
    for claim in claims:
        source = claims.source_of[claim.id]
        for c in claim.contrasts:
            for wl in contrast_workloads(c, params):
                dataset = params.workloads[SearchSettings.split(wl)[0]].dataset
                if c.search:
                    row = search_row(studies, curves, c, wl) if len(studies) else None
                else:
                    regression = params.workloads[wl].fixed.get("task") == "regression"
                    row = ablation_row(runs, c, wl, regression, selection) if len(runs) else None
                if row is None:
                    continue
                applies = c.stated is not None and source.stated_on is not None and dataset == source.stated_on
                out.append({"claim": claim.id, "source": source.id, "contrast": c.label, "workload": wl,
                            "dataset": dataset, "metric": c.metric, "primary": c.primary, "expected": c.expected,
                            "margin": c.margin, "stated": c.stated if applies else None,
                            "equivalence": c.equivalence_margin, "count": is_count(c.metric),
                            "interaction": c.minus is not None, "reading": c.reading or "", **row})
    return out


def _has_flags(x) -> bool:
    return isinstance(x, (list, tuple, np.ndarray)) and len(x) > 0


def judge(rows: list[dict], alpha: float = stats.ALPHA) -> pd.DataFrame:
    """Effects, tests, the families' corrections and verdicts, one row per input row."""
    out = []
    for r in rows:
        margin = r.get("margin") or 0.0
        expected = int(r["expected"])
        shift = expected * margin  # non-inferiority: test d + margin
        eff = stats.paired_effect(r["treatment_values"], r["control_values"], count=r["count"], shift=shift)
        d, _ = stats.differences(r["treatment_values"], r["control_values"])
        enough = eff.n >= 2
        p_eq = float(stats.tost_p(d, r["equivalence"], r["count"])) if enough else np.nan
        stated = r.get("stated")
        p_mag = (float(stats.magnitude_p(d, stated / 2, expected, r["count"]))
                 if enough and stated is not None and expected != 0 else np.nan)
        censored = (stats.censoring_note(r["treatment_reached"], r["control_reached"])
                    if _has_flags(r.get("treatment_reached")) and _has_flags(r.get("control_reached")) else (False, ""))
        unmeasured = censored[0]
        out.append({**r, "n": eff.n, "effect": eff.mean - shift, "ci_low": eff.ci_low - shift,
                    "ci_high": eff.ci_high - shift, "test": eff.test, "p": np.nan if unmeasured else eff.p,
                    "p_wilcoxon": eff.p_wilcoxon, "p_magnitude": np.nan if unmeasured else p_mag,
                    "p_equivalence": np.nan if unmeasured else p_eq, "has_infinite": eff.has_infinite,
                    "_eff": eff, "_censoring": censored})
    df = pd.DataFrame(out)
    if df.empty:
        return df
    df["p_adj"], df["p_magnitude_adj"], df["p_equivalence_adj"] = df["p"], df["p_magnitude"], df["p_equivalence"]
    for _, fam in df[df["primary"]].groupby("source", sort=False):
        # The family's tests of a difference and of a magnitude: one Holm correction.
        both = np.concatenate([fam["p"].to_numpy(float), fam["p_magnitude"].to_numpy(float)])
        adj = stats.holm(both)
        df.loc[fam.index, "p_adj"] = adj[: len(fam)]
        df.loc[fam.index, "p_magnitude_adj"] = adj[len(fam):]
        df.loc[fam.index, "p_equivalence_adj"] = stats.holm(fam["p_equivalence"].to_numpy(float))
    verdicts, reasons = [], []
    for _, r in df.iterrows():
        tests = stats.PValues(r["p_adj"], r["p_magnitude_adj"], r["p_equivalence_adj"])
        v, why = stats.verdict(r["_eff"], tests, int(r["expected"]), margin=r.get("margin") or 0.0,
                               stated=r.get("stated") if pd.notna(r.get("stated")) else None,
                               equivalence=float(r["equivalence"]), alpha=alpha)
        unmeasured, note = r["_censoring"]
        if unmeasured:
            v, why = "unresolved", note
        elif note:
            why = f"{why}; {note}"
        verdicts.append(v)
        reasons.append(why)
    df["verdict"], df["reason"] = verdicts, reasons
    df["adjustment"] = np.where(df["primary"], "Holm, family " + df["source"].astype(str), "none (descriptive)")
    for side in ("treatment", "control"):  # per-seed flags -> the fraction of seeds reached
        col = f"{side}_reached"
        df[col] = [float(np.mean(x)) if _has_flags(x) else np.nan for x in df.get(col, [None] * len(df))]
    return df.drop(columns=["_eff", "_censoring"])


def not_measured(contrasts: pd.DataFrame) -> pd.Series:
    """Per contrast row: a time-to-target contrast that neither arm reached on any seed, so
    its effect of 0 is the stand-in's, not a measurement (judge gives it no p)."""
    if contrasts.empty or "treatment_reached" not in contrasts or "control_reached" not in contrasts:
        return pd.Series(False, index=contrasts.index)
    return contrasts["treatment_reached"].eq(0.0) & contrasts["control_reached"].eq(0.0)


def primary_contrasts(contrasts: pd.DataFrame) -> pd.DataFrame:
    """Each claim's primary contrast per workload: the rows of the verdict table and of the
    forest plot (beside the secondary refutations, marked)."""
    if contrasts.empty:
        return contrasts
    return contrasts[contrasts["primary"].astype(bool)].reset_index(drop=True)


def claim_verdicts(contrasts: pd.DataFrame, claims: Claims) -> pd.DataFrame:
    """One row per claim and workload (its primary contrast's verdict) and per claim
    (workload "all": the summary word and the split, stats.summarize)."""
    rows = []
    prim = primary_contrasts(contrasts)
    for claim in claims:
        source = claims.source_of[claim.id].id
        sub = prim[prim["claim"] == claim.id] if len(prim) else prim
        for _, r in sub.iterrows():
            rows.append({"claim": claim.id, "source": source, "workload": r["workload"], "verdict": r["verdict"],
                         "detail": r["reason"]})
        word, split = stats.summarize(sub["verdict"].tolist() if len(sub) else [])
        rows.append({"claim": claim.id, "source": source, "workload": "all", "verdict": word, "detail": split})
    return pd.DataFrame(rows)
