"""Tests for tunebench.studies.search and tunebench.reporting.search_report: tiny studies (sklearn digits, a
200-example MLP, 2 epochs) of every strategy, resume after an interruption and after a
crash, a diverging region, and the report functions on real and planted frames."""

from __future__ import annotations

import io
import itertools
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from optuna.trial import TrialState

from tunebench.spec import config
from tunebench.core import data as D, engine
from tunebench.studies import search
from tunebench.reporting import search_report as R
from tunebench.spec.config import ConfigError, SearchSpace

WL = "digits_mlp"
SPACE = {"lr": [1e-3, 3.0], "l2": [1e-6, 1e-2], "dropout": [0.0, 0.5], "width": [16, 32]}
# lr * l2 > 1 makes plain SGD's weight decay step |1 - 2 lr l2| > 1: the weights grow
# geometrically and overflow within two epochs. Here about half of the space does that.
DIVERGING_SPACE = {"lr": [1e-2, 1e8], "l2": [1e-2, 1e-1], "dropout": [0.0, 0.5], "width": [16, 32]}


def make_params(space=SPACE, trials=8, batch=4, seeds=(0,), **search):
    raw = {
        "profile": "test",
        "profiles": {"test": {"seeds": [0]}},
        "workloads": {WL: {"dataset": "digits", "model": "mlp", "fixed": {"epochs": 2, "batch_size": 50, "target_accuracy": 0.3}}},
        "search": {"workloads": [WL], "trials": trials, "batch": batch, "study_seeds": list(seeds),
                   "space": space, **search},
    }
    return config.validate(raw, tuple(D.DATASETS))


