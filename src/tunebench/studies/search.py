"""Hyperparameter search studies (claims C25-C28): grid, random, coarse-to-fine random, QMC,
TPE and GP, all as Optuna samplers over the same four-parameter space, trained in batches.

One study = (workload, strategy, study_seed), named f"{workload}.{strategy}.s{study_seed}",
kept in an Optuna storage (a journal file by default, an RDB URL if settings.storage is set)
so an interrupted job resumes where it stopped.

The search space (SearchSpace): lr (log-uniform), l2 (log-uniform), dropout (uniform),
width (categorical). Everything else of a trial's RunConfig comes from the workload's layers
(grid.base_layers) and settings.fixed; the trial's overrides are the last layer.

Objective: the best validation accuracy over the epochs of the run (and the test accuracy at
that epoch, reported but never seen by the sampler). All trials of a study train with the
same training seed (the study seed), so within a study they differ only by hyperparameters.

Diverged trials are *told* to the sampler with the value chance accuracy (1/n_classes; 1/2 for
a binary task) and user_attr diverged=True, rather than marked FAIL: a FAIL trial is ignored
by TPE's and GP's models, which could then keep proposing the failing region (huge learning
rates) again and again; a penalised value teaches them to avoid it. Their val_acc/test_acc
attrs keep the best finite epoch before the divergence (NaN if none), for information only.

The studies of one (workload, strategy) job, one per study seed, advance in lockstep: each
round every study asks its next batch and all of them train as one engine population
(run_studies), so a job costs the sequential steps of one study, not one per seed. Each
study keeps its own sampler, storage entry and training seed, so the trials and values are
those it would get alone (up to float rounding of the population's batched kernels).

Several workers on one study (an RDB storage, e.g. PostgreSQL, shared by processes or
cluster jobs): trial numbers come from the storage, so each trial is recorded once; a worker
counts the RUNNING trials of the others against the budget (it waits rather than overshoot,
and a trial asked past the budget in a race is told FAIL with user_attr surplus=True); each
worker records a heartbeat for its RUNNING trials every HEARTBEAT_S seconds, and only a
trial without one for GRACE_S seconds (its worker died) counts as interrupted. A journal file
has no heartbeats: one worker per study, and every RUNNING trial found at start is
interrupted.

Seeding and resume: random, coarse_to_fine, tpe and gp get a fresh sampler for every batch,
seeded by (study_seed, number of trials already in the study, strategy); grid and qmc keep
the study seed (the grid's shuffled order and the Sobol sequence must stay the same across
batches; QMC keeps its position in the study's storage). An Optuna sampler's RNG state is not
stored, so a sampler that was simply re-created with the study seed after a crash would
replay the first draws; with per-batch seeds an interrupted-and-resumed study proposes
exactly the trials an uninterrupted one would (given deterministic training). The strategy
is in the seed so that no two strategies share trials: TPE's and GP's start-up and
coarse_to_fine's first stage are draws of their own, not random search's first batch (with
shared draws, a short budget compared a strategy with itself).

The grid is shifted by an offset drawn per study seed (grid_values): its points are the
budget's cells of the space at a random position in each cell, so over study seeds the grid
is not one fixed set of points that happens to hold (or miss) a good learning rate.

Search units: each workload is searched in the main space (`search.space`) and in each named
space of `search.spaces`; a unit "<workload>~<name>" is a workload in a named space, with its
own studies, tables and verdicts (config.SearchSettings.units).
"""

from __future__ import annotations

import bisect
import contextlib
import zlib
import itertools
import json
import math
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
import sqlalchemy.exc
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from tunebench.core import engine
from tunebench.spec import grid
from tunebench.spec.config import ConfigError, Params, SearchSettings, SearchSpace, run_config
from tunebench.core.engine import DeviceData, RunResult

