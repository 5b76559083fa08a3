"""select.choose: the best arm of a set is chosen on selection seeds and scored on the
compared ones, so a larger set of identical arms gains nothing from the choice."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from tunebench.analysis.select import choose


def test_the_arm_with_the_best_selection_score_gives_the_compared_values():
    score = np.array([[0.1, 0.2], [0.9, 0.8], [0.5, 0.5]])  # 3 arms x 2 selection seeds
    metric = np.array([[10.0, 11, 12], [20, 21, 22], [30, 31, 32]])  # 3 arms x 3 compared seeds
    values, pick = choose(score, metric)
    assert pick == 1 and values.tolist() == [20, 21, 22]


def test_one_arm_is_taken_as_is_ties_go_to_the_first_and_diverged_arms_lose():
    values, pick = choose(np.zeros((1, 2)), np.array([[1.0, 2.0, 3.0]]))
    assert values.tolist() == [1.0, 2.0, 3.0] and pick == 0
    assert choose(np.zeros((3, 2)), np.zeros((3, 4)))[1] == 0
    score = np.array([[-np.inf, -np.inf], [0.5, np.nan]])
    assert choose(score, np.array([[0.0] * 4, [1.0] * 4]))[1] == 1


def test_best_of_k_identical_arms_is_not_favoured_and_the_t_test_holds_its_level():
    """k identical arms against one, validation correlated with test on each seed: chosen on
    selection seeds, the set's compared values are independent draws, so the t-test's false
    positive rate is its nominal 5% (chosen on the compared seeds, it would beat the single
    arm far more often)."""
    rng = np.random.default_rng(0)
    S, k, s, n = 4000, 6, 4, 12
    seed_sel, seed_cmp = rng.normal(size=(S, 1, s)), rng.normal(size=(S, 1, n))
    sel_metric = seed_sel + rng.normal(size=(S, k, s))
    score = 0.7 * sel_metric + rng.normal(size=(S, k, s)) * 0.7
    metric = seed_cmp + rng.normal(size=(S, k, n))
    chosen, _ = choose(score, metric)
    single = seed_cmp[:, 0, :] + rng.normal(size=(S, n))
    p = sps.ttest_rel(chosen, single, axis=1).pvalue
    lo, hi = sps.binomtest(int((p < 0.05).sum()), S).proportion_ci(0.99)
    assert lo <= 0.05 <= hi
    in_sample = np.take_along_axis(metric, metric.mean(-1).argmax(-1)[:, None, None], 1)[:, 0, :]
    assert (sps.ttest_rel(in_sample, single, axis=1).pvalue < 0.05).mean() > 0.08  # what choosing apart avoids