@pytest.fixture(scope="module")
def dd(tmp_path_factory):
    ctx = D.LoadContext(tmp_path_factory.mktemp("raw"), allow_download=False, download_timeout_s=1.0)
    prep = D.prepare(D.load_raw("digits", ctx), "digits", "multiclass", "image", 0.1, 0,
                     max_train=200, max_test=200)
    return engine.to_device(prep, "cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is as fast and does not fight other processes."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def storage_at(path):
    return search.open_storage(make_params().search_settings(), path)


@pytest.fixture(scope="module")
def runs(dd, tmp_path_factory):
    """Every strategy, one 8-trial study each (batch 4), in one journal."""
    path = tmp_path_factory.mktemp("runs") / "journal.log"
    params = make_params()
    storage = storage_at(path)
    frame = pd.concat([search.run_job(params, WL, s, dd, storage) for s in search.STRATEGIES], ignore_index=True)
    return params, storage, frame


def complete(study):
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


# ------------------------------------------------------------------------- samplers / grid
@pytest.mark.parametrize("trials", range(4, 70))
def test_grid_no_larger_than_budget(trials):
    space = SearchSpace(**SPACE)
    levels = search.grid_levels(trials, space)
    size = math.prod(levels.values())
    assert size <= trials and levels["width"] <= len(space.width)
    # As close as possible: lr alone could always take the whole budget.
    assert size == trials
    g = search.grid_values(trials, space)
    assert {k: len(v) for k, v in g.items()} == levels
    for name in ("lr", "l2", "dropout"):
        lo, hi = getattr(space, name)
        assert all(lo <= v <= hi for v in g[name]) and len(set(g[name])) == len(g[name])
    assert set(g["width"]) <= set(space.width)


def test_grid_levels_balanced():
    space = SearchSpace(width=[32, 64, 128, 256])
    assert search.grid_levels(8, space) == {"lr": 2, "l2": 2, "dropout": 2, "width": 1}
    assert search.grid_levels(16, space) == {"lr": 2, "l2": 2, "dropout": 2, "width": 2}
    assert search.grid_levels(32, space) == {"lr": 4, "l2": 2, "dropout": 2, "width": 2}
    assert search.grid_levels(64, space) == {"lr": 4, "l2": 4, "dropout": 2, "width": 2}
    g = search.grid_values(16, space)
    assert g["lr"] == pytest.approx([1e-3, 1e-1]) and g["dropout"] == pytest.approx([0.15, 0.45])
    assert g["width"] == [64, 256]
    assert search.grid_values(8, space)["width"] == [128]  # one level: the middle


@pytest.mark.parametrize("trials", [8, 16, 32])
def test_grid_is_shifted_per_study_seed(trials):
    """A study seed shifts every level within its cell by one offset per parameter: the
    levels keep their spacing (one cell apart, in log scale for lr), stay in the space, and
    other study seeds give other points; without a seed they are the cell centres."""
    space = SearchSpace(**SPACE)
    levels = search.grid_levels(trials, space)
    grids = [search.grid_values(trials, space, seed) for seed in range(6)]
    assert len({tuple(g["lr"]) for g in grids}) == 6
    lo, hi = (math.log10(v) for v in space.lr)
    cell = (hi - lo) / levels["lr"]
    for seed, g in enumerate(grids):
        u = search.grid_offsets(seed)["lr"]
        assert 0 <= u < 1
        assert [math.log10(v) for v in g["lr"]] == pytest.approx([lo + (i + u) * cell for i in range(levels["lr"])], abs=1e-5)
        assert all(space.l2[0] <= v <= space.l2[1] for v in g["l2"]) and set(g["width"]) <= set(space.width)
    assert search.grid_values(trials, space, study_seed=None) == search.grid_values(trials, space)
    assert search.grid_offsets(None) == dict.fromkeys(search.SEARCHED, 0.5)


def test_strategies_draw_their_own_trials():
    """No two strategies share a batch seed: TPE's and GP's start-up and coarse-to-fine's first
    stage are not random search's first batch."""
    seeds = {st: search._batch_seed(0, 0, st) for st in search.STRATEGIES}
    assert len(set(seeds.values())) == len(seeds)
    assert search._batch_seed(0, 8, "tpe") != search._batch_seed(0, 0, "tpe") != search._batch_seed(1, 0, "tpe")


def test_make_sampler_kinds_and_errors():
    space = SearchSpace(**SPACE)
    kinds = {s: type(search.make_sampler(s, space, 16, 0)) for s in search.STRATEGIES}
    assert issubclass(kinds["grid"], optuna.samplers.GridSampler)
    assert kinds["random"] is kinds["coarse_to_fine"] is optuna.samplers.RandomSampler
    assert kinds["qmc"] is optuna.samplers.QMCSampler
    assert kinds["tpe"] is optuna.samplers.TPESampler
    assert kinds["gp"] is optuna.samplers.GPSampler
    assert search.make_sampler("tpe", space, 40, 0)._n_startup_trials == 10
    assert search.make_sampler("gp", space, 8, 0)._n_startup_trials == 4
    with pytest.raises(ConfigError, match="unknown search strategy"):
        search.make_sampler("hyperband", space, 8, 0)
    with pytest.raises(ConfigError, match="search.space.l2"):
        search.make_sampler("random", SearchSpace(l2=(0.0, 1e-2)), 8, 0)
    with pytest.raises(ConfigError, match="search.space.dropout"):
        search.check_space(SearchSpace(dropout=(0.2, 1.0)))


# ------------------------------------------------------------------------- every strategy
@pytest.mark.parametrize("strategy", search.STRATEGIES)
def test_every_strategy_runs_its_budget(runs, strategy):
    params, storage, frame = runs
    f = frame[frame["strategy"] == strategy]
    assert list(f["trial"]) == list(range(8)) and (f["state"] == "COMPLETE").all()
    assert list(f.columns) == list(search.FRAME_COLUMNS)
    space = params.search_settings().space
    assert f["lr"].between(*space.lr).all() and f["l2"].between(*space.l2).all()
    assert f["dropout"].between(*space.dropout).all() and f["width"].isin(space.width).all()
    assert f["value"].between(0, 1).all() and (f["epochs"] >= 1).all() and (f["seconds"] > 0).all()
    ok = ~f["diverged"]
    assert (f.loc[ok, "value"] == f.loc[ok, "val_acc"]).all()
    assert f["test_acc"][ok].between(0, 1).all()
    study = optuna.load_study(study_name=search.study_name(WL, strategy, 0), storage=storage)
    assert len(complete(study)) == 8
    expected_stage = {"coarse_to_fine": {"coarse", "fine"}}.get(strategy, {"single"})
    assert set(f["stage"]) == expected_stage
    if strategy == "grid":
        g = search.grid_values(8, space, 0)  # study seed 0's shifted grid
        points = {tuple(p) for p in itertools.product(*g.values())}
        seen = {tuple(r) for r in f[list(g)].itertuples(index=False)}
        assert len(points) <= 8 and seen == points  # the whole grid, each point once


def test_coarse_to_fine_second_stage_inside_box(runs):
    params, storage, frame = runs
    space = params.search_settings().space
    study = optuna.load_study(study_name=search.study_name(WL, "coarse_to_fine", 0), storage=storage)
    trials = sorted(complete(study), key=lambda t: t.number)
    coarse = [t for t in trials if t.user_attrs["stage"] == "coarse"]
    fine = [t for t in trials if t.user_attrs["stage"] == "fine"]
    assert len(coarse) == round(0.5 * 8) and len(fine) == 4
    assert max(t.number for t in coarse) < min(t.number for t in fine)
    box = search.narrow_box(coarse, space)
    top = sorted(coarse, key=lambda t: (-t.value, t.number))[:2]  # 25% of 4 -> at least 2
    for t in fine:
        assert t.user_attrs["box"] == {k: list(v) for k, v in box.items()}
        for name in ("lr", "l2", "dropout"):
            lo, hi = box[name]
            assert getattr(space, name)[0] <= lo <= t.params[name] <= hi <= getattr(space, name)[1]
            assert (t.distributions[name].low, t.distributions[name].high) == (lo, hi)
        assert t.params["width"] in box["width"]  # drawn by BoxSampler
        assert list(t.distributions["width"].choices) == list(space.width)  # Optuna: fixed choices
    for t in top:  # the box covers the trials it was built from
        assert all(box[n][0] <= t.params[n] <= box[n][1] for n in ("lr", "l2", "dropout"))
    assert set(box["width"]) == {t.params["width"] for t in top}


def test_narrow_box_rules():
    space = SearchSpace(lr=(1e-4, 1.0), l2=(1e-6, 1e-2), dropout=(0.0, 0.5), width=[8, 16, 32, 64])
    dists = search.full_distributions(space)
    ps = [(1e-2, 1e-4, 0.2, 16, 0.9), (1e-2, 1e-4, 0.25, 64, 0.8), (1e-4, 1e-6, 0.0, 8, 0.5),
          (1.0, 1e-2, 0.5, 32, 0.4), (0.5, 1e-3, 0.1, 32, 0.3)] + [(1e-3, 1e-5, 0.3, 8, 0.1)] * 7
    trials = [optuna.trial.create_trial(params=dict(zip(("lr", "l2", "dropout", "width"), p[:4])),
                                        distributions=dists, value=p[4]) for p in ps]
    for i, t in enumerate(trials):
        t.number = i
    box = search.narrow_box(trials, space)  # 12 trials: top 3
    assert box["lr"] == pytest.approx((1e-4, 10 ** (-2 + 0.4)))  # clipped at the space's bottom
    assert box["l2"] == pytest.approx((1e-6, 10 ** (-4 + 0.4)))
    assert box["dropout"] == pytest.approx((0.0, 0.25 + 0.05))
    assert box["width"] == [8, 16, 64]
    box2 = search.narrow_box(trials[:2], space)  # two top trials that agree on lr
    assert box2["lr"] == pytest.approx((10 ** (-2 - 0.4), 10 ** (-2 + 0.4)))


# ------------------------------------------------------------------------- resume
@pytest.mark.parametrize("strategy", ["qmc", "tpe", "coarse_to_fine"])
def test_resume_continues_the_journal(dd, runs, tmp_path, strategy):
    params = make_params()
    path = tmp_path / "journal.log"
    first = search.run_study(params, WL, strategy, 0, dd, storage_at(path), stop_after_batches=1)
    assert len(first) == 4 and (first["state"] == "COMPLETE").all()
    name = search.study_name(WL, strategy, 0)
    before = {t.number: (t.params, t.value, t.datetime_start)
              for t in optuna.load_study(study_name=name, storage=storage_at(path)).trials}
    again = search.run_study(params, WL, strategy, 0, dd, storage_at(path))  # a new process
    study = optuna.load_study(study_name=name, storage=storage_at(path))
    assert [t.number for t in study.trials] == list(range(8)) and len(complete(study)) == 8
    for t in study.trials[:4]:  # not re-run: same params, value and start time
        assert (t.params, t.value, t.datetime_start) == before[t.number]
    assert list(again["trial"]) == list(range(8))
    # Per-batch seeding: the resumed study proposes what an uninterrupted one does.
    whole = runs[2][runs[2]["strategy"] == strategy].reset_index(drop=True)  # same settings
    cols = ["trial", "lr", "l2", "dropout", "width", "stage", "value"]
    pd.testing.assert_frame_equal(again[cols], whole[cols])


@pytest.mark.parametrize("strategy", ["random", "coarse_to_fine"])
def test_study_seeds_train_together_and_match_separate_studies(dd, tmp_path, monkeypatch, strategy):
    """run_job trains the batches of all its study seeds as one population per round, and
    each study gets the trials and values it gets when run alone."""
    params = make_params(seeds=(0, 1, 2))
    sizes = []
    real = search.engine.train_population

    def counting(cfgs, seeds, data, **kw):
        sizes.append(sorted(seeds))
        return real(cfgs, seeds, data, **kw)

    monkeypatch.setattr(search.engine, "train_population", counting)
    together = search.run_job(params, WL, strategy, dd, storage_at(tmp_path / "together.log"))
    # coarse_to_fine's stage boundary is at 4 of 8 trials: every round is one batch of 4 per seed.
    assert sizes == [[0] * 4 + [1] * 4 + [2] * 4] * 2
    monkeypatch.setattr(search.engine, "train_population", real)
    cols = ["trial", "lr", "l2", "dropout", "width", "stage", "value", "diverged"]
    for seed in (0, 1, 2):
        alone = search.run_study(params, WL, strategy, seed, dd, storage_at(tmp_path / f"alone{seed}.log"))
        mine = together[together["study_seed"] == seed].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine[cols], alone[cols], rtol=1e-5)


