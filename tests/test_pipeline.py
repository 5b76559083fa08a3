"""End to end: Snakemake (and DVC) on a tiny config in a temporary folder.

The tiny project is the real Snakefile and workflow/ with a small params.yaml (digits and
diabetes, which scikit-learn bundles: nothing is downloaded)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

TINY = {
    "profile": "tiny",
    "profiles": {"tiny": {"seeds": [0, 1, 2], "max_train": 300, "max_test": 150, "train": {"epochs": 2},
                          "search": {"trials": 4, "batch": 4, "study_seeds": [0, 1]}}},
    "data": {"val_fraction": 0.2},
    "train": {"optimizer": "momentum", "lr": 0.05, "batch_size": 64},
    "workloads": {
        "digits_softmax": {"dataset": "digits", "model": "softmax", "fixed": {"target_accuracy": 0.5}},
        "digits_mlp": {"dataset": "digits", "model": "mlp", "fixed": {"depth": 1, "width": 16, "target_accuracy": 0.5}},
        "diabetes_linear": {"dataset": "diabetes", "model": "softmax", "fixed": {"task": "regression", "head": "linear", "batch_size": 32}},
    },
    "dimensions": {
        "init": {"workloads": ["digits_softmax", "digits_mlp"], "grid": {"init": ["normal_1", "zeros", "xavier_uniform"]},
                 "fixed": {"optimizer": "sgd", "lr": 0.1}},
        "lr_regression": {"workloads": ["diabetes_linear"], "grid": {"lr": [0.1, 0.3, 3.0]}, "fixed": {"optimizer": "sgd"}},
    },
    "search": {"workloads": ["digits_mlp"], "strategies": ["grid", "random"], "trials": 4, "batch": 4,
               "study_seeds": [0], "space": {"lr": [0.001, 0.5], "l2": [1e-6, 1e-2], "dropout": [0.0, 0.5], "width": [8, 16]}},
}


def make_project(tmp: Path, params: dict = TINY, with_src: bool = False) -> Path:
    """The tiny project. with_src: a copy of src/ in it, as in a checkout, which its jobs
    then run (`run` puts it on PYTHONPATH); otherwise they run this repository's src/."""
    if with_src:
        shutil.copytree(ROOT / "src", tmp / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "Snakefile", tmp / "Snakefile")
    shutil.copytree(ROOT / "workflow", tmp / "workflow")
    shutil.copytree(ROOT / "profiles", tmp / "profiles")  # profiles/default: read by every plain `snakemake`
    shutil.copy(ROOT / "dvc.yaml", tmp / "dvc.yaml")
    (tmp / "data" / "raw").mkdir(parents=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp


def env(**extra: str) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["PATH"] = str(BIN) + os.pathsep + e["PATH"]
    e["OMP_NUM_THREADS"] = "1"
    # The tiny project trains on the CPU on any machine, so the jobs' scheduling (one core
    # each, side by side) is the same wherever the tests run.
    e["TUNEBENCH_DEVICE"] = "cpu"
    return {**e, **extra}


def run(cmd: list[str], cwd: Path, check=True, timeout=600, **extra_env: str) -> subprocess.CompletedProcess:
    if (cwd / "src").is_dir():
        extra_env.setdefault("PYTHONPATH", str(cwd / "src"))
    out = subprocess.run(cmd, cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def snakemake(cwd: Path, *args, check=True, **extra_env: str):
    return run([str(BIN / "snakemake"), "--cores", "2", *args], cwd, check=check, **extra_env)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".snakemake" not in p.parts}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    tmp = make_project(tmp_path_factory.mktemp("tiny"), with_src=True)
    snakemake(tmp)
    return tmp


def test_pipeline_produces_report(project):
    report = (project / "reports" / "report.md").read_text()
    for needle in ("## Provenance", "## Verdicts", "C01", "C03", "C04", "C25", "C26", "digits", "The post reported"):
        assert needle in report, needle
    assert list((project / "reports" / "figures").glob("init-*.png"))
    assert (project / "reports" / "figures" / "verdicts.png").exists() and "](figures/verdicts.png)" in report
    verdicts = pd.read_csv(project / "results" / "verdicts.csv")
    assert set(verdicts["verdict"]) <= {"supported", "refuted", "inconclusive", "mixed"}
    runs = pd.read_parquet(project / "results" / "runs.parquet")
    # Every run of the grid is there: 2 workloads x 3 inits x 3 seeds + 3 lrs x 3 seeds.
    assert len(runs) == 2 * 3 * 3 + 3 * 3
    # lr 3.0 on the regression diverges: recorded as data, not a crash or a silent zero.
    big = runs[(runs["dimension"] == "lr_regression") & (runs["arm"] == "lr=3.0")]
    assert big["diverged"].eq(1.0).all() and (big["final_test_loss"] == float("inf")).all()
    assert (project / "results" / "metrics.json").exists()
    assert list((project / "results" / "search" / "digits_mlp").glob("grid-*.journal"))


def test_dry_run_after_success_has_nothing_to_do(project):
    out = snakemake(project, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_a_profile_with_its_own_report_dir_reports_there(project):
    """A profile's report_dir (the full profile's reports/full) is where Snakemake puts its
    report and figures: the default profile's published report is not among the outputs."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["profiles"]["pub"] = {**params["profiles"]["tiny"], "report_dir": "reports/pub"}
    good = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        text = snakemake(project, "-n", "--config", "profile=pub").stdout
    finally:
        (project / "params.yaml").write_text(good)
    assert "reports/pub/report.md" in text and "reports/pub/figures" in text
    assert "reports/report.md" not in text and " reports/figures" not in text


def job_blocks(dry_run: str, rule: str) -> list[str]:
    """The text of each `rule <rule>:` job a Snakemake dry run lists."""
    return [b for b in re.split(r"\n(?=\[|rule |localrule )", dry_run) if b.startswith(f"rule {rule}:")]


@pytest.mark.parametrize("device, gpu", [("cpu", 0), ("cuda", 1)])
def test_training_jobs_take_a_gpu_slot_only_where_they_train_on_a_gpu(project, device, gpu):
    """On a GPU machine every training job takes one `gpu` slot (the default profile has one:
    one job at a time on the GPU); on a CPU-only machine none, so --cores alone says how many
    train at once (tests/test_faults.py runs them so, one thread each)."""
    out = snakemake(project, "-n", "--forcerun", "run_ablation", "run_search", TUNEBENCH_DEVICE=device)
    text = out.stdout + out.stderr
    for rule, n in (("run_ablation", 3), ("run_search", 2)):
        blocks = job_blocks(text, rule)
        assert len(blocks) == n, text[-3000:]
        assert all(re.search(rf"resources: .*\bgpu={gpu}\b", b) for b in blocks), blocks[0]


def test_a_bad_device_variable_fails_naming_it(project):
    before = digest(project / "results")
    out = snakemake(project, "-n", check=False, TUNEBENCH_DEVICE="tpu")
    assert out.returncode != 0 and "TUNEBENCH_DEVICE='tpu'" in out.stdout + out.stderr
    assert digest(project / "results") == before


def test_bad_params_fail_naming_key_and_keep_results(project, tmp_path):
    before = digest(project / "results")
    good = (project / "params.yaml").read_text()
    bad = yaml.safe_load(good)
    bad["dimensions"]["init"]["fixed"]["lr"] = -1
    (project / "params.yaml").write_text(yaml.safe_dump(bad))
    try:
        out = snakemake(project, check=False)
    finally:
        (project / "params.yaml").write_text(good)
    assert out.returncode != 0
    assert "dimensions.init.fixed.lr" in out.stdout + out.stderr
    assert digest(project / "results") == before


def test_changing_one_value_reruns_only_its_jobs(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["dimensions"]["lr_regression"]["grid"]["lr"] = [0.1, 0.3, 2.0]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = snakemake(project, "-n", "--quiet", "rules")
        text = out.stdout + out.stderr
        assert "run_ablation" in text and "report" in text
        assert "prepare_data" not in text and "run_search" not in text
        jobs = snakemake(project, "-n", "--summary").stdout
        assert "results/ablations/diabetes_linear/lr_regression.parquet" in jobs
    finally:
        params["dimensions"]["lr_regression"]["grid"]["lr"] = [0.1, 0.3, 3.0]
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_datasets_own_cap_reprepares_only_that_dataset(project, tmp_path):
    """profiles.<p>.datasets.<name> caps one dataset: only its prepare job reruns (with
    what it feeds), and the prepared file holds what the cap says."""
    good = (project / "params.yaml").read_text()
    params = yaml.safe_load(good)
    params["profiles"]["tiny"]["datasets"] = {"digits": {"max_train": 120}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        prepares = job_blocks(snakemake(project, "-n").stdout, "prepare_data")
        assert [re.search(r"dataset=(\w+)", b).group(1) for b in prepares] == ["digits"]
        out = tmp_path / "digits.npz"
        run([sys.executable, "-m", "tunebench.cli", "prepare", "--dataset", "digits", "--out", str(out)], project)
        with np.load(out) as z:
            assert len(z["y_train"]) == 120 and len(z["y_test"]) == 150  # max_test: the profile's
    finally:
        (project / "params.yaml").write_text(good)
    assert "Nothing to be done" in snakemake(project, "-n").stdout


@pytest.mark.parametrize("module, rules, not_rerun", [
    ("engine", {"run_ablation", "run_search", "aggregate", "report"}, "prepare_data"),
    ("search_report", {"report"}, "run_ablation"),
])
def test_a_changed_module_reruns_the_jobs_it_feeds(project, module, rules, not_rerun):
    """The modules are the training rules' inputs (tunebench.stages): an edit to one reruns
    the jobs whose code it is, and only those; a newer time with the same text reruns none
    (as after a checkout), and neither does an edit after `--touch`. The project runs its
    own copy of src/, edited here."""
    path = project / "src" / "tunebench" / f"{module}.py"
    text = path.read_text()
    try:
        os.utime(path)  # newer than every output, same text
        assert "Nothing to be done" in snakemake(project, "-n").stdout
        path.write_text(text + "\n# an edit\n")
        out = snakemake(project, "-n", "--quiet", "rules").stdout
        listed = set(re.findall(r"^(\w+)\s+\d+$", out, re.M)) - {"all", "total"}
        assert listed == rules, out
        assert not_rerun not in out
        assert f"src/tunebench/{module}.py" in snakemake(project, "-n").stdout  # the reason names it
        # An edit that changes no number: --touch keeps the results (README), recording
        # them as made by the edited text.
        snakemake(project, "--touch")
        assert "Nothing to be done" in snakemake(project, "-n").stdout
    finally:
        # Putting the text back is an edit too (after --touch), so touch again.
        path.write_text(text)
        snakemake(project, "--touch")
    assert "Nothing to be done" in snakemake(project, "-n").stdout


def test_a_search_rerun_for_changed_code_starts_fresh_studies(project):
    """A search job keeps its Optuna studies in a journal, which a rerun resumes. A rerun for
    changed training code must not resume the old code's complete studies (it would
    re-emit their trials without training one): the journal's name carries the code's
    digest. Forced with the same code, the job resumes its own journal. Once the new code's
    jobs have written their tables, the old code's journals (never read again) are gone."""
    journals = lambda out: re.findall(r"--journal (\S+)", out)  # noqa: E731
    same = journals(snakemake(project, "-n", "-p", "--forcerun", "run_search").stdout)
    assert same and all((project / j).exists() for j in same)
    path = project / "src" / "tunebench" / "engine.py"
    text = path.read_text()
    try:
        path.write_text(text + "\n# an edit\n")
        edited = journals(snakemake(project, "-n", "-p").stdout)
        assert len(edited) == len(same) and not any((project / j).exists() for j in edited)
        snakemake(project, "search_all")
        assert all((project / j).exists() for j in edited)
        assert not any((project / j).exists() for j in same)
    finally:
        path.write_text(text)
        snakemake(project, "--touch")
    assert "Nothing to be done" in snakemake(project, "-n").stdout


def test_cli_bad_data_file_names_it(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not a zip")
    project = make_project(tmp_path / "p", TINY) if (tmp_path / "p").mkdir() is None else None
    out = run([sys.executable, "-m", "tunebench.cli", "ablate", "--workload", "digits_mlp", "--dimension", "init",
               "--data", str(bad), "--out", str(tmp_path / "out.parquet")], project, check=False)
    assert out.returncode != 0 and "broken.npz" in out.stderr
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="dvc needs git")
def test_dvc_repro_twice_second_does_nothing(tmp_path):
    tmp = make_project(tmp_path, with_src=True)  # the stages list source files as deps
    run(["git", "init", "-q"], tmp)
    run([str(BIN / "dvc"), "init", "-q"], tmp)
    run([str(BIN / "dvc"), "config", "core.analytics", "false"], tmp)
    run([str(BIN / "dvc"), "repro"], tmp, timeout=900)
    assert (tmp / "reports" / "report.md").exists()
    second = run([str(BIN / "dvc"), "repro"], tmp)
    assert "didn't change" in second.stdout or "is cached" in second.stdout or "up to date" in second.stdout
    assert "Running stage" not in second.stdout
    metrics = run([str(BIN / "dvc"), "metrics", "show"], tmp)
    assert "metrics.json" in metrics.stdout
