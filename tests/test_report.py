"""The report's rendering: provenance and compute, the verdict table (what the advice
predicts beside each effect, for every contrast of every claim), the contrast tables, what the
seeds can resolve, and the setup tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tunebench.core import engine
from tunebench.analysis import judge
from tunebench.reporting import report


def test_report_states_how_the_engine_computes_on_cuda(monkeypatch):
    """The report's precision line follows the engine's settings, so changing the CUDA
    convolution or the side-by-side groups cannot leave it stale."""

    assert "fused Triton" in report.cuda_precision_note() and "up to 8 architecture groups" in report.cuda_precision_note()
    monkeypatch.setitem(engine.CUDA_CONV_IMPL, "fp32", "native")
    monkeypatch.setattr(engine, "CUDA_CONCURRENT_GROUPS", 1)
    assert "cuDNN" in report.cuda_precision_note() and "up to 1 architecture" in report.cuda_precision_note()


def _claims():
    from tunebench.spec import claims, config

    root = Path(__file__).resolve().parents[1]
    params = config.load(root / "params.yaml")
    return claims.load(params.claims, params, root=root)


def test_the_verdict_table_prints_each_workloads_prediction_beside_its_effect():
    """One line per workload, in the effect column's order: a lower-is-better metric reads
    "< 0", a non-inferiority contrast its margin; secondary refutations get their column."""
    import pandas as pd

    base = {"primary": True, "source": "post", "margin": float("nan"), "n": 12, "equivalence": 0.5,
            "verdict": "supported", "contrast": "c"}
    contrasts = pd.DataFrame([
        {**base, "claim": "C05", "workload": "a", "effect": -2.0, "ci_low": -3.0, "ci_high": -1.0, "p_adj": 0.01,
         "expected": -1},
        {**base, "claim": "C05", "workload": "b", "effect": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_adj": 1.0,
         "expected": -1, "verdict": "unresolved"},
        {**base, "claim": "C18", "workload": "a", "effect": 0.01, "ci_low": 0.0, "ci_high": 0.02, "p_adj": 0.2,
         "expected": 1, "margin": 0.005, "equivalence": 0.01},
        {**base, "claim": "C18", "workload": "a", "effect": -0.05, "ci_low": -0.07, "ci_high": -0.03, "p_adj": 0.01,
         "expected": 1, "primary": False, "verdict": "refuted", "contrast": "adam vs the best other, default lr"},
    ])
    claims_v = pd.DataFrame([{"claim": c.id, "workload": "all", "verdict": "not run", "detail": ""} for c in _claims()])
    table = report.verdict_table(contrasts, claims_v, _claims(), "post").splitlines()
    names = [c.strip() for c in table[0].split("|")]
    rows = {cells["claim"]: cells for line in table[2:]
            for cells in [dict(zip(names, (c.strip() for c in line.split("|"))))]}
    assert rows["[C05](#c05)"]["primary effect [95% CI] per workload"] == "a: -2.000 [-3.000, -1.000]<br>b: 0.000 [0.000, 0.000]"
    assert rows["[C05](#c05)"]["advice predicts"] == "< 0<br>< 0"
    assert rows["[C05](#c05)"]["per workload"] == "supported<br>unresolved"
    assert rows["[C18](#c18)"]["advice predicts"] == "> -0.005"
    assert rows["[C18](#c18)"]["secondary refutations (descriptive)"] == "adam vs the best other, default lr on a: -0.050"
    assert rows["[C01](#c01)"]["advice predicts"] == "–"  # no runs: no prediction printed either
    assert "[PB01](#pb01)" not in rows  # another source's table


def test_contrast_table_names_the_test_and_marks_descriptive_contrasts():
    """A primary contrast shows its p and adjusted p, a secondary one its unadjusted p only
    and "(descriptive)"; the Wilcoxon p sits beside the test's as a distribution-free check."""
    import pandas as pd

    row = {"workload": "w", "contrast": "c", "treatment": "t", "control": "k", "metric": "diverged", "primary": True,
           "effect": 1.0, "ci_low": 1.0, "ci_high": 1.0, "test": "sign-flip", "p": 0.00049, "p_adj": 0.02,
           "p_wilcoxon": 0.0005, "treatment_diverged": 1.0, "control_diverged": 0.0, "verdict": "supported",
           "reason": "r", "n": 12}
    other = {**row, "primary": False, "contrast": "d", "p": 0.3, "test": "t"}
    header, _, first, second = report.contrast_table(pd.DataFrame([row, other])).splitlines()
    names = [c.strip() for c in header.split("|")]
    first, second = (dict(zip(names, [c.strip() for c in line.split("|")])) for line in (first, second))
    assert first["p (adj.)"] == "<0.001 (0.020)" and first["test"] == "sign-flip" and first["p Wilcoxon"] == "<0.001"
    assert second["p (adj.)"] == "0.300" and second["contrast"] == "d *(descriptive)*"