@pytest.mark.parametrize("strategy", ["grid", "random"])
def test_crash_leaves_running_trials_that_are_failed_and_redone(dd, tmp_path, strategy):
    params = make_params()
    settings = params.search_settings()
    path = tmp_path / "journal.log"
    search.run_study(params, WL, strategy, 0, dd, storage_at(path), stop_after_batches=1)
    name = search.study_name(WL, strategy, 0)
    # A crashed job: two trials asked (one got its params, one did not) and never told.
    study = optuna.load_study(study_name=name, storage=storage_at(path),
                              sampler=search.make_sampler(strategy, settings.space, 8, 0))
    crashed = study.ask()
    lost = search.suggest(crashed, settings.space)
    study.ask()
    frame = search.run_study(params, WL, strategy, 0, dd, storage_at(path))
    study = optuna.load_study(study_name=name, storage=storage_at(path))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert sorted(t.number for t in failed) == [4, 5]
    assert all(t.user_attrs["interrupted"] for t in failed)
    done = complete(study)
    assert len(done) == 8 and not any(t.state == TrialState.RUNNING for t in study.trials)
    assert any(t.params == lost and t.user_attrs.get("requeued") for t in done)  # redone
    assert (frame["state"] == "COMPLETE").sum() == 8 and (frame["state"] == "FAIL").sum() == 2
    if strategy == "grid":
        g = search.grid_values(8, settings.space, 0)
        seen = sorted(tuple(t.params[k] for k in g) for t in done)
        assert seen == sorted(itertools.product(*g.values()))  # every grid point exactly once
    bsf = R.best_so_far(frame)
    assert list(bsf["k"]) == list(range(1, 9))  # FAIL rows do not count


