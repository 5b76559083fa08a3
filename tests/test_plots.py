"""Figures of tunebench.plots: they render, and the same data always draws the same
picture (seaborn bootstraps its intervals; the seed is fixed), so a rerun of the report
stage does not change the published figures."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from tunebench import plots


def runs_frame(factor: str, values) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame([
        {"workload": wl, "arm": f"{factor}={v}", f"arm_{factor}": v, "seed": seed,
         "final_test_acc": rng.random(), "diverged": 0.0}
        for wl in ("a", "b") for v in values for seed in range(5)
    ])


def epochs_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame([
        {"workload": "a", "arm": f"lr={lr}", "seed": seed, "epoch": e, "val_acc": rng.random(), "n_classes": 10}
        for lr in (0.01, 0.1) for seed in range(5) for e in range(1, 4)
    ])


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@pytest.mark.parametrize("draw", [
    lambda: plots.dimension_figure(runs_frame("lr", [0.01, 0.1, 1.0]), "final_test_acc"),  # a line over lr
    lambda: plots.dimension_figure(runs_frame("optimizer", ["sgd", "adam"]), "final_test_acc"),  # points per arm
    lambda: plots.curves_figure(epochs_frame()),
], ids=["numeric-factor", "categorical-factor", "curves"])
def test_same_data_same_figure(draw):
    np.random.seed(1)
    first = png(draw())
    np.random.seed(2)
    assert png(draw()) == first
