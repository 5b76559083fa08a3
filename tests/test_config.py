"""params.yaml validation: every bad input names its key and value and fails before training."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tunebench.spec import config
from tunebench.core.data import DATASETS

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def validate(raw):
    return config.validate(raw, tuple(DATASETS))


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
    ("profiles.full.report_dir", "reports/full", "report_dir"),  # a profile's folders follow its name
    ("profiles.quick.seeds", [0, 1, 1], "repeated: 1"),
    ("profiles.quick.selection_seeds", [0, 100], "selection_seeds [0] are also compared seeds"),
    ("profiles.quick.dimension_seeds", {"init": [0, 100]}, "selection_seeds [100] are also compared seeds of init"),
    ("profiles.quick.dimension_seeds", {"no_dim": [0]}, "profiles.quick.dimension_seeds.no_dim"),
    ("dimensions.lr.grid.lr", [0.1, 0.1, 0.3], "lists the arm 0.1 more than once"),
    ("dimensions.l2.grid.l2", [0.0, 1, 1.0], "more than once"),  # 1 and 1.0 are one arm
    ("profiles.quick.grids.residual.depth", [2, 2], "residual"),
    ("dimensions.init.workloads", ["fmnist_cnn", "fmnist_cnn"], "repeated: fmnist_cnn"),
    ("search.study_seeds", [0, 0], "study_seeds"),
    ("profiles.smoke.search", {"study_seeds": [3, 3]}, "profiles.smoke.search"),
    ("profiles.smoke.only", {"dimensions": ["no_dim"]}, "profiles.smoke.only.dimensions"),
    ("profiles.smoke.only", {"workloads": ["no_wl"]}, "profiles.smoke.only.workloads"),
    ("profiles.smoke.only", {"dimension": ["init"]}, "dimension"),
    ("profiles", {"a/b": {"seeds": [0]}}, "a/b"),
    ("data.user", {"mine": {"path": "data/raw/mine.npz", "task": "ranking"}}, "data.user.mine.task"),
    ("data.user", {"digits": {"path": "data/raw/digits.npz"}}, "data.user.digits"),
    ("profiles.quick.datasets.imagenet", {"max_train": None}, "profiles.quick.datasets.imagenet"),
    ("profiles.quick.datasets.digits", {"max_trian": 10}, "max_trian"),
    ("profiles.quick.datasets.digits", {"max_train": 5}, "max_train"),
]


def test_each_profile_keeps_its_own_folders():
    """One profile's files never overwrite another's: every path holds the profile's name."""
    from tunebench.pipeline import layout

    paths = {name: {layout.report_dir(name), layout.results(name), layout.prepared(name, "digits"),
                    layout.ablation_table(name, "w", "d"), layout.logs(name)} for name in PARAMS["profiles"]}
    for name, own in paths.items():
        assert all(name in p.split("/") for p in own), own
        for other, theirs in paths.items():
            assert other == name or not own & theirs


@pytest.mark.parametrize("path,value,needle", BAD, ids=[b[0] + "=" + repr(b[1])[:20] for b in BAD])
def test_bad_input_names_key(path, value, needle):
    with pytest.raises(config.ConfigError) as err:
        validate(mutate(path, value))
    assert needle in str(err.value)


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
    from tunebench.core.data import TOKEN_VOCABS

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


def test_the_specs_builtin_dataset_names_are_the_data_layers():
    """The spec layer names the built-in datasets without importing the data layer (which
    sits above it); the two lists must stay one."""
    assert config.BUILTIN_DATASETS == tuple(DATASETS)
