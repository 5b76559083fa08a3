"""The report's calibration: its own verdict code, run on simulated data sets shaped like the
report's families.

Each primary contrast of a family becomes a Spec: its seeds, the sizes of its arm sets (a set
of several arms goes through the same cross-fitted selection), whether its metric is a count
(the exact sign-flip test), its prediction (sign, non-inferiority margin, stated magnitude,
equivalence margin) and the per-seed spread of its real differences (the scale the margins
are in). A simulated data set draws every arm's per-seed values from one distribution (A/A:
no arm differs from another), runs select.choose (on selection seeds of their own, as the
report does), stats' tests, Holm over the family and
stats.verdict, and counts the verdicts that are wrong under no effect: "supported" for a
prediction of a difference, "refuted" by the opposite sign or a worse-than-margin result. The
family-wise rate of such errors, with its exact (Clopper-Pearson) binomial interval, is what
Holm promises to hold at 5%. A planted effect of delta standard deviations of the per-seed
difference in one contrast at a time gives the power curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from tunebench.analysis import stats
from tunebench.analysis.select import choose

VAL_TEST_CORRELATION = 0.7  # of an arm's validation score and its test metric, per seed
POWER_DELTAS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # planted effects, in SDs of the per-seed difference


@dataclass(frozen=True)
class Spec:
    """One primary contrast of a family, as the report met it."""

    n: int
    k_treatment: int
    k_control: int
    selection: int  # selection seeds an arm set of several arms is chosen on
    count: bool
    expected: int
    margin: float
    stated: float | None
    equivalence: float
    minus: bool
    sd: float  # per-seed SD of the real differences (the scale of the margins)


def specs(contrasts: pd.DataFrame) -> dict[str, list[Spec]]:
    """The report's families: per source, a Spec per primary contrast with a test."""
    out: dict[str, list[Spec]] = {}
    if contrasts.empty:
        return out
    prim = contrasts[contrasts["primary"].astype(bool) & contrasts["n"].ge(2)]
    for _, r in prim.iterrows():
        d, _ = stats.differences(r["treatment_values"], r["control_values"])
        sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
        scale = sd if sd > 0 and math.isfinite(sd) else 0.1 * float(r["equivalence"])
        out.setdefault(r["source"], []).append(Spec(
            n=int(r["n"]), k_treatment=int(r.get("treatment_arms", 1) or 1), k_control=int(r.get("control_arms", 1) or 1),
            selection=int(r.get("selection_seeds", 0) or 0) if pd.notna(r.get("selection_seeds")) else 0,
            count=bool(r["count"]), expected=int(r["expected"]), margin=float(r["margin"]) if pd.notna(r["margin"]) else 0.0,
            stated=float(r["stated"]) if pd.notna(r.get("stated")) else None, equivalence=float(r["equivalence"]),
            minus=bool(r["interaction"]), sd=scale))
    return out


