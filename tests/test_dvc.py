"""DVC as its users drive it, on the shipped params.yaml in a temporary git repository: an
experiment on another profile, `dvc repro` with nothing to do, metrics and plots, and the
results travelling through the remote to a fresh clone that redraws the report without
training. DVC's stages run `snakemake`, so these commands run with the venv on PATH, as the
README's DVC section says (`source .venv/bin/activate`)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from test_first_run import borrowed_venv, newcomer_env
from test_pipeline import BIN, PARAMS, ROOT, make_project

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("git") is None, reason="dvc needs git")]


def sh(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
           "OMP_NUM_THREADS": "1", "TUNEBENCH_DEVICE": "cpu", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("PYTHONPATH", None)  # the project's own src/ (the Snakefile puts it first)
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def git_repo(tmp: Path, params: dict) -> Path:
    """The project as a git repository with DVC's configuration (remote included)."""
    project = make_project(tmp, params, with_src=True)
    (project / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(ROOT / ".dvc" / name, project / ".dvc" / name)
    for name in (".gitignore", "Makefile", "requirements.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, project / name)
    sh(["git", "init", "-q"], project)
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "project"], project)
    return project


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """params.yaml as shipped (profile quick), then `dvc exp run -S profile=smoke`: the
    experiment is applied to the workspace, and committed with its lock and report."""
    project = git_repo(tmp_path_factory.mktemp("dvc"), PARAMS)
    out = sh(["dvc", "exp", "run", "-S", "profile=smoke"], project)
    assert "Ran experiment" in out.stdout + out.stderr
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "smoke"], project)
    return project


def test_an_experiment_on_the_smoke_profile_writes_its_own_folders(repo):
    assert yaml.safe_load((repo / "params.yaml").read_text())["profile"] == "smoke"
    assert (repo / "reports" / "smoke" / "report.md").is_file()
    assert (repo / "results" / "smoke" / "runs.parquet").is_file()
    assert not (repo / "results" / "quick").exists() and not (repo / "reports" / "quick").exists()
    metrics = json.loads((repo / "results" / "metrics.json").read_text())
    assert metrics["seeds"] == len(PARAMS["profiles"]["smoke"]["seeds"]) and "C03" in metrics["effect"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = {o["path"] for stage in lock["stages"].values() for o in stage.get("outs", [])}
    assert "results/smoke/ablations" in outs and "reports/smoke" in outs


def test_dvc_repro_again_does_nothing(repo):
    out = sh(["dvc", "repro"], repo)
    assert "Running stage" not in out.stdout, out.stdout[-3000:]


def test_exp_show_lines_up_params_and_short_metric_keys(repo):
    rows = list(csv.DictReader(io.StringIO(sh(["dvc", "exp", "show", "--csv"], repo).stdout)))
    assert rows and "profile" in rows[0]
    assert {"verdicts.supported", "verdicts.refuted", "verdicts.not run", "effect.C03.mnist_softmax"} <= set(rows[0])
    shown = sh(["dvc", "metrics", "show"], repo).stdout
    assert "results/metrics.json" in shown and "effect.C03.mnist_softmax" in shown


def test_plots_show_renders_the_reports_figures_and_the_primary_effects(repo, tmp_path):
    out = sh(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], repo)
    assert "failed" not in (out.stdout + out.stderr).lower(), out.stdout + out.stderr
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "verdicts.png" in html and "init-arms.png" in html
    assert "primary effects" in html  # the data plot of verdicts.csv


def test_push_then_pull_in_a_fresh_clone_redraws_the_report_without_training(repo, tmp_path):
    sh(["dvc", "push"], repo)
    remote = repo / "dvc-remote"
    assert remote.is_dir() and any(remote.rglob("*"))
    sh(["git", "add", "dvc-remote"], repo)
    sh(["git", "commit", "-qm", "publish the smoke tables"], repo)

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    pulled = sh(["dvc", "pull", "--allow-missing"], clone)
    assert (clone / "results" / "smoke" / "ablations").is_dir(), pulled.stdout + pulled.stderr
    assert not (clone / "data" / "prepared" / "smoke").exists()  # the arrays stay behind (push: false)
    published = (repo / "reports" / "smoke" / "report.md").read_text()  # git ignores the smoke report

    borrowed_venv(clone)
    out = subprocess.run(["make", "redraw", "CORES=2"], cwd=clone, env=newcomer_env(), capture_output=True, text=True,
                         timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    for rule in ("prepare_data", "run_ablation", "run_search"):
        assert f"rule {rule}:" not in text, text[-3000:]
    redrawn = (clone / "reports" / "smoke" / "report.md").read_text()
    # Byte-identical but for the line that says who drew it and when.
    strip = lambda t: [line for line in t.splitlines() if not line.startswith("- drawn by commit")]  # noqa: E731
    assert strip(redrawn) == strip(published)


def test_metrics_diff_compares_two_experiments_key_by_key(repo):
    """A second experiment (fewer seeds): `dvc metrics diff` lines the two up by key."""
    sh(["dvc", "exp", "run", "-S", "profiles.smoke.seeds=[0,1]"], repo)
    diff = sh(["dvc", "metrics", "diff", "--all"], repo).stdout
    assert "seeds" in diff and "effect.C03.mnist_softmax" in diff and "verdicts.supported" in diff, diff
