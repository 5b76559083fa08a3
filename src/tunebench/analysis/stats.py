"""Paired statistics and the verdict rule: pure functions of per-seed differences.

A comparison pairs, per seed, a treatment run and a control run that share the seed (same
data order, initial draws, dropout masks), so the unit of analysis is the per-seed difference
d = treatment - control. Pairing removes the seed-to-seed variance both arms share.

The choices, and why:
- Interval: Student's t, mean ± t(n-1) sd / sqrt(n). A percentile bootstrap covers well under
  its nominal level at the 5-12 seeds of a profile (at n = 3, all three differences share a
  sign a quarter of the time under no effect).
- Test: the paired t-test, except where it is undefined or wrong: a count metric (epochs or
  trials to a target, divergence) and differences with no spread (every seed the same) get an
  exact sign-flip permutation test (2^n sign patterns; seeded Monte Carlo above 16 seeds), whose
  p cannot go below 2 / 2^n. Zero sample variance is not zero population variance.
- The best arm of a set is chosen on selection seeds that are never compared (select), so the
  compared seeds' differences are independent draws and these tests hold their level.
- Family: Holm's step-down correction (statsmodels) over the primary contrasts of one advice
  source. Holm controls the family-wise error rate: a reader may cite any one verdict of the
  table on its own, which a false-discovery rate (Benjamini-Hochberg) does not protect.
  A source's tests of a difference (and of a stated magnitude) form one Holm family, its
  equivalence tests another.
- Equivalence ("no effect"): two one-sided tests (TOST) against ± the claim's margin.

Every function takes a 1-d array of differences, or a 2-d array (simulations x seeds) for the
calibration, which runs this same code on simulated data (analysis.calibration).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
# Words a workload's verdict can take, and the per-claim summary words (summarize).
VERDICTS = ("supported", "refuted", "no effect", "unresolved")
SUMMARY_WORDS = ("supported", "partly supported", "refuted", "partly refuted", "mixed", "no effect",
                 "partly no effect", "unresolved", "not run")
EXACT_SIGN_FLIP_MAX_N = 16  # 2^16 sign patterns; above, a seeded Monte Carlo
MONTE_CARLO_FLIPS = 20_000
# Stand-in for an infinite difference: far outside every finite one, so it dominates the mean
# in its direction while the arithmetic stays finite (a diverged arm against a finite one).
_INF_SCALE = 1e6


@dataclass(frozen=True)
class Effect:
    """The per-seed differences summarised: mean, t interval, the test's two-sided p (and
    which test), the Wilcoxon signed-rank p as a distribution-free cross-check, and whether
    an infinite difference was replaced by a large stand-in of the same sign (then only the
    signs of mean and interval are meaningful)."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    p: float
    test: str  # "t" or "sign-flip"
    p_wilcoxon: float
    has_infinite: bool = False


def differences(treatment, control) -> tuple[np.ndarray, bool]:
    """Per-seed differences with NaN pairs dropped and infinities made finite; (d, had_inf).
    Both arms infinite with one sign is no difference on that seed (inf - inf would be NaN)."""
    t = np.asarray(treatment, dtype=float).ravel()
    c = np.asarray(control, dtype=float).ravel()
    if t.shape != c.shape:
        raise ValueError(f"treatment and control must be paired by seed; got {t.size} vs {c.size} values")
    keep = ~(np.isnan(t) | np.isnan(c))
    t, c = t[keep], c[keep]
    same_inf = np.isinf(t) & np.isinf(c) & (np.sign(t) == np.sign(c))
    with np.errstate(invalid="ignore"):
        d = np.where(same_inf, 0.0, t - c)
    infinite = np.isinf(d)
    if infinite.any():
        finite = d[~infinite]
        big = _INF_SCALE * ((np.max(np.abs(finite)) if finite.size else 0.0) + 1.0)
        d = np.where(infinite, np.sign(d) * big, d)
    return d, bool(infinite.any())


