"""tunebench.pipeline.snakelog on a log in Snakemake 9's format: job spans, side-by-side training
jobs, failures, a run cut off by a time limit, and the CLI."""

from __future__ import annotations

import json

import pytest

from tunebench.pipeline import snakelog


def header(stamp: str, rule: str, jobid: int, wildcards: str = "", local: bool = False) -> str:
    lines = [f"[{stamp}]", f"{'local' if local else ''}rule {rule}:", "    output: x", f"    jobid: {jobid}",
             "    reason: Missing output files: x"]
    if wildcards:
        lines.append(f"    wildcards: {wildcards}")
    return "\n".join(lines + ["    resources: tmpdir=/tmp, gpu=1"])


def finished(stamp: str, jobid: int, rule: str, done: int, total: int) -> str:
    return f"[{stamp}]\nFinished jobid: {jobid} (Rule: {rule})\n{done} of {total} steps ({100 * done // total}%) done"


# prepare (local) -> two ablations side by side -> a third starts when the first ends and
# fails -> a search starts and is still running when the log ends (a time limit).
LOG = "\n".join([
    "Building DAG of jobs...", "Job stats:", "job  count", "total  5",
    header("Thu Nov 26 18:06:42 2026", "prepare_data", 4, "dataset=digits", local=True),
    finished("Thu Nov 26 18:06:45 2026", 4, "prepare_data", 1, 5),
    header("Thu Nov 26 18:06:45 2026", "run_ablation", 7, "workload=digits_mlp, dimension=init"),
    header("Thu Nov 26 18:06:46 2026", "run_ablation", 8, "workload=digits_mlp, dimension=lr"),
    finished("Thu Nov 26 18:07:45 2026", 7, "run_ablation", 2, 5),
    header("Thu Nov 26 18:07:45 2026", "run_ablation", 9, "workload=digits_cnn, dimension=batchnorm"),
    "[Thu Nov 26 18:07:50 2026]", "Error in rule run_ablation:", "    message: None", "    jobid: 9",
    "    output: results/ablations/digits_cnn/batchnorm.parquet",
    finished("Thu Nov 26 18:08:46 2026", 8, "run_ablation", 3, 5),
    header("Thu Nov 26 18:08:46 2026", "run_search", 11, "workload=digits_mlp, strategy=tpe"),
    "[Thu Nov 26 18:09:46 2026]", "Terminating processes on user request, this might take some time.",
])


def test_job_spans_give_each_job_its_rule_wildcards_times_and_status():
    spans = snakelog.job_spans(LOG).set_index("jobid")
    assert list(spans.index) == [4, 7, 8, 9, 11]
    assert spans.loc[4, "rule"] == "prepare_data" and spans.loc[4, "wildcards"] == "dataset=digits"
    assert spans["status"].to_dict() == {4: "done", 7: "done", 8: "done", 9: "failed", 11: "unfinished"}
    assert spans.loc[[4, 7, 8, 9], "seconds"].tolist() == [3.0, 60.0, 120.0, 5.0]
    assert spans["seconds"].isna().tolist() == [False] * 4 + [True]  # unfinished: no end, no made-up time
    # The third ablation started after the first finished: 2 at once, never 3; the failed job
    # no longer counts when the search starts.
    assert spans["training_at_start"].to_dict() == {4: 0, 7: 1, 8: 2, 9: 2, 11: 1}
    assert snakelog.most_at_once(spans) == 2


def test_summary_of_a_run_cut_off_by_a_time_limit():
    s = snakelog.summarize(LOG)
    assert (s.steps_done, s.steps_total, s.complete) == (3, 5, False)
    assert s.wall_seconds == 184.0  # 18:06:42 to 18:09:46
    assert s.jobs == {"done": 3, "failed": 1, "unfinished": 1}
    rules = {r["rule"]: r for r in s.per_rule}
    assert rules["run_ablation"] == {"rule": "run_ablation", "jobs": 3, "done": 2, "seconds": 185.0, "slowest": 120.0}
    # The unfinished search ranks by the time it had run when the log ends (60 s), and says so.
    assert s.slowest[0] == {"rule": "run_ablation", "wildcards": "workload=digits_mlp, dimension=lr",
                            "seconds": 120.0, "status": "done"}
    assert {"rule": "run_search", "wildcards": "workload=digits_mlp, strategy=tpe", "seconds": 60.0,
            "status": "unfinished"} in s.slowest
    text = snakelog.render(s)
    assert "3 of 5 steps (NOT complete) in 184 s" in text and "at most 2 training jobs at once" in text


def test_a_complete_run_says_so():
    log = "\n".join([header("Thu Nov 26 18:06:42 2026", "all", 1, local=True),
                     finished("Thu Nov 26 18:06:42 2026", 1, "all", 1, 1)])
    s = snakelog.summarize(log)
    assert s.complete and s.wall_seconds == 0.0 and s.training_jobs_at_once == 0
    assert "(complete)" in snakelog.render(s)


def test_an_empty_log_is_an_empty_summary_not_a_crash():
    s = snakelog.summarize("Building DAG of jobs...\nNothing to be done (all requested files are present and up to date).")
    assert (s.steps_done, s.steps_total, s.complete, s.jobs) == (0, None, False, {})


def test_cli_writes_json_and_names_a_missing_log(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text(LOG)
    out = tmp_path / "summary.json"
    assert snakelog.main([str(log), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["steps_done"] == 3 and not list(tmp_path.glob("*.tmp"))
    assert "3 of 5 steps" in capsys.readouterr().out
    assert snakelog.main([str(tmp_path / "absent.log")]) == 2
    assert "absent.log" in capsys.readouterr().err


@pytest.mark.parametrize("stamp", ["Mon Dec  1 09:05:07 2026", "Mon Dec 1 09:05:07 2026"])
def test_stamps_with_a_padded_or_plain_day_parse(stamp):
    log = "\n".join([header(stamp, "prepare_data", 1, local=True), finished(stamp, 1, "prepare_data", 1, 1)])
    assert snakelog.job_spans(log)["start"].iloc[0].isoformat() == "2026-12-01T09:05:07"
