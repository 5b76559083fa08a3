"""Figures of tunebench.reporting.plots: they render, and the same data always draws the same
picture, so a rerun of the report stage does not change the published figures; the error
bars are Student-t intervals over seeds."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
import yaml

from tunebench.reporting import plots


def runs_frame(factor: str, values) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame([
        {"workload": wl, "arm": f"{factor}={v}", f"arm_{factor}": v, "seed": seed,
         "final_test_acc": rng.random(), "diverged": 0.0}
        for wl in ("a", "b") for v in values for seed in range(5)
    ])


def epochs_frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame([
        {"workload": "a", "arm": f"lr={lr}", "seed": seed, "epoch": e, "val_acc": rng.random(), "n_classes": 10}
        for lr in (0.01, 0.1) for seed in range(5) for e in range(1, 4)
    ])


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@pytest.mark.parametrize("draw", [
    lambda: plots.dimension_figure(runs_frame("lr", [0.01, 0.1, 1.0]), "final_test_acc"),  # a line over lr
    lambda: plots.dimension_figure(runs_frame("optimizer", ["sgd", "adam"]), "final_test_acc"),  # points per arm
    lambda: plots.curves_figure(epochs_frame()),
    lambda: plots.dimension_figure(grid_frame({"optimizer": ["sgd", "adam"], "lr": ["default", 0.3, 0.03, 0.003]}),
                                   "final_test_acc"),  # a line over lr, "default" beside it
], ids=["numeric-factor", "categorical-factor", "curves", "named-level-beside-numbers"])
def test_same_data_same_figure(draw):
    np.random.seed(1)
    first = png(draw())
    np.random.seed(2)
    assert png(draw()) == first


def test_seed_interval_is_the_t_interval_of_the_mean():
    lo, hi = plots.seed_interval(pd.Series([1.0, 2.0, 3.0]))
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # t(2, 0.975) * sd / sqrt(n)
    assert lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    # A diverged run's NaN/inf is left out, not averaged in.
    assert plots.seed_interval(pd.Series([1.0, np.nan, 2.0, 3.0, np.inf])) == pytest.approx((lo, hi))
    assert plots.seed_interval(pd.Series([0.7])) == (0.7, 0.7)  # one seed: no interval
    assert plots.seed_interval(pd.Series([0.5, 0.5, 0.5])) == (0.5, 0.5)
    assert all(np.isnan(plots.seed_interval(pd.Series([np.nan, np.nan]))))


def test_intervals_are_clipped_to_the_metric_range():
    """Accuracies of 0.99, 0.90, 0.10 have a t interval reaching past both 0 and 1; drawn,
    it stops at the range an accuracy can take."""
    accuracies = pd.Series([0.99, 0.90, 0.10])
    lo, hi = plots.seed_interval(accuracies)
    assert lo < 0 and hi > 1
    assert plots.interval_for("final_test_acc")(accuracies) == (0.0, 1.0)
    assert plots.interval_for("val_loss")(pd.Series([0.01, 0.02, 2.0]))[0] == 0.0
    assert plots.interval_for("an_unlisted_metric")(accuracies) == (lo, hi)


def test_every_claim_metric_has_a_range():
    from tunebench.spec.claims import METRICS

    assert set(METRICS) <= set(plots.METRIC_RANGE)
    assert all(lo < hi for lo, hi in plots.METRIC_RANGE.values())


def test_curves_band_is_the_seed_interval_of_the_paired_difference():
    """The bottom row's band is seed_interval of each epoch's per-seed difference from the
    control (the first arm); the top row draws means only."""
    data = epochs_frame()
    fig = plots.curves_figure(data)
    top, bottom = fig.axes[:2]
    assert not top.collections  # no bands on the curves themselves
    band = bottom.collections[0].get_paths()[0].vertices  # the one arm that is not the control: lr=0.1
    wide = data.pivot_table(index=["seed", "epoch"], columns="arm", values="val_acc")
    diff = (wide["lr=0.1"] - wide["lr=0.01"]).reset_index(name="d")
    for epoch, values in diff.groupby("epoch")["d"]:
        lo, hi = plots.seed_interval(values)
        ys = band[np.isclose(band[:, 0], epoch), 1]
        assert min(ys) == pytest.approx(lo) and max(ys) == pytest.approx(hi)
    plots.plt.close(fig)


def test_paired_curves_subtract_the_control_per_seed_and_epoch():
    data = epochs_frame()
    out = plots.paired_curves(data, "val_acc")
    assert set(out["arm"]) == {"lr=0.1"} and len(out) == 5 * 3  # seeds x epochs, the control left out
    row = out[(out["seed"] == 2) & (out["epoch"] == 3)]["effect"].item()
    pick = lambda arm: data[(data["arm"] == arm) & (data["seed"] == 2) & (data["epoch"] == 3)]["val_acc"].item()
    assert row == pytest.approx(pick("lr=0.1") - pick("lr=0.01"))
    # A diverged epoch has no difference, and a loss compares as a log10 ratio.
    lossy = data.assign(val_loss=np.where(data["arm"] == "lr=0.1", 10.0, 1.0))
    lossy.loc[(lossy["arm"] == "lr=0.1") & (lossy["epoch"] == 3), "val_loss"] = np.inf
    ratio = plots.paired_curves(lossy, "val_loss")
    assert len(ratio) == 5 * 2 and np.allclose(ratio["effect"], 1.0)


# ---- every dimension of params.yaml: each arm is one visible point of its figure

ROOT = Path(__file__).resolve().parents[1]
DIMENSIONS = yaml.safe_load((ROOT / "params.yaml").read_text())["dimensions"]


def grid_frame(grid: dict[str, list]) -> pd.DataFrame:
    """A runs table for a dimension's grid as aggregate writes it: one arm_<factor> column
    per factor, the levels as strings, two workloads, 3 seeds; the first arm diverges."""
    rng = np.random.default_rng(0)
    rows = []
    for wl in ("a", "b"):
        for i, levels in enumerate(itertools.product(*grid.values())):
            arm = {f"arm_{k}": str(v) for k, v in zip(grid, levels)}
            for seed in range(3):
                rows.append({"workload": wl, "arm": ",".join(f"{k}={v}" for k, v in zip(grid, levels)), **arm,
                             "seed": seed, "final_test_acc": rng.random(), "diverged": float(i == 0)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("dim", sorted(DIMENSIONS))
def test_every_arm_of_every_dimension_is_one_point_on_its_figure(dim):
    """x carries one factor's levels and the legend every combination of the others, so a
    figure never lines up dozens of arm labels (optimizer x lr: 42) and a log axis never
    drops the 0 level (no L1/L2 penalty: C11's and C12's control)."""
    grid = DIMENSIONS[dim]["grid"]
    frame = grid_frame(grid)
    x, hue = plots.arm_layout(frame)
    assert x is not None and set(hue) == {f"arm_{k}" for k in grid} - {x}
    fig = plots.dimension_figure(frame, "final_test_acc")
    x_levels = [str(v) for v in grid[x.removeprefix("arm_")]]
    hue_levels = math.prod(len(grid[h.removeprefix("arm_")]) for h in hue)
    numbers = plots.numeric_levels(pd.Series(x_levels))
    for ax in fig.axes:
        if numbers is not None:
            lo, hi = ax.get_xlim()
            values = [float(v) for v in numbers.dropna()]
            assert all(lo < v < hi for v in values), (dim, ax.get_xscale(), (lo, hi), values)
            if 0.0 in values and max(values) / min(v for v in values if v > 0) >= 100:
                assert ax.get_xscale() == "symlog"
            # Named levels ("default") are ticks of their own, left of every number, inside the axis.
            named = [v for v, n in zip(x_levels, numbers) if pd.isna(n)]
            ticks = dict(zip([t.get_text() for t in ax.get_xticklabels()], ax.get_xticks()))
            for level in named:
                assert lo < ticks[level] < min(values), (dim, level, ticks)
        else:
            assert [t.get_text() for t in ax.get_xticklabels()] == x_levels
        assert ax.get_xlabel() == x.removeprefix("arm_")
    legend = fig.axes[-1].get_legend()
    labels = [t.get_text() for t in legend.get_texts()] if legend else []
    plots.plt.close(fig)
    assert len([name for name in labels if not name.startswith("diverged")]) == (hue_levels if hue else 0)


def test_named_levels_are_points_beside_the_line_not_on_it():
    """Each (named level, hue) is one point of its own, at the seeds' mean with their t
    interval, in its hue's colour; the line over the numbers does not reach it."""
    frame = grid_frame({"optimizer": ["sgd", "adam"], "lr": ["default", 0.3, 0.03, 0.003]})
    fig = plots.dimension_figure(frame, "final_test_acc")
    ax = fig.axes[0]
    default_x = dict(zip([t.get_text() for t in ax.get_xticklabels()], ax.get_xticks()))["default"]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 1 and line.get_linestyle() != ":"]
    assert lines and all(min(line.get_xdata()) >= 0.003 for line in lines)
    points = [c for c in ax.containers if hasattr(c, "lines") and len(c.lines[0].get_xdata()) == 1]
    a = frame[frame["workload"] == "a"]
    for c, opt in zip(points, ["sgd", "adam"]):
        (x,), (y,) = c.lines[0].get_xdata(), c.lines[0].get_ydata()
        values = a[(a["arm_optimizer"] == opt) & (a["arm_lr"] == "default")]["final_test_acc"]
        assert abs(np.log10(x) - np.log10(default_x)) < 0.2 and y == pytest.approx(values.mean())
        low, high = plots.seed_interval(values, bounds=(0.0, 1.0))
        segment = c.lines[2][0].get_segments()[0]
        assert (segment[0][1], segment[1][1]) == pytest.approx((low, high))
    colours = [matplotlib.colors.to_hex(c.lines[0].get_color()) for c in points]
    assert len(set(colours)) == 2 and set(colours) <= {matplotlib.colors.to_hex(line.get_color()) for line in lines}
    plots.plt.close(fig)


