"""The report's provenance: what it says about how the engine computed must follow the
engine's own settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tunebench import engine, report


def test_report_states_how_the_engine_computes_on_cuda(monkeypatch):
    """The report's precision line follows the engine's settings, so changing the CUDA
    convolution or the side-by-side groups cannot leave it stale."""

    assert "fused Triton" in report.cuda_precision_note() and "up to 8 architecture groups" in report.cuda_precision_note()
    monkeypatch.setitem(engine.CUDA_CONV_IMPL, "fp32", "native")
    monkeypatch.setattr(engine, "CUDA_CONCURRENT_GROUPS", 1)
    assert "cuDNN" in report.cuda_precision_note() and "up to 1 architecture" in report.cuda_precision_note()


def _contrasts_of_every_claim():
    from tunebench.claims import CLAIMS

    return [pytest.param(claim.id, c, id=f"{claim.id}-{i}") for claim in CLAIMS for i, c in enumerate(claim.contrasts)]


@pytest.mark.parametrize("claim_id, contrast", _contrasts_of_every_claim())
def test_the_printed_prediction_is_the_bound_the_verdict_rule_tests(claim_id, contrast):
    """The verdict table prints the raw effect (treatment - control) beside what the advice
    predicts of it: "> 0", "< 0", or a non-inferiority bound. An effect 0.002 inside that
    bound must be judged supported, and one 0.002 outside it must not, for every contrast
    of every claim, so the printed text and the verdict rule cannot drift apart (0.002 is
    under every margin, 0.005-0.01, so a bound printed with the wrong sign fails)."""
    from tunebench import judge

    text = report.predicted(contrast.expected, contrast.margin)
    op, bound = text.split(" ")
    inward = 1.0 if op == ">" else -1.0
    noise = np.array([-2, 1, 0, 2, -1]) * 1e-4  # 5 paired seeds, sd ~0.00016
    control = np.full(5, 0.5)
    verdicts = {}
    for side, offset in (("inside", 0.002), ("outside", -0.002)):
        treatment = control + float(bound) + inward * offset + noise
        row = {"claim": claim_id, "contrast": contrast.label, "workload": "w", "metric": contrast.metric,
               "treatment": "t", "control": "c", "expected": contrast.expected, "margin": contrast.margin,
               "stated": None, "treatment_values": list(treatment), "control_values": list(control),
               "seeds": list(range(5)), "treatment_diverged": 0.0, "control_diverged": 0.0}
        judged = judge.judge([row]).iloc[0]
        verdicts[side] = judged["verdict"]
        # The reason quotes the interval the tables print (the raw difference's, not the
        # shifted one the non-inferiority test runs on) and the bound it is held against.
        assert f"CI [{judged['ci_low']:.4g}, {judged['ci_high']:.4g}]" in judged["reason"], judged["reason"]
        if contrast.margin:
            assert f"non-inferiority bound {float(bound):.4g}" in judged["reason"], judged["reason"]
    assert verdicts["inside"] == "supported", (text, verdicts)
    assert verdicts["outside"] != "supported", (text, verdicts)


def test_the_verdict_table_prints_each_workloads_prediction_beside_its_effect():
    """One line per workload, in the effect column's order: a lower-is-better metric reads
    "< 0", a non-inferiority contrast its margin."""
    import pandas as pd

    contrasts = pd.DataFrame([
        {"claim": "C05", "workload": "a", "effect": -2.0, "ci_low": -3.0, "ci_high": -1.0, "p_holm": 0.01,
         "expected": -1, "margin": float("nan"), "n": 5},
        {"claim": "C05", "workload": "b", "effect": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_holm": 1.0,
         "expected": -1, "margin": float("nan"), "n": 5},
        {"claim": "C18", "workload": "a", "effect": 0.01, "ci_low": 0.0, "ci_high": 0.02, "p_holm": 0.2,
         "expected": 1, "margin": 0.005, "n": 5},
    ])
    claims_v = pd.DataFrame([{"claim": "C05", "workload": "all", "verdict": "mixed"},
                             {"claim": "C18", "workload": "all", "verdict": "inconclusive"}])
    table = report.verdict_table(contrasts, claims_v, 5).splitlines()
    names = [c.strip() for c in table[0].split("|")]
    rows = {cells["claim"]: cells for line in table[2:]
            for cells in [dict(zip(names, (c.strip() for c in line.split("|"))))]}
    assert rows["[C05](#c05)"]["primary effect [95% CI] per workload"] == "a: -2.000 [-3.000, -1.000]<br>b: 0.000 [0.000, 0.000]"
    assert rows["[C05](#c05)"]["advice predicts"] == "< 0<br>< 0"
    assert rows["[C18](#c18)"]["advice predicts"] == "> -0.005"
    assert rows["[C01](#c01)"]["advice predicts"] == "–"  # no runs: no prediction printed either


def test_contrast_table_gives_the_wilcoxon_p_beside_the_t_tests():
    """The distribution-free check sits in the table, not only in contrasts.csv: with 3
    seeds it cannot go below 0.25, which a reader weighs against a t-test p of 0."""
    import pandas as pd

    row = {"workload": "w", "contrast": "c", "treatment": "t", "control": "k", "metric": "diverged",
           "effect": 1.0, "ci_low": 1.0, "ci_high": 1.0, "p": 0.0, "p_holm": 0.0, "p_wilcoxon": 0.25,
           "treatment_diverged": 1.0, "control_diverged": 0.0, "verdict": "supported", "reason": "", "n": 3}
    varied = {**row, "effect": 0.9, "ci_low": 0.7, "ci_high": 1.0, "p": 0.004, "p_holm": 0.01}
    header, _, same, other = report.contrast_table(pd.DataFrame([row, varied])).splitlines()
    names = [c.strip() for c in header.split("|")]
    same, other = (dict(zip(names, [c.strip() for c in line.split("|")])) for line in (same, other))
    assert same["p (adj.)"] == "<0.001 (<0.001)" and same["p Wilcoxon"] == "0.250"
    # A supported verdict that rests on the zero-variance rule says so in the table itself.
    assert same["verdict"] == ("supported: the same difference on all n=3 seeds, so the t-test's p is 0 by rule"
                               " (Wilcoxon p=0.25)")
    assert other["verdict"] == "supported"


def test_the_report_says_what_its_seeds_can_resolve():
    """The note takes the family from the contrasts with a p (Holm leaves NaN out) and the
    seeds from the contrasts, and gives the bound for those seeds and for 5 and 10."""
    import pandas as pd

    contrasts = pd.DataFrame({"p": [0.01] * 149 + [1.0, float("nan")], "n": [3] * 151})
    note = report.resolution_note(contrasts)
    assert "holds 150 contrasts" in note and "p < 0.05/150" in note
    assert "at least 31.6 standard deviations" in note and "(31.6 with 3, 5.1 with 5, 1.8 with 10 seeds" in note
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


def _time_to_target_row(treatment, control, t_reached, c_reached, workload="w"):
    return {"claim": "C05", "contrast": "good vs bad: epochs to target", "workload": workload,
            "metric": "epochs_to_target", "treatment": "t", "control": "c", "expected": -1, "margin": None,
            "stated": None, "treatment_values": list(map(float, treatment)), "control_values": list(map(float, control)),
            "seeds": list(range(len(treatment))), "treatment_diverged": 0.0, "control_diverged": 0.0,
            "treatment_reached": list(t_reached), "control_reached": list(c_reached)}


def test_a_target_neither_arm_reached_is_not_measured_and_leaves_holms_family():
    """Both arms at the budget + 1 stand-in on every seed give differences of 0: that is
    "the target is out of reach", not "no difference". It gets no p, so it cannot tighten
    Holm's correction for the contrasts that were measured."""
    from tunebench import judge

    measured = _time_to_target_row([2, 3, 2, 3, 2], [4, 5, 5, 4, 5], [True] * 5, [True] * 5, "a")
    never = _time_to_target_row([6] * 5, [6] * 5, [False] * 5, [False] * 5, "b")
    alone = judge.judge([measured])
    both = judge.judge([measured, never]).set_index("workload")
    assert both.loc["b", "verdict"] == "inconclusive" and both.loc["b", "reason"].startswith("not measured")
    assert np.isnan(both.loc["b", "p"]) and np.isnan(both.loc["b", "p_holm"])
    assert both.loc["a", "p_holm"] == pytest.approx(alone["p_holm"].iloc[0])
    assert (both.loc["b", "treatment_reached"], both.loc["b", "control_reached"]) == (0.0, 0.0)
    assert (both.loc["a", "treatment_reached"], both.loc["a", "control_reached"]) == (1.0, 1.0)
    assert "reached" not in both.loc["a", "reason"]


