"""Paired statistics and verdict rules for ablation comparisons.

A comparison pairs, per seed, a treatment run and a control run that share the
seed (same data order, same random stream), so the unit of analysis is the
per-seed difference ``d = treatment - control``.  Pairing removes the
seed-to-seed variance that both arms share, which is most of the variance in
deep-learning runs.

Why two gates (interval AND Holm-adjusted p) decide a verdict
--------------------------------------------------------------
* The interval is a bootstrap *percentile* interval of the mean difference.
  BCa is not used because it needs jackknife acceleration and breaks on tiny or
  degenerate samples (n = 2..3, ties), which are our normal case.  With very
  few seeds the percentile interval is anti-conservative: at n = 3 all three
  differences are positive 1/8 of the time and all negative 1/8 of the time
  under no effect, so "the interval excludes 0" happens ~25% of the time on
  null comparisons.  The interval therefore cannot gate a verdict on its own.
* The p-value that gates is the two-sided paired t-test (one-sample t-test on
  ``d``).  Rank and permutation tests cannot help at our sample sizes: the
  smallest exact two-sided Wilcoxon signed-rank p at n = 5 is 2/2**5 = 0.0625,
  so it can never reach p < 0.05, let alone after Holm across ~100
  comparisons.  The t-test is exact when the differences are normal, and
  per-seed differences of averaged metrics are close to normal.  The Wilcoxon
  p is still reported as a distribution-free cross-check.
* p-values are adjusted with Holm's step-down procedure over the family of
  comparisons (controls the family-wise error rate without independence
  assumptions), and a verdict needs both the interval and the adjusted p.

Non-finite metrics (a diverged run reporting an infinite loss) are kept rather
than dropped, because divergence is itself the outcome of the ablation; see
``paired_effect``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

__all__ = [
    "PairedEffect",
    "paired_effect",
    "holm",
    "verdict",
    "combine",
    "best_of",
    "VERDICTS",
    "same_on_every_seed_note",
    "smallest_resolvable_effect",
]

#: The three per-workload verdict words; ``combine`` adds "mixed".
VERDICTS = ("supported", "refuted", "inconclusive")

# Scale factor for substituting infinite differences: far outside the range of
# every finite difference, so the substitute dominates the mean and the
# interval in its direction, yet finite so that t-test and bootstrap arithmetic
# stays defined.
_INF_SCALE = 1e6


@dataclass(frozen=True)
class PairedEffect:
    """Summary of the per-seed differences ``treatment - control``.

    ``p_value`` is the two-sided paired t-test p (the one that gates verdicts);
    ``p_wilcoxon`` the two-sided Wilcoxon signed-rank p (exact for small n),
    reported alongside.  Both are nan when undefined (n < 2).
    ``has_infinite`` is True when some difference was infinite and has been
    replaced by a large finite stand-in of the same sign (see
    ``paired_effect``); ``mean_diff`` and the interval are then in units of
    that stand-in and only their signs are meaningful.
    """

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    p_wilcoxon: float
    has_infinite: bool = False


def _differences(treatment: np.ndarray, control: np.ndarray) -> tuple[np.ndarray, bool]:
    """Per-seed differences with infinities made finite; returns (d, had_inf)."""
    t = np.asarray(treatment, dtype=float).ravel()
    c = np.asarray(control, dtype=float).ravel()
    if t.shape != c.shape:
        raise ValueError(
            f"treatment and control must be paired by seed; got {t.size} vs {c.size} values"
        )
    # A NaN metric carries no information about either direction; a pair with
    # one is dropped (and ``n`` reports how many pairs remained).
    keep = ~(np.isnan(t) | np.isnan(c))
    t, c = t[keep], c[keep]
    # Both arms infinite with the same sign (both diverged) is no difference
    # on that seed; inf - inf would otherwise be nan.
    same_inf = np.isinf(t) & np.isinf(c) & (np.sign(t) == np.sign(c))
    with np.errstate(invalid="ignore"):
        d = np.where(same_inf, 0.0, t - c)
    infinite = np.isinf(d)
    if infinite.any():
        finite = d[~infinite]
        big = _INF_SCALE * ((np.max(np.abs(finite)) if finite.size else 0.0) + 1.0)
        # Keep the sign: one arm diverged and the other did not is a real,
        # directional outcome, and ranks/signs must reflect it.
        d = np.where(infinite, np.sign(d) * big, d)
    return d, bool(infinite.any())


def paired_effect(
    treatment: np.ndarray,
    control: np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedEffect:
    """Paired effect of treatment over control, aligned by seed.

    * differences ``d = treatment - control`` (element i of both arrays must
      come from the same seed); pairs containing NaN are dropped.
    * interval: ``scipy.stats.bootstrap`` percentile interval of mean(d),
      seeded by ``seed`` so reports are reproducible.
    * ``p_value``: two-sided ``scipy.stats.ttest_1samp(d, 0)``;
      ``p_wilcoxon``: two-sided ``scipy.stats.wilcoxon(d)``.
    * n < 2: no spread can be estimated, so interval and p-values are nan.
    * zero variance (all d identical, n >= 2): the bootstrap is degenerate and
      the t statistic is d0/0.  We treat an exactly repeated difference as
      deterministic: interval (d0, d0), ``p_value`` 0.0 if d0 != 0 (the arms
      differ by exactly the same amount on every seed) else 1.0 (they are
      identical).  Such effects still have to survive the interval and Holm
      gates in ``verdict``; with p = 0 they always do.
    * infinite inputs: same-sign infinities in both arms give d = 0; any other
      infinite difference is replaced by ``sign * 1e6 * (max finite |d| + 1)``
      so that its direction is kept and every test stays defined, and
      ``has_infinite`` is set.  Magnitudes (mean, interval) are then not
      interpretable, only signs.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    d, has_inf = _differences(treatment, control)
    n = int(d.size)
    nan = float("nan")
    if n == 0:
        return PairedEffect(0, nan, nan, nan, nan, nan, has_inf)
    mean = float(np.mean(d))
    if n < 2:
        return PairedEffect(n, mean, nan, nan, nan, nan, has_inf)

    p_w = _wilcoxon_p(d)
    if np.all(d == d[0]):
        d0 = float(d[0])
        return PairedEffect(n, d0, d0, d0, 0.0 if d0 != 0.0 else 1.0, p_w, has_inf)

    with warnings.catch_warnings():
        # Nearly identical differences trigger scipy's "precision loss"
        # warning; the resulting tiny p is the correct limit of the
        # zero-variance rule above, so the warning is noise here.
        warnings.simplefilter("ignore", RuntimeWarning)
        p_t = float(sps.ttest_1samp(d, 0.0).pvalue)
    res = sps.bootstrap(
        (d,),
        lambda x, axis: np.mean(x, axis=axis),
        vectorized=True,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return PairedEffect(n, mean, lo, hi, p_t, p_w, has_inf)


def _wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided signed-rank p (scipy picks the exact null for small n);
    nan where scipy cannot compute one."""
    try:
        with warnings.catch_warnings():
            # scipy warns when zeros/ties force the normal approximation; the
            # p is reported, not gated on, so the warning adds nothing.
            warnings.simplefilter("ignore")
            return float(sps.wilcoxon(d).pvalue)
    except ValueError:
        return float("nan")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (``statsmodels`` ``multipletests``).

    NaN p-values (comparisons where no test was possible) stay NaN and are not
    counted in the family: they cannot produce a false discovery, so they
    should not tighten the correction for the others.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def smallest_resolvable_effect(n: int, family: int, alpha: float = 0.05) -> float:
    """The smallest mean paired difference, in standard deviations of the difference, that
    can pass even the first (most lenient for the best) step of Holm's procedure over
    `family` comparisons with `n` seeds: p < alpha / family for the two-sided t-test, so
    |t| = |mean| / (sd / sqrt(n)) must exceed t(n-1, 1 - alpha / (2 family)). It says what
    a profile's seeds can resolve at all (3 seeds, 150 contrasts: 31.6 sd; 5 seeds: 5.1)."""
    if n < 2 or family < 1:
        return float("nan")
    return float(sps.t.ppf(1.0 - alpha / (2.0 * family), n - 1) / math.sqrt(n))


def same_on_every_seed_note(n: int, mean_diff: float, ci_low: float, ci_high: float, p_wilcoxon: float) -> str:
    """A note for an effect that is the same nonzero difference on every seed ("" for any
    other). Counts (epochs, trials, divergence) can do that, and the t-test's p is then 0
    by the zero-variance rule of ``paired_effect``; a reader must see that, beside what a
    distribution-free test can say with n seeds (Wilcoxon: 2/2**n at best)."""
    if n < 2 or mean_diff == 0 or ci_low != ci_high:
        return ""
    return f"the same difference on all n={n} seeds, so the t-test's p is 0 by rule (Wilcoxon p={_fmt(p_wilcoxon)})"


def censoring_note(treatment_reached: Sequence[bool], control_reached: Sequence[bool]) -> tuple[bool, str]:
    """What censoring does to a time-to-target contrast (epochs or trials to the target),
    paired by seed: a run that never reached the target counts as budget + 1, a stand-in,
    not a measurement. Returns ``(unmeasured, note)``: ``unmeasured`` when neither arm
    reached the target on any seed (every difference is 0 by construction, so "no
    difference" would be a false reading: the target is out of reach of both arms); else
    a note with how many seeds each arm was censored on ("" when none were). Where only one
    arm is censored the recorded difference understates the gap (the censored arm needs
    budget + 1 epochs or more); where both are, it is 0 whatever the truth."""
    t = np.asarray(treatment_reached, bool)
    c = np.asarray(control_reached, bool)
    if t.shape != c.shape:
        raise ValueError(f"paired reached flags differ in length: {t.size} vs {c.size}")
    n = t.size
    neither = int((~t & ~c).sum())
    if n and neither == n:
        return True, (f"not measured: neither arm reached the target on any of the n={n} seeds "
                      "(both counted as budget+1), so the target is out of reach of both arms")
    if t.all() and c.all():
        return False, ""
    note = (f"never reached the target on {int((~t).sum())}/{n} treatment and {int((~c).sum())}/{n} "
            "control seeds (counted as budget+1, which understates the gap to an arm that did")
    return False, note + (f"; 0 on the {neither} seeds where neither did)" if neither else ")")


def verdict(
    effect: PairedEffect,
    p_adjusted: float,
    expected_sign: int,
    *,
    alpha: float = 0.05,
    stated_effect: float | None = None,
    min_seeds: int = 2,
    margin: float = 0.0,
) -> tuple[str, str]:
    """Verdict on a claim that predicts ``sign(treatment - control) == expected_sign``.

    Returns ``(verdict, reason)``.  "Upper"/"lower" bounds below are taken in
    the predicted direction (for ``expected_sign == -1`` the interval is
    mirrored), and ``p_adjusted`` is the Holm-adjusted ``effect.p_value``.
    Rules, first match wins:

    1. inconclusive if fewer than ``min_seeds`` paired seeds (no interval).
    2. refuted if the interval lies wholly on the opposite side of 0 and
       ``p_adjusted < alpha`` (the effect goes the other way).
    3. refuted if ``stated_effect`` (a positive magnitude in the predicted
       direction) is given and the interval's upper bound is below half of it:
       even the most favourable plausible effect is far smaller than claimed.
       This needs no p-value, since it rejects a magnitude, not "no effect".
    4. supported if ``mean_diff`` has the predicted sign, the interval's lower
       bound is above 0 and ``p_adjusted < alpha``.
    5. inconclusive otherwise, with the reason the gates failed.

    For a non-inferiority claim ("at least as good, within ``margin``") ``effect`` is of
    the shifted difference ``d + expected_sign * margin``, so the rules above test it
    against 0; the reason is written in the difference's own units (the interval the
    report's tables show) against the bound ``-expected_sign * margin``.
    """
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign!r}")
    if stated_effect is not None and not stated_effect > 0:
        raise ValueError(
            "stated_effect is a positive magnitude in the predicted direction, "
            f"got {stated_effect!r}"
        )
    s = expected_sign
    n = effect.n
    if n < min_seeds or math.isnan(effect.ci_low) or math.isnan(effect.ci_high):
        return "inconclusive", f"n={n} seeds too few (need >= {max(min_seeds, 2)})"

    # Interval and mean mirrored into the predicted direction.
    lo, hi = sorted((s * effect.ci_low, s * effect.ci_high))
    mean = s * effect.mean_diff
    significant = not math.isnan(p_adjusted) and p_adjusted < alpha
    shift = s * margin  # effect = difference + shift; the reason shows the difference
    ci_txt = f"CI [{_fmt(effect.ci_low - shift)}, {_fmt(effect.ci_high - shift)}]"
    mean_txt = f"mean {_fmt(effect.mean_diff - shift)}"
    bound = f"the non-inferiority bound {_fmt(-shift)}" if margin else "0"
    p_txt = f"p_holm={_fmt(p_adjusted)}"
    note = same_on_every_seed_note(n, effect.mean_diff, effect.ci_low, effect.ci_high, effect.p_wilcoxon)
    notes = (" (includes diverged runs)" if effect.has_infinite else "") + (f"; {note}" if note else "")
    worse, better = ("below", "above") if s > 0 else ("above", "below")

    if hi < 0 and significant:
        if margin:
            return "refuted", f"worse than the margin allows: {mean_txt}, {ci_txt} wholly {worse} {bound}, {p_txt}{notes}"
        return "refuted", f"effect has the opposite sign: {mean_txt}, {ci_txt}, {p_txt}{notes}"
    if stated_effect is not None and hi < stated_effect / 2:
        return "refuted", (
            f"effect far smaller than the post states ({_fmt(s * hi - shift)} at most vs "
            f"{_fmt(s * stated_effect)} stated; {mean_txt}, {ci_txt})"
        )
    if mean > 0 and lo > 0 and significant:
        within = f" wholly {better} {bound}" if margin else ""
        return "supported", f"{mean_txt}, {ci_txt}{within}, {p_txt}{notes}"

    # Inconclusive: say which gate failed.
    if effect.mean_diff == 0 and effect.ci_low == effect.ci_high:
        return "inconclusive", f"effect too small to resolve: arms identical on all n={n} seeds"
    if lo <= 0 <= hi:
        few = f"; n={n} seeds" if n < 5 else ""
        return "inconclusive", f"interval spans {bound} ({ci_txt}){few}"
    if math.isnan(p_adjusted):
        return "inconclusive", f"no p-value for this comparison ({ci_txt})"
    if not significant:
        side = "opposite" if hi < 0 else "predicted"
        return "inconclusive", (
            f"not significant after Holm (p={_fmt(p_adjusted)}); {ci_txt} on the {side} side of {bound}"
        )
    # Interval and mean disagree in sign (possible only for extremely skewed d).
    return "inconclusive", f"effect too small to resolve: {mean_txt} vs {ci_txt}"