def test_arm_layout_prefers_a_numeric_factor_then_the_most_levels():
    numeric = grid_frame({"optimizer": ["sgd", "adam"], "lr": [0.1, 0.01]})
    assert plots.arm_layout(numeric) == ("arm_lr", ["arm_optimizer"])
    categorical = grid_frame({"optimizer": ["sgd", "adam", "rmsprop"], "lr": ["default", 0.1]})
    assert plots.arm_layout(categorical) == ("arm_optimizer", ["arm_lr"])
    # Enough numbers beside a named level: the numbers make the axis, "default" sits beside it.
    mixed = grid_frame({"optimizer": ["sgd", "adam", "rmsprop", "adagrad"], "lr": ["default", 0.3, 0.03, 0.003]})
    assert plots.arm_layout(mixed) == ("arm_lr", ["arm_optimizer"])
    tie = grid_frame({"lr": [0.1, 0.01], "depth": [1, 4]})
    assert plots.arm_layout(tie) == ("arm_lr", ["arm_depth"])


def contrasts_frame() -> pd.DataFrame:
    """Three claims' contrasts as judge writes them: C1 two contrasts on workload a (the
    first primary, the second a secondary one supported: not drawn) and one on b, C2 on
    epochs (lower is better: expected -1, with a margin), C3 with a non-finite effect, and a
    secondary refutation of C1 (drawn, hollow, marked)."""
    rows = [
        ("C1", "a", "final_test_acc", 1, np.nan, 0.10, 0.05, 0.15, "supported", True, "c1"),
        ("C1", "a", "final_test_acc", 1, np.nan, 0.50, 0.40, 0.60, "supported", False, "c1 other"),
        ("C1", "b", "final_test_acc", 1, np.nan, -0.02, -0.05, 0.01, "unresolved", True, "c1"),
        ("C2", "a", "epochs_to_target", -1, 0.5, -3.0, -4.0, -2.0, "supported", True, "c2"),
        ("C3", "a", "final_test_loss", -1, np.nan, np.inf, np.nan, np.nan, "refuted", True, "c3"),
        ("C1", "b", "final_test_acc", 1, np.nan, -0.30, -0.40, -0.20, "refuted", False, "c1 at 1.0"),
    ]
    return pd.DataFrame(rows, columns=["claim", "workload", "metric", "expected", "margin", "effect",
                                       "ci_low", "ci_high", "verdict", "primary", "contrast"])