def _arms(rng, S: int, k: int, n: int, scale: float, count: bool, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """(score, metric) of k arms x n seeds in S simulations: a per-seed part shared by every
    arm (the pairing), an arm-and-seed part, validation correlated with test."""
    seed_part = rng.normal(size=(S, 1, n))
    e_metric = rng.normal(size=(S, k, n))
    e_score = VAL_TEST_CORRELATION * e_metric + math.sqrt(1 - VAL_TEST_CORRELATION**2) * rng.normal(size=(S, k, n))
    unit = scale / math.sqrt(2)  # so that a single arm's per-seed difference has SD `scale`
    metric = (seed_part + e_metric) * unit + shift
    score = (seed_part + e_score) * unit + shift
    if count:  # integer counts (epochs, trials): ties, as the real ones have
        step = max(scale / 2, 1e-12)
        metric = np.round(metric / step) * step
    return score, metric


def _values(rng, S: int, k: int, spec: Spec, plant: np.ndarray) -> np.ndarray:
    """(S, n) compared values of one arm set: its k arms trained on the selection seeds too,
    the best chosen there (select.choose), its metric on the compared seeds."""
    score, _ = _arms(rng, S, k, max(spec.selection, 1), spec.sd, spec.count, 0.0)
    _, metric = _arms(rng, S, k, spec.n, spec.sd, spec.count, 0.0)
    values, _ = choose(score + plant, metric + plant)
    return values


def _differences(spec: Spec, S: int, rng, delta: np.ndarray) -> np.ndarray:
    """(S, n) per-seed differences of one contrast; delta (S,): planted effect in SDs."""
    plant = (delta * spec.sd * (spec.expected or 1))[:, None, None]
    zero = np.zeros_like(plant)
    d = _values(rng, S, spec.k_treatment, spec, plant) - _values(rng, S, spec.k_control, spec, zero)
    if spec.minus:  # an interaction: a second pair of arm sets, subtracted
        d = d - (_values(rng, S, spec.k_treatment, spec, zero) - _values(rng, S, spec.k_control, spec, zero))
    return d


def simulate(family: list[Spec], S: int, rng, planted: np.ndarray | None = None,
             alpha: float = stats.ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Verdict words (S, m) and their errors under the truth (S, m) for S simulated data
    sets of `family`; planted (S, m): the effect in SDs each contrast truly has (0: A/A)."""
    m = len(family)
    planted = np.zeros((S, m)) if planted is None else planted
    cols = []
    for j, spec in enumerate(family):
        d = _differences(spec, S, rng, planted[:, j])
        shift = spec.expected * spec.margin
        p, exact = stats.paired_test_p(d + shift, spec.count)
        lo, hi = stats.t_interval(d + shift)
        p_eq = stats.tost_p(d, spec.equivalence, spec.count)
        p_mag = (stats.magnitude_p(d, spec.stated / 2, spec.expected, spec.count)
                 if spec.stated is not None and spec.expected else np.full(S, np.nan))
        cols.append((d, p, exact, lo, hi, p_eq, p_mag))
    adj = stats.holm(np.column_stack([c[1] for c in cols] + [c[6] for c in cols]))
    adj_eq = stats.holm(np.column_stack([c[5] for c in cols]))
    words = np.empty((S, m), dtype=object)
    errors = np.zeros((S, m), dtype=bool)
    for j, (spec, (d, _, exact, lo, hi, _, _)) in enumerate(zip(family, cols)):
        shift = spec.expected * spec.margin
        for s in range(S):
            eff = stats.Effect(spec.n, float(d[s].mean() + shift), float(d[s].std(ddof=1)), float(lo[s]), float(hi[s]),
                               float(adj[s, j]), "sign-flip" if exact[s] else "t", float("nan"))
            tests = stats.PValues(adj[s, j], adj[s, m + j], adj_eq[s, j])
            word, _ = stats.verdict(eff, tests, spec.expected, margin=spec.margin, stated=spec.stated,
                                    equivalence=spec.equivalence, alpha=alpha)
            words[s, j] = word
            # A refutation by the opposite sign (or worse than the margin) rests on the difference
            # test; one by a stated magnitude rests on its own (and is right when the truth is 0).
            by_sign = (word == "refuted" and adj[s, j] < alpha
                       and (spec.expected == 0 or max(spec.expected * lo[s], spec.expected * hi[s]) < 0))
            if planted[s, j] == 0:
                wrong_support = word == "supported" and spec.expected != 0 and spec.margin == 0
                errors[s, j] = wrong_support or by_sign
            else:
                errors[s, j] = by_sign
    return words, errors


def binomial_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def aa_rate(family: list[Spec], S: int = 1000, seed: int = 0) -> dict:
    """Family-wise and per-contrast false-positive rates of S A/A data sets, with exact
    binomial intervals, and the share of each verdict."""
    rng = np.random.default_rng(seed)
    words, errors = simulate(family, S, rng)
    fw = int(errors.any(axis=1).sum())
    per = int(errors.sum())
    shares = {w: float((words == w).mean()) for w in stats.VERDICTS}
    return {"simulations": S, "contrasts": len(family), "familywise": fw / S, "familywise_ci": binomial_interval(fw, S),
            "per_contrast": per / errors.size, "per_contrast_ci": binomial_interval(per, errors.size), "shares": shares}


def power_curve(family: list[Spec], S: int = 300, seed: int = 1, deltas=POWER_DELTAS) -> pd.DataFrame:
    """P(supported) of a contrast with a planted effect of delta SDs in the predicted direction
    (one contrast a data set, chosen at random among those that predict a difference without
    a margin; the others null), through the family's correction."""
    rng = np.random.default_rng(seed)
    eligible = [j for j, s in enumerate(family) if s.expected != 0 and s.margin == 0]
    rows = []
    for delta in deltas:
        if not eligible:
            break
        which = rng.choice(eligible, size=S)
        planted = np.zeros((S, len(family)))
        planted[np.arange(S), which] = delta
        words, _ = simulate(family, S, rng, planted)
        hits = int((words[np.arange(S), which] == "supported").sum())
        lo, hi = binomial_interval(hits, S)
        rows.append({"delta_sd": delta, "power": hits / S, "ci_low": lo, "ci_high": hi, "simulations": S})
    return pd.DataFrame(rows)