def test_resume_with_other_settings_is_refused(dd, tmp_path):
    path = tmp_path / "journal.log"
    search.run_study(make_params(), WL, "random", 0, dd, storage_at(path), stop_after_batches=1)
    with pytest.raises(ConfigError, match="trials"):
        search.run_study(make_params(trials=12), WL, "random", 0, dd, storage_at(path))


def test_resume_by_other_code_is_refused(dd, tmp_path):
    """A study in a database is resumed only by the code that began it: changed training
    code would otherwise mix two experiments' trials in one study (or, with every trial
    complete, re-emit the old code's). The caller passes the digest (the command line: its
    rule's, stages.code_digest); a journal's name carries it as well."""
    path = tmp_path / "journal.log"
    search.run_study(make_params(), WL, "random", 0, dd, storage_at(path), stop_after_batches=1, code="a1b2c3d4e5f6")
    search.run_study(make_params(), WL, "random", 0, dd, storage_at(path), stop_after_batches=2, code="a1b2c3d4e5f6")
    with pytest.raises(ConfigError, match="code: stored 'a1b2c3d4e5f6', now '0123456789ab'"):
        search.run_study(make_params(), WL, "random", 0, dd, storage_at(path), code="0123456789ab")


# ------------------------------------------------------------------------- divergence
def test_diverging_region_is_recorded_for_every_sampler(dd, tmp_path):
    params = make_params(space=DIVERGING_SPACE)
    storage = storage_at(tmp_path / "journal.log")
    frame = pd.concat([search.run_study(params, WL, s, 0, dd, storage) for s in search.STRATEGIES],
                      ignore_index=True)
    assert (frame["state"] == "COMPLETE").all() and len(frame) == 8 * len(search.STRATEGIES)
    for strategy, f in frame.groupby("strategy"):
        assert f["diverged"].any(), strategy
    div = frame[frame["diverged"]]
    assert np.allclose(div["value"], 0.1)  # chance on 10 classes
    assert (frame[~frame["diverged"]]["value"] > 0).all() and (~frame["diverged"]).any()
    study = optuna.load_study(study_name=search.study_name(WL, "tpe", 0), storage=storage)
    assert all(t.user_attrs["diverged"] == d for t, d in
               zip(sorted(study.trials, key=lambda t: t.number), frame[frame["strategy"] == "tpe"]["diverged"]))
    # Reports cope: a diverged pick's test accuracy is chance.
    assert len(R.summary(frame, 0.5)) == len(search.STRATEGIES)