def test_verdict_figure_is_a_forest_plot_signed_by_the_prediction():
    fig = plots.verdict_figure(contrasts_frame())
    axes = fig.axes
    assert len(axes) == 3  # one panel per metric, each on its own scale
    acc, epochs, loss = axes
    # Primary contrasts only, first claim on top; x = effect x expected sign.
    assert [t.get_text() for t in acc.get_yticklabels()] == ["C1 a", "C1 b", "C1 b (secondary: c1 at 1.0)"]
    points = {}
    for ax in axes:
        for container in ax.containers:  # one errorbar per verdict
            line = container.lines[0]
            for x, y in zip(line.get_xdata(), line.get_ydata()):
                label = ax.get_yticklabels()[list(ax.get_yticks()).index(y)].get_text()
                points[label] = (x, container.get_label(), line.get_color())
    assert points["C1 a"][0] == pytest.approx(0.10) and points["C1 b"][0] == pytest.approx(-0.02)
    assert points["C2 a"][0] == pytest.approx(3.0)  # 3 epochs fewer: right of 0, as predicted
    assert points["C1 a"][1] == "supported" and points["C1 b"][1] == "unresolved"
    assert points["C1 b (secondary: c1 at 1.0)"][1] == "refuted (secondary, descriptive)"
    assert points["C1 a"][2] == plots.VERDICT_COLOURS["supported"]
    # The interval flips with the sign: [-4, -2] epochs becomes [2, 4].
    segments = epochs.containers[0].lines[2][0].get_segments()
    assert [tuple(np.round(seg[:, 0], 6)) for seg in segments] == [(2.0, 4.0)]
    assert "C3 a" not in points and "no finite effect: C3 a" in loss.get_title(loc="left")
    # C2's non-inferiority margin sits at -margin.
    assert [tuple(o) for o in epochs.collections[-1].get_offsets()] == [(-0.5, 0.0)]
    plots.plt.close(fig)
    assert plots.verdict_figure(contrasts_frame().iloc[:0]) is None