def t_interval(d: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student's t interval of the mean along the last axis, mean ± t(n-1) sd / sqrt(n);
    [mean, mean] with no spread."""
    d = np.asarray(d, dtype=float)
    n = d.shape[-1]
    mean = d.mean(-1)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return nan, nan
    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * d.std(-1, ddof=1) / math.sqrt(n)
    return mean - half, mean + half


def t_p(d: np.ndarray, alternative: str = "two-sided") -> np.ndarray:
    """The one-sample t-test's p against 0 along the last axis; NaN where sd = 0."""
    d = np.asarray(d, dtype=float)
    n = d.shape[-1]
    sd = d.std(-1, ddof=1) if n > 1 else np.zeros(d.shape[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = d.mean(-1) / (sd / math.sqrt(n))
    t = np.where(sd > 0, t, np.nan)
    if alternative == "greater":
        return sps.t.sf(t, n - 1)
    if alternative == "less":
        return sps.t.cdf(t, n - 1)
    return 2 * sps.t.sf(np.abs(t), n - 1)


@cache
def _signs(n: int) -> np.ndarray:
    """Every sign pattern of n seeds, (2^n, n), or a seeded Monte Carlo sample of them."""
    if n <= EXACT_SIGN_FLIP_MAX_N:
        codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n)[None, :]
        return np.where(codes & 1, -1.0, 1.0)
    rng = np.random.default_rng(n)
    return np.vstack([np.ones((1, n)), rng.choice([-1.0, 1.0], size=(MONTE_CARLO_FLIPS - 1, n))])


def sign_flip_p(d: np.ndarray, alternative: str = "two-sided") -> np.ndarray:
    """The exact paired sign-flip permutation test of mean(d) = 0 along the last axis: the
    share of sign patterns whose mean is at least as extreme as the observed one (the
    observed pattern included, so p >= 1 / 2^n one-sided, 2 / 2^n two-sided). All-zero d: 1."""
    d = np.asarray(d, dtype=float)
    n = d.shape[-1]
    signs = _signs(n)
    observed = d.sum(-1)
    flipped = d @ signs.T  # (..., patterns)
    tol = 1e-9 * (np.abs(d).sum(-1) + 1.0)
    if alternative == "greater":
        extreme = flipped >= (observed - tol)[..., None]
    elif alternative == "less":
        extreme = flipped <= (observed + tol)[..., None]
    else:
        extreme = np.abs(flipped) >= (np.abs(observed) - tol)[..., None]
    return extreme.mean(-1)


def paired_test_p(d: np.ndarray, count: bool, alternative: str = "two-sided") -> tuple[np.ndarray, np.ndarray]:
    """(p, exact) along the last axis: the exact sign-flip test for a count metric or where
    the differences have no spread (the t-test undefined), else the t-test; `exact` says which."""
    d = np.asarray(d, dtype=float)
    flat = d.std(-1) == 0 if d.shape[-1] > 1 else np.ones(d.shape[:-1], bool)
    exact = np.broadcast_to(np.asarray(count), flat.shape) | flat
    p = t_p(d, alternative)
    if np.any(exact):
        p = np.where(exact, sign_flip_p(d, alternative), p)
    return p, exact


def tost_p(d: np.ndarray, margin: float, count: bool) -> np.ndarray:
    """Two one-sided tests of |mean| < margin: the larger of p(d > -margin) and p(d < margin)."""
    d = np.asarray(d, dtype=float)
    lower, _ = paired_test_p(d + margin, count, "greater")
    upper, _ = paired_test_p(d - margin, count, "less")
    return np.maximum(lower, upper)


def magnitude_p(d: np.ndarray, bound: float, expected: int, count: bool) -> np.ndarray:
    """One-sided p that the effect in the predicted direction is below `bound` (half of a
    magnitude the source states): H1 expected * mean(d) < bound."""
    shifted = expected * np.asarray(d, dtype=float) - bound
    p, _ = paired_test_p(shifted, count, "less")
    return p


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided signed-rank p (scipy picks the exact null for small n); NaN where undefined."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(sps.wilcoxon(d).pvalue)
    except ValueError:
        return float("nan")


def paired_effect(treatment, control, *, count: bool = False, shift: float = 0.0,
                  confidence: float = 0.95) -> Effect:
    """The effect of treatment over control, paired by position (seed): differences
    d = treatment - control + shift (NaN pairs dropped; see `differences`), their mean and t
    interval, and the two-sided p of `paired_test_p`. n < 2: no interval and no p."""
    d, has_inf = differences(treatment, control)
    d = d + shift
    n = int(d.size)
    nan = float("nan")
    if n == 0:
        return Effect(0, nan, nan, nan, nan, nan, "t", nan, has_inf)
    mean = float(d.mean())
    if n < 2:
        return Effect(n, mean, nan, nan, nan, nan, "t", nan, has_inf)
    lo, hi = t_interval(d, confidence)
    p, exact = paired_test_p(d, count)
    return Effect(n, mean, float(d.std(ddof=1)), float(lo), float(hi), float(p),
                  "sign-flip" if bool(exact) else "t", wilcoxon_p(d), has_inf)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values along the last axis (one family a row): the i-th
    smallest of m p-values times (m - i), made monotone, capped at 1. NaN (no test) stays NaN
    and does not count in the family. The same numbers as statsmodels' multipletests(method=
    "holm") (tests/test_stats.py checks), vectorised over rows: that function calls
    gc.collect() each time, 66 ms in a report's process, which the calibration's thousands of
    simulated families cannot afford."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p.copy()
    flat = p.reshape(-1, p.shape[-1]) if p.ndim else p.reshape(1, 1)
    out = np.full(flat.shape, np.nan)
    for i, row in enumerate(flat):
        ok = ~np.isnan(row)
        m = int(ok.sum())
        if m == 0:
            continue
        order = np.argsort(row[ok], kind="stable")
        adjusted = np.minimum(1.0, np.maximum.accumulate(row[ok][order] * (m - np.arange(m))))
        vals = np.empty(m)
        vals[order] = adjusted
        out[i, ok] = vals
    return out.reshape(p.shape)


def smallest_resolvable_effect(n: int, family: int, alpha: float = ALPHA) -> float:
    """The smallest mean paired difference, in standard deviations of the difference, that
    passes Holm's first (most lenient for the best) step over `family` tests with `n` seeds:
    |t| = |mean| / (sd / sqrt(n)) > t(n-1, 1 - alpha / (2 family))."""
    if n < 2 or family < 1:
        return float("nan")
    return float(sps.t.ppf(1.0 - alpha / (2.0 * family), n - 1) / math.sqrt(n))


def sign_flip_floor(n: int) -> float:
    """The smallest two-sided p an exact sign-flip test can give with n seeds."""
    return 2.0 / 2**n if n <= EXACT_SIGN_FLIP_MAX_N else 1.0 / MONTE_CARLO_FLIPS


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def censoring_note(treatment_reached: Sequence[bool], control_reached: Sequence[bool]) -> tuple[bool, str]:
    """What censoring does to a time-to-target contrast, paired by seed: a run that never
    reached the target counts as budget + 1, a stand-in. Returns (unmeasured, note):
    unmeasured when neither arm reached it on any seed (every difference is 0 by
    construction: the target is out of reach of both, not "no difference"); else a note with
    how many seeds each arm was censored on ("" when none)."""
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


@dataclass(frozen=True)
class PValues:
    """A contrast's p-values, after the family's correction for a primary contrast (or
    unadjusted for a descriptive one): the difference test (of d + the non-inferiority
    shift), the magnitude test (NaN unless the source states one for this dataset) and the
    equivalence test."""

    p_difference: float
    p_magnitude: float = float("nan")
    p_equivalence: float = float("nan")


def verdict(effect: Effect, tests: PValues, expected: int, *, margin: float = 0.0, stated: float | None = None,
            equivalence: float, alpha: float = ALPHA, min_seeds: int = 2) -> tuple[str, str]:
    """(word, reason) for one contrast on one workload; `effect` is of d + expected * margin
    (a non-inferiority test runs on the shifted difference), the reason speaks in d's units.

    expected = +1 / -1 (the advice predicts that sign), first match wins:
      1. unresolved with fewer than `min_seeds` seeds;
      2. refuted: the interval wholly on the opposite side, difference p < alpha;
      3. refuted: a stated magnitude, the interval wholly below half of it, magnitude p < alpha;
      4. supported: the predicted sign, the interval excludes 0, difference p < alpha;
      5. no effect: equivalence p < alpha (the difference within ± `equivalence`);
      6. unresolved, with the gate that failed.
    expected = 0 (the advice predicts no difference):
      supported if equivalence p < alpha; refuted if difference p < alpha and the interval
      lies wholly outside ± `equivalence`; else unresolved.
    """
    n = effect.n
    if n < min_seeds or math.isnan(effect.ci_low):
        return "unresolved", f"n={n} seeds too few (need >= {max(min_seeds, 2)})"
    shift = expected * margin
    lo_d, hi_d, mean_d = effect.ci_low - shift, effect.ci_high - shift, effect.mean - shift
    ci_txt = f"mean {_fmt(mean_d)}, CI [{_fmt(lo_d)}, {_fmt(hi_d)}]"
    test_txt = f"{'exact sign-flip' if effect.test == 'sign-flip' else 't-test'} p={_fmt(tests.p_difference)}"
    inf_txt = " (includes diverged runs)" if effect.has_infinite else ""
    sig = not math.isnan(tests.p_difference) and tests.p_difference < alpha
    equiv = not math.isnan(tests.p_equivalence) and tests.p_equivalence < alpha
    eq_txt = f"within ±{_fmt(equivalence)} (equivalence p={_fmt(tests.p_equivalence)})"

    if expected == 0:
        if equiv:
            return "supported", f"no difference: {ci_txt} {eq_txt}{inf_txt}"
        if sig and (lo_d > equivalence or hi_d < -equivalence):
            return "refuted", f"a difference beyond ±{_fmt(equivalence)}: {ci_txt}, {test_txt}{inf_txt}"
        return "unresolved", f"neither equal within ±{_fmt(equivalence)} nor different: {ci_txt}, {test_txt}"

    s = expected
    lo, hi = sorted((s * effect.ci_low, s * effect.ci_high))  # shifted, in the predicted direction
    bound = f"the non-inferiority bound {_fmt(-shift)}" if margin else "0"
    if hi < 0 and sig:
        what = "worse than the margin allows" if margin else "the opposite sign"
        return "refuted", f"{what}: {ci_txt} wholly on the other side of {bound}, {test_txt}{inf_txt}"
    if stated is not None and not math.isnan(tests.p_magnitude):
        top = max(s * lo_d, s * hi_d)
        if top < stated / 2 and tests.p_magnitude < alpha:
            return "refuted", (f"far smaller than the source states: at most {_fmt(s * top)} against "
                               f"{_fmt(s * stated)} stated ({ci_txt}, magnitude p={_fmt(tests.p_magnitude)})")
    if s * effect.mean > 0 and lo > 0 and sig:
        return "supported", f"{ci_txt} wholly beyond {bound}, {test_txt}{inf_txt}"
    if equiv:
        return "no effect", f"{ci_txt} {eq_txt}"
    if lo <= 0 <= hi:
        return "unresolved", f"interval spans {bound} ({ci_txt}); not within ±{_fmt(equivalence)} either"
    side = "opposite" if hi < 0 else "predicted"
    return "unresolved", f"{ci_txt} on the {side} side of {bound}, but {test_txt} is not below {alpha}"


def summarize(words: Sequence[str]) -> tuple[str, str]:
    """A claim's summary word and its split over workloads, from their verdicts:
    - the word every workload shares;
    - "mixed" where one workload is supported and another refuted (a real disagreement);
    - otherwise "partly <word>" for the strongest word present, refuted before supported
      before no effect (e.g. supported on one workload, unresolved on the other);
    - "not run" for a claim with no workload in the profile."""
    words = list(words)
    if not words:
        return "not run", "not in this profile"
    unknown = set(words) - set(VERDICTS)
    if unknown:
        raise ValueError(f"unknown verdict(s) {sorted(unknown)}; expected one of {VERDICTS}")
    counts = {w: words.count(w) for w in VERDICTS if w in words}
    split = ", ".join(f"{w} on {k}" for w, k in counts.items()) + f" (of {len(words)})"
    if len(counts) == 1:
        return words[0], split
    if "supported" in counts and "refuted" in counts:
        return "mixed", split
    for w in ("refuted", "supported", "no effect"):
        if w in counts:
            return f"partly {w}", split
    return "unresolved", split
