"""The grid (tunebench.spec.grid): params.yaml expanded into jobs and runs, the layering of
train < workload < dimension < profile settings, a profile's share of the grid, and the
shared settings the report prints as each job's recipe."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tunebench.core.data import DATASETS
from tunebench.spec import config, grid

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def validate(raw):
    return config.validate(raw, tuple(DATASETS))


def test_shipped_params_are_valid_for_every_profile():
    for profile in PARAMS["profiles"]:
        p = validate({**PARAMS, "profile": profile})
        runs = grid.expand(p)
        assert runs and len({r.run_id for r in runs}) == len(runs)  # no duplicate runs


def test_only_keeps_a_share_of_the_grid():
    p = validate({**PARAMS, "profile": "smoke"})
    only = PARAMS["profiles"]["smoke"]["only"]
    assert {dim for _, dim in grid.jobs(p)} == set(only["dimensions"])
    assert {wl for wl, _ in grid.jobs(p)} <= set(only["workloads"])
    assert grid.dimension_workloads(p, "init") == ["mnist_softmax"]
    assert grid.dimension_workloads(p, "optimizer") == []


def test_layering_later_wins():
    p = validate(PARAMS)
    runs = grid.job_runs(p, "fmnist_cnn", "init")
    assert {r.config.optimizer for r in runs} == {"sgd"}  # dimension fixed beats train
    assert {r.config.width for r in runs} == {16}  # workload fixed
    assert {r.config.init for r in runs} == set(PARAMS["dimensions"]["init"]["grid"]["init"])
    quick = PARAMS["profiles"]["quick"]
    assert {r.seed for r in runs} == set(quick["dimension_seeds"]["init"]) | set(quick["selection_seeds"])
    # a dimension with no arm sets to choose from trains the compared seeds only
    assert {r.seed for r in grid.job_runs(p, "tokens_bag", "embed_init")} == set(quick["seeds"])


def test_profile_grid_override():
    p = validate(PARAMS)
    depths = {r.config.depth for r in grid.job_runs(p, "fmnist_mlp", "residual")}
    assert depths == set(PARAMS["profiles"]["quick"]["grids"]["residual"]["depth"])
    full = validate({**PARAMS, "profile": "full"})
    assert {r.config.depth for r in grid.job_runs(full, "fmnist_mlp", "residual")} == set(PARAMS["dimensions"]["residual"]["grid"]["depth"])


@pytest.mark.parametrize("workload, dimension", grid.jobs(validate(PARAMS)))
def test_shared_settings_are_what_every_arm_ran(workload, dimension):
    """The report's recipe table comes from grid.shared_settings: every run of the job must
    have used exactly those values, and no arm key may be among them."""
    p = validate(PARAMS)
    shared = grid.shared_settings(p, workload, dimension)
    runs = grid.job_runs(p, workload, dimension)
    assert not set(shared) & {k for k, _ in runs[0].factors}
    for run in runs:
        assert {k: getattr(run.config, k) for k in shared} == shared, run.run_id


def test_shared_settings_show_the_profiles_override_not_the_dimensions_fixed():
    raw = copy.deepcopy(PARAMS)
    raw["dimensions"]["augmentation"]["fixed"] = {"epochs": 8}
    raw["profiles"]["quick"]["dimensions"]["augmentation"] = {"epochs": 3}
    assert grid.shared_settings(validate(raw), "fmnist_cnn", "augmentation")["epochs"] == 3
    raw["profiles"]["quick"]["dimensions"].pop("augmentation")
    assert grid.shared_settings(validate(raw), "fmnist_cnn", "augmentation")["epochs"] == 8