STRATEGIES = ("grid", "random", "coarse_to_fine", "qmc", "tpe", "gp")
SEARCHED = ("lr", "l2", "dropout", "width")  # the searched RunConfig fields, in grid priority order
LOG_PARAMS = ("lr", "l2")
TOP_FRACTION = 0.25  # coarse_to_fine: share of stage-1 trials that define the box
MIN_TOP = 2  # ... and at least this many
WIDEN = 0.1  # ... box widened on each side by this share of the space's range (log/linear)
STAGE_SINGLE, STAGE_COARSE, STAGE_FINE = "single", "coarse", "fine"
FRAME_COLUMNS = (
    "workload", "strategy", "study_seed", "trial", "lr", "l2", "dropout", "width", "stage",
    "value", "val_acc", "test_acc", "diverged", "epochs", "seconds", "state", "study",
)
_META_KEY = "tunebench"  # study user attr: the settings the study was created with
HEARTBEAT_S = 20  # RDB storage: a worker records a heartbeat for its RUNNING trials this often
GRACE_S = 90  # ... and a RUNNING trial without one for this long belongs to a dead worker
WAIT_S = 2.0  # a worker whose remaining budget other workers are training polls this often

Log = Callable[[str], None] | None


# ----------------------------------------------------------------------------- the space
def check_space(space: SearchSpace) -> None:
    """Fail early, naming the key, on a space Optuna or RunConfig would reject later."""
    for name in LOG_PARAMS:
        lo, hi = getattr(space, name)
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ConfigError(f"search.space.{name}: need 0 < low <= high (log scale), got ({lo}, {hi})")
    lo, hi = space.dropout
    if not (0.0 <= lo <= hi < 1.0):
        raise ConfigError(f"search.space.dropout: need 0 <= low <= high < 1, got ({lo}, {hi})")
    if not space.width or len(set(space.width)) != len(space.width) or min(space.width) < 1:
        raise ConfigError(f"search.space.width: need distinct positive widths, got {space.width}")


def _to_unit(name: str, value: float) -> float:
    """The scale a parameter is searched in: log10 for lr and l2, linear for dropout."""
    return math.log10(value) if name in LOG_PARAMS else float(value)


