"""Choosing "the best arm of a set" on seeds disjoint from the ones compared.

Picking the arm with the best validation score on the very seeds that are then compared
favours the larger arm set: among k identical arms the best-of-k on those seeds beats a
single arm more often than the nominal rate. Splitting the compared seeds into two folds that
choose for each other (cross-fitting) removes that bias but not all of the problem: when both
folds pick the same arm it is because its scores were good on both, and an arm's validation
score and test metric on one seed go together, so the folds' values rise and fall together
and a t-test on them is anti-conservative (an A/A family of arm-set contrasts came out at ~6%
false positives at a nominal 5%). So the choice is made on seeds of its own: the profile's
`selection_seeds` train every arm of a set but are never compared; the compared seeds' values
then come from an arm chosen without them, independent draws, and the tests hold their level.
"""

from __future__ import annotations

import warnings

import numpy as np


def choose(score: np.ndarray, metric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """score: (..., k arms, s selection seeds), higher better (NaN: no score; -inf: a diverged
    arm); metric: (..., k arms, n compared seeds). Returns (values (..., n), pick (...,)): the
    compared seeds' metric under the arm with the best mean selection score (ties: the first)."""
    score = np.asarray(score, dtype=float)
    metric = np.asarray(metric, dtype=float)
    if score.shape[-2] == 1:
        return metric[..., 0, :], np.zeros(metric.shape[:-2], dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of an all-NaN slice
        mean = np.nanmean(score, axis=-1)  # (..., k)
    best = np.argmax(np.where(np.isnan(mean), -np.inf, mean), axis=-1)
    return np.take_along_axis(metric, best[..., None, None], axis=-2)[..., 0, :], best