def test_the_report_says_what_each_familys_seeds_can_resolve():
    import pandas as pd

    from tunebench.analysis import stats

    contrasts = pd.DataFrame({"primary": [True] * 70 + [True] * 10 + [False],
                              "source": ["post"] * 70 + ["playbook"] * 10 + ["post"],
                              "p": [0.01] * 81, "p_magnitude": [float("nan")] * 68 + [0.1, 0.1] + [float("nan")] * 11,
                              "n": [12] * 81})
    note = report.resolution_note(contrasts)
    assert f"{stats.smallest_resolvable_effect(12, 72):.2f}" in note and f"{stats.smallest_resolvable_effect(12, 10):.2f}" in note
    assert "| post " in note and "| playbook " in note
    assert report.resolution_note(pd.DataFrame()) == ""


def test_training_wall_time_starts_at_the_first_jobs_start_not_at_old_data():
    """(start, end) per training job: the span is the first job's start to the last end,
    whatever the prepared data's age."""
    jobs = [(900.0, 1_000.0), (850.0, 1_150.0), (1_100.0, 1_400.0)]
    assert report.wall_spans(jobs) == [1_400.0 - 850.0]
    assert report.wall_spans([]) == []
    assert report.wall_note([550.0]).startswith("pipeline wall time 550 s")


def test_tables_from_separate_runs_give_no_single_wall_time():
    """A rerun of a few dimensions keeps the others' tables from an hour before: the gap
    with nothing training splits the spans, and the report says there is no one wall time."""
    first = [(900.0, 1_000.0), (850.0, 1_150.0)]  # 850 to 1150
    later = [(4_850.0, 5_000.0), (4_850.0, 5_100.0)]  # 4850 to 5100, nearly 1 h later
    assert report.wall_spans(first + later) == [300.0, 250.0]
    # Gaps of a job's start-up (5 s) stay within one run.
    assert report.wall_spans([(0.0, 100.0), (105.0, 205.0)]) == [205.0]
    note = report.wall_note([300.0, 250.0])
    assert "2 bursts" in note and "300, 250 s" in note and "wall time 5" not in note


def test_compute_summary_reads_the_jobs_benchmarks_and_their_tables():
    """Training seconds come from the tables, each job's wall seconds from its Snakemake
    benchmark file and its end from its table: the share of the jobs' time spent training,
    and the pipeline's wall time from the first job's start to the last job's end."""
    import pandas as pd

    epochs = pd.DataFrame({"workload": ["w", "w", "v"], "dimension": ["d", "d", "d"],
                           "epoch_seconds": [1.0, 2.0, 4.0], "job_finished": [110.0, 110.0, 130.0]})
    search = pd.DataFrame({"workload": ["w"], "strategy": ["random"], "seconds": [3.0], "job_finished": [125.0]})
    jobs = pd.DataFrame({"table": ["results/p/ablations/w/d.parquet", "results/p/ablations/v/d.parquet",
                                   "results/p/search/w/random.parquet"], "s": [10.0, 20.0, 10.0],
                         "max_rss": [100.0, 300.0, 200.0]})
    inputs = report.Inputs(runs=pd.DataFrame(), epochs=epochs, search=search, importance={}, datasets=[], jobs=jobs)
    table = report.job_table(inputs)
    assert table["training_s"].tolist() == [3.0, 4.0, 3.0] and table["kind"].tolist() == ["ablation"] * 2 + ["search"]
    c = report.compute_summary(table)
    assert (c["ablation_seconds"], c["search_seconds"], c["job_seconds"]) == (7.0, 3.0, 40.0)
    assert c["training_share"] == 10.0 / 40.0 and c["max_rss_mb"] == 300.0
    assert c["wall_spans"] == [130.0 - 100.0]  # starts 100, 110, 115; last end 130


def test_the_verdict_table_says_not_measured_instead_of_a_zero_effect():
    import pandas as pd

    base = {"claim": "C02", "primary": True, "source": "post", "expected": -1, "margin": float("nan"), "n": 12,
            "equivalence": 0.5, "verdict": "unresolved", "contrast": "c"}
    contrasts = pd.DataFrame([
        {**base, "workload": "a", "effect": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_adj": float("nan"),
         "treatment_reached": 0.0, "control_reached": 0.0},
        {**base, "workload": "b", "effect": -1.0, "ci_low": -2.0, "ci_high": 0.0, "p_adj": 0.5,
         "treatment_reached": 1.0, "control_reached": 0.0},
    ])
    claims_v = pd.DataFrame([{"claim": c.id, "workload": "all", "verdict": "unresolved", "detail": ""} for c in _claims()])
    line = next(x for x in report.verdict_table(contrasts, claims_v, _claims(), "post").splitlines() if x.startswith("| [C02"))
    assert "a: not measured (neither arm reached the target)<br>b: -1.000 [-2.000, 0.000]" in line