def _from_unit(name: str, value: float) -> float:
    return 10.0**value if name in LOG_PARAMS else float(value)


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def grid_levels(trials: int, space: SearchSpace) -> dict[str, int]:
    """How many levels each parameter gets in a grid of at most `trials` points.

    Among all (n_lr, n_l2, n_dropout, n_width) with product <= trials (n_width <= number of
    widths; a parameter whose range is a single value gets 1 level), pick the largest product;
    among those the most balanced one (the levels sorted in decreasing order, smallest
    lexicographically: 2x2x2x2 before 4x2x2x1 before 16x1x1x1); among permutations of the
    same levels, extra levels go to lr first, then l2, then dropout, then width.
    Examples with 4 widths: 8 -> 2,2,2,1; 16 -> 2,2,2,2; 32 -> 4,2,2,2; 64 -> 4,4,2,2.
    A budget with few factors gives a lopsided grid (a prime p: p lr levels, the rest at
    one level): choose budgets such as powers of two.
    """
    caps = [
        trials if space.lr[0] < space.lr[1] else 1,
        trials if space.l2[0] < space.l2[1] else 1,
        trials if space.dropout[0] < space.dropout[1] else 1,
        len(space.width),
    ]
    best_key, best = None, (1, 1, 1, 1)
    for a in range(1, min(caps[0], trials) + 1):
        for b in range(1, min(caps[1], trials // a) + 1):
            for c in range(1, min(caps[2], trials // (a * b)) + 1):
                for d in range(1, min(caps[3], trials // (a * b * c)) + 1):
                    levels = (a, b, c, d)
                    key = (a * b * c * d, tuple(-x for x in sorted(levels, reverse=True)), levels)
                    if best_key is None or key > best_key:
                        best_key, best = key, levels
    return dict(zip(SEARCHED, best))


def grid_offsets(study_seed: int | None) -> dict[str, float]:
    """Where in its cell each parameter's grid levels sit: 0.5 (the cell centres) without a
    study seed, else a uniform draw in [0, 1) per parameter, fixed by the study seed."""
    if study_seed is None:
        return dict.fromkeys(SEARCHED, 0.5)
    rng = np.random.default_rng([study_seed & 0xFFFFFFFF, zlib.crc32(b"grid")])
    return dict(zip(SEARCHED, rng.uniform(0.0, 1.0, len(SEARCHED)).tolist()))


def grid_values(trials: int, space: SearchSpace, study_seed: int | None = None) -> dict[str, list]:
    """The grid of the `grid` strategy: as large as the budget (grid_levels).

    The range of each parameter is cut into k equal cells (lr and l2 in log scale, dropout
    linear) and each level sits at the same relative position u in its cell:
    low * (high/low) ** ((i + u) / k) for lr; width takes the categories at indices
    floor((i + u) * n / k) of the n widths (k = n: all of them). u = 0.5 (the cell centres)
    without a study seed, else drawn per study seed and parameter (grid_offsets), as a
    randomly shifted grid: over study seeds every point of the space is equally likely to be
    a grid point, so no one grid's luck (holding lr 0.1, or not) decides the comparison.
    With the default space, 16 trials and centres: lr {1e-3, 1e-1}, l2 {5.62e-6, 1.78e-2},
    dropout {0.15, 0.45}, width {64, 256}.
    """
    check_space(space)
    levels = grid_levels(trials, space)
    offsets = grid_offsets(study_seed)
    out: dict[str, list] = {}
    for name in ("lr", "l2", "dropout"):
        k, u = levels[name], offsets[name]
        lo, hi = (_to_unit(name, v) for v in getattr(space, name))
        vals = [_round(_from_unit(name, lo + (hi - lo) * (i + u) / k)) for i in range(k)]
        lo_v, hi_v = getattr(space, name)
        out[name] = [min(max(v, lo_v), hi_v) for v in vals]  # rounding never leaves the range
    n, k, u = len(space.width), levels["width"], offsets["width"]
    out["width"] = [int(space.width[min(n - 1, int(math.floor((i + u) * n / k)))]) for i in range(k)]
    return out


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose after_trial does not call study.stop(): that call only works inside
    study.optimize and raises RuntimeError under ask/tell. run_study stops by counting."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D401
        return None


def n_startup(trials: int) -> int:
    """Random start-up trials of TPE and GP: max(4, trials // 4)."""
    return max(4, trials // 4)


def make_sampler(strategy: str, space: SearchSpace, trials: int, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of a strategy.

    grid: GridSampler over grid_values(trials, space, seed) (shifted and shuffled by `seed`);
    random and coarse_to_fine: RandomSampler(seed) (coarse_to_fine's stages differ only in
    the distributions suggest() is given); qmc: scrambled Sobol QMCSampler(seed) (its first
    trial is drawn by its independent random sampler, as Optuna does);
    tpe: TPESampler(seed, n_startup_trials=n_startup(trials)) with Optuna 5's defaults
    (multivariate, constant liar for the running trials of a batch);
    gp: GPSampler(seed, n_startup_trials=n_startup(trials)) - the same start-up as TPE so the
    two Bayesian samplers are compared on equal terms (Optuna's default is 10). GPSampler
    needs torch and scipy (both installed); it conditions on the running trials of a batch.
    """
    check_space(space)
    if strategy == "grid":
        return _AskTellGridSampler(grid_values(trials, space, seed), seed=seed)
    if strategy in ("random", "coarse_to_fine"):
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "qmc":
        with warnings.catch_warnings():  # "QMCSampler is experimental": known, not news each batch
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed)
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup(trials))
    if strategy == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup(trials))
    raise ConfigError(f"unknown search strategy {strategy!r}; known: {', '.join(STRATEGIES)}")


class BoxSampler(optuna.samplers.RandomSampler):
    """coarse_to_fine's second stage: a RandomSampler (the numeric box comes in through the
    distributions suggest() is given), except that width is drawn uniformly from the box's
    widths. Optuna forbids a categorical's choices to change within a study ("does not support
    dynamic value space"), so width keeps the space's full CategoricalDistribution and the
    restriction lives here."""

    def __init__(self, widths: Sequence[int], seed: int):
        super().__init__(seed=seed)
        self._widths = [int(w) for w in widths]
        self._width_rng = np.random.default_rng(seed)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name == "width" and isinstance(param_distribution, CategoricalDistribution):
            return self._widths[int(self._width_rng.integers(len(self._widths)))]
        return super().sample_independent(study, trial, param_name, param_distribution)


def _batch_seed(study_seed: int, n_trials: int, strategy: str) -> int:
    entropy = [study_seed & 0xFFFFFFFF, n_trials, zlib.crc32(strategy.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def suggest(trial: optuna.Trial, space: SearchSpace, box: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Suggest the four searched settings; returns RunConfig overrides {lr, l2, dropout, width}.

    `box` (coarse_to_fine's second stage, see narrow_box) replaces the ranges of lr, l2 and
    dropout: {"lr": (lo, hi), "l2": (lo, hi), "dropout": (lo, hi), "width": [...]}; those
    distributions are the trial's, so Optuna records the box with every trial. width always
    gets the space's full categories (Optuna does not allow a categorical's choices to change
    within a study); the box's widths are enforced by the sampler (BoxSampler).
    """
    b = box or {}
    lr = b.get("lr", space.lr)
    l2 = b.get("l2", space.l2)
    dropout = b.get("dropout", space.dropout)
    widths = list(space.width)
    return {
        "lr": trial.suggest_float("lr", float(lr[0]), float(lr[1]), log=True),
        "l2": trial.suggest_float("l2", float(l2[0]), float(l2[1]), log=True),
        "dropout": trial.suggest_float("dropout", float(dropout[0]), float(dropout[1])),
        "width": int(trial.suggest_categorical("width", [int(w) for w in widths])),
    }


def full_distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    return {
        "lr": FloatDistribution(space.lr[0], space.lr[1], log=True),
        "l2": FloatDistribution(space.l2[0], space.l2[1], log=True),
        "dropout": FloatDistribution(space.dropout[0], space.dropout[1]),
        "width": CategoricalDistribution([int(w) for w in space.width]),
    }


def narrow_box(trials: Sequence[optuna.trial.FrozenTrial], space: SearchSpace) -> dict[str, Any]:
    """coarse_to_fine's second-stage box from the (complete) first-stage trials.

    The top TOP_FRACTION of them by value (at least MIN_TOP; ties by trial number): for lr and
    l2 (log10 scale) and dropout (linear) the [min, max] of those trials widened on each side
    by WIDEN times the *space's* range in that scale (so the box has some width even when the
    top trials agree), clipped to the space; width: the categories the top trials used, in the
    space's order.
    """
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not done:
        raise ValueError("narrow_box: no complete first-stage trials")
    done.sort(key=lambda t: (-float(t.value), t.number))
    top = done[: max(MIN_TOP, math.ceil(TOP_FRACTION * len(done)))]
    box: dict[str, Any] = {}
    for name in ("lr", "l2", "dropout"):
        s_lo, s_hi = getattr(space, name)
        u_lo, u_hi = _to_unit(name, s_lo), _to_unit(name, s_hi)
        vals = [_to_unit(name, t.params[name]) for t in top]
        pad = WIDEN * (u_hi - u_lo)
        lo = _from_unit(name, max(u_lo, min(vals) - pad))
        hi = _from_unit(name, min(u_hi, max(vals) + pad))
        # Back from log scale can be off by an ulp: clip to the space and keep the top trials in.
        lo = max(s_lo, min(lo, *(t.params[name] for t in top)))
        hi = min(s_hi, max(hi, *(t.params[name] for t in top)))
        box[name] = (float(lo), float(hi))
    used = {int(t.params["width"]) for t in top}
    box["width"] = [int(w) for w in space.width if int(w) in used]
    return box


# ----------------------------------------------------------------------------- storage
def open_storage(settings: SearchSettings, journal_path: str | Path) -> optuna.storages.BaseStorage:
    """settings.storage (an RDB URL, e.g. postgresql://...) if set, else a journal file at
    journal_path (its folder is created). An RDB storage connects now, so a bad URL fails here."""
    if settings.storage:
        return rdb_storage(settings.storage)
    path = Path(journal_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def rdb_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (see the module docstring: several workers per study).
    Optuna creates its schema on first use, not atomically: workers that reach an empty
    database at the same moment race on CREATE TYPE / CREATE TABLE and the losers fail with
    UniqueViolation / DuplicateTable; they retry, and by then the schema exists."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna (since 2.9)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            if attempt == attempts - 1 or not any(k in str(e) for k in ("already exists", "duplicate key")):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _heartbeat_interval(storage) -> int | None:
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


@contextlib.contextmanager
def _heartbeats(storage, trial_ids: Sequence[int]):
    """While training: record a heartbeat for each trial every heartbeat interval."""
    interval = _heartbeat_interval(storage)
    if not interval or not trial_ids:
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(interval):
            for tid in trial_ids:
                storage.record_heartbeat(tid)

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def study_name(workload: str, strategy: str, study_seed: int) -> str:
    return f"{workload}.{strategy}.s{study_seed}"


# ----------------------------------------------------------------------------- one trial
def chance_accuracy(cfg, data: DeviceData) -> float:
    return 0.5 if cfg.task == "binary" else 1.0 / data.n_classes


def trial_outcome(result: RunResult, chance: float) -> dict[str, Any]:
    """The objective of a trained run: the best validation accuracy over its finite epochs
    (earliest epoch on ties) and the test accuracy at that epoch. A diverged run (or one with
    no finite validation accuracy) gets value = chance; see the module docstring."""
    finite = [e for e in result.epochs if not e["diverged"] and math.isfinite(e["val_acc"])]
    best = max(finite, key=lambda e: e["val_acc"]) if finite else None  # max keeps the first
    diverged = result.diverged or best is None
    val_acc = float(best["val_acc"]) if best else math.nan
    return {
        "value": float(chance) if diverged else val_acc,
        "val_acc": val_acc,
        "test_acc": float(best["test_acc"]) if best else math.nan,
        "best_epoch": int(best["epoch"]) if best else None,
        "diverged": bool(diverged),
        "epochs": len(result.epochs),
        "seconds": float(sum(e["epoch_seconds"] for e in result.epochs)),
    }


# ----------------------------------------------------------------------------- a study
def _meta(params: Params, unit: str, strategy: str, settings: SearchSettings, code: str | None) -> dict[str, Any]:
    base = run_config(grid.base_layers(params, SearchSettings.split(unit)[0], None) + [("search.fixed", settings.fixed)])
    return {
        "workload": unit,
        "strategy": strategy,
        "trials": settings.trials,
        "batch": settings.batch,
        "coarse_fraction": settings.coarse_fraction,
        "space": settings.space.model_dump(mode="json"),
        "base_config": base.model_dump(mode="json"),
        # The code that trains the trials (a digest the caller passes: the command line's is of
        # the search job's modules, tunebench.pipeline.stages): a study is resumed only by the
        # code that began it (a journal's name carries this too; in a database it is checked here).
        "code": code,
    }


def _check_meta(study: optuna.Study, meta: dict[str, Any]) -> None:
    """A resumed study must have been started with the same settings, or its trials would
    mix two experiments; the message names what changed."""
    old = study.user_attrs.get(_META_KEY)
    if old is None:
        study.set_user_attr(_META_KEY, meta)
        return
    new = json.loads(json.dumps(meta))  # the storage's JSON round trip (tuples -> lists)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        details = "; ".join(f"{k}: stored {old.get(k)!r}, now {new.get(k)!r}" for k in diff)
        raise ConfigError(
            f"study {study.study_name!r} exists with other settings ({details}); "
            "delete its storage (journal file) or restore the settings to resume it"
        )


def _requeue_interrupted(study: optuna.Study, storage, strategy: str, settings: SearchSettings, log: Log,
                         study_seed: int | None = None) -> int:
    """Trials left RUNNING by an interrupted job: tell them FAIL (user_attr interrupted=True),
    then queue the work they lost so it is redone, not redrawn: for grid every grid point no
    complete, queued or running trial covers; for the other strategies the params of each
    interrupted trial that had all of them (QMC's Sobol set stays intact, TPE/GP's proposals
    are kept). Interrupted: with heartbeats (an RDB storage), a RUNNING trial whose heartbeat
    is older than GRACE_S (other workers' live trials are left alone; of two workers that find
    the same stale trial, only the one whose FAIL lands requeues it); without (a journal file,
    one worker per study), every RUNNING trial."""
    study_id = storage.get_study_id_from_name(study.study_name)
    if _heartbeat_interval(storage):
        stale = set(storage._get_stale_trial_ids(study_id))  # what optuna.storages.fail_stale_trials uses
        if not stale:
            return 0
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if storage.get_trial_id_from_study_id_trial_number(study_id, t.number) in stale]
    else:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return 0
    failed = []
    for t in running:
        tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_user_attr(tid, "interrupted", True)
            study.tell(t.number, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
            continue  # finished meanwhile, or another worker failed it first
        failed.append(t)
    running = failed
    if not running:
        return 0
    if strategy == "grid":
        g = grid_values(settings.trials, settings.space, study_seed)
        points = [dict(zip(g, vals)) for vals in itertools.product(*g.values())]
        covered = {  # a queued (WAITING) trial keeps its params in system_attrs["fixed_params"]
            tuple(t.system_attrs.get("fixed_params", t.params).get(k) for k in g)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING))
        }
        redo = [p for p in points if tuple(p[k] for k in g) not in covered]
    else:
        redo = [dict(t.params) for t in running if set(SEARCHED) <= set(t.params)]
    for p in redo:
        study.enqueue_trial(p, user_attrs={"requeued": True})
    if log:
        log(f"{study.study_name}: {len(running)} interrupted trial(s) marked FAIL, {len(redo)} re-queued")
    return len(running)


class _StudyRun:
    """One study's ask/tell loop, cut at its batches so that several studies can train their
    batches together (run_studies). See run_study for what a batch is."""

    def __init__(self, params: Params, unit: str, strategy: str, study_seed: int, data: DeviceData,
                 storage, log: Log, stop_after_batches: int | None, code: str | None = None):
        settings = params.search_settings().for_unit(unit)
        workload, _ = SearchSettings.split(unit)
        self.settings, self.space, self.trials = settings, settings.space, settings.trials
        self.strategy, self.study_seed, self.data, self.log = strategy, study_seed, data, log
        self.stop_after_batches = stop_after_batches
        self.storage = storage
        self.shared = bool(_heartbeat_interval(storage))
        self.name = study_name(unit, strategy, study_seed)
        self.fixed_seed = strategy in ("grid", "qmc")
        self.study = optuna.create_study(
            study_name=self.name, storage=storage, sampler=make_sampler(strategy, self.space, self.trials, study_seed),
            direction="maximize", load_if_exists=True,
        )
        self.study_id = storage.get_study_id_from_name(self.name)
        _check_meta(self.study, _meta(params, unit, strategy, settings, code))
        _requeue_interrupted(self.study, storage, strategy, settings, log, study_seed)
        self.layers = grid.base_layers(params, workload, None) + [("search.fixed", settings.fixed)]
        self.n_coarse = min(max(MIN_TOP, round(settings.coarse_fraction * self.trials)), self.trials - 1)
        self.batches = 0
        self.done = False

    def ask(self) -> tuple[list[optuna.Trial], list] | None:
        """The next batch's trials and their RunConfigs; None when the study is done (then
        self.done) or when other workers are training the rest of its budget (wait)."""
        study, settings, strategy = self.study, self.settings, self.strategy
        if self.shared and self.batches:
            _requeue_interrupted(study, self.storage, strategy, settings, self.log, self.study_seed)  # a worker died meanwhile
        all_trials = study.get_trials(deepcopy=False)
        complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
        if len(complete) >= self.trials or (self.stop_after_batches is not None and self.batches >= self.stop_after_batches):
            self.done = True
            return None
        running = [t for t in all_trials if t.state == TrialState.RUNNING]  # other workers' (ours are told)
        n = min(settings.batch, self.trials - len(complete) - len(running))
        stage, box = STAGE_SINGLE, None
        if strategy == "coarse_to_fine":
            coarse = [t for t in complete if t.user_attrs.get("stage") == STAGE_COARSE]
            if len(coarse) < self.n_coarse:
                in_flight = sum(t.user_attrs.get("stage") != STAGE_FINE for t in running)
                stage, n = STAGE_COARSE, min(n, self.n_coarse - len(coarse) - in_flight)
            elif n > 0:
                stage, box = STAGE_FINE, narrow_box(coarse, self.space)
        if n <= 0:  # the rest of the budget is being trained by other workers
            _requeue_interrupted(study, self.storage, strategy, settings, self.log, self.study_seed)
            return None
        if not self.fixed_seed:
            seed = _batch_seed(self.study_seed, len(all_trials), strategy)
            study.sampler = BoxSampler(box["width"], seed) if box else make_sampler(strategy, self.space, self.trials, seed)
        asked, cfgs = [], []
        for _ in range(n):
            trial = study.ask()
            if self.shared:
                self.storage.record_heartbeat(self.trial_id(trial))
            overrides = suggest(trial, self.space, box)
            trial.set_user_attr("stage", stage)
            if box is not None:
                trial.set_user_attr("box", {k: list(v) for k, v in box.items()})
            try:
                cfgs.append(run_config(self.layers + [("trial", overrides)]))
            except ConfigError:
                study.tell(trial, state=TrialState.FAIL)
                for t in asked:
                    study.tell(t, state=TrialState.FAIL)
                raise
            asked.append(trial)
        if self.shared:  # two workers that asked at the same moment may have overshot the budget
            live = sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))
            keep = [bisect.bisect_left(live, t.number) < self.trials for t in asked]
            for trial, k in zip(asked, keep):
                if not k:
                    trial.set_user_attr("surplus", True)
                    study.tell(trial, state=TrialState.FAIL)
            asked = [t for t, k in zip(asked, keep) if k]
            cfgs = [c for c, k in zip(cfgs, keep) if k]
            if not asked:
                return None
        if self.log:
            self.log(f"{self.name}: batch {self.batches + 1}, trials {asked[0].number}-{asked[-1].number} ({stage}), "
                     f"{len(complete)}/{self.trials} complete")
        return asked, cfgs

    def trial_id(self, trial: optuna.Trial) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    def tell(self, asked: list[optuna.Trial], cfgs: list, results: list[RunResult]) -> None:
        for trial, cfg, res in zip(asked, cfgs, results):
            out = trial_outcome(res, chance_accuracy(cfg, self.data))
            for key in ("val_acc", "test_acc", "best_epoch", "diverged", "epochs", "seconds"):
                trial.set_user_attr(key, out[key])
            self.study.tell(trial, out["value"])
        self.batches += 1


def run_studies(
    params: Params,
    workload: str,
    strategy: str,
    study_seeds: Sequence[int],
    data: DeviceData,
    storage,
    *,
    log: Log = None,
    stop_after_batches: int | None = None,
    advance: Callable[[int], object] | None = None,
    code: str | None = None,
) -> list[pd.DataFrame]:
    """Run (or resume) the studies of several seeds of one (workload, strategy) side by side:
    each round asks every unfinished study for its next batch and trains all those trials as
    one engine population, then tells each study its own. The studies stay independent (each
    its sampler, storage entry and training seed); only the training is shared, so a job
    takes as many sequential steps as one study instead of one per study seed. Returns one
    tidy frame per study (trials_frame), in the order of study_seeds."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown search strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    base, _ = SearchSettings.split(workload)
    if base not in params.workloads:
        raise ConfigError(f"unknown workload {base!r}; known: {', '.join(params.workloads)}")
    if data.regression:
        raise ConfigError(f"search on {workload!r}: the objective is validation accuracy, dataset {data.name!r} is regression")
    check_space(params.search_settings().for_unit(workload).space)
    if isinstance(storage, str):  # a URL: with heartbeats, so workers can share the study
        storage = rdb_storage(storage)
    storage = optuna.storages.get_storage(storage)
    runs = [_StudyRun(params, workload, strategy, s, data, storage, log, stop_after_batches, code) for s in study_seeds]
    while not all(r.done for r in runs):
        batches = [(r, r.ask()) for r in runs if not r.done]
        batches = [(r, b) for r, b in batches if b is not None]
        if not batches:  # every unfinished study waits for other workers' trials
            time.sleep(WAIT_S)
            continue
        cfgs = [c for _, (_, cs) in batches for c in cs]
        seeds = [r.study_seed for r, (_, cs) in batches for _ in cs]  # training seed = study seed
        ids = [r.trial_id(t) for r, (asked, _) in batches for t in asked] if runs[0].shared else []
        with _heartbeats(storage, ids):
            results = engine.train_population(cfgs, seeds, data, log=log)
        start = 0
        for r, (asked, cs) in batches:
            r.tell(asked, cs, results[start : start + len(cs)])
            start += len(cs)
        if advance:
            advance(len(cfgs))
    return [trials_frame(r.study, workload, strategy, r.study_seed) for r in runs]


def run_study(
    params: Params,
    workload: str,
    strategy: str,
    study_seed: int,
    data: DeviceData,
    storage,
    *,
    log: Log = None,
    stop_after_batches: int | None = None,
    code: str | None = None,
) -> pd.DataFrame:
    """Run (or resume) one study until it has settings.trials COMPLETE trials; returns its
    tidy frame (trials_frame).

    Each batch asks settings.batch trials (fewer at the end, and coarse_to_fine cuts a batch
    at its stage boundary), builds each RunConfig from the workload's layers, settings.fixed
    and the trial's overrides, trains them together with engine.train_population (training
    seed = study_seed for every trial), and tells each its value (see trial_outcome).
    coarse_to_fine: the first round(coarse_fraction * trials) trials (at least 2, at most
    trials - 1) sample the whole space (stage "coarse"), the rest sample narrow_box() of the
    complete coarse trials (stage "fine", sampled by BoxSampler; the box is also stored as
    user_attr "box").
    `stop_after_batches` stops after that many batches (tests: an interrupted job).
    Several workers may run the same study at once on an RDB storage (module docstring).
    """
    return run_studies(params, workload, strategy, [study_seed], data, storage, log=log,
                       stop_after_batches=stop_after_batches, code=code)[0]


def trials_frame(study: optuna.Study, workload: str, strategy: str, study_seed: int) -> pd.DataFrame:
    """One row per trial of the study (all states), columns FRAME_COLUMNS, by trial number.
    value is what the sampler was told (NaN unless COMPLETE); stage is "single", or "coarse" /
    "fine" for coarse_to_fine; study is the Optuna study name (for importances())."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        a = t.user_attrs
        rows.append({
            "workload": workload, "strategy": strategy, "study_seed": study_seed, "trial": t.number,
            "lr": t.params.get("lr", math.nan), "l2": t.params.get("l2", math.nan),
            "dropout": t.params.get("dropout", math.nan),
            "width": t.params.get("width", pd.NA),
            "stage": a.get("stage"),
            "value": float(t.value) if t.state == TrialState.COMPLETE and t.value is not None else math.nan,
            "val_acc": _num(a.get("val_acc")), "test_acc": _num(a.get("test_acc")),
            "diverged": bool(a.get("diverged", False)),
            "epochs": int(a.get("epochs", 0)), "seconds": _num(a.get("seconds", 0.0)),
            "state": t.state.name, "study": study.study_name,
        })
    df = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    df["width"] = df["width"].astype("Int64")
    return df


def _num(x) -> float:
    return math.nan if x is None else float(x)


def run_job(
    params: Params, workload: str, strategy: str, data: DeviceData, storage, log: Log = None,
    advance: Callable[[int], object] | None = None, code: str | None = None,
) -> pd.DataFrame:
    """All studies (settings.study_seeds) of one (workload, strategy), their batches trained
    together (run_studies): one tidy frame. `advance(n)` is told each round's n trials."""
    frames = run_studies(params, workload, strategy, params.search_settings().study_seeds, data, storage, log=log,
                         advance=advance, code=code)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(FRAME_COLUMNS))


def frame_importances(storage, frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """importances() of every study in a job's frame (run_job's); {} for an empty frame."""
    return importances(storage, sorted(set(frame["study"]))) if "study" in frame else {}


def importances(storage, study_names: Sequence[str], *, seed: int = 0) -> dict[str, dict[str, float]]:
    """fANOVA parameter importances (optuna.importance.get_param_importances, seeded) per
    study, over its COMPLETE trials. The trials are copied into an in-memory study with the
    full space's distributions, so coarse_to_fine's two stages (different ranges) count as
    one space. A study that cannot be evaluated (missing, too few trials, constant values)
    gives {}."""
    storage = optuna.storages.get_storage(storage)
    out: dict[str, dict[str, float]] = {}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" lines
    try:
        for name in study_names:
            out[name] = _importance(storage, name, seed)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return out


def _importance(storage, name: str, seed: int) -> dict[str, float]:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        space = SearchSpace.model_validate(study.user_attrs[_META_KEY]["space"])
        dists = full_distributions(space)
        copy = optuna.create_study(direction="maximize")
        copy.add_trials([
            optuna.trial.create_trial(params=dict(t.params), distributions=dists, value=t.value)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        ])
        imp = optuna.importance.get_param_importances(
            copy, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)
        )
        return {k: float(v) for k, v in imp.items()}
    except Exception:  # noqa: BLE001 - degenerate study: missing, too few trials, constant values
        return {}
