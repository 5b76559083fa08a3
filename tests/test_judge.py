"""The judge (tunebench.analysis.judge): which arms a contrast compares and how the best of
a grid is chosen (on the selection seeds only, with a flag where the choice sits at a grid
edge), the per-seed values of the search claims, the families' Holm correction, and the
verdict rule against the prediction the report prints, for every shipped contrast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_search import planted_frame
from tunebench.analysis import judge
from tunebench.reporting import report, search_report


def _contrasts_of_every_claim():
    from tunebench.spec import claims, config

    root = Path(__file__).resolve().parents[1]
    params = config.load(root / "params.yaml")
    loaded = claims.load(params.claims, params, root=root)
    return [pytest.param(claim.id, c, id=f"{claim.id}-{i}") for claim in loaded for i, c in enumerate(claim.contrasts)]


def judge_row(contrast, treatment, control, **extra) -> dict:
    from tunebench.spec.claims import is_count

    return {"claim": "X", "source": "s", "contrast": contrast.label, "workload": "w", "dataset": "d",
            "metric": contrast.metric, "primary": True, "expected": contrast.expected, "margin": contrast.margin,
            "stated": None, "equivalence": contrast.equivalence_margin, "count": is_count(contrast.metric),
            "interaction": False, "treatment": "t", "control": "c", "treatment_values": list(treatment),
            "control_values": list(control), "seeds": list(range(len(treatment))), "treatment_diverged": 0.0,
            "control_diverged": 0.0, **extra}


@pytest.mark.parametrize("claim_id, contrast", _contrasts_of_every_claim())
def test_the_printed_prediction_is_the_bound_the_verdict_rule_tests(claim_id, contrast):
    """The verdict table prints the raw effect (treatment - control) beside what the advice
    predicts of it: "> 0", "< 0", a non-inferiority bound, or "within ±e". An effect just
    inside that bound must be judged supported, and one just outside must not, for every
    contrast of every claim, so the printed text and the verdict rule cannot drift apart."""
    text = report.predicted(contrast.expected, contrast.margin, contrast.equivalence_margin)
    control = np.full(12, 0.5)
    noise = np.array([-2, 1, 0, 2, -1, 1, -1, 0, 2, -2, 1, -1]) * 1e-4 * contrast.equivalence_margin / 0.01
    verdicts = {}
    if text.startswith("within"):
        e = contrast.equivalence_margin
        cases = {"inside": 0.3 * e, "outside": 3.0 * e}
    else:
        op, bound = text.split(" ")
        inward = 1.0 if op == ">" else -1.0
        step = 0.2 * contrast.equivalence_margin
        cases = {"inside": float(bound) + inward * step, "outside": float(bound) - inward * step}
    for side, shift in cases.items():
        row = judge_row(contrast, control + shift + noise, control)
        judged = judge.judge([row]).iloc[0]
        verdicts[side] = judged["verdict"]
    assert verdicts["inside"] == "supported", (text, verdicts)
    assert verdicts["outside"] != "supported", (text, verdicts)


# ------------------------------------------------------------------------- grid-edge check
def _runs_for_edges(factor: str, values: list, best, other: dict | None = None) -> pd.DataFrame:
    """One workload's runs of dimension "d": an arm per value of `factor` (times the values of
    `other`), selection seed 100 scoring `best` highest, compared seeds 0-2."""
    import itertools

    other = other or {}
    rows = []
    keys = [factor, *other]
    for combo in itertools.product(values, *other.values()):
        arm = ",".join(f"{k}={v}" for k, v in zip(keys, combo))
        for seed in (100, 0, 1, 2):
            rows.append({"workload": "w", "dimension": "d", "arm": arm, "seed": seed,
                         **{f"arm_{k}": str(v) for k, v in zip(keys, combo)},
                         "final_val_acc": 0.9 if combo[0] == best else 0.5, "final_test_acc": 0.5 + seed / 100,
                         "diverged": 0.0})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("values, best, edge", [
    ([0.01, 0.1, 1.0], 1.0, "lr=1.0 (grid max)"),
    ([0.01, 0.1, 1.0], 0.01, "lr=0.01 (grid min)"),
    ([0.01, 0.1, 1.0], 0.1, ""),
])
def test_a_best_arm_at_its_grids_edge_is_flagged(values, best, edge):
    from tunebench.spec.claims import Selector

    runs = _runs_for_edges("lr", values, best, {"optimizer": ["sgd", "adam"]})
    sel = Selector.model_validate({"dimension": "d", "optimizer": "sgd"})
    m = judge.arm_matrices(runs, "w", [sel], "final_test_acc", False, frozenset({100}))
    values_out, arm, _, _, got = judge._chosen(m)
    assert arm == f"lr={best},optimizer=sgd" and got == edge


def test_unbounded_null_and_fixed_factors_are_not_edges():
    """patience null (no early stopping) is the unbounded end of its grid, so the largest finite
    patience is interior; a factor the selector fixes was not chosen, so it is no edge."""
    from tunebench.spec.claims import Selector

    runs = _runs_for_edges("patience", [None, 1, 2, 4], 4)
    chosen = Selector.model_validate({"dimension": "d", "patience": [1, 2, 4]})
    m = judge.arm_matrices(runs, "w", [chosen], "final_test_acc", False, frozenset({100}))
    assert judge._chosen(m)[4] == ""
    runs = _runs_for_edges("patience", [None, 1, 2, 4], 1)
    m = judge.arm_matrices(runs, "w", [chosen], "final_test_acc", False, frozenset({100}))
    assert judge._chosen(m)[4] == "patience=1 (grid min)"
    one = Selector.model_validate({"dimension": "d", "patience": 4})
    m = judge.arm_matrices(runs, "w", [one], "final_test_acc", False, frozenset({100}))
    assert judge._chosen(m)[4] == ""  # nothing was chosen




# ------------------------------------------------------------------------- choice on selection seeds
def test_the_best_arm_is_chosen_on_the_selection_seeds_and_compared_on_the_others():
    """The selection seed's validation score picks the arm; the compared values are the other
    seeds' test accuracies, so the choice cannot flatter the comparison."""
    from tunebench.spec.claims import Selector

    runs = _runs_for_edges("lr", [0.01, 0.1, 1.0], 0.1)
    sel = Selector.model_validate({"dimension": "d", "lr": [0.01, 0.1, 1.0]})
    m = judge.arm_matrices(runs, "w", [sel], "final_test_acc", False, frozenset({100}))
    assert m["seeds"] == [0, 1, 2] and m["selection_seeds"] == [100]
    values, arm, *_ = judge._chosen(m)
    assert arm == "lr=0.1" and list(values) == pytest.approx([0.5, 0.51, 0.52])
    # Several arms and no selection seed: no fair choice, no contrast.
    assert judge.arm_matrices(runs[runs.seed != 100], "w", [sel], "final_test_acc", False, frozenset({100})) is None