def test_verdict_figure_draws_no_point_for_a_target_neither_arm_reached():
    """An epochs-to-target contrast both arms were censored on has effect 0 [0, 0] by the
    stand-in: drawn, it would look like a precise null. Its row says it was not measured."""
    frame = contrasts_frame().assign(treatment_reached=np.nan, control_reached=np.nan)
    never = {**frame.iloc[3].to_dict(), "claim": "C4", "effect": 0.0, "ci_low": 0.0, "ci_high": 0.0,
             "verdict": "unresolved", "treatment_reached": 0.0, "control_reached": 0.0}
    partly = {**never, "claim": "C5", "effect": -1.0, "ci_low": -2.0, "ci_high": 0.0, "control_reached": 0.4}
    fig = plots.verdict_figure(pd.concat([frame, pd.DataFrame([never, partly])], ignore_index=True))
    epochs = fig.axes[1]
    drawn = sorted(epochs.get_yticklabels()[list(epochs.get_yticks()).index(y)].get_text()
                   for c in epochs.containers for y in c.lines[0].get_ydata())
    assert drawn == ["C2 a", "C5 a"]
    assert "C4 a (not measured)" in [t.get_text() for t in epochs.get_yticklabels()]
    plots.plt.close(fig)


def test_factors_follow_the_grids_order_not_the_tables_columns():
    frame = grid_frame({"activation": ["relu", "tanh"], "depth": [1, 6], "init": ["default", "kaiming_normal"]})
    shuffled = frame[["workload", "arm", "arm_init", "seed", "arm_depth", "arm_activation", "final_test_acc", "diverged"]]
    assert plots.factors(shuffled) == ["arm_activation", "arm_depth", "arm_init"]
    assert plots.arm_layout(shuffled) == ("arm_depth", ["arm_activation", "arm_init"])


def test_two_hue_factors_draw_a_colour_per_first_level_in_shades_of_the_second():
    """activation x init: lines of one activation share a colour family (shades of one
    colour: the same hue angle), each init its own shade, and the legend keeps a family
    together."""
    import colorsys

    grid = {"activation": ["relu", "sigmoid", "tanh"], "depth": [1, 6], "init": ["default", "xavier_uniform", "kaiming_normal"]}
    fig = plots.dimension_figure(grid_frame(grid), "final_test_acc")
    legend = fig.axes[-1].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    colour = {k: matplotlib.colors.to_rgb(h.get_color()) for k, h in zip(labels, legend.legend_handles)
              if not k.startswith("diverged")}
    # The lines drawn carry the legend's colours.
    drawn = {matplotlib.colors.to_rgb(line.get_color()) for line in fig.axes[0].get_lines() if len(line.get_xdata()) == 2}
    assert set(colour.values()) <= drawn
    plots.plt.close(fig)
    assert labels[:3] == ["activation=relu, init=default", "activation=relu, init=xavier_uniform",
                          "activation=relu, init=kaiming_normal"]
    hue_angle = {k: colorsys.rgb_to_hls(*v)[0] for k, v in colour.items()}
    for act in grid["activation"]:
        family = [f"activation={act}, init={i}" for i in grid["init"]]
        assert len({colour[k] for k in family}) == 3  # a shade per init
        assert max(hue_angle[k] for k in family) - min(hue_angle[k] for k in family) < 0.02
    relu, sigmoid = hue_angle["activation=relu, init=default"], hue_angle["activation=sigmoid, init=default"]
    assert abs(relu - sigmoid) > 0.05  # families differ in colour