def test_trial_outcome_rules():
    cfg = config.RunConfig()
    row = lambda e, v, t: {"epoch": e, "val_acc": v, "test_acc": t, "diverged": False, "epoch_seconds": 0.5}  # noqa: E731
    r = engine.RunResult(seed=0, config=cfg, epochs=[row(1, 0.5, 0.4), row(2, 0.7, 0.6), row(3, 0.7, 0.65)])
    out = search.trial_outcome(r, 0.1)
    assert out == {"value": 0.7, "val_acc": 0.7, "test_acc": 0.6, "best_epoch": 2, "diverged": False,
                   "epochs": 3, "seconds": 1.5}
    bad = {"epoch": 2, "val_acc": math.nan, "test_acc": math.nan, "diverged": True, "epoch_seconds": 0.5}
    r = engine.RunResult(seed=0, config=cfg, epochs=[row(1, 0.5, 0.4), bad], diverged_epoch=2)
    out = search.trial_outcome(r, 0.1)
    assert out["value"] == 0.1 and out["diverged"] and out["val_acc"] == 0.5 and out["test_acc"] == 0.4


# ------------------------------------------------------------------------- importances
def test_importances(runs, tmp_path):
    _, storage, _ = runs
    names = [search.study_name(WL, s, 0) for s in search.STRATEGIES] + ["no.such.study"]
    imp = search.importances(storage, names)
    assert set(imp) == set(names) and imp["no.such.study"] == {}
    for name in names[:-1]:
        if imp[name]:
            assert set(imp[name]) <= set(search.SEARCHED)
            assert sum(imp[name].values()) == pytest.approx(1.0)
    assert imp[search.study_name(WL, "coarse_to_fine", 0)]  # two stages, one space