# ------------------------------------------------------------------------- families
def _row(source: str, shift: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    control = rng.normal(0.8, 0.01, 12)
    return {"claim": f"C{seed}", "source": source, "contrast": "c", "workload": "w", "dataset": "d",
            "metric": "final_test_acc", "primary": True, "expected": 1, "margin": None, "stated": None,
            "equivalence": 0.01, "count": False, "interaction": False, "treatment": "t", "control": "c",
            "treatment_values": list(control + shift + rng.normal(0, 0.005, 12)), "control_values": list(control),
            "seeds": list(range(12)), "treatment_diverged": 0.0, "control_diverged": 0.0}


def test_holm_runs_within_each_sources_family_and_not_over_descriptive_rows():
    """Each source's primary contrasts are one family (Holm); a secondary contrast keeps its
    raw p and says it is descriptive; another source's rows do not change a family's p."""
    from statsmodels.stats.multitest import multipletests

    rows = [_row("post", 0.004, s) for s in range(3)] + [_row("playbook", 0.004, s) for s in range(3, 5)]
    rows.append({**_row("post", 0.004, 9), "primary": False})
    df = judge.judge(rows)
    for source in ("post", "playbook"):
        fam = df[df.primary & (df.source == source)]
        assert list(fam["p_adj"]) == pytest.approx(list(multipletests(fam["p"], method="holm")[1]))
        assert set(fam["adjustment"]) == {f"Holm, family {source}"}
    alone = judge.judge([r for r in rows if r["source"] == "post"])
    assert list(alone[alone.primary]["p_adj"]) == pytest.approx(list(df[df.primary & (df.source == "post")]["p_adj"]))
    descriptive = df[~df.primary].iloc[0]
    assert descriptive["p_adj"] == descriptive["p"] and descriptive["adjustment"] == "none (descriptive)"


def test_a_claims_verdict_summarises_its_primary_contrasts_per_workload():
    from tunebench.spec import claims, config

    root = Path(__file__).resolve().parents[1]
    params = config.load(root / "params.yaml")
    loaded = claims.load(params.claims, params, root=root)
    first = next(iter(loaded))
    rows = [{**_row(loaded.source_of[first.id].id, 0.02, s), "claim": first.id, "workload": f"w{s}"} for s in range(2)]
    rows.append({**rows[0], "primary": False, "workload": "w9"})
    v = judge.claim_verdicts(judge.judge(rows), loaded)
    mine = v[v.claim == first.id].set_index("workload")
    assert list(mine.index) == ["w0", "w1", "all"]  # the secondary row is no workload of the verdict
    assert set(mine.loc[["w0", "w1"], "verdict"]) == {"supported"} and mine.loc["all", "verdict"] == "supported"
    assert (v[v.claim != first.id].set_index("workload").loc["all", "verdict"] == "not run").all()


def test_search_claims_pair_study_seeds_and_count_never_reached_as_budget_plus_one():
    """The search claims' per-seed values (judge.search_row over study_metrics and the
    best-so-far curves): a study that never reached the target counts budget + 1 trials and
    total seconds x (budget + 1) / budget, flagged as not reached; a strategy at a share of its
    budget takes its best so far at that many trials."""
    from tunebench.spec.claims import Contrast

    df = planted_frame()
    studies, curves = search_report.study_metrics(df, 0.8), search_report.best_so_far(df)
    trials = Contrast.model_validate({"label": "t", "treatment": {"strategy": "grid"}, "control": {"strategy": "tpe"},
                                      "metric": "trials_to_target", "direction": "higher"})
    row = judge.search_row(studies, curves, trials, "a")
    assert row["seeds"] == [0, 1, 2] and row["treatment"] == "grid" and row["control"] == "tpe"
    assert row["treatment_values"][2] == 9.0  # never reached: budget + 1
    assert row["treatment_reached"] == [True, True, False]
    seconds = trials.model_copy(update={"metric": "seconds_to_target"})
    assert judge.search_row(studies, curves, seconds, "a")["treatment_values"][2] == pytest.approx(9.0)  # 8 s x 9 / 8
    best = Contrast.model_validate({"label": "b", "treatment": {"strategy": "qmc"},
                                    "control": {"strategy": "tpe", "budget": 0.5}, "metric": "best_val",
                                    "direction": "higher"})
    half = judge.search_row(studies, curves, best, "a")
    at4 = curves[(curves.workload == "a") & (curves.strategy == "tpe") & (curves.k == 4)].set_index("study_seed")
    assert half["control_values"] == [float(at4.loc[s, "best_val"]) for s in half["seeds"]]
    assert "treatment_reached" not in half
    # Only strategies present are paired.
    gone = Contrast.model_validate({"label": "g", "treatment": {"strategy": "gp"}, "control": {"strategy": "grid"},
                                    "metric": "best_val", "direction": "higher"})
    d = df[df.strategy != "gp"]
    assert judge.search_row(search_report.study_metrics(d, 0.8), search_report.best_so_far(d), gone, "a") is None
