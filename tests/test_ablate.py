"""Ablation jobs: tidy rows, run order, and group checkpoints that survive a killed job."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tunebench.studies import ablate
from tunebench.spec import config
from tunebench.analysis.aggregate import summarize
from tunebench.core.data import DATASETS
from tunebench.core.engine import DeviceData

RAW = {
    "profile": "t",
    "profiles": {"t": {"seeds": [0, 1], "train": {"epochs": 2}}},
    "workloads": {"w": {"dataset": "digits", "model": "mlp", "fixed": {"depth": 1, "width": 8, "target_accuracy": 0.3}}},
    "dimensions": {"d": {"workloads": ["w"], "grid": {"depth": [1, 2], "lr": [0.05, 1e9]}}},
}


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :10].argmax(1)).long()
    return DeviceData(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:], 10, "toy")


def test_job_rows_checkpoints_and_resume(tmp_path, data, monkeypatch):
    params = config.validate(RAW, tuple(DATASETS))
    df = ablate.run_job(params, "w", "d", data, data_hash="h", checkpoint_dir=tmp_path)
    assert list(dict.fromkeys(df["arm"])) == ["depth=1,lr=0.05", "depth=1,lr=1000000000.0", "depth=2,lr=0.05", "depth=2,lr=1000000000.0"]
    assert len(list(tmp_path.glob("*.parquet"))) == 2  # one checkpoint per architecture (depth)
    runs = summarize(df)
    assert len(runs) == 8
    huge = runs[runs["arm"].str.contains("1000000000")]
    assert (huge["diverged"] == 1.0).all() and np.allclose(huge["final_test_acc"], 0.1)  # chance, not zero

    def boom(*a, **k):
        raise AssertionError("a checkpointed group was trained again")

    monkeypatch.setattr(ablate, "train_population", boom)
    again = ablate.run_job(params, "w", "d", data, data_hash="h", checkpoint_dir=tmp_path)
    pd.testing.assert_frame_equal(again, df)
    with pytest.raises(AssertionError):  # other data -> other checkpoint keys -> trains
        ablate.run_job(params, "w", "d", data, data_hash="other", checkpoint_dir=tmp_path)
