"""Tests for tunebench.stats: calibration under no effect, power on planted
effects, and the edge cases (degenerate, infinite, NaN) the pipeline meets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from tunebench.stats import (
    PairedEffect,
    best_of,
    censoring_note,
    combine,
    holm,
    paired_effect,
    smallest_resolvable_effect,
    verdict,
)

ALPHA = 0.05


def _paired_arms(rng, n_seeds, effect=0.0, shared_sd=0.02, noise_sd=0.01, base=0.9):
    """Treatment/control with seed-level pairing: a per-seed component shared by
    both arms (data order, init) plus independent per-run noise."""
    shared = rng.normal(0.0, shared_sd, n_seeds)
    control = base + shared + rng.normal(0.0, noise_sd, n_seeds)
    treatment = base + effect + shared + rng.normal(0.0, noise_sd, n_seeds)
    return treatment, control


def _verdicts_for_batch(effects, p_adj, signs):
    return [verdict(e, p, s, alpha=ALPHA)[0] for e, p, s in zip(effects, p_adj, signs)]


# ---------------------------------------------------------------- A/A calibration


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_aa_calibration(n_seeds):
    n_comparisons = 300
    rng = np.random.default_rng(1234 + n_seeds)
    effects, signs = [], []
    for i in range(n_comparisons):
        t, c = _paired_arms(rng, n_seeds)
        effects.append(paired_effect(t, c, n_resamples=1000, seed=i))
        signs.append(int(rng.choice([-1, 1])))
    raw_p = np.array([e.p_value for e in effects])

    # Per-comparison, unadjusted: a verdict needs p < alpha, so the rate of
    # non-inconclusive verdicts must be within what alpha allows (binomial
    # upper bound, one-sided 0.999).
    unadjusted = _verdicts_for_batch(effects, raw_p, signs)
    rate = np.mean([v != "inconclusive" for v in unadjusted])
    bound = sps.binom.ppf(0.999, n_comparisons, ALPHA) / n_comparisons
    assert rate <= bound, (rate, bound)

    # One Holm family per batch: family-wise error <= alpha, so essentially
    # no null comparison may get a verdict.
    adjusted = _verdicts_for_batch(effects, holm(raw_p), signs)
    assert sum(v != "inconclusive" for v in adjusted) <= 1


def test_percentile_ci_alone_is_anticonservative_at_n3():
    """Documents why the CI cannot gate alone: at n=3 under no effect the
    bootstrap interval excludes 0 far more often than 5% of the time."""
    rng = np.random.default_rng(7)
    n = 200
    excl = 0
    for i in range(n):
        t, c = _paired_arms(rng, 3)
        e = paired_effect(t, c, n_resamples=500, seed=i)
        excl += e.ci_low > 0 or e.ci_high < 0
    assert excl / n > 0.15


# ---------------------------------------------------------------- planted effects


def _family_with_planted(planted_effect, n_null=19, n_seeds=5, seed=0):
    rng = np.random.default_rng(seed)
    # Independent per-arm noise of sd 0.01/sqrt(2): differences have sd 0.01.
    noise = 0.01 / math.sqrt(2)
    t, c = _paired_arms(rng, n_seeds, effect=planted_effect, noise_sd=noise)
    effects = [paired_effect(t, c, seed=0)]
    for i in range(n_null):
        t, c = _paired_arms(rng, n_seeds, noise_sd=noise)
        effects.append(paired_effect(t, c, n_resamples=500, seed=i + 1))
    return effects, holm([e.p_value for e in effects])


def test_planted_effect_supported_and_ci_covers_truth():
    effects, p_adj = _family_with_planted(0.05)
    v, reason = verdict(effects[0], p_adj[0], +1)
    assert v == "supported", reason
    assert effects[0].ci_low <= 0.05 <= effects[0].ci_high
    nulls = [verdict(e, p, +1)[0] for e, p in zip(effects[1:], p_adj[1:])]
    assert all(x == "inconclusive" for x in nulls)


def test_planted_effect_power_and_coverage_over_replicates():
    """Not a single lucky seed: over replicate families the planted effect is
    almost always supported.  The 95% percentile interval under-covers at n=5
    (about 80-85% in simulation), one reason it never gates alone."""
    reps = 40
    supported = covered = 0
    for s in range(reps):
        effects, p_adj = _family_with_planted(0.05, seed=100 + s)
        supported += verdict(effects[0], p_adj[0], +1)[0] == "supported"
        covered += effects[0].ci_low <= 0.05 <= effects[0].ci_high
    assert supported / reps >= 0.9
    assert covered / reps >= 0.65


def test_planted_effect_wrong_direction_refuted():
    effects, p_adj = _family_with_planted(-0.05, seed=1)
    v, reason = verdict(effects[0], p_adj[0], +1)
    assert v == "refuted", reason
    assert "opposite" in reason
    # The same data, for a claim predicting a decrease, is supported.
    assert verdict(effects[0], p_adj[0], -1)[0] == "supported"


def test_planted_effect_supported_for_negative_sign_claim():
    # e.g. "lowers loss": expected_sign -1, true effect -0.05.
    effects, p_adj = _family_with_planted(-0.05, seed=2)
    assert verdict(effects[0], p_adj[0], -1)[0] == "supported"


# ---------------------------------------------------------------- stated magnitude


def test_stated_magnitude_refutation():
    rng = np.random.default_rng(3)
    t, c = _paired_arms(rng, 5, effect=0.01, noise_sd=0.002)
    e = paired_effect(t, c)
    # Real, significant, right sign ... but the post claims 10x more.
    v, reason = verdict(e, 1.0, +1, stated_effect=0.10)  # p irrelevant for this rule
    assert v == "refuted"
    assert "far smaller than the post states" in reason
    # A claim stating the magnitude actually observed is not refuted.
    assert verdict(e, e.p_value, +1, stated_effect=0.01)[0] == "supported"
    # Mirrored for a claim of a decrease.
    e_neg = paired_effect(c, t)
    assert verdict(e_neg, 1.0, -1, stated_effect=0.10)[0] == "refuted"
    assert verdict(e_neg, e_neg.p_value, -1, stated_effect=0.01)[0] == "supported"


def test_stated_effect_must_be_positive_magnitude():
    e = paired_effect(np.array([1.0, 2.0, 3.0]), np.zeros(3))
    with pytest.raises(ValueError):
        verdict(e, 0.01, -1, stated_effect=-0.1)
    with pytest.raises(ValueError):
        verdict(e, 0.01, 0)


# ---------------------------------------------------------------- degenerate inputs


def test_zero_variance_nonzero_difference():
    c = np.array([0.5, 0.6, 0.7, 0.8])
    e = paired_effect(c + 0.25, c)  # 0.25 is exact in binary: all d identical
    assert e.n == 4
    assert (e.ci_low, e.ci_high) == (0.25, 0.25)
    assert e.mean_diff == 0.25
    assert e.p_value == 0.0
    assert e.p_wilcoxon == pytest.approx(2 / 2**4)
    assert verdict(e, e.p_value, +1)[0] == "supported"
    assert verdict(e, e.p_value, -1)[0] == "refuted"
    # The reason must not pass p = 0 off as evidence from spread: it names the rule and
    # the distribution-free p, either way the verdict goes.
    for sign in (+1, -1):
        reason = verdict(e, e.p_value, sign)[1]
        assert "same difference on all n=4 seeds" in reason and "p is 0 by rule" in reason, reason
        assert "Wilcoxon p=0.125" in reason, reason
    # A difference that varies, however little, is a t-test like any other.
    varied = paired_effect(c + np.array([0.25, 0.25, 0.25, 0.5]), c)
    assert "by rule" not in verdict(varied, varied.p_value, +1)[1]


def test_zero_variance_identical_arms():
    c = np.array([0.5, 0.6, 0.7])
    e = paired_effect(c, c.copy())
    assert (e.ci_low, e.ci_high, e.p_value) == (0.0, 0.0, 1.0)
    v, reason = verdict(e, 1.0, +1)
    assert v == "inconclusive" and "too small to resolve" in reason
    # Identical arms do refute a stated magnitude.
    assert verdict(e, 1.0, +1, stated_effect=0.02)[0] == "refuted"


def test_too_few_seeds():
    e = paired_effect(np.array([1.0]), np.array([0.0]))
    assert e.n == 1 and e.mean_diff == 1.0
    assert math.isnan(e.ci_low) and math.isnan(e.p_value) and math.isnan(e.p_wilcoxon)
    v, reason = verdict(e, float("nan"), +1)
    assert v == "inconclusive" and "n=1 seeds too few" in reason
    e3 = paired_effect(np.array([1.0, 2.0, 3.5]), np.zeros(3))
    v, reason = verdict(e3, 0.01, +1, min_seeds=5)
    assert v == "inconclusive" and "n=3 seeds too few" in reason


def test_inconclusive_reasons():
    e = PairedEffect(n=5, mean_diff=0.01, ci_low=-0.01, ci_high=0.03, p_value=0.2, p_wilcoxon=0.3)
    v, reason = verdict(e, 0.4, +1)
    assert v == "inconclusive" and "interval spans 0" in reason
    e = PairedEffect(n=5, mean_diff=0.02, ci_low=0.01, ci_high=0.03, p_value=0.01, p_wilcoxon=0.06)
    v, reason = verdict(e, 0.3, +1)
    assert v == "inconclusive" and "not significant after Holm (p=0.3)" in reason
    # Significant unadjusted alone is not enough.
    assert verdict(e, 0.05, +1)[0] == "inconclusive"
    assert verdict(e, 0.049, +1)[0] == "supported"


def test_mismatched_lengths_rejected():
    with pytest.raises(ValueError):
        paired_effect(np.zeros(3), np.zeros(4))


def test_nan_pairs_dropped():
    t = np.array([1.0, np.nan, 1.2, 1.1])
    c = np.array([0.0, 0.0, np.nan, 0.1])
    e = paired_effect(t, c)
    assert e.n == 2
    assert e.mean_diff == pytest.approx(1.0)


def test_reproducible_with_seed():
    rng = np.random.default_rng(0)
    t, c = _paired_arms(rng, 5)
    assert paired_effect(t, c, seed=3) == paired_effect(t, c, seed=3)


# ---------------------------------------------------------------- infinities


def test_inf_difference_keeps_sign_and_flags():
    # Loss metric: the treatment diverged on one seed.
    t = np.array([np.inf, 0.50, 0.52, 0.55])
    c = np.array([0.60, 0.61, 0.63, 0.62])
    e = paired_effect(t, c)
    assert e.has_infinite
    assert all(math.isfinite(x) for x in (e.mean_diff, e.ci_low, e.ci_high, e.p_value))
    assert e.mean_diff > 0  # the divergence dominates, in its direction
    assert e.ci_high > 1e4  # stand-in is ~1e6 * (max finite |d| + 1)
    assert not math.isnan(e.p_wilcoxon)
    # A "lowers loss" claim is not supported by a run that diverged.
    assert verdict(e, e.p_value, -1)[0] != "supported"


def test_inf_standin_magnitude():
    t = np.array([-np.inf, 1.0, 2.0])
    c = np.array([0.0, 0.0, 0.0])
    e = paired_effect(t, c)
    # d = [-big, 1, 2] with big = 1e6 * (2 + 1)
    assert e.mean_diff == pytest.approx((-3e6 + 3.0) / 3)
    assert e.ci_low == pytest.approx(-3e6)


def test_both_arms_inf_same_sign_is_zero_difference():
    t = np.array([np.inf, 0.5, 0.6])
    c = np.array([np.inf, 0.4, 0.5])
    e = paired_effect(t, c)
    assert not e.has_infinite
    assert e.n == 3
    assert e.mean_diff == pytest.approx(0.2 / 3)


def test_opposite_infinities():
    t = np.array([np.inf, 0.5, 0.6])
    c = np.array([-np.inf, 0.4, 0.5])
    e = paired_effect(t, c)
    assert e.has_infinite and e.mean_diff > 0


# ---------------------------------------------------------------- holm


def test_holm_matches_statsmodels():
    p = np.array([0.001, 0.04, 0.03, 0.2, 0.0004, 0.5])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])


def test_holm_keeps_nan_and_excludes_it_from_family():
    p = [0.01, float("nan"), 0.02, float("nan"), 0.5]
    out = holm(p)
    assert np.isnan(out[1]) and np.isnan(out[3])
    expected = multipletests([0.01, 0.02, 0.5], method="holm")[1]
    np.testing.assert_allclose(out[[0, 2, 4]], expected)
    assert holm([]).shape == (0,)
    assert np.all(np.isnan(holm([float("nan")] * 3)))


# ---------------------------------------------------------------- combine, best_of


@pytest.mark.parametrize(
    "words, expected",
    [
        (["supported"], "supported"),
        (["supported", "supported"], "supported"),
        (["refuted", "refuted", "refuted"], "refuted"),
        (["inconclusive", "inconclusive"], "inconclusive"),
        (["supported", "refuted"], "mixed"),
        (["supported", "inconclusive"], "mixed"),
        (["refuted", "inconclusive", "inconclusive"], "mixed"),
        (["mixed", "inconclusive"], "mixed"),  # a workload whose contrasts disagree
        (["mixed", "mixed"], "mixed"),
    ],
)
def test_combine(words, expected):
    assert combine(words) == expected


def test_combine_rejects_bad_input():
    with pytest.raises(ValueError):
        combine([])
    with pytest.raises(ValueError):
        combine(["supported", "maybe"])


def test_best_of():
    arms = {"a": np.array([0.8, 0.82]), "b": np.array([0.85, 0.86]), "c": np.array([0.7, 0.9])}
    assert best_of(arms) == "b"
    # means 0.81, 0.855, 0.80
    assert best_of(arms, higher_is_better=False) == "c"


def test_best_of_lower_is_better_and_edge_cases():
    losses = {"lr1": np.array([0.5, 0.6]), "lr2": np.array([0.4, np.inf]), "lr3": np.array([0.45, 0.55])}
    assert best_of(losses, higher_is_better=False) == "lr3"
    # ties -> first listed; NaN ignored; all-NaN arm skipped
    assert best_of({"x": np.array([1.0]), "y": np.array([1.0, np.nan]), "z": np.array([np.nan])}) == "x"
    with pytest.raises(ValueError):
        best_of({})


@pytest.mark.parametrize("n", [3, 5, 10])
def test_smallest_resolvable_effect_is_where_holms_first_step_flips(n):
    """A mean paired difference just above the returned number of standard deviations
    passes Holm's first step over the family, and one just below does not."""
    family = 150
    k = smallest_resolvable_effect(n, family)
    shape = np.linspace(-1.0, 1.0, n)
    shape = shape / shape.std(ddof=1)  # sd exactly 1
    for scale, passes in ((1.01, True), (0.99, False)):
        e = paired_effect(np.zeros(n) + k * scale + shape, np.zeros(n))
        assert (e.p_value < 0.05 / family) is passes, (n, k, scale, e.p_value)
    assert smallest_resolvable_effect(3, 150) == pytest.approx(31.6, abs=0.05)
    assert math.isnan(smallest_resolvable_effect(1, 150))


