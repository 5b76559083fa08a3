"""Scale out for real: the smoke project (tests/test_pipeline.py) on a single-node SLURM cluster
with the shipped slurm profile, and Optuna studies in a throwaway PostgreSQL server shared by
several processes. Both servers come from Debian packages through scripts/cluster/*.sh; where
they cannot be installed (not root, no apt) the tests are skipped with the reason.

Marked `cluster` (and `slow`): `pytest -m "not cluster"` leaves them out."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from test_pipeline import BIN, REPORT, ROOT, RUNS, SMOKE, ablation_jobs, env, make_project, run, smoke_params
from tunebench.spec import config, grid
from tunebench.core import data as D, engine
from tunebench.pipeline import layout
from tunebench.studies import search
from tunebench.reporting import search_report

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SCRIPTS = ROOT / "scripts" / "cluster"
SKIP_EXIT = 3  # the scripts' "not installed and not installable here"

# search.run_study is safe for several workers on one study once the storage keeps heartbeats
# (the patch proposed with these tests adds search.rdb_storage); until then it is not, and
# the tests of that fail in a known way.
SHARED_STUDIES = hasattr(search, "rdb_storage")


def script(name: str, *args: str, extra_env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(extra_env or {}))
    return subprocess.run(["bash", str(SCRIPTS / name), *args], env=e, capture_output=True, text=True, timeout=timeout)


def start_or_skip(name: str, extra_env: dict) -> subprocess.CompletedProcess:
    out = script(name, "start", extra_env=extra_env, timeout=600)
    if out.returncode == SKIP_EXIT:
        pytest.skip(f"{name}: {out.stderr.strip()}")
    assert out.returncode == 0, f"{name} start failed:\n{out.stdout}\n{out.stderr}"
    return out


# ------------------------------------------------------------------------------- SLURM
@pytest.fixture(scope="module")
def slurm():
    """A single-node SLURM cluster with 2 pretend GPUs (so the profile's GPU requests are
    scheduled as on a GPU node); stopped at the end unless it was already running."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -r requirements-cluster.txt")
    state = os.environ.get("TUNEBENCH_SLURM_DIR", "/tmp/tunebench-slurm")
    extra = {"TUNEBENCH_SLURM_DIR": state, "TUNEBENCH_SLURM_GPUS": "2"}
    was_running = script("slurm.sh", "status", extra_env=extra, timeout=30).returncode == 0
    start_or_skip("slurm.sh", extra)
    conf = f"{state}/slurm.conf"
    yield {"SLURM_CONF": conf}
    if not was_running:
        script("slurm.sh", "stop", extra_env=extra, timeout=120)


def slurm_cmd(cmd: list[str], conf: dict) -> str:
    return subprocess.run(cmd, env=dict(os.environ, **conf), capture_output=True, text=True, timeout=30, check=True).stdout


def test_snakemake_on_slurm(slurm, tmp_path):
    project = make_project(tmp_path)
    gres = slurm_cmd(["sinfo", "-h", "-N", "-o", "%G"], slurm)
    # The shipped profile, with what a 2-CPU test node needs on top: 1 CPU and 1 GB per job,
    # a first status check after 5 s (MinJobAge of the test cluster is 600 s >= 3 x 5 s).
    cmd = [str(BIN / "snakemake"), "--workflow-profile", "profiles/slurm",
           "--jobs", "4", "--latency-wait", "5", "--slurm-init-seconds-before-status-checks", "5",
           "--default-resources", "mem_mb=1000", "runtime=30",
           "--set-resources", "run_ablation:mem_mb=1000", "run_search:mem_mb=1000"]
    if "gpu" not in gres:  # a CPU-only cluster (started elsewhere without TUNEBENCH_SLURM_GPUS)
        cmd += ["run_ablation:gpu=0", "run_search:gpu=0"]
    e = dict(env(), **slurm)
    out = subprocess.run(cmd, cwd=project, env=e, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-8000:]

    assert (project / REPORT).exists()
    params = smoke_params()
    runs = pd.read_parquet(project / RUNS)
    assert len(runs) == len(grid.expand(params))
    # Every job but the local ones went through SLURM: the preparations, the ablation and
    # search jobs, aggregate and report.
    s = params.search_settings()
    n_search = len(s.units()) * len(s.strategies)
    n_training = len(ablation_jobs()) + n_search
    ids = re.findall(r"submitted with SLURM jobid (\d+)", text)
    assert len(ids) == len(grid.datasets_used(params)) + n_training + 2, text[-4000:]
    # ... and SLURM saw them finish (squeue keeps finished jobs for MinJobAge seconds).
    states = dict(line.split("|", 1) for line in
                  slurm_cmd(["squeue", "--states=all", "--noheader", "--format=%i|%T"], slurm).split())
    assert all(states.get(i) == "COMPLETED" for i in ids), (ids, states)
    if "gpu" in gres:  # the training jobs asked for one GPU each, the others for none
        jobs = {i: slurm_cmd(["scontrol", "show", "job", "-o", i], slurm) for i in ids}
        training = [i for i, j in jobs.items() if re.search(r"Comment=rule_run_(ablation|search)", j)]
        assert len(training) == n_training
        assert all("TresPerJob=gres:gpu:1" in jobs[i] for i in training)
        assert not any("TresPerJob=gres:gpu" in j for i, j in jobs.items() if i not in training)