def test_a_partly_censored_contrast_keeps_its_verdict_and_counts_the_stand_ins():
    """The treatment reaches the target on every seed, the control on 2 of 5: the gap is
    clear (supported), and the reason and the table say 3 control seeds are stand-ins."""
    import pandas as pd

    from tunebench import judge

    row = _time_to_target_row([2, 2, 3, 2, 2], [5, 4, 6, 6, 6], [True] * 5, [True, True, False, False, False])
    out = judge.judge([row])
    assert out["verdict"].iloc[0] == "supported"
    assert "0/5 treatment and 3/5 control seeds" in out["reason"].iloc[0]
    assert out["control_reached"].iloc[0] == pytest.approx(0.4)
    header, _, line = report.contrast_table(out).splitlines()
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in line.split("|")]))
    assert cells["reached target T/C"] == "100%/40%"
    # A table of accuracy contrasts has no such column.
    acc = {**row, "metric": "final_test_acc", "expected": 1}
    del acc["treatment_reached"], acc["control_reached"]
    assert "reached target" not in report.contrast_table(judge.judge([acc]))
    assert pd.isna(judge.judge([acc])["treatment_reached"].iloc[0])


def test_contrast_rows_carry_each_seeds_reached_flag_from_the_runs():
    """judge.contrast_row pairs the runs' reached_target by seed for a time-to-target metric,
    and for no other metric."""
    import pandas as pd

    from tunebench import judge
    from tunebench.claims import A, Contrast

    runs = pd.DataFrame([
        {"workload": "w", "dimension": "init", "arm": f"init={arm}", "arm_init": arm, "seed": seed,
         "best_val_acc": 0.9, "final_test_acc": 0.9, "diverged": 0.0,
         "epochs_to_target": 2.0 if reached else 6.0, "reached_target": float(reached)}
        for arm, flags in (("good", [True, True, True]), ("bad", [True, False, False]))
        for seed, reached in zip((2, 0, 1), flags)  # rows out of seed order: pairing is by seed
    ])
    speed = Contrast("good vs bad", A("init", init="good"), A("init", init="bad"), "epochs_to_target", -1)
    row = judge.contrast_row(runs, "C05", speed, "w", regression=False)
    assert row["seeds"] == [0, 1, 2]
    assert row["control_reached"] == [False, False, True] and row["treatment_reached"] == [True] * 3
    assert row["control_values"] == [6.0, 6.0, 2.0]
    accuracy = Contrast("good vs bad", A("init", init="good"), A("init", init="bad"), "final_test_acc", +1)
    assert "control_reached" not in judge.contrast_row(runs, "C05", accuracy, "w", regression=False)