# ------------------------------------------------------------------------- reports
def planted_frame():
    """Two workloads, three seeds; grid slow, tpe fast, random in between; seed 2 of grid
    never reaches 0.8; one diverged trial."""
    rng = np.random.default_rng(0)
    rows = []
    for wl in ("a", "b"):
        for strategy, ramp in (("grid", 0.05), ("random", 0.07), ("coarse_to_fine", 0.08),
                               ("qmc", 0.07), ("tpe", 0.1), ("gp", 0.1)):
            for seed in range(3):
                for k in range(8):
                    v = min(0.95, 0.5 + ramp * k + rng.uniform(-0.02, 0.02))
                    if strategy == "grid" and seed == 2:
                        v = min(v, 0.75)
                    rows.append({"workload": wl, "strategy": strategy, "study_seed": seed, "trial": k,
                                 "lr": 0.1, "l2": 1e-4, "dropout": 0.1, "width": 32, "stage": "single",
                                 "value": v, "val_acc": v, "test_acc": v - 0.01, "diverged": False,
                                 "epochs": 2, "seconds": 1.0, "state": "COMPLETE"})
    df = pd.DataFrame(rows)
    df.loc[0, ["value", "diverged"]] = [0.1, True]
    fail = df.iloc[[1]].assign(trial=99, state="FAIL", value=np.nan)
    return pd.concat([df, fail], ignore_index=True)


def test_best_so_far_monotone_and_picks():
    df = planted_frame()
    bsf = R.best_so_far(df)
    assert len(bsf) == 2 * 6 * 3 * 8  # the FAIL row is not a trial
    for _, g in bsf.groupby(R.KEYS):
        assert list(g["k"]) == list(range(1, 9))
        assert (np.diff(g["best_val"]) >= 0).all() and (np.diff(g["seconds"]) > 0).all()
    first = bsf[(bsf.workload == "a") & (bsf.strategy == "grid") & (bsf.study_seed == 0)]
    assert first["best_val"].iloc[0] == 0.1 and first["pick_test_acc"].iloc[0] == 0.1  # diverged: chance
    src = df[(df.workload == "a") & (df.strategy == "grid") & (df.study_seed == 0) & (df.state == "COMPLETE")]
    k = int(np.argmax(src["value"].to_numpy()))
    assert first["pick_trial"].iloc[-1] == k and first["pick_test_acc"].iloc[-1] == pytest.approx(src["test_acc"].iloc[k])


def test_shortfall_is_the_distance_to_the_best_any_study_found():
    bsf = R.shortfall(R.best_so_far(planted_frame()))
    for wl, g in bsf.groupby("workload"):
        best = g["best_val"].max()
        assert (g["best_found"] == best).all()
        assert np.allclose(g["shortfall"], best - g["best_val"]) and (g["shortfall"] >= 0).all()
        assert g["shortfall"].min() == 0  # the best study's best trial
    for _, g in bsf.groupby(R.KEYS):
        assert (np.diff(g["shortfall"]) <= 0).all()  # a best so far only improves


def test_shortfall_figure_gives_each_strategy_its_own_panel():
    """One row per workload, one column per strategy, so a strategy whose first trials equal
    another's (the same random start-up draws) is not hidden under it; grid and random
    search are drawn in every other strategy's panel as references, and the target too."""
    frame = planted_frame()
    fig = R.figures(frame, {"a": 0.8, "b": 0.9})["best_so_far"]
    strategies = R._order(frame["strategy"].unique())
    assert len(fig.axes) == 2 * len(strategies)
    assert [ax.get_title() for ax in fig.axes[:len(strategies)]] == strategies
    for ax, strategy in zip(fig.axes, strategies * 2):
        labels = [line.get_label() for line in ax.get_lines()]
        assert f"{strategy} (median, 95% band)" in labels
        assert {f"{ref} (median)" for ref in ("grid", "random") if ref != strategy} <= set(labels)
        assert "target" in labels
        assert ax.get_xscale() == "log" and ax.get_yscale() == "symlog"
        assert ax.get_ylim()[0] == 0


def test_best_so_far_on_real_runs(runs):
    bsf = R.best_so_far(runs[2])
    assert len(bsf) == 8 * len(search.STRATEGIES)
    for _, g in bsf.groupby(R.KEYS):
        assert (np.diff(g["best_val"].to_numpy()) >= 0).all()


