"""Run-epoch rows -> run metrics: epochs to the target, and whether that is a measurement
or the budget + 1 stand-in for "never reached"."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from tunebench.aggregate import summarize_run


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
