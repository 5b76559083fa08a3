"""Run-epoch rows -> run metrics: epochs to the target, and whether that is a measurement
or the budget + 1 stand-in for "never reached"."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from tunebench.analysis.aggregate import summarize_run


def epochs(val_acc, *, budget=5, target=0.8, n_classes=10, diverged_from=None, task=None):
    """One run's epoch rows, as the ablation tables hold them: val_acc per epoch 1..k."""
    config = {"epochs": budget, **({"task": task} if task else {})}
    rows = []
    for i, acc in enumerate(val_acc, start=1):
        bad = diverged_from is not None and i >= diverged_from
        rows.append({
            "epoch": i, "diverged": bad, "diverged_epoch": diverged_from, "config": json.dumps(config),
            "n_classes": n_classes, "target_accuracy": target, "epoch_seconds": 0.5,
            "val_acc": acc, "test_acc": acc, "train_acc": acc, "train_loss": 1.0 / i,
            "val_loss": 1.0 / i, "test_loss": 1.0 / i, "grad_norms": [1.0, 2.0],
        })
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("val_acc", "diverged_from", "expected_epochs", "reached"), [
    ([0.5, 0.7, 0.81, 0.79, 0.9], None, 3.0, 1.0),   # first epoch at or above the target
    ([0.5, 0.8, 0.6, 0.6, 0.6], None, 2.0, 1.0),     # "at or above": 0.8 counts
    ([0.5, 0.6, 0.7, 0.7, 0.79], None, 6.0, 0.0),    # never: budget + 1, flagged unreached
    ([0.5, 0.9, 0.9, 0.9, 0.9], 2, 6.0, 0.0),        # diverged before reaching it: never
    ([0.5, 0.6], None, 6.0, 0.0),                    # stopped early (e.g. patience): budget, not epochs run
])
def test_epochs_to_target_says_whether_it_was_reached(val_acc, diverged_from, expected_epochs, reached):
    out = summarize_run(epochs(val_acc, diverged_from=diverged_from))
    assert out["epochs_to_target"] == expected_epochs
    assert out["reached_target"] == reached


def test_a_regression_run_has_no_target_to_reach():
    out = summarize_run(epochs([math.nan] * 5, n_classes=0))
    assert math.isnan(out["reached_target"])
    assert out["epochs_to_target"] == 6.0


def _with(df, **columns):
    for k, v in columns.items():
        df[k] = v
    return df


def test_restore_best_scores_the_best_validation_epoch():
    """restore_best: the final metrics are those of the best validation epoch (the first of
    equal ones), as Keras' restore_best_weights leaves the model; without it, the last."""
    val = [0.5, 0.9, 0.7, 0.9, 0.6]
    df = epochs(val)
    df["test_acc"] = [0.4, 0.85, 0.6, 0.8, 0.55]
    last = summarize_run(df)
    assert last["final_test_acc"] == 0.55 and last["final_val_acc"] == 0.6
    df["config"] = json.dumps({"epochs": 5, "restore_best": True})
    restored = summarize_run(df)
    assert restored["final_test_acc"] == 0.85 and restored["final_val_acc"] == 0.9
    assert restored["final_test_loss"] == pytest.approx(1 / 2) and restored["gap"] == pytest.approx(0.9 - 0.85)
    assert restored["epochs_used"] == 5  # training went on; only the scored weights differ


def test_restore_best_keeps_the_best_finite_epoch_of_a_run_that_diverged_later():
    df = epochs([0.5, 0.7, 0.6, 0.1], diverged_from=4)
    df["config"] = json.dumps({"epochs": 5, "restore_best": True})
    out = summarize_run(df)
    assert out["diverged"] == 1.0 and out["final_test_acc"] == 0.7
    df["config"] = json.dumps({"epochs": 5})
    assert summarize_run(df)["final_test_acc"] == pytest.approx(0.1)  # chance: a diverged run's score


@pytest.mark.parametrize(("accs", "expected"), [
    ([[0.5, 0.6, 0.7, 0.75], [0.78, 0.79, 0.85, 0.9]], 1.75),  # reached three quarters into epoch 2
    ([[0.5, 0.82, 0.7, 0.75], [0.9, 0.9, 0.9, 0.9]], 0.5),     # inside epoch 1, though the end fell below
    ([[0.5, 0.6, 0.7, 0.75], [0.7, 0.7, 0.7, 0.79]], 6.0),     # never: budget + 1
])
def test_epochs_to_target_resolves_fractions_of_an_epoch(accs, expected):
    df = epochs([a[-1] for a in accs])
    df["val_fractions"] = [[0.25, 0.5, 0.75, 1.0]] * len(accs)
    df["val_accs"] = accs
    out = summarize_run(df)
    assert out["epochs_to_target"] == expected
    assert out["seconds_to_target"] == pytest.approx(expected * 0.5)  # 0.5 s per epoch


def test_gradient_spread_and_trend():
    """grad_spread: log10(max/min) over the layers; grad_trend: |slope| of log10(norm) over
    the layer index, in decades per layer; a norm halving per layer has trend log10(2)."""
    df = epochs([0.5, 0.6])
    df["grad_norms"] = [[1.0, 0.5, 0.25, 0.125]] * 2
    out = summarize_run(df)
    assert out["grad_spread"] == pytest.approx(3 * math.log10(2))
    assert out["grad_trend"] == pytest.approx(math.log10(2))
    df["grad_norms"] = [[1.0, 10.0, 1.0, 10.0]] * 2
    assert summarize_run(df)["grad_trend"] < summarize_run(df)["grad_spread"]
