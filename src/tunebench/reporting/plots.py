"""Seaborn figures: pure functions from tables to matplotlib Figures (the CLI saves them)."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")  # no display on CI or cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy import stats  # noqa: E402

from tunebench.spec.claims import METRICS, metric_label  # noqa: E402
from tunebench.analysis.judge import not_measured  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")


# Where each plotted metric can lie: an interval is clipped to it (a t interval of accuracies
# near 1 can reach past 1). Metrics not listed are unbounded.
UNIT = (0.0, 1.0)
NON_NEGATIVE = (0.0, np.inf)
METRIC_RANGE = {
    "final_test_acc": UNIT, "test_at_best_val": UNIT, "test_acc_epoch1": UNIT, "final_train_acc": UNIT,
    "best_val": UNIT, "diverged": UNIT, "val_acc": UNIT, "gap": (-1.0, 1.0),
    "final_test_loss": NON_NEGATIVE, "final_train_loss": NON_NEGATIVE, "loss_epoch1": NON_NEGATIVE,
    "val_loss": NON_NEGATIVE, "epochs_to_target": NON_NEGATIVE, "epochs_used": NON_NEGATIVE,
    "grad_spread": NON_NEGATIVE, "trials_to_target": NON_NEGATIVE, "seconds_to_target": NON_NEGATIVE,
    "steps_to_target": NON_NEGATIVE, "grad_trend": NON_NEGATIVE,
}


def seed_interval(values: pd.Series, level: float = 0.95,
                  bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float, float]:
    """The figures' error bars: Student's t interval of the mean over seeds,
    mean +- t(n-1) * sd / sqrt(n), clipped to the metric's range `bounds`. With the 3-5
    seeds of a profile, a percentile bootstrap (seaborn's default) covers far less than its
    nominal 95% and costs 1,000 resamples per point: 100 s of the quick report's 107 s went
    into the learning curves' bootstraps. Deterministic, so the same data draws the same
    figure. NaN/inf (a diverged run's metric) is left out; fewer than 2 finite values give
    no interval."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan
    mean = float(v.mean())
    if len(v) < 2 or np.all(v == v[0]):
        return mean, mean
    lo, hi = stats.t.interval(level, df=len(v) - 1, loc=mean, scale=stats.sem(v))
    return float(max(lo, bounds[0])), float(min(hi, bounds[1]))


def interval_for(metric: str):
    """seed_interval clipped to `metric`'s range, as seaborn's `errorbar` callable."""
    bounds = METRIC_RANGE.get(metric, (-np.inf, np.inf))
    return lambda values: seed_interval(values, bounds=bounds)


# A factor with this many numeric levels is drawn on a numeric axis even if a few of its
# levels are named ("default": each optimizer's own learning rate); fewer, and the named
# levels would outweigh the line.
MIN_NUMERIC_LEVELS_BESIDE_NAMED = 3


def numeric_levels(values: pd.Series) -> pd.Series | None:
    """The factor's levels as numbers (NaN for a named level), if it is drawn on a numeric
    axis: every level a number, or at least MIN_NUMERIC_LEVELS_BESIDE_NAMED of them beside
    named ones, which are then drawn beside the axis (`_named_levels_beside`), unconnected,
    rather than making the whole factor categorical (a line from "default" to lr 0.3 would
    join two arms that are not neighbours on any scale)."""
    out = pd.to_numeric(values, errors="coerce")
    if not out.isna().any():
        return out
    return out if out.dropna().nunique() >= MIN_NUMERIC_LEVELS_BESIDE_NAMED else None


def factors(runs: pd.DataFrame) -> list[str]:
    """The dimension's factors (arm_<key> columns with values), in its grid's order, which
    the arm names keep ("activation=relu,depth=6,init=default"), not the table's column
    order (the union of every dimension's keys)."""
    cols = [c for c in runs.columns if c.startswith("arm_") and runs[c].notna().any()]
    if "arm" not in runs or runs.empty:
        return cols
    keys = [f"arm_{part.split('=', 1)[0]}" for part in str(runs["arm"].iloc[0]).split(",")]
    return sorted(cols, key=lambda c: keys.index(c) if c in keys else len(keys))


def _distinct_colours(n: int) -> list:
    """seaborn's palette, or husl past its length."""
    return sns.color_palette(n_colors=n) if n <= len(sns.color_palette()) else sns.color_palette("husl", n)


def hue_levels(d: pd.DataFrame, hue: list[str]) -> pd.DataFrame:
    """One row per hue label (d["_hue"]) with its factor levels, the labels grouped by the
    first factor's level (in order of appearance), so a colour family sits together in the
    legend."""
    levels = d.drop_duplicates("_hue").set_index("_hue")[hue]
    first_order = list(dict.fromkeys(levels.iloc[:, 0]))
    return levels.iloc[sorted(range(len(levels)), key=lambda i: first_order.index(levels.iloc[i, 0]))]


def hue_palette(levels: pd.DataFrame) -> dict[str, tuple]:
    """One colour per hue label (levels: one row per label, indexed by it, one column per
    hue factor). With one factor, seaborn's palette (husl past its length). With several,
    the first factor picks the colour and the others a shade of it, dark to light, so the
    15 lines of activation x init read as 5 colour families rather than 15 unrelated
    colours."""
    if levels.shape[1] <= 1:
        return dict(zip(levels.index, _distinct_colours(len(levels))))
    first = list(dict.fromkeys(levels.iloc[:, 0]))
    colours = dict(zip(first, _distinct_colours(len(first))))
    rest = levels.iloc[:, 1:].astype(str).agg(",".join, axis=1)
    rest_order = list(dict.fromkeys(rest))
    out = {}
    for label, row_first, row_rest in zip(levels.index, levels.iloc[:, 0], rest):
        k = rest_order.index(row_rest)
        # Blend towards black (first shade) then towards white (last): 35% at either end.
        t = 0.0 if len(rest_order) == 1 else -0.35 + 0.7 * k / (len(rest_order) - 1)
        c = np.asarray(colours[row_first])
        out[label] = tuple(c * (1 + t) if t < 0 else c + (1 - c) * t)
    return out


def legend_entries(axes, keep=lambda name: True) -> dict:
    """{label: handle} over the panels of a figure, each label once (panels share their hue
    levels), for one legend per figure instead of one per panel; `keep` picks labels."""
    entries = {}
    for ax in np.ravel(axes):
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if keep(name):
                entries.setdefault(name, handle)
    return entries


def arm_layout(runs: pd.DataFrame) -> tuple[str | None, list[str]]:
    """Which factor of a dimension goes on the x axis, and which become the hue: the numeric
    factor with the most levels (a line over it), else the categorical one with the most
    levels (points per level); ties go to the factor listed first. Every other factor is
    the hue, so an arm is one (x, hue) point however many factors the dimension crosses:
    optimizer x lr puts 7 lrs on the axis and 6 optimizers in the legend, not 42 arm labels
    side by side."""
    cols = factors(runs)
    numeric = [c for c in cols if numeric_levels(runs[c]) is not None]
    pool = numeric or cols
    if not pool:
        return None, []
    x = max(pool, key=lambda c: runs[c].nunique())  # max keeps the first of equals
    return x, [c for c in cols if c != x]


def _hue_labels(d: pd.DataFrame, hue: list[str]) -> pd.Series | None:
    """One label per row for the hue factors: the level itself for one factor,
    "factor=level, ..." for several."""
    if not hue:
        return None
    if len(hue) == 1:
        return d[hue[0]].astype(str)
    return d[hue].astype(str).apply(
        lambda row: ", ".join(f"{c.removeprefix('arm_')}={v}" for c, v in row.items()), axis=1)


def _scale_x(ax, values: pd.Series) -> None:
    """A log axis when the positive levels span two decades or more; symlog when a level is
    0 (no L1/L2 penalty, no dropout), so that control arm stays on the figure, with a
    linear stretch from 0 up to the smallest positive level."""
    positive = values[values > 0]
    if len(positive) == 0 or positive.max() / positive.min() < 100:
        return
    if (values == 0).any():
        ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=0.5)
        # Autoscaling pads symlog into negative decades no level has: start just left of 0,
        # and end a third of a decade past the largest level.
        ax.set_xlim(-0.1 * float(positive.min()), 2.0 * float(positive.max()))
    else:
        ax.set_xscale("log")


def _named_levels_beside(ax, named: pd.DataFrame, x: str, metric: str, palette: dict | None,
                         numeric_x: pd.Series) -> pd.DataFrame:
    """Draws the named levels of a numeric x ("default") left of the numeric range, one
    open-marker point per (level, hue) with its seed interval, dodged per hue, unconnected;
    puts the axis ticks on the grid's levels, named ones included. Positions are spaced in
    the axis's own scale (linear, log or symlog), so they sit alike on any. Returns the
    named rows with their plotted x ("_x") for the divergence marks."""
    to_scaled, to_data = ax.xaxis.get_transform(), ax.xaxis.get_transform().inverted()
    lo, hi = (float(v) for v in to_scaled.transform([[numeric_x.min()], [numeric_x.max()]]).ravel())
    span = (hi - lo) or 1.0
    levels = list(dict.fromkeys(named[x].astype(str)))
    hues = list(dict.fromkeys(named["_hue"]))
    bounds = METRIC_RANGE.get(metric, (-np.inf, np.inf))
    named = named.copy()
    ticks = {}
    for k, level in enumerate(levels):
        centre = lo - span * 0.16 * (len(levels) - k)
        ticks[float(to_data.transform([[centre]])[0, 0])] = level
        for j, h in enumerate(hues):
            offset = span * 0.02 * (j - (len(hues) - 1) / 2)
            pos = float(to_data.transform([[centre + offset]])[0, 0])
            rows = (named[x].astype(str) == level) & (named["_hue"] == h)
            named.loc[rows, "_x"] = pos
            values = named.loc[rows, metric]
            if not values.notna().any():
                continue
            mid = float(values.mean())
            low, high = seed_interval(values, bounds=bounds)
            err = [[mid - low], [high - mid]] if np.isfinite(low) else None
            colour = palette[h] if palette else "C0"
            ax.errorbar([pos], [mid], yerr=err, fmt="D", mfc="white", color=colour, markersize=4, linewidth=1,
                        label="_nolegend_")
    ax.axvline(float(to_data.transform([[lo - span * 0.08]])[0, 0]), color="0.75", linewidth=0.8, linestyle=":")
    numeric_ticks = sorted(set(numeric_x.dropna()))
    labels = {v: f"{v:g}" for v in numeric_ticks} | ticks
    ax.set_xticks(list(labels), labels=list(labels.values()))
    ax.xaxis.set_minor_locator(NullLocator())
    left = float(to_data.transform([[lo - span * 0.16 * (len(levels) + 0.5)]])[0, 0])
    right = float(to_data.transform([[hi + span * 0.06]])[0, 0])
    ax.set_xlim(left, right)
    if len(labels) > 5:
        ax.tick_params(axis="x", rotation=45)
    return named


def dimension_figure(runs: pd.DataFrame, metric: str) -> plt.Figure:
    """Arms of one dimension with 95% t intervals over seeds, one panel per workload; the
    factors laid out by arm_layout. A numeric x: a line per hue level over it (log or
    symlog axis when it spans decades), diverged arms marked with x, and named levels
    ("default") as unconnected points beside it. A categorical x: points per level, dodged
    per hue level."""
    label = metric_label(metric) if metric in METRICS else metric
    x, hue = arm_layout(runs)
    numeric_x = x is not None and numeric_levels(runs[x]) is not None
    workloads = list(dict.fromkeys(runs["workload"]))
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads) + (1.6 if hue else 0), 3.4),
                             squeeze=False)
    hue_title = ", ".join(c.removeprefix("arm_") for c in hue) if len(hue) == 1 else None
    for ax, wl in zip(axes[0], workloads):
        d = runs[runs["workload"] == wl].copy()
        d[metric] = d[metric].replace([np.inf, -np.inf], np.nan)
        labels = _hue_labels(d, hue)
        d["_hue"] = labels if labels is not None else ""
        # One colour per hue label, fixed here, so the named levels' points match the lines.
        levels = hue_levels(d, hue) if hue else None
        hue_order = list(levels.index) if hue else [""]
        palette = hue_palette(levels) if hue else None
        hue_arg = dict(hue="_hue", hue_order=hue_order, palette=palette) if hue else {}
        if numeric_x:
            d["_x"] = pd.to_numeric(d[x], errors="coerce")
            on_axis = d[d["_x"].notna()]
            sns.lineplot(on_axis, x="_x", y=metric, errorbar=interval_for(metric), marker="o", ax=ax, **hue_arg)
            _scale_x(ax, on_axis["_x"])
            if d["_x"].isna().any():
                named = _named_levels_beside(ax, d[d["_x"].isna()], x, metric, palette, on_axis["_x"])
                d = pd.concat([on_axis, named])
            div = d.groupby(["_x", "_hue"], dropna=False)["diverged"].mean().reset_index()
            div = div[div["diverged"] > 0]
            if len(div):
                ymin = ax.get_ylim()[0]
                ax.scatter(div["_x"], [ymin] * len(div), marker="x", color="crimson", s=40, label="diverged (any seed)")
        elif x is not None:
            d["_x"] = d[x].astype(str)
            order = list(dict.fromkeys(d["_x"]))
            if hue:
                sns.pointplot(d, x="_x", y=metric, order=order, errorbar=interval_for(metric), dodge=0.5,
                              markersize=4, linewidth=1, ax=ax, **hue_arg)
            else:
                sns.pointplot(d, x="_x", y=metric, order=order, errorbar=interval_for(metric),
                              linestyle="none", ax=ax, color="C0")
            if max(map(len, order)) > 4:
                ax.tick_params(axis="x", rotation=45)
                for lab in ax.get_xticklabels():
                    lab.set_horizontalalignment("right")
        ax.set_xlabel(x.removeprefix("arm_") if x else "")
        ax.set_title(wl)
        ax.set_ylabel(textwrap.fill(label, 40) if ax is axes[0][0] else "")  # long metric names, 3.4 in high
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    legend = legend_entries(axes[0])
    if legend:
        axes[0][-1].legend(legend.values(), legend.keys(), title=hue_title, fontsize=7, title_fontsize=7,
                           loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def heatmap_figure(runs: pd.DataFrame, metric: str) -> plt.Figure | None:
    """Two-way dimensions (optimizer x depth, batch norm x lr, width x data): mean over
    seeds per cell, one panel per workload."""
    cols = factors(runs)
    if len(cols) != 2:
        return None
    workloads = list(dict.fromkeys(runs["workload"]))
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 3.4), squeeze=False)
    for ax, wl in zip(axes[0], workloads):
        d = runs[runs["workload"] == wl].copy()
        d[metric] = d[metric].replace([np.inf, -np.inf], np.nan)
        table = d.pivot_table(index=cols[0], columns=cols[1], values=metric, aggfunc="mean", sort=False)
        sns.heatmap(table, annot=True, fmt=".2f", cmap="viridis", ax=ax, cbar=False)
        ax.set_title(wl)
        ax.set_ylabel(cols[0].removeprefix("arm_"))
        ax.set_xlabel(cols[1].removeprefix("arm_"))
    fig.suptitle((metric_label(metric) if metric in METRICS else metric) + " (mean over seeds)", fontsize=9)
    fig.tight_layout()
    return fig