def test_expected_best_of_n_matches_enumeration():
    v = [0.3, 0.9, 0.5, 0.5, 0.7]
    for n in range(1, 6):
        brute = np.mean([max(c) for c in itertools.combinations(v, n)])
        assert R.expected_best_of_n(v, n) == pytest.approx(brute)
    assert R.expected_best_of_n(v, 1) == pytest.approx(np.mean(v))
    assert R.best_of_n_sizes(8) == [1, 2, 4, 8] and R.best_of_n_sizes(12) == [1, 2, 4, 8, 12]
    with pytest.raises(ValueError):
        R.expected_best_of_n(v, 6)


def test_summary_shape_and_targets():
    df = planted_frame()
    s = R.summary(df, {"a": 0.8, "b": 0.8})
    assert len(s) == 12 and list(s["strategy"][:6]) == list(search.STRATEGIES)
    for col in ("final_best_val", "pick_test_acc", "trials_to_target", "seconds_to_target"):
        assert {f"{col}_median", f"{col}_lo", f"{col}_hi"} <= set(s.columns)
        assert (s[f"{col}_lo"] <= s[f"{col}_median"]).all() and (s[f"{col}_median"] <= s[f"{col}_hi"]).all()
    assert {"ebn_1", "ebn_2", "ebn_4", "ebn_8", "n_diverged", "n_failed", "reached"} <= set(s.columns)
    grid_a = s[(s.workload == "a") & (s.strategy == "grid")].iloc[0]
    assert grid_a["reached"] == pytest.approx(2 / 3) and grid_a["trials_to_target_hi"] == math.inf
    assert grid_a["n_diverged"] == 1 and grid_a["n_failed"] == 1 and grid_a["n_trials"] == 24
    tpe_a = s[(s.workload == "a") & (s.strategy == "tpe")].iloc[0]
    assert tpe_a["trials_to_target_median"] < grid_a["trials_to_target_median"]
    assert (s["ebn_8"] == s["final_best_val_median"]).all()
    assert (np.diff(s[["ebn_1", "ebn_2", "ebn_4", "ebn_8"]].to_numpy(), axis=1) >= 0).all()


def test_search_figures_are_reproducible():
    """Same data, same picture: the strip plot's jitter is seeded (seaborn draws it from
    numpy's global RNG, which must be left as it was)."""
    def png(fig):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    np.random.seed(1)
    first = png(R.figures(planted_frame(), {"a": 0.8, "b": 0.9})["pick_test_acc"])
    after = np.random.random()
    np.random.seed(2)  # another global state: the same picture all the same
    assert png(R.figures(planted_frame(), {"a": 0.8, "b": 0.9})["pick_test_acc"]) == first
    np.random.seed(1)
    assert np.random.random() == after  # and the global RNG is left as it was


def test_figures_and_reports_on_real_runs(runs, tmp_path):
    params, storage, frame = runs
    frame.to_parquet(tmp_path / "t.parquet", index=False)  # what the CLI writes and the report reads
    frame = pd.read_parquet(tmp_path / "t.parquet")
    s = R.summary(frame, 0.3)
    assert len(s) == len(search.STRATEGIES) and (s["n_seeds"] == 1).all()
    figs = R.figures(frame, 0.3)
    # Optuna's plot_edf always; its parameter importances where params give the search space
    assert set(figs) == {"best_so_far", "pick_test_acc", f"edf-{WL}"}
    figs = R.figures(frame, 0.3, params)
    assert set(figs) == {"best_so_far", "pick_test_acc", f"edf-{WL}", f"importance-{WL}"}
    assert all(isinstance(f, Figure) for f in figs.values())
    for f in figs.values():
        f.savefig(io.BytesIO(), format="png")
    figs2 = R.figures(planted_frame(), {"a": 0.8, "b": 0.9})
    assert len(figs2["best_so_far"].axes) == 2 * len(search.STRATEGIES)  # workloads x strategies
    # target None: the workload's own target_accuracy (set to 0.3 in make_params)
    assert R.resolve_target(None, [WL], params) == {WL: 0.3}
    assert R.summary(frame, None, params)["target"].eq(0.3).all()
    with pytest.raises(ValueError, match="needs params"):
        R.summary(frame, None)
    imp = search.importances(storage, sorted(set(frame["study"])))
    lines = R.render(frame, s, imp, {"search-best_so_far": "figures/search-best_so_far.png"}, params)
    text = "\n".join(lines)
    assert text.startswith("## Automatic tuning\n\n*Setup:*") and "figures/search-best_so_far.png" in text
    assert text.count(f"| {WL} |") == 2 * len(search.STRATEGIES)  # summary + importance rows


