"""Faults on the smoke project (tests/test_pipeline.py): a corrupt input, an unwritable results
folder, two pipelines on one folder, determinism across runs and --cores, a training job
killed with SIGKILL part-way, then rerun, and Snakemake itself killed. Only the ablation half
of the pipeline runs (target results/smoke/runs.parquet: the preparations, the ablation jobs
and the aggregate): what these faults exercise is the same for every job."""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_pipeline import BIN, P, RESULTS, RUNS, SMOKE, ablation_jobs, env, make_project, run, smoke_params, table

from tunebench.spec import grid
from tunebench.pipeline import layout, snakelog

pytestmark = pytest.mark.slow

TARGET = RUNS
ABLATIONS = ablation_jobs()
N_RUNS = len(grid.expand(smoke_params()))
ABLATIONS_DIR = f"{RESULTS}/ablations"


def job_log(project: Path, job: str) -> Path:
    return project / layout.logs(P) / "ablations" / f"{job}.log"
TIME_LIKE = re.compile(r"seconds|time|date|wall|elapsed|duration|timestamp|finished", re.I)


def sm(project: Path, *args: str, cores: int = 2, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(BIN / "snakemake"), "--cores", str(cores), *args], project, check=check)


def _sigint_default() -> None:
    # A shell without job control starts a background command (`make test &`, nohup) with
    # SIGINT ignored, and an ignored signal stays ignored through exec: Snakemake would then
    # never see the Ctrl-C the tests send. A terminal's Ctrl-C always finds the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_sm(project: Path, *args: str, cores: int = 2) -> subprocess.Popen:
    with open(project / "outer-snakemake.log", "w") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen([str(BIN / "snakemake"), "--cores", str(cores), *args], cwd=project, env=env(),
                                stdout=log, stderr=subprocess.STDOUT, text=True, preexec_fn=_sigint_default)


def outer_log(project: Path) -> str:
    return (project / "outer-snakemake.log").read_text()


def result_files(project: Path) -> list[Path]:
    """The results tables (hidden folders such as checkpoints left out)."""
    res = project / "results"
    return sorted(p for p in res.rglob("*.parquet") if not any(part.startswith(".") for part in p.relative_to(res).parts))


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Without timing columns; arrays as tuples (so frames compare cell by cell)."""
    df = df.drop(columns=[c for c in df.columns if TIME_LIKE.search(c)])
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(lambda v: tuple(np.asarray(v).ravel().tolist()) if isinstance(v, (np.ndarray, list)) else v)
    keys = [k for k in ("workload", "dimension", "arm", "seed", "epoch") if k in df.columns]
    return df.sort_values(keys).reset_index(drop=True)


def tables(project: Path) -> dict[str, pd.DataFrame]:
    return {str(p.relative_to(project)): comparable(pd.read_parquet(p)) for p in result_files(project)}


def assert_same_tables(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


def training_processes(project: Path, command: str = "ablate") -> dict[int, str]:
    """pid -> --out of the `python -m tunebench.pipeline.cli <command>` processes working in `project`
    (not the shell that wraps them, nor anybody else's pipeline)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in argv if a]
        if argv[1:4] == ["-m", "tunebench.pipeline.cli", command] and Path(cwd) == project and "--out" in argv:
            found[int(proc.name)] = argv[argv.index("--out") + 1]
    return found


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"snakemake ended (rc {proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out ({timeout} s) waiting for {what}")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """The tiny project's tables from one clean run (--cores 2)."""
    project = make_project(tmp_path_factory.mktemp("baseline"))
    sm(project, TARGET)
    out = tables(project)
    assert len(out[TARGET]) == N_RUNS
    return out