def paired_curves(d: pd.DataFrame, y: str) -> pd.DataFrame:
    """Per seed and epoch, each arm's `y` minus the control's: the first arm in the table's
    order (the grid's first value). Seeds are paired (seed s gives every arm the same data
    order and initial draws), so this is the effect of the arm as training goes, without
    the seed-to-seed spread every arm shares. For a loss, the log10 ratio to the control's.
    A diverged epoch (NaN/inf) and an epoch the control did not reach (early stopping)
    have no difference. Columns: seed, epoch, arm, effect."""
    arms = list(dict.fromkeys(d["arm"]))
    values = pd.to_numeric(d[y], errors="coerce").replace([np.inf, -np.inf], np.nan)
    if y == "val_loss":
        values = np.log10(values.where(values > 0))
    wide = d.assign(_v=values).pivot_table(index=["seed", "epoch"], columns="arm", values="_v", aggfunc="first",
                                          dropna=False)
    out = wide[arms[1:]].sub(wide[arms[0]], axis=0).reset_index().melt(
        id_vars=["seed", "epoch"], var_name="arm", value_name="effect")
    return out.dropna(subset=["effect"]).reset_index(drop=True)


def curves_figure(epochs: pd.DataFrame, max_arms: int = 10) -> plt.Figure | None:
    """Validation accuracy (loss for regression) per epoch, one column per workload. Top:
    each arm's mean over seeds (no bands: arms that share seeds share their first epochs,
    and overlapping bands hid them). Bottom: each arm minus the control (the first arm),
    paired by seed (paired_curves), mean and 95% t interval; the control is the 0 line.
    One legend; an arm keeps its colour in both rows."""
    if epochs.empty or epochs["arm"].nunique() > max_arms:
        return None
    workloads = list(dict.fromkeys(epochs["workload"]))
    arms = list(dict.fromkeys(epochs["arm"]))
    palette = dict(zip(arms, sns.color_palette(n_colors=len(arms))))
    fig, axes = plt.subplots(2, len(workloads), figsize=(4.2 * len(workloads) + 1.8, 5.8), squeeze=False,
                             sharex="col", gridspec_kw={"height_ratios": [1.2, 1]})
    for top, bottom, wl in zip(axes[0], axes[1], workloads):
        d = epochs[epochs["workload"] == wl]
        y = "val_loss" if (d["n_classes"] == 0).all() else "val_acc"
        mine = [a for a in arms if a in set(d["arm"])]
        sns.lineplot(d, x="epoch", y=y, hue="arm", hue_order=mine, palette=palette, errorbar=None, ax=top)
        if y == "val_loss":
            top.set_yscale("log")
        top.set_title(wl)
        diff = paired_curves(d, y)
        bottom.axhline(0, color=palette[mine[0]], lw=1.2)
        if len(diff):
            sns.lineplot(diff, x="epoch", y="effect", hue="arm", hue_order=mine[1:], palette=palette,
                         errorbar=lambda v: seed_interval(v), err_kws={"alpha": 0.12}, ax=bottom)
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
        bottom.set_ylabel(("log10 loss ratio" if y == "val_loss" else y) + f" - control\n({mine[0]}), paired")
        for ax in (top, bottom):
            if ax.get_legend() is not None:
                ax.get_legend().remove()
    handles = legend_entries(axes[0])
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       frameon=False)
    fig.tight_layout()
    return fig


