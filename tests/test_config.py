"""params.yaml validation: every bad input names its key and value and fails before training."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tunebench import config, grid
from tunebench.data import DATASETS

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def validate(raw):
    return config.validate(raw, tuple(DATASETS))


def test_shipped_params_are_valid_for_every_profile():
    for profile in PARAMS["profiles"]:
        p = validate({**PARAMS, "profile": profile})
        runs = grid.expand(p)
        assert runs and len({r.run_id for r in runs}) == len(runs)  # no duplicate runs


def mutate(path: str, value):
    raw = copy.deepcopy(PARAMS)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


DELETE = object()

# (mutation path, value, text the message must contain)
BAD = [
    ("bogus_top_level", 1, "bogus_top_level"),
    ("data.allow_downlaod", True, "allow_downlaod"),
    ("train.learning_rate", 0.1, "learning_rate"),
    ("train.lr", -0.1, "lr"),
    ("train.lr", 0, "lr"),
    ("train.epochs", "five", "epochs"),
    ("train.batch_size", 0, "batch_size"),
    ("profiles.quick.seeds", [], "seeds"),
    ("profiles.quick.seeds", [0, 0], "seeds"),
    ("dimensions.init.grid.init", [], "init"),
    ("dimensions.init.grid.init", ["he_magic"], "he_magic"),
    ("dimensions.lr.grid.lr", [0.1, -1.0], "lr"),
    ("workloads.fmnist_mlp.dataset", "imagenet", "imagenet"),
    ("workloads.fmnist_mlp.model", "transformer", "transformer"),
    ("dimensions.init.workloads", ["no_such_workload"], "no_such_workload"),
    ("dimensions.bogus_dim", {"workloads": ["fmnist_mlp"], "grid": {"nonsense": [1]}}, "nonsense"),
    ("profiles.quick.dimensions.no_dim", {}, "no_dim"),
    ("profile", "huge", "huge"),
    ("workloads.fmnist_mlp.fixed.activation", "swishy", "swishy"),
    ("profiles.full.report_dir", "/tmp/elsewhere", "profiles.full.report_dir"),  # outside reports/
    ("profiles.full.report_dir", "reports/../results", "reports/../results"),
    ("profiles.quick.datasets.imagenet", {"max_train": None}, "profiles.quick.datasets.imagenet"),
    ("profiles.quick.datasets.digits", {"max_trian": 10}, "max_trian"),
    ("profiles.quick.datasets.digits", {"max_train": 5}, "max_train"),
]


def test_each_profile_reports_to_its_own_folder():
    """The full profile publishes to reports/full, so a GPU run never overwrites the
    default profile's published reports/report.md (README)."""
    dirs = {name: validate({**PARAMS, "profile": name}).active.report_dir for name in PARAMS["profiles"]}
    assert dirs == {"quick": "reports", "full": "reports/full"}
    assert validate(mutate("profiles.full.report_dir", "reports/full/")).profiles["full"].report_dir == "reports/full"


@pytest.mark.parametrize("path,value,needle", BAD, ids=[b[0] + "=" + repr(b[1])[:20] for b in BAD])
def test_bad_input_names_key(path, value, needle):
    with pytest.raises(config.ConfigError) as err:
        validate(mutate(path, value))
    assert needle in str(err.value)


def test_layering_later_wins():
    p = validate(PARAMS)
    runs = grid.job_runs(p, "fmnist_cnn", "init")
    assert {r.config.optimizer for r in runs} == {"sgd"}  # dimension fixed beats train
    assert {r.config.width for r in runs} == {16}  # workload fixed
    assert {r.config.init for r in runs} == set(PARAMS["dimensions"]["init"]["grid"]["init"])
    assert {r.seed for r in runs} == set(PARAMS["profiles"]["quick"]["seeds"])


def test_profile_grid_override():
    p = validate(PARAMS)
    depths = {r.config.depth for r in grid.job_runs(p, "fmnist_mlp", "residual")}
    assert depths == set(PARAMS["profiles"]["quick"]["grids"]["residual"]["depth"])
    full = validate({**PARAMS, "profile": "full"})
    assert {r.config.depth for r in grid.job_runs(full, "fmnist_mlp", "residual")} == set(PARAMS["dimensions"]["residual"]["grid"]["depth"])


def test_a_datasets_own_cap_replaces_only_the_key_it_sets():
    raw = mutate("profiles.quick.datasets", {"digits": {"max_train": None}, "mnist": {"max_test": 50}})
    prof = validate(raw).active
    assert prof.caps("digits") == (None, prof.max_test)          # all training data, test capped
    assert prof.caps("mnist") == (prof.max_train, 50)
    assert prof.caps("fashion_mnist") == (prof.max_train, prof.max_test) == (2000, 500)


def test_shipped_quick_profile_keeps_all_token_data():
    """C02's speed half needs the whole synthetic token set on the quick profile (params.yaml)."""
    assert validate(PARAMS).active.caps("synth_tokens") == (None, None)


def test_c02_compares_the_embedding_inits_at_both_vocabularies():
    """At 2,000 tokens glorot_uniform's bound (0.054) nearly equals uniform's 0.05; the
    word-sized vocabulary is where the two inits differ (claims.py's C02 note)."""
    from tunebench.data import TOKEN_VOCABS

    p = validate(PARAMS)
    used = {p.workloads[w].dataset for w in p.dimensions["embed_init"].workloads}
    assert used == set(TOKEN_VOCABS)


def test_load_reports_file_and_yaml_errors(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("profile: [unclosed")
    with pytest.raises(config.ConfigError, match="p.yaml"):
        config.load(bad)


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