# ------------------------------------------------------------------------------- (a)
def test_corrupt_input_fails_alone_and_keep_going_finishes_the_rest(tmp_path):
    project = make_project(tmp_path)
    sm(project, "prepare_all")
    bad = project / layout.prepared(P, "diabetes")
    bad.write_bytes(b"this is not an npz archive" * 10)
    out = sm(project, "--keep-going", TARGET, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    # Only the job that reads the corrupt file failed; the others finished.
    assert "Error in rule run_ablation" in text and text.count("Error in rule") == 1, text[-5000:]
    assert f"{layout.logs(P)}/ablations/diabetes_linear/lr_regression.log" in text
    res = project / ABLATIONS_DIR
    others = [j for j in ABLATIONS if not j.startswith("diabetes_")]
    assert others and all((project / table(j)).exists() for j in others)
    assert not (project / table("diabetes_linear/lr_regression")).exists()
    assert not (project / TARGET).exists()  # aggregate needs them all
    log = job_log(project, "diabetes_linear/lr_regression").read_text()
    assert layout.prepared(P, "diabetes") in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]  # a message, not a crash
    assert not list(res.rglob("*.tmp"))


# ------------------------------------------------------------------------------- (b)
def test_results_path_blocked_by_a_file_is_a_clear_error(tmp_path):
    """root ignores permissions: a *file* where the results folder should be stops it."""
    project = make_project(tmp_path)
    (project / RESULTS).mkdir(parents=True)
    (project / ABLATIONS_DIR).write_text("a file, not a folder\n")
    out = sm(project, TARGET, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "Not a directory" in text and ABLATIONS_DIR in text.strip().splitlines()[-1], text[-3000:]
    assert (project / ABLATIONS_DIR).read_text() == "a file, not a folder\n"


def _mount_read_only(folder: Path) -> bool:
    if os.geteuid() != 0:
        return False
    ok = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
    if ok and subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", str(folder)], capture_output=True)
        return False
    return ok


@pytest.fixture
def read_only(tmp_path):
    """mount(folder) makes `folder` read-only (a bind mount) until the test ends."""
    mounted = []

    def mount(folder: Path) -> None:
        if not _mount_read_only(folder):
            pytest.skip("cannot bind-mount a folder read-only here (needs root and CAP_SYS_ADMIN)")
        mounted.append(folder)

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_results_folder_is_a_clear_error(tmp_path, read_only):
    """A read-only file system stops root too. Snakemake cannot create the jobs' folders, nor
    clear a job's output path; the command-line tool, run on its own, names the file."""
    project = make_project(tmp_path)
    sm(project, "prepare_all")
    results = project / RESULTS
    results.mkdir(parents=True, exist_ok=True)
    for p in results.iterdir():  # the datasets' summaries the preparations wrote
        shutil.rmtree(p)
    read_only(results)
    out = sm(project, TARGET, check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"Failed to create output directory {ABLATIONS_DIR}" in text, text[-3000:]
    assert "Read-only file system" in text
    subprocess.run(["umount", str(results)], check=True)
    assert not list(results.iterdir())  # nothing half-written

    sm(project, "ablate_all")
    before = {p: p.stat().st_mtime_ns for p in result_files(project)}
    read_only(results)
    out = sm(project, TARGET, check=False)
    last = (out.stdout + out.stderr).strip().splitlines()[-1]
    assert out.returncode != 0  # Snakemake's own traceback, whose last line names the file
    assert last == f"OSError: [Errno 30] Read-only file system: '{TARGET}'", last
    cli = run([sys.executable, "-m", "tunebench.pipeline.cli", "aggregate", "--out", TARGET,
               *[table(a) for a in ABLATIONS]], project, check=False)
    assert cli.returncode != 0
    assert f"error: cannot write {TARGET}: Read-only file system" in cli.stderr, cli.stderr
    assert "Traceback" not in cli.stderr
    assert {p: p.stat().st_mtime_ns for p in result_files(project)} == before


def test_cli_prepare_into_a_read_only_folder_names_the_file(tmp_path, read_only):
    project = make_project(tmp_path)
    out = layout.prepared(P, "digits")
    out_dir = project / Path(out).parent
    out_dir.mkdir(parents=True)
    read_only(out_dir)
    cli = run([sys.executable, "-m", "tunebench.pipeline.cli", "prepare", "--dataset", "digits", "--out", out],
              project, check=False)
    assert cli.returncode != 0
    assert f"cannot write {out}: Read-only file system" in cli.stderr, cli.stderr
    assert "Traceback" not in cli.stderr, cli.stderr


# ------------------------------------------------------------------------------- (c)
def test_second_pipeline_on_the_same_folder_is_refused(tmp_path, baseline):
    project = make_project(tmp_path)
    first = popen_sm(project, TARGET)
    try:
        # The first holds the lock and is training.
        wait_until(lambda: training_processes(project), 300, "a training job of the first pipeline", first)
        assert list((project / ".snakemake" / "locks").iterdir())
        second = sm(project, TARGET, check=False)
        text = second.stdout + second.stderr
        assert second.returncode != 0
        assert "LockException" in text or "Directory cannot be locked" in text, text[-3000:]
        assert first.wait(timeout=600) == 0, outer_log(project)[-5000:]
    finally:
        if first.poll() is None:
            first.kill()
    # The first finished undisturbed: complete, and the same tables as a clean run.
    assert_same_tables(tables(project), baseline)
    assert not list((project / "results").rglob("*.tmp"))


# ------------------------------------------------------------------------------- (d)
@pytest.mark.parametrize("cores", [1, 2])
def test_two_runs_give_identical_tables(tmp_path, baseline, cores):
    """A fresh run equals the baseline (--cores 2) to the last bit, timing columns aside. On a
    CPU-only machine each training job takes one core and runs one thread whatever --cores
    (workflow/rules/common.smk: more threads would change float sums, and so results, on
    larger data): with --cores 1 the jobs train one at a time, with --cores 2 two side by side."""
    project = make_project(tmp_path)
    out = sm(project, TARGET, cores=cores)
    text = out.stdout + out.stderr
    assert snakelog.most_at_once(snakelog.job_spans(text)) == cores
    logs = {a: job_log(project, a).read_text() for a in ABLATIONS}
    assert all(re.search(r"s on cpu \(.+, 1 thread\)", text) for text in logs.values()), logs
    assert_same_tables(tables(project), baseline)


# ------------------------------------------------------------------------------- (e)
KILL = copy.deepcopy(SMOKE)
# Every ablation job trains long enough to be killed part-way.
KILL["profiles"][P]["dimensions"] = {dim: {"epochs": 60} for dim in KILL["profiles"][P]["only"]["dimensions"]}


def part_way_job(project: Path, another_to_come: bool = False) -> tuple[int, str] | None:
    """(pid, output) of a training job that is part-way (its log shows epoch 3 of 40) while
    an earlier training job has already finished (so there is finished work to keep), or None.
    another_to_come: and a training job has yet to start, so the one found is not the last."""
    done = result_files(project)
    for pid, out in training_processes(project).items():
        log = job_log(project, Path(out).relative_to(ABLATIONS_DIR).with_suffix("").as_posix())
        waiting = [a for a in ABLATIONS if table(a) != out and not (project / table(a)).exists()]
        if another_to_come and not waiting:
            continue
        if done and log.exists() and "epoch 3/" in log.read_text() and not (project / out).exists():
            return pid, out
    return None


def test_sigkill_of_a_training_job_then_rerun(tmp_path):
    (tmp_path / "killed").mkdir()
    project = make_project(tmp_path / "killed", KILL)
    res = project / ABLATIONS_DIR
    # One job at a time: a training job that starts after another finished is then sure to
    # be found part-way. With 2 cores the two init jobs could run side by side and finish
    # within one poll of each other, leaving no job part-way after a finished one (seen once
    # in CI).
    proc = popen_sm(project, TARGET, cores=1)
    try:
        # Kill the first training job that is part-way while an earlier one has finished.
        pid, victim_out = wait_until(lambda: part_way_job(project), 400, "a training job part-way after another finished", proc)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = outer_log(project)
    assert rc != 0, text[-3000:]
    assert "Error in rule run_ablation" in text
    assert not (project / victim_out).exists()  # nothing half-written in its place
    finished = {p: p.stat().st_mtime_ns for p in result_files(project)}
    finished.update({p: p.stat().st_mtime_ns for p in (project / layout.prepared(P, "x")).parent.glob("*.npz")})
    assert any(str(p).startswith(str(res)) for p in finished)

    sm(project, TARGET)
    assert (project / victim_out).exists() and (project / victim_out).stat().st_mtime > killed_at
    for p, mtime in finished.items():  # finished jobs were not redone
        assert p.stat().st_mtime_ns == mtime, f"{p} was redone"
    assert not [p for p in (project / RESULTS).rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert len(pd.read_parquet(project / TARGET)) == N_RUNS

    # The redone job's table equals one from an uninterrupted run of that job.
    (tmp_path / "clean").mkdir()
    clean = make_project(tmp_path / "clean", KILL)
    sm(clean, victim_out)
    pd.testing.assert_frame_equal(comparable(pd.read_parquet(project / victim_out)),
                                  comparable(pd.read_parquet(clean / victim_out)), check_exact=True)


def _interrupt_part_way(project: Path) -> tuple[int, str]:
    """Snakemake's exit status after Ctrl-C part-way through a training job that is not the
    last, and that job's output."""
    proc = popen_sm(project, TARGET, cores=1)
    try:
        # Not during the last training job: Ctrl-C then lets it end, and Snakemake may go on
        # to finish the workflow and exit 0, with nothing to redo.
        _, interrupted_out = wait_until(lambda: part_way_job(project, another_to_come=True), 400,
                                        "a training job part-way after another finished, before the last", proc)
        # Ctrl-C again each second until Snakemake stops, as a user would.
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return proc.wait(timeout=1), interrupted_out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_plain_rerun_after_ctrl_c_redoes_the_interrupted_job(tmp_path):
    """Ctrl-C (SIGINT to Snakemake) part-way: Snakemake stops its jobs and marks their outputs
    incomplete. The next plain `snakemake` (no flags) must redo them, keeping what finished,
    rather than refuse with IncompleteFilesException: profiles/default (rerun-incomplete),
    which Snakemake must find by itself."""
    project = make_project(tmp_path, KILL)
    rc, interrupted_out = _interrupt_part_way(project)
    assert rc != 0, outer_log(project)[-3000:]
    # Snakemake lets a local job run to its end after Ctrl-C, but marks its output incomplete
    # (the markers' names are the outputs' paths in base64).
    marked = {base64.b64decode(m.name).decode() for m in (project / ".snakemake" / "incomplete").iterdir()}
    assert interrupted_out in marked, marked
    finished = {p: p.stat().st_mtime_ns for p in result_files(project)
                if str(p.relative_to(project)) not in marked}
    assert finished
    stopped_at = time.time()

    out = sm(project, TARGET)
    text = out.stdout + out.stderr
    assert "Using workflow specific profile profiles/default" in text, text[:2000]
    assert (project / interrupted_out).stat().st_mtime > stopped_at  # redone
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was redone"
    assert len(pd.read_parquet(project / TARGET)) == N_RUNS


def test_snakemake_itself_killed_then_the_plain_command_recovers(tmp_path):
    """SIGKILL to Snakemake (not its job) leaves its lock. While the job it started still
    runs, the plain command says what to do instead of starting that job beside it; once
    the job has ended, the plain command removes the stale lock by itself and finishes."""
    project = make_project(tmp_path, KILL)
    proc = popen_sm(project, TARGET, cores=1)
    try:
        wait_until(lambda: part_way_job(project, another_to_come=True), 400, "a training job part-way", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list((project / ".snakemake" / "locks").iterdir())
    orphans = training_processes(project)
    if orphans:  # the killed Snakemake's job runs on
        out = sm(project, TARGET, check=False)
        text = out.stdout + out.stderr
        assert out.returncode != 0 and "still run (pid" in text and "then run the same command again" in text, text
        wait_until(lambda: not training_processes(project), 400, "the orphaned job to end")
    out = sm(project, TARGET)
    assert "a lock left by a Snakemake that was killed" in out.stderr
    assert len(pd.read_parquet(project / TARGET)) == N_RUNS
