"""End to end: Snakemake on the shipped smoke profile (params.yaml) in a temporary folder.

The project is the real Snakefile, workflow/, profiles/ and params.yaml with `profile: smoke`
(MNIST's bundled subset, digits and diabetes, which the installed packages carry: nothing is
downloaded). The jobs' PATH holds no venv: the rules must run the interpreter that runs
Snakemake, as they do for a user who has activated nothing."""

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

from tunebench.spec import config, grid
from tunebench.pipeline import layout
from tunebench.analysis import stats
from tunebench.core.data import DATASETS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
SMOKE = {**PARAMS, "profile": "smoke"}  # the end-to-end tests' project: the shipped smoke profile
P = "smoke"
RESULTS = layout.results(P)
RUNS = f"{RESULTS}/runs.parquet"
REPORT = f"{layout.report_dir(P)}/report.md"


def smoke_params(params: dict = SMOKE) -> config.Params:
    return config.validate(params, tuple(DATASETS))


def ablation_jobs(params: dict = SMOKE) -> list[str]:
    """"workload/dimension" of each ablation job of `params`' profile."""
    return [f"{wl}/{dim}" for wl, dim in grid.jobs(smoke_params(params))]


def table(job: str) -> str:
    return layout.ablation_table(P, *job.split("/"))


def make_project(tmp: Path, params: dict = SMOKE, with_src: bool = False) -> Path:
    """The project. with_src: a copy of src/ in it, as in a checkout, which its jobs then run
    (the Snakefile puts it first on their path); otherwise they run this repository's src/."""
    if with_src:
        shutil.copytree(ROOT / "src", tmp / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "Snakefile", tmp / "Snakefile")
    shutil.copytree(ROOT / "workflow", tmp / "workflow")
    shutil.copytree(ROOT / "profiles", tmp / "profiles")  # profiles/default: read by every plain `snakemake`
    shutil.copytree(ROOT / "claims", tmp / "claims")
    shutil.copy(ROOT / "dvc.yaml", tmp / "dvc.yaml")
    shutil.copy(ROOT / ".dvcignore", tmp / ".dvcignore")
    (tmp / "data" / "raw").mkdir(parents=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    return tmp


def path_without_venv() -> str:
    return os.pathsep.join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                           if p and Path(p).resolve() != BIN.resolve())


def env(**extra: str) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["PATH"] = path_without_venv()  # the jobs must not need the venv on PATH
    e.pop("VIRTUAL_ENV", None)
    e["OMP_NUM_THREADS"] = "1"
    # The project trains on the CPU on any machine, so the jobs' scheduling (one core
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


def job_blocks(dry_run: str, rule: str) -> list[str]:
    """The text of each `rule <rule>:` job a Snakemake dry run lists."""
    return [b for b in re.split(r"\n(?=\[|rule |localrule )", dry_run) if re.match(rf"(local)?rule {rule}:", b)]