def test_recipe_table_gives_each_workload_its_own_settings():
    """The setup of a claim shows what the runs used: each workload's epochs (the softmax
    regressions' own, the CNN's from the profile) and width, and "–" where a workload's layers
    set nothing (a softmax regression's width)."""
    from tunebench.spec import config

    p = config.load(Path(__file__).resolve().parents[1] / "params.yaml", profile="quick")
    table = report.recipe_table(p, "init").set_index("workload")
    assert table.loc["fmnist_softmax", "epochs"] == p.workloads["fmnist_softmax"].fixed["epochs"]
    cnn = report.recipe_table(p, "cnn_init").set_index("workload")
    assert cnn.loc["mnist_cnn", "epochs"] == p.active.train["epochs"]  # the quick profile's
    assert cnn.loc["mnist_cnn", "width"] == p.workloads["mnist_cnn"].fixed["width"]
    assert "fmnist_cnn" not in cnn.index  # skipped in the quick profile
    mixed = report.recipe_table(p, "activation").set_index("workload")  # a setting one workload lacks
    assert set(mixed.columns) >= {"model", "width", "epochs"} and "activation" not in mixed
    assert "init" not in table  # the arm's own key is in the arms, not the recipe


def test_the_report_lists_choices_at_an_edge_or_says_there_are_none():
    base = {"claim": "C1", "contrast": "c", "workload": "w", "treatment": "lr=1.0", "control": "x",
            "treatment_arms": 3, "control_arms": 1, "control_edge": ""}
    rows = pd.DataFrame([{**base, "treatment_edge": "lr=1.0 (grid max)"}])
    text = report.edge_section(rows)
    assert "1 of the 1 best-of-grid choices sit at a grid edge" in text and "lr=1.0 (grid max)" in text
    assert "None of the 1 best-of-grid choices" in report.edge_section(rows.assign(treatment_edge=""))
    assert report.edge_section(rows.assign(treatment_arms=1)) == ""  # no choice was made


# ------------------------------------------------------------------------- targets
def test_the_targets_section_checks_each_target_is_reached_and_not_at_once():
    """Per workload and dimension a time-to-target claim reads: the arm reaching the target on
    the most seeds; informative only when that is most seeds, after the first point measured."""
    from tunebench.spec import claims as C

    loaded = C.load([Path(__file__).resolve().parents[1] / "claims" / "post.yaml"])
    rows = []
    for arm, reached, when in (("a", 1.0, 2.5), ("b", 0.0, 6.0)):
        for seed in range(4):
            rows.append({"workload": "fmnist_mlp", "dimension": "optimizer", "arm": arm, "seed": seed,
                         "reached_target": reached, "epochs_to_target": when, "target_accuracy": 0.78,
                         "evals_per_epoch": 4})
    runs = pd.DataFrame(rows)
    table = report.target_rows(runs, loaded)
    assert table.iloc[0]["best arm"] == "a" and table.iloc[0]["informative"] == "yes"
    assert float(table.iloc[0]["first point measured"]) == 0.25
    at_once = report.target_rows(runs.assign(epochs_to_target=0.25), loaded)
    assert at_once.iloc[0]["informative"].startswith("**no: reached at the first point")
    never = report.target_rows(runs.assign(reached_target=0.0), loaded)
    assert never.iloc[0]["informative"].startswith("**no: reached on few seeds")
    assert "1 target(s) are not informative" in report.target_section(runs.assign(reached_target=0.0), loaded)


def test_the_measured_table_names_the_reading_closest_to_the_sources_number():
    """C01: the post saw ~70% with "normal" init; the table names the scale that comes closest."""
    from tunebench.spec import claims as C, config

    root = Path(__file__).resolve().parents[1]
    loaded = C.load([root / "claims" / "post.yaml"])
    params = config.load(root / "params.yaml", profile="quick")
    accs = {"normal_1": 0.11, "normal_0.1": 0.74, "normal_0.01": 0.95, "xavier_uniform": 0.97, "kaiming_normal": 0.97}
    runs = pd.DataFrame([{"workload": "mnist_cnn", "dimension": "cnn_init", "arm": f"init={k}", "arm_init": k,
                          "seed": s, "final_test_acc": v} for k, v in accs.items() for s in range(3)])
    text = report.measured_table(loaded.by_id["C01"], runs, params)
    assert "closest to the source's 0.700 (final test accuracy) is **normal(0,0.1)** (0.740)" in text