def combine(workload_verdicts: Sequence[str]) -> str:
    """Combine per-workload verdicts for one claim.

    All workloads agree -> that word.  Otherwise "mixed": at least one
    workload is supported or refuted and another disagrees (with only three
    words, any disagreement involves supported or refuted).  A claim that
    holds on one workload and is unresolved on another is reported as mixed,
    not supported, since generality is part of the claim. A "mixed" input
    (contrasts of one workload disagreeing) makes the result mixed.
    """
    words = list(workload_verdicts)
    if not words:
        raise ValueError("combine() needs at least one workload verdict")
    # "mixed" may come in from a level below (a workload whose contrasts disagree).
    unknown = set(words) - set(VERDICTS) - {"mixed"}
    if unknown:
        raise ValueError(f"unknown verdict(s) {sorted(unknown)}; expected one of {VERDICTS}")
    return words[0] if len(set(words)) == 1 else "mixed"


def best_of(values_by_arm: Mapping[str, np.ndarray], higher_is_better: bool = True) -> str:
    """Arm with the best mean metric (used to choose an arm on validation data).

    NaN values are ignored within an arm; an arm with no usable value cannot
    win.  Ties go to the arm listed first, so the choice is deterministic.
    Infinite values count (a diverged run drags its arm's mean to +-inf).
    """
    best_arm, best_score = None, -math.inf
    for arm, values in values_by_arm.items():
        v = np.asarray(values, dtype=float).ravel()
        v = v[~np.isnan(v)]
        if v.size == 0:
            continue
        with np.errstate(invalid="ignore"):
            m = float(np.mean(v))
        if math.isnan(m):  # +inf and -inf in one arm: no defined mean
            continue
        score = m if higher_is_better else -m
        if best_arm is None or score > best_score:
            best_arm, best_score = arm, score
    if best_arm is None:
        raise ValueError("best_of() needs at least one arm with a usable value")
    return best_arm