def listed_rules(dry_run_quiet: str) -> set[str]:
    return set(re.findall(r"^(\w+)\s+\d+$", dry_run_quiet, re.M)) - {"all", "total", "current_metrics"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    tmp = make_project(tmp_path_factory.mktemp("smoke"), with_src=True)
    snakemake(tmp)
    return tmp


def test_pipeline_produces_report(project):
    report = (project / REPORT).read_text()
    for needle in ("## Provenance", "## Verdicts", "C01", "C03", "C04", "C13", "C25", "C26", "mnist", "digits",
                   "The source reported", "not run in the smoke profile", "trained at commit", "drawn by commit"):
        assert needle in report, needle
    figures = project / layout.report_dir(P) / "figures"
    assert list(figures.glob("init-*.png")) and (figures / "verdicts.png").exists()
    assert "](figures/verdicts.png)" in report
    assert list(figures.glob("search-edf-*.png")) and list(figures.glob("search-importance-*.png"))  # Optuna's plots
    verdicts = pd.read_csv(project / RESULTS / "verdicts.csv")
    assert set(verdicts["verdict"]) <= set(stats.SUMMARY_WORDS) | set(stats.VERDICTS)
    assert verdicts.loc[verdicts["claim"] == "C18", "verdict"].tolist() == ["not run"]  # its dimension is not in smoke
    # The A/A control (two arms that differ by their random draws only) runs, and must not
    # come out supported or refuted.
    aa = verdicts[(verdicts["claim"] == "AA01") & (verdicts["workload"] != "all")]
    assert len(aa) and not aa["verdict"].isin(["supported", "refuted"]).any(), aa
    for needle in ("## Calibration", "family-wise false positives", "Holm", "### the Deep Learning Tuning Playbook"):
        assert needle in report, needle
    runs = pd.read_parquet(project / RUNS)
    # Every run of the grid is there: a missing run would be a DAG error, never a smaller mean.
    assert len(runs) == len(grid.expand(smoke_params()))
    # A large lr on the regression diverges: recorded as data, not a crash or a silent zero.
    big = runs[(runs["dimension"] == "lr_regression") & (runs["arm"] == "lr=2.0")]
    assert len(big) and big["diverged"].eq(1.0).all() and (big["final_test_loss"] == float("inf")).all()
    metrics = yaml.safe_load((project / layout.METRICS).read_text())
    assert metrics["seeds"] == len(SMOKE["profiles"][P]["seeds"])
    assert set(metrics["verdicts"]) == set(stats.SUMMARY_WORDS)
    assert list((project / RESULTS / "search" / "digits_mlp").glob("grid-*.journal"))
    # Each training job's Snakemake benchmark, read into the report's compute line.
    assert all((project / layout.benchmark(table(j))).exists() for j in ablation_jobs())
    assert re.search(r"compute: \d+ training jobs, .* of the jobs' \d+ s of wall time", report)
    # User data and everything else are named by paths inside the project, never this machine's.
    assert str(project) not in report and str(ROOT) not in report


def test_dry_run_after_success_has_nothing_to_do(project):
    out = snakemake(project, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_another_profile_writes_its_own_folders(project):
    """A profile's files never overlap another's: a dry run of a copy of the smoke profile
    lists only its own paths."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["profiles"]["pub"] = params["profiles"][P]
    good = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        text = snakemake(project, "-n", "--config", "profile=pub").stdout
    finally:
        (project / "params.yaml").write_text(good)
    assert "reports/pub/report.md" in text and "results/pub/ablations" in text and "data/prepared/pub/" in text
    assert f"/{P}/" not in text


@pytest.mark.parametrize("device, gpu", [("cpu", 0), ("cuda", 1)])
def test_training_jobs_take_a_gpu_slot_only_where_they_train_on_a_gpu(project, device, gpu):
    """On a GPU machine every training job takes one `gpu` slot (the default profile has one:
    one job at a time on the GPU); on a CPU-only machine none, so --cores alone says how many
    train at once (tests/test_faults.py runs them so, one thread each)."""
    out = snakemake(project, "-n", "--forcerun", "run_ablation", "run_search", TUNEBENCH_DEVICE=device)
    text = out.stdout + out.stderr
    s = smoke_params().search_settings()
    for rule, n in (("run_ablation", len(ablation_jobs())), ("run_search", len(s.units()) * len(s.strategies))):
        blocks = job_blocks(text, rule)
        assert len(blocks) == n, text[-3000:]
        assert all(re.search(rf"resources: .*\bgpu={gpu}\b", b) for b in blocks), blocks[0]


def test_a_bad_device_variable_fails_naming_it(project):
    before = digest(project / "results")
    out = snakemake(project, "-n", check=False, TUNEBENCH_DEVICE="tpu")
    assert out.returncode != 0 and "TUNEBENCH_DEVICE='tpu'" in out.stdout + out.stderr
    assert digest(project / "results") == before


def edited(project: Path, change) -> str:
    """params.yaml with `change(params)` applied; returns the good text to put back."""
    good = (project / "params.yaml").read_text()
    params = yaml.safe_load(good)
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return good


@pytest.mark.parametrize("change, needle", [
    (lambda p: p["dimensions"]["init"]["fixed"].update(lr=-1), "dimensions.init.fixed.lr"),
    (lambda p: p["dimensions"]["lr_regression"]["grid"].update(lr=[0.1, 0.1, 0.3]), "lists the arm 0.1 more than once"),
    (lambda p: p["profiles"]["smoke"].update(seeds=[0, 1, 1]), "repeated: 1"),
])
def test_bad_params_fail_naming_key_and_keep_results(project, change, needle):
    before = digest(project / "results")
    good = edited(project, change)
    try:
        out = snakemake(project, check=False)
    finally:
        (project / "params.yaml").write_text(good)
    assert out.returncode != 0
    assert needle in out.stdout + out.stderr
    assert digest(project / "results") == before


def test_changing_one_value_reruns_only_its_jobs(project):
    good = edited(project, lambda p: p["dimensions"]["lr_regression"]["grid"].update(lr=[0.1, 0.3, 2.0]))
    try:
        out = snakemake(project, "-n", "--quiet", "rules")
        assert listed_rules(out.stdout + out.stderr) == {"run_ablation", "aggregate", "report"}
        jobs = snakemake(project, "-n", "--summary").stdout
        assert table("diabetes_linear/lr_regression") in jobs
    finally:
        (project / "params.yaml").write_text(good)


def test_a_datasets_own_cap_reprepares_only_that_dataset(project, tmp_path):
    """profiles.<p>.datasets.<name> caps one dataset: only its prepare job reruns (with
    what it feeds), and the prepared file holds what the cap says."""
    good = edited(project, lambda p: p["profiles"][P].update(datasets={"digits": {"max_train": 120}}))
    try:
        prepares = job_blocks(snakemake(project, "-n").stdout, "prepare_data")
        assert [re.search(r"dataset=(\w+)", b).group(1) for b in prepares] == ["digits"]
        out = tmp_path / "digits.npz"
        run([sys.executable, "-m", "tunebench.pipeline.cli", "prepare", "--dataset", "digits", "--out", str(out)], project)
        with np.load(out) as z:
            assert len(z["y_train"]) == 120 and len(z["y_test"]) == 150  # max_test: the profile's
    finally:
        (project / "params.yaml").write_text(good)
    assert "Nothing to be done" in snakemake(project, "-n").stdout


def test_a_dataset_prepared_again_unchanged_reruns_nothing_downstream(project):
    """A prepared file written again with the same content is the same bytes (fixed zip
    times), and Snakemake checksums it (profiles/default: max-checksum-file-size), so the
    jobs that trained on it do not rerun."""
    target = layout.prepared(P, "diabetes")
    before = (project / target).read_bytes()
    snakemake(project, "--forcerun", "prepare_data", "--allowed-rules", "prepare_data", "--", target)
    assert (project / target).read_bytes() == before
    assert "Nothing to be done" in snakemake(project, "-n").stdout


@pytest.mark.parametrize("module, rules, not_rerun", [
    ("core/engine", {"run_ablation", "run_search", "aggregate", "report"}, "prepare_data"),
    ("reporting/search_report", {"report"}, "run_ablation"),
])
def test_a_changed_module_reruns_the_jobs_it_feeds(project, module, rules, not_rerun):
    """The modules are the training rules' inputs (tunebench.pipeline.stages): an edit to one reruns
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
        assert listed_rules(out) == rules, out
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
    jobs have written their tables, the old code's journals (never read again) are gone.
    Each search job's log names its study's storage, for optuna-dashboard."""
    journals = lambda out: re.findall(r"--journal (\S+)", out)  # noqa: E731
    same = journals(snakemake(project, "-n", "-p", "--forcerun", "run_search").stdout)
    assert same and all((project / j).exists() for j in same)
    log = (project / layout.logs(P) / "search" / "digits_mlp" / "grid.log").read_text()
    assert "Optuna storage: results/smoke/search/digits_mlp/grid-" in log and "optuna-dashboard" in log
    path = project / "src" / "tunebench" / "core" / "engine.py"
    text = path.read_text()
    try:
        path.write_text(text + "\n# an edit\n")
        edited_journals = journals(snakemake(project, "-n", "-p").stdout)
        assert len(edited_journals) == len(same) and not any((project / j).exists() for j in edited_journals)
        snakemake(project, "search_all")
        assert all((project / j).exists() for j in edited_journals)
        assert not any((project / j).exists() for j in same)
    finally:
        path.write_text(text)
        snakemake(project, "--touch")
    assert "Nothing to be done" in snakemake(project, "-n").stdout


def readme_example() -> tuple[dict, dict]:
    """The README's "Add a dataset" example: the params.yaml fragment it shows."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- example-dataset -->\s*```yaml\n(.*?)```", text, re.S)
    assert block, "README.md has no example dataset (a yaml block after <!-- example-dataset -->)"
    return yaml.safe_load(block.group(1)), text


def add_example(params: dict, fragment: dict) -> None:
    """Merge the README's fragment into params the way its text says: new data.user entries
    and workloads, and each workload appended to the dimension the fragment names."""
    params["data"]["user"].update(fragment["data"]["user"])
    params["workloads"].update(fragment["workloads"])
    for dim, spec in fragment["dimensions"].items():
        params["dimensions"][dim]["workloads"] += spec["workloads"]
    if P in params["profiles"] and params["profiles"][P].get("only", {}).get("workloads") is not None:
        params["profiles"][P]["only"]["workloads"] += list(fragment["workloads"])


def write_npz(path: Path, n: int = 120, d: int = 6, drop: str | None = None, rng=np.random.default_rng(0)) -> None:
    arrays = {"x_train": rng.normal(size=(n, d)).astype(np.float32), "y_train": rng.integers(0, 3, n),
              "x_test": rng.normal(size=(n // 2, d)).astype(np.float32), "y_test": rng.integers(0, 3, n // 2)}
    if drop:
        del arrays[drop]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def test_adding_the_readme_example_dataset_runs_only_what_reads_it(project):
    """`dvc repro` (or snakemake) on new data: after a finished run, the README's example
    dataset adds its preparation and the jobs that train on it, nothing else: every other
    dataset's preparation keeps its settings (each holds its own, not the whole data
    section), so nothing that trained on them reruns."""
    fragment, _ = readme_example()
    good = (project / "params.yaml").read_text()
    params = yaml.safe_load(good)
    add_example(params, fragment)
    for name, user in fragment["data"]["user"].items():
        write_npz(project / user["path"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        text = snakemake(project, "-n").stdout
        new_data = set(fragment["data"]["user"])
        new_workloads = set(fragment["workloads"])
        prepares = {re.search(r"dataset=(\w+)", b).group(1) for b in job_blocks(text, "prepare_data")}
        assert prepares == new_data, text[-3000:]
        trained = {re.search(r"workload=(\w+)", b).group(1) for b in job_blocks(text, "run_ablation")}
        assert trained == new_workloads, text[-3000:]
        assert not job_blocks(text, "run_search")
    finally:
        (project / "params.yaml").write_text(good)
        for user in fragment["data"]["user"].values():
            (project / user["path"]).unlink()
    assert "Nothing to be done" in snakemake(project, "-n").stdout


@pytest.mark.parametrize("fault, needle", [
    ("missing", "file not found"),
    ("no y_test", "missing array 'y_test'"),
    ("truncated", "unreadable npz"),
])
def test_a_bad_user_dataset_fails_before_any_job_naming_file_and_array(project, fault, needle):
    fragment, _ = readme_example()
    name, user = next(iter(fragment["data"]["user"].items()))
    good = (project / "params.yaml").read_text()
    params = yaml.safe_load(good)
    add_example(params, fragment)
    path = project / user["path"]
    if fault != "missing":
        write_npz(path, drop="y_test" if fault == "no y_test" else None)
    if fault == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = digest(project / "results")
    try:
        out = snakemake(project, check=False)
    finally:
        (project / "params.yaml").write_text(good)
        path.unlink(missing_ok=True)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert needle in text and user["path"] in text and f"data.user.{name}" in text, text[-2000:]
    assert "rule prepare_data" not in text and "rule run_ablation" not in text  # before any job
    assert digest(project / "results") == before


def test_snakemakes_own_html_report(project, tmp_path):
    """`snakemake --report`: one self-contained page with the verdicts, every figure grouped
    by the claims that read it, the provenance and the jobs' run times."""
    out = tmp_path / "report.html"
    snakemake(project, "--report", str(out))
    html = out.read_text()
    for needle in ("Verdicts", "Provenance", "C03, C05: init", "C25, C26", "verdicts.csv", "Calibration"):
        assert needle in html, needle


def test_a_claim_added_in_yaml_alone_gets_its_verdict(project):
    """Advice as data: a new claims file and one line of params.yaml, no Python. Only the
    report reruns, and the claim's verdict is in the report and verdicts.csv."""
    extra = {"source": {"id": "folk", "title": "Folk wisdom", "cite": "folk wisdom", "language": "en"},
             "claims": [{"id": "F01", "quote": "Orthogonal beats Xavier.", "paraphrase": "Orthogonal init beats Xavier.",
                         "prediction": "orthogonal > xavier_uniform",
                         "contrasts": [{"label": "orthogonal vs xavier_uniform", "primary": True,
                                        "treatment": {"dimension": "init", "init": "orthogonal"},
                                        "control": {"dimension": "init", "init": "xavier_uniform"},
                                        "metric": "final_test_acc", "direction": "higher"}]}]}
    (project / "claims" / "folk.yaml").write_text(yaml.safe_dump(extra, sort_keys=False))
    good = edited(project, lambda p: p["claims"].append("claims/folk.yaml"))
    try:
        assert listed_rules(snakemake(project, "-n", "--quiet", "rules").stdout) == {"report"}
        snakemake(project)
        report = (project / REPORT).read_text()
        assert "## F01" in report and "### folk wisdom" in report
        verdicts = pd.read_csv(project / RESULTS / "verdicts.csv")
        assert verdicts.loc[(verdicts["claim"] == "F01") & (verdicts["workload"] == "mnist_softmax"), "verdict"].item() \
            in stats.VERDICTS
    finally:
        (project / "params.yaml").write_text(good)
        (project / "claims" / "folk.yaml").unlink()
        snakemake(project)


def test_show_prints_one_claims_verdict_contrasts_and_figures(project):
    out = run([sys.executable, "-m", "tunebench.pipeline.cli", "show", "C03"], project).stdout
    assert out.startswith("C03: ") and "verdict (smoke):" in out and "mnist_softmax" in out
    assert "reports/smoke/figures/init-arms.png" in out and "| workload" in out
    bad = run([sys.executable, "-m", "tunebench.pipeline.cli", "show", "C99"], project, check=False)
    assert bad.returncode != 0 and "unknown claim 'C99'" in bad.stderr


def test_every_cli_flag_has_help():
    import argparse

    from tunebench.pipeline import cli

    ap = cli.parser()
    subparsers = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    assert {"check", "prepare", "ablate", "search", "aggregate", "report", "show"} <= set(subparsers.choices)
    for name, sub in subparsers.choices.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help, f"tunebench {name} {'/'.join(action.option_strings) or action.dest} has no help text"


def test_cli_bad_data_file_names_it(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not a zip")
    (tmp_path / "p").mkdir()
    project = make_project(tmp_path / "p")
    out = run([sys.executable, "-m", "tunebench.pipeline.cli", "ablate", "--workload", "mnist_softmax", "--dimension", "init",
               "--data", str(bad), "--out", str(tmp_path / "out.parquet")], project, check=False)
    assert out.returncode != 0 and "broken.npz" in out.stderr
    assert not (tmp_path / "out.parquet").exists()