def test_grid_crash_during_the_redo_keeps_every_point_once(dd, tmp_path):
    params = make_params()
    space = params.search_settings().space
    path = tmp_path / "journal.log"
    name = search.study_name(WL, "grid", 0)
    search.run_study(params, WL, "grid", 0, dd, storage_at(path), stop_after_batches=1)
    study = optuna.load_study(study_name=name, storage=storage_at(path),
                              sampler=search.make_sampler("grid", space, 8, 0))
    for _ in range(3):  # crash 1: three grid points asked, never told
        search.suggest(study.ask(), space)
    # Resume that only re-queues (no batch), then crash 2 while running a re-queued point.
    search.run_study(params, WL, "grid", 0, dd, storage_at(path), stop_after_batches=0)
    study = optuna.load_study(study_name=name, storage=storage_at(path),
                              sampler=search.make_sampler("grid", space, 8, 0))
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 4
    search.suggest(study.ask(), space)  # pops a queued point
    search.run_study(params, WL, "grid", 0, dd, storage_at(path))
    study = optuna.load_study(study_name=name, storage=storage_at(path))
    g = search.grid_values(8, space, 0)
    seen = sorted(tuple(t.params[k] for k in g) for t in complete(study))
    assert seen == sorted(itertools.product(*g.values()))
    assert len([t for t in study.trials if t.state == TrialState.FAIL]) == 4
    # Nothing queued twice: 4 + 3 crashed + 1 crashed + 3 queued + 1 re-queued, none waiting.
    assert len(study.trials) == 12 and not study.get_trials(states=(TrialState.WAITING,))


# ------------------------------------------------------------------------- search spaces
LR_ONLY = {"lr": [1e-3, 1.0], "l2": [1e-6, 1e-6], "dropout": [0.0, 0.0], "width": [32]}


def test_units_name_each_workload_in_each_space():
    s = make_params(spaces={"lr_only": LR_ONLY}).search_settings()
    assert s.units() == [WL, f"{WL}~lr_only"]
    assert s.split(f"{WL}~lr_only") == (WL, "lr_only") and s.split(WL) == (WL, None)
    assert s.for_unit(f"{WL}~lr_only").space == SearchSpace(**LR_ONLY)
    assert s.for_unit(WL).space == SearchSpace(**SPACE)
    with pytest.raises(ConfigError, match="search.spaces.nope"):
        s.for_unit(f"{WL}~nope")
    with pytest.raises(ConfigError, match="space name"):
        make_params(spaces={"a b": LR_ONLY})


@pytest.mark.parametrize("strategy", ["grid", "tpe", "gp", "coarse_to_fine"])
def test_a_workload_searched_in_a_named_space(strategy, dd, tmp_path):
    """A unit "<workload>~<space>" searches that space only (a one-value range is fixed), in
    studies of its own, under its own name in the tables."""
    params = make_params(spaces={"lr_only": LR_ONLY})
    unit = f"{WL}~lr_only"
    frame = search.run_study(params, unit, strategy, 0, dd, storage_at(tmp_path / "journal.log"))
    assert (frame["state"] == "COMPLETE").all() and len(frame) == 8
    assert (frame["workload"] == unit).all() and set(frame["study"]) == {search.study_name(unit, strategy, 0)}
    assert frame["l2"].eq(1e-6).all() and frame["dropout"].eq(0.0).all() and frame["width"].eq(32).all()
    assert frame["lr"].between(1e-3, 1.0).all() and frame["lr"].nunique() > 1
    targets = R.resolve_target(None, [unit], params)
    assert targets == {unit: 0.3}  # the unit's workload's target