@pytest.mark.parametrize(("t", "c", "unmeasured", "words"), [
    ([False] * 5, [False] * 5, True, ["not measured", "n=5"]),
    ([True] * 5, [True] * 5, False, []),
    ([True] * 5, [True, True, False, False, False], False, ["0/5 treatment", "3/5 control", "understates"]),
    ([False, True, True], [False, False, True], False, ["1/3 treatment", "2/3 control", "0 on the 1 seeds where neither"]),
])
def test_censoring_note_counts_the_stand_ins(t, c, unmeasured, words):
    got_unmeasured, note = censoring_note(t, c)
    assert got_unmeasured is unmeasured
    assert (note == "") is (not words)
    for w in words:
        assert w in note, (w, note)


def test_censoring_note_needs_paired_flags():
    with pytest.raises(ValueError, match="differ in length"):
        censoring_note([True, False], [True])


def test_non_inferiority_reasons_speak_in_the_differences_units():
    """A non-inferiority test runs on d + margin; its reason must quote d's own interval and
    the bound -margin, or a reader sees an interval the tables never print."""
    c = np.array([0.80, 0.82, 0.81, 0.83, 0.79])
    d = np.array([-0.030, -0.031, -0.029, -0.032, -0.028])  # clearly worse than -0.01
    shifted = paired_effect(c + d + 0.01, c, seed=0)
    v, reason = verdict(shifted, shifted.p_value, +1, margin=0.01)
    assert v == "refuted" and "worse than the margin allows" in reason, reason
    raw = paired_effect(c + d, c, seed=0)
    assert f"mean {raw.mean_diff:.4g}" in reason and "non-inferiority bound -0.01" in reason, reason
    # Mirrored, for a lower-is-better metric: the bound is +margin and "worse" is above it.
    shifted_neg = paired_effect(c - d - 0.01, c, seed=0)
    v, reason = verdict(shifted_neg, shifted_neg.p_value, -1, margin=0.01)
    assert v == "refuted" and "wholly above the non-inferiority bound 0.01" in reason, reason