VERDICT_COLOURS = {"supported": "#1a9850", "refuted": "#d73027", "no effect": "#4575b4", "unresolved": "0.55"}


def forest_rows(contrasts: pd.DataFrame) -> pd.DataFrame:
    """The forest plot's rows: every primary contrast, and every secondary one that came out
    refuted (descriptive, marked), in the contrasts' order."""
    if contrasts.empty:
        return contrasts
    primary = contrasts["primary"].astype(bool)
    keep = primary | (contrasts["verdict"] == "refuted")
    return contrasts[keep].reset_index(drop=True)


def verdict_figure(contrasts: pd.DataFrame) -> plt.Figure | None:
    """A forest plot of every claim's primary contrast per workload (and of every secondary
    refutation, hollow and marked "secondary"): the effect and its 95% interval, signed so
    that right of 0 is the way the advice predicts (effect x expected sign; a "no difference"
    prediction keeps its sign), coloured by verdict. One panel per metric, each on its own
    scale; a non-inferiority margin is a grey bar at -margin. A non-finite effect (every seed
    of an arm diverged) has no point and is named in its panel's title; a target that neither
    arm reached has no point either (its 0 is the budget + 1 stand-in's), and its row reads
    "(not measured)"."""
    prim = forest_rows(contrasts)
    if prim.empty:
        return None
    unmeasured = not_measured(prim)
    sign = prim["expected"].where(prim["expected"] != 0, 1)
    secondary = ~prim["primary"].astype(bool)
    prim = prim.assign(
        signed=prim["effect"] * sign, lo=np.minimum(prim["ci_low"] * sign, prim["ci_high"] * sign),
        hi=np.maximum(prim["ci_low"] * sign, prim["ci_high"] * sign),
        row=prim["claim"] + " " + prim["workload"] + np.where(secondary, " (secondary: " + prim["contrast"] + ")", "")
        + np.where(unmeasured, " (not measured)", ""), unmeasured=unmeasured, secondary=secondary)
    metrics = list(dict.fromkeys(prim["metric"]))
    heights = [prim["metric"].eq(m).sum() + 1.2 for m in metrics]
    fig = plt.figure(figsize=(7.5, 0.22 * sum(heights) + 1.0), layout="constrained")
    axes = fig.subplots(len(metrics), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, metric in zip(axes, metrics):
        d = prim[prim["metric"] == metric].reset_index(drop=True)
        y = np.arange(len(d))[::-1]  # first claim on top
        finite = np.isfinite(d["signed"]).to_numpy()
        unreached = d["unmeasured"].to_numpy(bool)
        drawn = finite & ~unreached
        verdicts = [v for v in VERDICT_COLOURS if v in set(d["verdict"])] + sorted(set(d["verdict"]) - set(VERDICT_COLOURS))
        for verdict in verdicts:
            for second in (False, True):
                m = drawn & (d["verdict"] == verdict).to_numpy() & (d["secondary"].to_numpy() == second)
                if m.any():
                    left = np.clip(d["signed"][m] - d["lo"][m], 0, None).fillna(0)
                    right = np.clip(d["hi"][m] - d["signed"][m], 0, None).fillna(0)
                    colour = VERDICT_COLOURS.get(verdict, "C0")
                    ax.errorbar(d["signed"][m], y[m], xerr=[left, right], fmt="o", ms=4, lw=1.2, capsize=2,
                                color=colour, mfc="white" if second else colour,
                                label=f"{verdict} (secondary, descriptive)" if second else verdict)
        margin = d["margin"].to_numpy(dtype=float) if "margin" in d else np.full(len(d), np.nan)
        has_margin = np.isfinite(margin)
        if has_margin.any():
            ax.scatter(-margin[has_margin], y[has_margin], marker="|", s=80, color="0.4", label="margin")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, d["row"], fontsize=7)
        ax.set_ylim(-0.7, len(d) - 0.3)
        missing = ", ".join(d["row"][~finite])
        title = metric_label(metric)
        ax.set_title(title + (f" (no finite effect: {missing})" if missing else ""), fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    handles = legend_entries(axes)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=len(handles), fontsize=8,
               frameon=False)
    fig.suptitle("each claim's primary effect per workload with its 95% interval; right of 0 = as the advice predicts",
                 fontsize=9)
    return fig


def power_figure(curves: dict[str, pd.DataFrame]) -> plt.Figure | None:
    """The calibration's power curves, one line per family: P(supported) against the planted
    effect in SDs of the per-seed difference, with the exact binomial 95% band."""
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    for family, c in curves.items():
        if c.empty:
            continue
        ax.plot(c["delta_sd"], c["power"], marker="o", label=family)
        ax.fill_between(c["delta_sd"], c["ci_low"], c["ci_high"], alpha=0.2)
    ax.axhline(0.8, color="0.5", ls=":", lw=0.8)
    ax.set(xlabel="planted effect (SDs of the per-seed difference)", ylabel="P(supported)", ylim=(0, 1))
    ax.legend(title="family", fontsize=8)
    ax.set_title("power of one primary contrast through its family's Holm correction", fontsize=9)
    return fig
