"""tunebench.analysis.stats: the interval, the tests (t, exact sign-flip, equivalence, magnitude),
Holm's correction, the verdict rule and the per-claim summary, on planted and edge-case data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from tunebench.analysis import stats
from tunebench.analysis.stats import PValues, censoring_note, holm, paired_effect, smallest_resolvable_effect, summarize, verdict

ALPHA = 0.05


def _paired(rng, n, effect=0.0, shared_sd=0.02, noise_sd=0.01, base=0.9):
    shared = rng.normal(0.0, shared_sd, n)
    control = base + shared + rng.normal(0.0, noise_sd, n)
    treatment = base + effect + shared + rng.normal(0.0, noise_sd, n)
    return treatment, control


def _judge(t, c, expected=1, *, count=False, margin=0.0, stated=None, equivalence=0.01):
    """One contrast through the verdict rule, unadjusted (a family of one)."""
    d, _ = stats.differences(t, c)
    eff = paired_effect(t, c, count=count, shift=expected * margin)
    tests = PValues(eff.p,
                  float(stats.magnitude_p(d, stated / 2, expected, count)) if stated else float("nan"),
                  float(stats.tost_p(d, equivalence, count)))
    return verdict(eff, tests, expected, margin=margin, stated=stated, equivalence=equivalence)


# ---------------------------------------------------------------- interval and tests


def test_the_t_interval_covers_the_truth_at_its_level():
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(600):
        t, c = _paired(rng, 8, effect=0.01)
        e = paired_effect(t, c)
        hits += e.ci_low <= 0.01 <= e.ci_high
    lo, hi = sps.binomtest(hits, 600).proportion_ci(0.99)
    assert lo <= 0.95 <= hi, hits / 600


def test_the_sign_flip_test_is_scipys_exact_paired_permutation_test():
    rng = np.random.default_rng(0)
    for _ in range(10):
        t, c = rng.normal(size=8), rng.normal(size=8)
        ref = sps.permutation_test((t, c), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                   permutation_type="samples", n_resamples=np.inf).pvalue
        assert stats.sign_flip_p(t - c) == pytest.approx(ref)


def test_no_spread_is_not_zero_variance_of_the_population():
    """Every seed the same nonzero difference: the t-test is undefined, and the exact
    sign-flip test gives 2 / 2^n, never 0 (a distribution-free test cannot go lower)."""
    for n in (3, 5, 12):
        e = paired_effect(np.full(n, 3.0), np.full(n, 2.0))
        assert e.test == "sign-flip" and e.p == pytest.approx(2 / 2**n) == stats.sign_flip_floor(n)
        assert (e.ci_low, e.ci_high) == (1.0, 1.0)
    same = paired_effect(np.ones(4), np.ones(4))
    assert same.p == 1.0 and same.mean == 0.0


def test_a_count_metric_gets_the_exact_test():
    t, c = np.array([2.0, 3, 2, 2, 3, 2]), np.array([3.0, 4, 4, 3, 4, 3])
    assert paired_effect(t, c, count=True).test == "sign-flip"
    assert paired_effect(t, c, count=False).test == "t"
    assert paired_effect(t, c, count=True).p == pytest.approx(2 / 2**6)


def test_equivalence_and_magnitude_tests():
    rng = np.random.default_rng(1)
    d = rng.normal(0, 0.001, 12)
    assert stats.tost_p(d, 0.01, False) < 0.001  # a precise zero
    assert stats.tost_p(rng.normal(0, 0.05, 12), 0.01, False) > 0.05  # too noisy to say
    assert stats.tost_p(d + 0.05, 0.01, False) > 0.5  # clearly outside
    # magnitude: an effect of 0.05 when the source states 0.28 (half: 0.14) is far below it
    assert stats.magnitude_p(d + 0.05, 0.14, +1, False) < 0.001
    assert stats.magnitude_p(d + 0.20, 0.14, +1, False) > 0.5
    assert stats.magnitude_p(-(d + 0.05), 0.14, -1, False) < 0.001  # mirrored for "lower"


# ---------------------------------------------------------------- verdicts


def test_a_planted_effect_is_supported_and_its_opposite_refuted():
    rng = np.random.default_rng(42)
    t, c = _paired(rng, 12, effect=0.05)
    assert _judge(t, c, +1)[0] == "supported"
    assert _judge(t, c, -1)[0] == "refuted"
    assert _judge(c, t, -1)[0] == "supported"


def test_a_precise_null_is_no_effect():
    rng = np.random.default_rng(7)
    t, c = _paired(rng, 12, effect=0.0, noise_sd=0.0005)
    word, reason = _judge(t, c, +1, equivalence=0.01)
    assert word == "no effect" and "within ±0.01" in reason


def test_a_noisy_null_is_unresolved_with_its_reason():
    rng = np.random.default_rng(8)
    t, c = _paired(rng, 5, effect=0.0, noise_sd=0.05)
    word, reason = _judge(t, c, +1, equivalence=0.01)
    assert word == "unresolved" and "interval spans 0" in reason


def test_far_below_the_stated_magnitude_needs_the_p_gate_too():
    """An interval wholly below half the stated magnitude refutes only through its own
    test's p: with 3 seeds a percentile interval alone would, but the magnitude p cannot
    pass; with 12 it can."""
    rng = np.random.default_rng(5)
    t, c = _paired(rng, 12, effect=0.05, noise_sd=0.005)
    word, reason = _judge(t, c, +1, stated=0.28)
    assert word == "refuted" and "far smaller than the source states" in reason
    eff = paired_effect(t[:3], c[:3])
    d, _ = stats.differences(t[:3], c[:3])
    tests = PValues(eff.p, 0.2, float("nan"))  # magnitude p not significant
    assert verdict(eff, tests, +1, stated=0.28, equivalence=0.01)[0] != "refuted"


def test_non_inferiority_reasons_speak_in_the_differences_units():
    c = np.array([0.80, 0.82, 0.81, 0.83, 0.79, 0.80, 0.82, 0.81])
    d = np.array([-0.030, -0.031, -0.029, -0.032, -0.028, -0.030, -0.031, -0.029])  # clearly worse than -0.01
    word, reason = _judge(c + d, c, +1, margin=0.01)
    assert word == "refuted" and "worse than the margin allows" in reason, reason
    assert f"mean {np.mean(d):.4g}" in reason and "non-inferiority bound -0.01" in reason, reason
    word, _ = _judge(c + 0.002 + d * 0.01, c, +1, margin=0.01)
    assert word == "supported"


def test_a_prediction_of_no_difference():
    rng = np.random.default_rng(9)
    t, c = _paired(rng, 12, effect=0.0, noise_sd=0.001)
    assert _judge(t, c, 0, equivalence=0.01)[0] == "supported"
    t, c = _paired(rng, 12, effect=0.05, noise_sd=0.005)
    word, reason = _judge(t, c, 0, equivalence=0.01)
    assert word == "refuted" and "beyond ±0.01" in reason


def test_too_few_seeds():
    e = paired_effect([0.9], [0.8])
    assert verdict(e, PValues(float("nan")), +1, equivalence=0.01)[0] == "unresolved"


@pytest.mark.parametrize("words, word, split", [
    (["supported", "supported"], "supported", "supported on 2 (of 2)"),
    (["supported", "refuted"], "mixed", "supported on 1, refuted on 1 (of 2)"),
    (["supported", "unresolved"], "partly supported", "supported on 1, unresolved on 1 (of 2)"),
    (["refuted", "no effect"], "partly refuted", "refuted on 1, no effect on 1 (of 2)"),
    (["no effect", "unresolved", "unresolved"], "partly no effect", "no effect on 1, unresolved on 2 (of 3)"),
    (["unresolved"], "unresolved", "unresolved on 1 (of 1)"),
    ([], "not run", "not in this profile"),
])
def test_summarize(words, word, split):
    assert summarize(words) == (word, split)


def test_summarize_rejects_unknown_words():
    with pytest.raises(ValueError):
        summarize(["supported", "maybe"])


# ---------------------------------------------------------------- edge cases


def test_nan_pairs_dropped_and_lengths_checked():
    e = paired_effect([0.9, np.nan, 0.8, 0.85], [0.8, 0.7, np.nan, 0.8])
    assert e.n == 2
    with pytest.raises(ValueError, match="paired by seed"):
        paired_effect([1.0, 2.0], [1.0])


def test_an_infinite_difference_keeps_its_sign():
    t = np.array([np.inf, 0.50, 0.52, 0.55])
    c = np.array([0.60, 0.61, 0.63, 0.62])
    e = paired_effect(t, c)
    assert e.has_infinite and e.mean > 0 and e.ci_high > 1e4
    assert all(math.isfinite(x) for x in (e.mean, e.ci_low, e.ci_high, e.p))
    same = paired_effect(np.array([np.inf, 0.5, 0.6]), np.array([np.inf, 0.4, 0.5]))
    assert not same.has_infinite and same.mean == pytest.approx(0.2 / 3)


# ---------------------------------------------------------------- holm


def test_holm_matches_statsmodels_with_nan_left_out():
    rng = np.random.default_rng(1)
    for _ in range(100):
        p = rng.random(rng.integers(1, 30)) ** 3
        p[rng.random(len(p)) < 0.1] = np.nan
        ok = ~np.isnan(p)
        ref = np.full(len(p), np.nan)
        if ok.any():
            ref[ok] = multipletests(p[ok], method="holm")[1]
        np.testing.assert_allclose(holm(p), ref)
    rows = rng.random((5, 7))
    np.testing.assert_allclose(holm(rows), np.vstack([multipletests(r, method="holm")[1] for r in rows]))
    assert holm([]).shape == (0,)


@pytest.mark.parametrize("n", [3, 5, 12])
def test_smallest_resolvable_effect_is_where_holms_first_step_flips(n):
    family = 70
    k = smallest_resolvable_effect(n, family)
    shape = np.linspace(-1.0, 1.0, n)
    shape = shape / shape.std(ddof=1)  # sd exactly 1
    for scale, passes in ((1.01, True), (0.99, False)):
        p = float(stats.t_p(np.zeros(n) + k * scale + shape))
        assert (p < 0.05 / family) is passes, (n, k, scale, p)
    assert math.isnan(smallest_resolvable_effect(1, 150))


@pytest.mark.parametrize(("t", "c", "unmeasured", "words"), [
    ([False] * 5, [False] * 5, True, ["not measured", "n=5"]),
    ([True] * 5, [True] * 5, False, []),
    ([True] * 5, [True, True, False, False, False], False, ["0/5 treatment", "3/5 control", "understates"]),
])
def test_censoring_note_counts_the_stand_ins(t, c, unmeasured, words):
    got_unmeasured, note = censoring_note(t, c)
    assert got_unmeasured is unmeasured
    assert (note == "") is (not words)
    for w in words:
        assert w in note, (w, note)