# ------------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="module")
def postgres():
    """A fresh PostgreSQL server; yields its URL (database `tunebench`, user postgres)."""
    pytest.importorskip("psycopg2", reason="pip install -r requirements-cluster.txt")
    state = f"/tmp/tunebench-pg-test-{os.getpid()}"  # the postgres user must reach it: not under pytest's 0700 tmp
    extra = {"TUNEBENCH_PG_DIR": state}
    out = start_or_skip("postgres.sh", extra)
    url = out.stdout.strip().splitlines()[-1]
    assert url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    yield url
    script("postgres.sh", "stop", extra_env=extra, timeout=120)
    shutil.rmtree(state, ignore_errors=True)


def fresh_database(url: str) -> None:
    """Drop everything Optuna created: the next connection meets an empty database."""
    import sqlalchemy

    eng = sqlalchemy.create_engine(url)
    with eng.begin() as c:
        c.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    eng.dispose()


@pytest.fixture(scope="module")
def dd(tmp_path_factory):
    ctx = D.LoadContext(tmp_path_factory.mktemp("raw"), allow_download=False, download_timeout_s=1.0)
    prep = D.prepare(D.load_raw("digits", ctx), "digits", "multiclass", "image", 0.1, 0, max_train=200, max_test=200)
    return engine.to_device(prep, "cpu")


# One worker of a shared study: `python -c WORKER tests_dir url strategy trials batch role sync_dir`.
# The two roles make the interleaving deterministic: "first" pauses inside its first batch
# (its trials RUNNING) until "second" has joined the study and asked its own batch.
WORKER = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
from tunebench.core import data as D, engine
from tunebench.studies import search
from test_search import make_params, WL

url, strategy, trials, batch, role, sync = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], Path(sys.argv[7])
ctx = D.LoadContext(sync, allow_download=False, download_timeout_s=1.0)
prep = D.prepare(D.load_raw("digits", ctx), "digits", "multiclass", "image", 0.1, 0, max_train=200, max_test=200)
dd = engine.to_device(prep, "cpu")
params = make_params(trials=trials, batch=batch, storage=url)

def wait_for(name, timeout=240):
    t0 = time.time()
    while not (sync / name).exists():
        if time.time() - t0 > timeout:
            raise SystemExit(f"{role}: no {name} after {timeout} s")
        time.sleep(0.05)

paused = []
def log(msg):
    print(f"[{role}] {msg}", flush=True)
    if role == "first" and not paused and "epoch 1/" in msg:
        paused.append(1)
        (sync / "first-training").touch()
        wait_for("second-asked")
    if role == "second" and ": batch " in msg:
        (sync / "second-asked").touch()

if role == "second":
    wait_for("first-training")
