"""The claims files: schema, validation against params.yaml, and the registry-driven checks
every claim must pass (its quote is the source's own words, exactly one primary contrast per
workload, no contrast twice in a source, selectors that match arms in every profile)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tunebench.spec import claims as C
from tunebench.spec import config, grid
from tunebench.spec.config import ConfigError
from tunebench.core.data import DATASETS

ROOT = Path(__file__).resolve().parents[1]
PARAMS_RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
PARAMS = config.validate(PARAMS_RAW, tuple(DATASETS))
CLAIMS = C.load(PARAMS.claims, PARAMS, root=ROOT)


def test_the_shipped_claims_files_load_for_every_profile():
    for profile in PARAMS_RAW["profiles"]:
        p = config.validate({**PARAMS_RAW, "profile": profile}, tuple(DATASETS))
        C.load(p.claims, p, root=ROOT)
    assert set(CLAIMS.sources) == {"post", "playbook", "controls"}
    assert [c.id for c in CLAIMS if CLAIMS.source_of[c.id].id == "post"] == [f"C{i:02d}" for i in range(1, 30)]
    assert len([c for c in CLAIMS if CLAIMS.source_of[c.id].id == "playbook"]) >= 8


@pytest.mark.parametrize("claim", list(CLAIMS), ids=lambda c: c.id)
def test_every_claim_says_what_it_tests(claim):
    source = CLAIMS.source_of[claim.id]
    assert claim.paraphrase and claim.prediction and claim.contrasts
    if source.kind == "advice":
        assert claim.quote.strip(), claim.id
    if source.language != "en":
        assert claim.translation, claim.id
    for c in claim.contrasts:
        assert c.metric in C.METRICS and c.equivalence_margin > 0


def test_each_claim_has_one_primary_contrast_per_workload_in_the_default_profile():
    for claim in CLAIMS:
        seen: dict[str, int] = {}
        for c in claim.contrasts:
            for wl in C.contrast_workloads(c, PARAMS):
                seen[wl] = seen.get(wl, 0) + c.primary
        assert all(v == 1 for v in seen.values()), (claim.id, seen)


def test_the_a_a_control_runs_in_the_default_and_smoke_profiles():
    for profile in ("quick", "smoke"):
        p = config.validate({**PARAMS_RAW, "profile": profile}, tuple(DATASETS))
        assert grid.dimension_workloads(p, "replicate"), profile


def write(tmp_path: Path, data: dict, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def post_data() -> dict:
    return yaml.safe_load((ROOT / "claims" / "post.yaml").read_text(encoding="utf-8"))


def first_contrast(data: dict, claim_id: str = "C01") -> dict:
    return next(c for c in data["claims"] if c["id"] == claim_id)["contrasts"][0]


BAD = [
    (lambda d: d["claims"][0].update(bogus=1), "claims.C01.bogus: unknown key"),
    (lambda d: first_contrast(d).update(metric="accuracy"), "unknown metric 'accuracy'"),
    (lambda d: first_contrast(d).update(direction="up"), "direction"),
    (lambda d: first_contrast(d)["treatment"].update(init="he_magic"),
     "claim C01, contrast 'xavier_uniform vs normal(0,1)': selector 'cnn_init: init=he_magic' matches no arm"),
    (lambda d: first_contrast(d)["treatment"].update(nonsense=1), "'nonsense' is not a key of dimensions.cnn_init.grid"),
    (lambda d: first_contrast(d)["treatment"].update(dimension="no_dim"), "unknown dimension 'no_dim'"),
    (lambda d: first_contrast(d).update(primary=False), "claim C01: no primary contrast on workload"),
    (lambda d: next(c for c in d["claims"] if c["id"] == "C01")["contrasts"][1].update(primary=True),
     "claim C01: 2 primary contrasts"),
    (lambda d: d["claims"][0].update(translation=None), "need a translation"),
    (lambda d: d["claims"][0].update(quote=""), "need the source's words"),
    (lambda d: next(c for c in d["claims"] if c["id"] == "C02")["contrasts"].append(
        copy.deepcopy(next(c for c in d["claims"] if c["id"] == "C02")["contrasts"][0]) | {"primary": False, "label": "again"}),
     "the same contrast as claim C02"),
    (lambda d: first_contrast(d, "C26").update(treatment={"strategy": "annealing"}), "unknown search strategy 'annealing'"),
]


@pytest.mark.parametrize("change, needle", BAD, ids=[b[1][:40] for b in BAD])
def test_a_bad_claims_file_fails_naming_the_claim(tmp_path, change, needle):
    data = post_data()
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        C.load([path], PARAMS)
    assert needle in str(err.value), str(err.value)


def test_a_selector_must_match_an_arm_in_every_profile_where_its_dimension_runs(tmp_path):
    """The quick profile's residual grid stops at depth 16: a selector of depth 32 fails
    there, naming the profile, though the full profile has such arms."""
    data = post_data()
    c21 = next(c for c in data["claims"] if c["id"] == "C21")
    c21["contrasts"][0]["treatment"]["depth"] = 32
    c21["contrasts"][0]["control"]["depth"] = 32
    with pytest.raises(ConfigError, match="matches no arm of profile 'quick'"):
        C.load([write(tmp_path, data)], PARAMS)


def test_figure_groups_name_the_claims_that_read_a_dimension():
    assert CLAIMS.figure_group("init-arms").startswith("C03, C05: init")
    assert CLAIMS.figure_group("cnn_init-arms").startswith("C01, C05: cnn_init")
    assert CLAIMS.figure_group("verdicts") == "Verdicts"
    assert "C26" in CLAIMS.figure_group("search-best_so_far") and "PB03" in CLAIMS.figure_group("search-edf-x")