def test_the_verdict_table_says_not_measured_instead_of_a_zero_effect():
    import pandas as pd

    contrasts = pd.DataFrame([
        {"claim": "C02", "workload": "a", "effect": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_holm": float("nan"),
         "expected": -1, "margin": float("nan"), "n": 5, "treatment_reached": 0.0, "control_reached": 0.0},
        {"claim": "C02", "workload": "b", "effect": -1.0, "ci_low": -2.0, "ci_high": 0.0, "p_holm": 0.5,
         "expected": -1, "margin": float("nan"), "n": 5, "treatment_reached": 1.0, "control_reached": 0.0},
    ])
    claims_v = pd.DataFrame([{"claim": "C02", "workload": "all", "verdict": "inconclusive"}])
    line = next(x for x in report.verdict_table(contrasts, claims_v, 5).splitlines() if x.startswith("| [C02"))
    assert "a: not measured (neither arm reached the target)<br>b: -1.000 [-2.000, 0.000]" in line


def test_recipe_table_gives_each_workload_its_own_settings():
    """The setup of a claim shows what the runs used: the profile's epochs, each workload's
    width, and "–" where a workload's layers set nothing (a softmax regression's width)."""
    from tunebench import config

    p = config.load(Path(__file__).resolve().parents[1] / "params.yaml", profile="quick")
    table = report.recipe_table(p, "init").set_index("workload")
    assert (table["epochs"] == p.active.dimensions["init"]["epochs"]).all()  # the quick profile's
    assert table.loc["fmnist_cnn", "width"] == p.workloads["fmnist_cnn"].fixed["width"]
    assert table.loc["fmnist_softmax", "width"] == "–"
    assert "init" not in table  # the arm's own key is in the arms, not the recipe