df = search.run_study(params, WL, strategy, 0, dd, url, log=log)
df.to_parquet(sync / f"{role}.parquet")
print(f"[{role}] done: {len(df)} trials", flush=True)
"""


@pytest.mark.xfail(not SHARED_STUDIES, strict=True, raises=AssertionError,
                   reason="search.run_study marks the RUNNING trials of other live workers FAIL on start "
                          "(_requeue_interrupted); the first worker then crashes with UpdateFinishedTrialError")
def test_two_workers_share_a_study(postgres, dd, tmp_path):
    from test_search import WL, make_params

    trials, batch, strategy = 8, 4, "random"
    fresh_database(postgres)
    params = make_params(trials=trials, batch=batch, storage=postgres)
    # Create the schema and the study (with its settings) once, before any worker: workers
    # that meet an empty database at the same moment race on CREATE TYPE (UniqueViolation).
    empty = search.run_study(params, WL, strategy, 0, dd, postgres, stop_after_batches=0)
    assert empty.empty

    procs = {role: subprocess.Popen(
        [sys.executable, "-c", WORKER, str(ROOT / "tests"), postgres, strategy, str(trials), str(batch), role, str(tmp_path)],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for role in ("first", "second")}
    logs = {}
    for role, p in procs.items():
        try:
            logs[role] = p.communicate(timeout=400)[0]
        except subprocess.TimeoutExpired:
            for q in procs.values():
                q.kill()
            raise
    for role, p in procs.items():
        assert p.returncode == 0, f"{role} worker failed:\n{logs[role][-4000:]}\n--- other:\n{logs}"

    # Each worker trained one batch of the budget: first 0-3, second 4-7.
    assert "trials 0-3" in logs["first"] and "trials 4-7" in logs["second"], logs
    assert "interrupted" not in logs["first"] + logs["second"]
    study = optuna.load_study(study_name=search.study_name(WL, strategy, 0), storage=postgres)
    all_trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in all_trials]
    assert sorted(numbers) == list(range(trials))  # each recorded once, none lost
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in all_trials)
    assert len({tuple(sorted(t.params.items())) for t in all_trials}) == trials  # no trial trained twice

    # Read back, the study gives the table the report uses.
    frame = search.trials_frame(study, WL, strategy, 0)
    assert list(frame.columns) == list(search.FRAME_COLUMNS) and list(frame["trial"]) == list(range(trials))
    for role in procs:
        returned = pd.read_parquet(tmp_path / f"{role}.parquet")
        pd.testing.assert_frame_equal(returned.drop(columns="width"), frame.drop(columns="width"))
    summ = search_report.summary(frame, None, params)
    assert summ.loc[0, "budget"] == trials and summ.loc[0, "n_failed"] == 0


def test_pipeline_search_jobs_share_postgres(postgres, tmp_path):
    """The pipeline with search.storage set: the two search jobs of the smoke project run at the
    same time (gpu=2) and keep their studies in one database, no journal files."""
    fresh_database(postgres)
    params = yaml.safe_load(yaml.safe_dump(SMOKE))
    params["search"]["storage"] = postgres
    project = make_project(tmp_path, params)
    # The schema once, before the jobs (see test_two_workers_share_a_study).
    optuna.storages.RDBStorage(postgres).remove_session()
    run([str(BIN / "snakemake"), "search_all", "--cores", "2", "--resources", "gpu=2"], project)

    settings = config.validate(params, tuple(D.DATASETS)).search_settings()
    assert len(settings.study_seeds) == 2
    for strategy in settings.strategies:
        table = pd.read_parquet(project / layout.search_table("smoke", "digits_mlp", strategy))
        table = table.drop(columns=["commit", "env", "job_finished"])  # the job's provenance stamp
        frames = []
        for seed in settings.study_seeds:
            study = optuna.load_study(study_name=search.study_name("digits_mlp", strategy, seed), storage=postgres)
            frames.append(search.trials_frame(study, "digits_mlp", strategy, seed))
            assert (frames[-1]["state"] == "COMPLETE").sum() == settings.trials
        pd.testing.assert_frame_equal(table, pd.concat(frames, ignore_index=True))
    assert not list((project / "results").rglob("*.journal"))


# Three processes open the storage of an empty database at the same moment.
FIRST_CONNECTION = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tunebench.studies import search
from test_search import make_params
url, go = sys.argv[2], Path(sys.argv[3])
settings = make_params(storage=url).search_settings()
Path(f"{go}.{sys.argv[4]}").touch()
while not go.exists():
    time.sleep(0.001)
search.open_storage(settings, go.parent / "unused.journal")
"""


@pytest.mark.xfail(not SHARED_STUDIES, strict=False, raises=AssertionError,
                   reason="open_storage on an empty database: concurrent first connections race on "
                          "CREATE TYPE and lose with UniqueViolation (the losers do not retry)")
def test_first_connections_to_an_empty_database(postgres, tmp_path):
    n = 3
    for attempt in range(2):
        fresh_database(postgres)
        go = tmp_path / f"go{attempt}"
        procs = [subprocess.Popen([sys.executable, "-c", FIRST_CONNECTION, str(ROOT / "tests"), postgres, str(go), str(i)],
                                  env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(n)]
        try:
            deadline = 120
            while len(list(tmp_path.glob(f"go{attempt}.*"))) < n and deadline > 0:
                time.sleep(0.1)
                deadline -= 0.1
            go.touch()
            outs = [p.communicate(timeout=120)[0] for p in procs]
        finally:
            for p in procs:
                p.kill()
        failed = [o for p, o in zip(procs, outs) if p.returncode != 0]
        assert not failed, failed[0][-3000:]
