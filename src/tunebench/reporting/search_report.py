"""Reports over the search studies (claims C25-C28): pure functions of the tidy trial frame
that search.run_job returns (all workloads and strategies concatenated).

Conventions:
- Only COMPLETE trials count, in trial-number order; a study's budget is its number of
  COMPLETE trials (FAIL rows, e.g. interrupted trials, are ignored).
- The pick after k trials is the trial with the best `value` (what the sampler saw;
  diverged trials have chance accuracy) among the first k, the earliest on ties. Its test
  accuracy is its test_acc, or chance (its value) if it diverged: a diverged model is no
  better than chance.
- `target` is one validation accuracy for all workloads, a {workload: accuracy} mapping, or
  None: each workload's own target_accuracy (its RunConfig in the search, which needs
  `params`), as SearchSettings.target_accuracy = null means.
- "Never reached the target" is inf in summary(); study_metrics' *_capped columns hold
  budget + 1 trials and total seconds * (budget + 1) / budget (one more trial at the study's
  mean cost), which the search claims' paired differences use, so they stay finite.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from tunebench.reporting import markdown
from tunebench.studies.search import STRATEGIES

KEYS = ["workload", "strategy", "study_seed"]
Target = float | Mapping[str, float] | None


def resolve_target(target: Target, workloads, params=None) -> dict[str, float]:
    """{workload: target validation accuracy}. None: the workload's target_accuracy as the
    search trains it (workload layers + search.fixed); that needs `params`."""
    out = {}
    for wl in workloads:
        if isinstance(target, Mapping):
            out[wl] = float(target.get(wl, math.nan))
        elif target is not None:
            out[wl] = float(target)
        elif params is None:
            raise ValueError("target None (the workloads' own target_accuracy) needs params")
        else:
            from tunebench.spec import grid
            from tunebench.spec.config import run_config

            settings = params.search_settings()
            base = settings.split(wl)[0]  # a search unit's workload
            out[wl] = run_config(grid.base_layers(params, base, None) + [("search.fixed", settings.fixed)]).target_accuracy
    return out


def _target(target: Target, workload: str) -> float:
    if isinstance(target, Mapping):
        return float(target.get(workload, math.nan))
    return float(target)


def _order(strategies) -> list[str]:
    present = set(strategies)
    return [s for s in STRATEGIES if s in present] + sorted(present - set(STRATEGIES))


def best_so_far(df: pd.DataFrame) -> pd.DataFrame:
    """Per workload, strategy, study_seed and k = 1..budget: the best value among the first k
    complete trials (best_val), the trial picked (pick_trial) and its test accuracy
    (pick_test_acc), the k-th trial's number (trial) and the seconds spent on the first k
    trials (seconds). Columns: workload, strategy, study_seed, k, trial, best_val, pick_trial,
    pick_test_acc, seconds, budget."""
    cols = KEYS + ["k", "trial", "best_val", "pick_trial", "pick_test_acc", "seconds", "budget"]
    done = df[df["state"] == "COMPLETE"].sort_values(KEYS + ["trial"])
    parts = []
    for key, g in done.groupby(KEYS, sort=True):
        value = g["value"].to_numpy(float)
        test = np.where(g["diverged"].to_numpy(bool), value, g["test_acc"].to_numpy(float))
        n = len(g)
        pick = np.zeros(n, dtype=int)
        for i in range(1, n):  # strict improvement: the earliest trial wins ties
            pick[i] = i if value[i] > value[pick[i - 1]] else pick[i - 1]
        parts.append(pd.DataFrame({
            "workload": key[0], "strategy": key[1], "study_seed": key[2],
            "k": np.arange(1, n + 1), "trial": g["trial"].to_numpy(),
            "best_val": value[pick], "pick_trial": g["trial"].to_numpy()[pick],
            "pick_test_acc": test[pick], "seconds": np.cumsum(g["seconds"].to_numpy(float)),
            "budget": n,
        }))
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def shortfall(bsf: pd.DataFrame) -> pd.DataFrame:
    """best_so_far's frame with `best_found` (the best validation accuracy any study of the
    workload found, whatever its strategy) and `shortfall` = best_found - best_val: how far
    a strategy's best after k trials is from the best the search space gave, >= 0 and 0 at
    the best study's best trial. On this scale the last points of accuracy, where the
    strategies differ, are not squeezed against the first trials' near-chance values."""
    out = bsf.copy()
    out["best_found"] = out.groupby("workload")["best_val"].transform("max")
    out["shortfall"] = out["best_found"] - out["best_val"]
    return out


def _shortfall_figure(bsf: pd.DataFrame, order: list[str], workloads: list[str],
                      target: Mapping[str, float]) -> Figure:
    """Small multiples: one row per workload, one column per strategy, so no strategy's line
    hides another's (strategies that start from the same random draws share their first
    trials exactly). Each panel: the strategy's median shortfall over study seeds with its
    95% percentile band; the medians of grid (dotted) and random search (dashed) in grey,
    the controls of C25-C28, for reference; the target's shortfall as a black dashed line.
    Trials on a log2 axis (the early trials are where strategies part); shortfall on a
    symlog axis, linear below 1 accuracy point (0.01), so 0 is on the axis."""
    import seaborn as sns

    from tunebench.reporting.plots import legend_entries  # report imports plots anyway: no new dependency

    rows, cols = max(1, len(workloads)), max(1, len(order))
    fig = Figure(figsize=(2.3 * cols + 0.6, 2.2 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    palette = dict(zip(order, sns.color_palette(n_colors=len(order))))
    references = {"grid": ":", "random": "--"}
    for i, wl in enumerate(workloads):
        sub = bsf[bsf["workload"] == wl]
        medians = sub.groupby(["strategy", "k"])["shortfall"].median()
        tgt = _target(target, wl)
        for j, strategy in enumerate(order):
            ax = axes[i][j]
            for ref, style in references.items():
                if ref != strategy and ref in medians.index.get_level_values(0):
                    m = medians.loc[ref]
                    ax.plot(m.index, m.to_numpy(), color="0.55", ls=style, lw=1, label=f"{ref} (median)")
            own = sub[sub["strategy"] == strategy]
            if len(own):
                sns.lineplot(data=own, x="k", y="shortfall", estimator="median", errorbar=("pi", 95),
                             color=palette[strategy], ax=ax, label=f"{strategy} (median, 95% band)")
            if math.isfinite(tgt) and len(sub) and sub["best_found"].iloc[0] >= tgt:
                ax.axhline(sub["best_found"].iloc[0] - tgt, color="k", ls="--", lw=0.8, label="target")
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))  # 1, 2, 4, not 2^0
            ax.set_yscale("symlog", linthresh=0.01, linscale=0.5)
            ax.set_ylim(bottom=0)
            ax.set_title(strategy if i == 0 else "", fontsize=9)
            ax.set_xlabel("trials" if i == rows - 1 else "")
            ax.set_ylabel(f"{wl}\nshortfall from best found" if j == 0 else "")
    handles = legend_entries(axes, keep=lambda name: name == "target" or name.endswith("(median)"))
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=len(handles), fontsize=8,
                   frameon=False)
    fig.suptitle("best validation accuracy any study found, minus the strategy's best so far (lower is better);\n"
                 "line: median over study seeds, band: 95% of them", fontsize=9)
    return fig


def expected_best_of_n(values, n: int) -> float:
    """Expected maximum of n values drawn without replacement from `values` (Dodge et al.
    2019, "Show your work": expected validation performance). With v_(1) <= ... <= v_(M),
    P(max = v_(i)) = C(i-1, n-1) / C(M, n), so E = sum_i v_(i) C(i-1, n-1) / C(M, n).
    n = 1 is the mean, n = M the maximum."""
    v = np.sort(np.asarray(values, dtype=float))
    m = len(v)
    if not 1 <= n <= m:
        raise ValueError(f"expected_best_of_n: need 1 <= n <= {m}, got {n}")
    total = math.comb(m, n)
    weights = np.array([math.comb(i - 1, n - 1) / total for i in range(1, m + 1)])  # exact ints
    return float(np.dot(weights, v))


def best_of_n_sizes(budget: int) -> list[int]:
    """N = 1, 2, 4, 8, ... below the budget, and the budget itself."""
    sizes, n = [], 1
    while n < budget:
        sizes.append(n)
        n *= 2
    return sizes + [budget] if budget >= 1 else []


def _quantile(values, q: float) -> float:
    """Linear-interpolation quantile that keeps inf (numpy gives nan for inf - inf)."""
    v = np.sort(np.asarray(values, dtype=float))
    if len(v) == 0:
        return math.nan
    h = (len(v) - 1) * q
    lo, hi = int(math.floor(h)), int(math.ceil(h))
    if v[lo] == v[hi] or h == lo:
        return float(v[lo])
    return float(v[lo] + (h - lo) * (v[hi] - v[lo]))


def study_metrics(df: pd.DataFrame, target: Target, params=None) -> pd.DataFrame:
    """One row per study: final_best_val, pick_test_acc, trials_to_target and
    seconds_to_target (inf if never reached), their budget+1 stand-ins for "never"
    (trials_to_target_capped, seconds_to_target_capped), budget, n_diverged, n_failed."""
    bsf = best_so_far(df)
    target = resolve_target(target, sorted(bsf["workload"].unique()), params)
    rows = []
    for key, g in bsf.groupby(KEYS, sort=True):
        tgt = _target(target, key[0])
        budget = int(g["budget"].iloc[0])
        hit = g[g["best_val"] >= tgt]
        total_s = float(g["seconds"].iloc[-1])
        if len(hit):
            k, s = float(hit["k"].iloc[0]), float(hit["seconds"].iloc[0])
            k_cap, s_cap = k, s
        else:
            k = s = math.inf
            k_cap, s_cap = budget + 1.0, total_s * (budget + 1) / budget
        rows.append({
            "workload": key[0], "strategy": key[1], "study_seed": key[2], "target": tgt,
            "budget": budget, "final_best_val": float(g["best_val"].iloc[-1]),
            "pick_test_acc": float(g["pick_test_acc"].iloc[-1]),
            "trials_to_target": k, "seconds_to_target": s,
            "trials_to_target_capped": k_cap, "seconds_to_target_capped": s_cap,
            "total_seconds": total_s,
        })
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    flags = df[KEYS].assign(
        n_diverged=(df["diverged"].astype(bool) & (df["state"] == "COMPLETE")).astype(int),
        n_failed=(df["state"] != "COMPLETE").astype(int),
    )
    counts = flags.groupby(KEYS, as_index=False)[["n_diverged", "n_failed"]].sum()
    return out.merge(counts, on=KEYS, how="left")


def summary(df: pd.DataFrame, target: Target, params=None) -> pd.DataFrame:
    """Per workload x strategy, over study seeds: median and 95% percentile interval (_median,
    _lo, _hi; 2.5% and 97.5% quantiles, linear interpolation) of final_best_val,
    pick_test_acc, trials_to_target and seconds_to_target (inf when never reached);
    reached (share of seeds that reached the target); ebn_N: the median over seeds of the
    expected best of N trials (expected_best_of_n, N in best_of_n_sizes(budget)); n_seeds,
    budget (smallest over seeds), n_trials (complete trials), n_diverged, n_failed."""
    per = study_metrics(df, target, params)
    done = df[df["state"] == "COMPLETE"]
    rows = []
    if per.empty:
        return pd.DataFrame()
    for (wl, strat), g in per.groupby(["workload", "strategy"], sort=False):
        row: dict[str, Any] = {"workload": wl, "strategy": strat, "target": g["target"].iloc[0],
                               "n_seeds": len(g), "budget": int(g["budget"].min())}
        for m in ("final_best_val", "pick_test_acc", "trials_to_target", "seconds_to_target"):
            v = g[m].to_numpy(float)
            row[f"{m}_median"] = _quantile(v, 0.5)
            row[f"{m}_lo"] = _quantile(v, 0.025)
            row[f"{m}_hi"] = _quantile(v, 0.975)
        row["reached"] = float(np.isfinite(g["trials_to_target"].to_numpy(float)).mean())
        sel = done[(done["workload"] == wl) & (done["strategy"] == strat)]
        by_seed = [s["value"].to_numpy(float) for _, s in sel.groupby("study_seed")]
        for n in best_of_n_sizes(row["budget"]):
            row[f"ebn_{n}"] = float(np.median([expected_best_of_n(v, n) for v in by_seed]))
        row["n_trials"] = int(g["budget"].sum())
        row["n_diverged"] = int(g["n_diverged"].sum())
        row["n_failed"] = int(g["n_failed"].sum())
        rows.append(row)
    out = pd.DataFrame(rows)
    out["_o"] = out["strategy"].map({s: i for i, s in enumerate(_order(out["strategy"]))})
    return out.sort_values(["workload", "_o"]).drop(columns="_o").reset_index(drop=True)


def figures(df: pd.DataFrame, target: Target, params=None) -> dict[str, Figure]:
    """{"best_so_far": each strategy's shortfall from the best validation accuracy found vs
    trials (see _shortfall_figure), "pick_test_acc": box + strip plot of the final pick's
    test accuracy per strategy, one panel per workload}. Figures are built without pyplot
    (no global state)."""
    import seaborn as sns

    bsf = best_so_far(df)
    per = study_metrics(df, target, params)
    target = resolve_target(target, sorted(bsf["workload"].unique()), params)
    workloads = sorted(bsf["workload"].unique()) if len(bsf) else []
    order = _order(bsf["strategy"].unique()) if len(bsf) else []
    n = max(1, len(workloads))
    figs: dict[str, Figure] = {}

    bsf = shortfall(bsf)
    figs["best_so_far"] = _shortfall_figure(bsf, order, workloads, target)

    fig = Figure(figsize=(max(4.5, 0.9 * len(order)) * n, 3.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, wl in zip(axes, workloads):
        sub = per[per["workload"] == wl]
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated `vert`
            warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
            sns.boxplot(data=sub, x="strategy", y="pick_test_acc", order=order, color="0.85", ax=ax,
                        showfliers=False)
        rng_state = np.random.get_state()
        np.random.seed(0)  # seaborn jitters strip points with numpy's global RNG: same data, same figure
        try:
            sns.stripplot(data=sub, x="strategy", y="pick_test_acc", order=order, color="k", size=4, ax=ax)
        finally:
            np.random.set_state(rng_state)
        ax.set(title=wl, xlabel="", ylabel="test accuracy of the pick")
        ax.tick_params(axis="x", labelrotation=30)
    figs["pick_test_acc"] = fig
    figs.update(optuna_figures(df, per, params))
    return figs


def _in_memory_study(name: str, trials: list[tuple[dict, dict, float]]):
    """An in-memory Optuna study holding `trials` as (params, distributions, value)."""
    import optuna

    study = optuna.create_study(study_name=name, direction="maximize")
    study.add_trials([optuna.trial.create_trial(params=p, distributions=d, value=v) for p, d, v in trials])
    return study


def optuna_figures(df: pd.DataFrame, per: pd.DataFrame, params=None) -> dict[str, Figure]:
    """Optuna's own plots (optuna.visualization.matplotlib), per workload: "edf-<workload>",
    the empirical distribution of each strategy's best validation accuracy over its study
    seeds (plot_edf over one in-memory study per strategy, a trial per study seed); and
    "importance-<workload>", fANOVA importances of the searched parameters over random
    search's trials, every study seed pooled (plot_param_importances; random search covers
    the space without a sampler's bias toward its own picks). Built through pyplot, as
    Optuna draws them; the caller closes them once saved."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    from tunebench.studies import search

    out: dict[str, Figure] = {}
    if per.empty:
        return out
    settings = params.search_settings() if params is not None else None
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created in memory" lines
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # Optuna's matplotlib backend is "experimental"
            for wl in sorted(per["workload"].unique()):
                w = per[per["workload"] == wl]
                dist = {"best_val": optuna.distributions.FloatDistribution(0.0, 1.0)}
                studies = [_in_memory_study(st, [({"best_val": v}, dist, v) for v in w.loc[w["strategy"] == st,
                                                                                          "final_best_val"]])
                           for st in _order(w["strategy"].unique())]
                ax = optuna.visualization.matplotlib.plot_edf(studies, target_name="best validation accuracy of a study")
                ax.set_title(f"{wl}: each strategy's best validation accuracy over its study seeds (Optuna plot_edf)",
                             fontsize=9)
                out[f"edf-{wl}"] = ax.figure
                rnd = df[(df["workload"] == wl) & (df["strategy"] == "random") & (df["state"] == "COMPLETE")]
                if settings is None or len(rnd) < 4 or rnd["value"].nunique() < 2:
                    continue
                space = settings.for_unit(wl).space
                dists = search.full_distributions(space)
                trials = [({k: (int(r[k]) if k == "width" else float(r[k])) for k in search.SEARCHED}, dists, float(r["value"]))
                          for _, r in rnd.iterrows()]
                evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
                ax = optuna.visualization.matplotlib.plot_param_importances(
                    _in_memory_study("random", trials), evaluator=evaluator, target_name="validation accuracy")
                ax.set_title(f"{wl}: parameter importances, random search's trials (fANOVA, Optuna)", fontsize=9)
                out[f"importance-{wl}"] = ax.figure
    finally:
        optuna.logging.set_verbosity(verbosity)
    return out


# ----------------------------------------------------------------------------- markdown
def _f(x: float, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "never" if x > 0 else "-inf"
    return f"{x:.{nd}f}" if isinstance(x, float) and not float(x).is_integer() else f"{x:g}"


def _mi(row, m: str, nd: int = 3) -> str:
    return f"{_f(row[f'{m}_median'], nd)} [{_f(row[f'{m}_lo'], nd)}, {_f(row[f'{m}_hi'], nd)}]"


ANCHOR = "automatic-tuning"  # the search section's heading, as a markdown anchor


def render(df: pd.DataFrame, summ: pd.DataFrame, importance: Mapping[str, Mapping[str, float]],
           figure_paths: Mapping[str, str], params, claims=()) -> list[str]:
    """The report's search section as markdown lines: setup, figures (figure_paths holds
    "search-best_so_far" / "search-pick_test_acc" -> relative path when drawn), the summary
    table and the mean parameter importances per workload x strategy (importance: study name
    -> {param: importance}, as search.importances gives)."""
    from tunebench.studies import search

    s = params.search_settings()
    targets = resolve_target(s.target_accuracy, sorted(df["workload"].unique()), params)

    def space_text(sp) -> str:
        levels = search.grid_levels(s.trials, sp)
        searched = [k for k in search.SEARCHED if levels[k] > 1 or k == "lr"]
        return (f"lr {list(sp.lr)} (log), l2 {list(sp.l2)} (log), dropout {list(sp.dropout)}, width {sp.width}; "
                f"grid {' x '.join(f'{levels[k]} {k}' for k in searched)} = {math.prod(levels.values())} points")

    spaces = {"main space (units named by their workload)": s.space,
              **{f"space `{name}` (units `<workload>~{name}`)": sp for name, sp in s.spaces.items()}}
    startup = search.n_startup(s.trials)
    # A batch is asked before any of its trials completes: the models act from the first batch
    # after `startup` trials are complete.
    modelled = max(0, s.trials - math.ceil(startup / s.batch) * s.batch)
    lines = [
        "## Automatic tuning", "",
        *(["The search claims (" + ", ".join(f"[{c.id}](#{c.id.lower()})" for c in claims)
           + ") compare these studies.", ""] if claims else []),
        f"*Setup:* strategies {', '.join(_order(df['strategy'].unique()))}; {s.trials} trials per study, "
        f"{s.batch} trained at once (ask/tell); study seeds {s.study_seeds} (each study trains every trial "
        f"with its study seed); fixed {s.fixed}; targets "
        + ", ".join(f"{wl}: {t:g}" for wl, t in targets.items()) + ".", "",
        *[f"- {title}: {space_text(sp)}" for title, sp in spaces.items()], "",
        "The grid's levels sit at one random position per study seed within the budget's cells of each range "
        "(a randomly shifted grid: over study seeds no fixed set of points decides). TPE and GP start with "
        f"{startup} random trials (the first {s.trials - modelled}, whole batches) and propose the other {modelled} "
        f"from their models; coarse-to-fine spends {s.coarse_fraction:.0%} of the "
        "budget on random search, then samples a box around the best quarter. Every strategy draws its own "
        "trials (no two share a start-up batch). A diverged trial counts as chance accuracy. \"Never reached\" "
        "is shown as never here and counts as budget + 1 trials in the tests.",
        "",
    ]
    for name, title in (("search-best_so_far", "shortfall of each strategy's best so far from the best found"),
                        ("search-pick_test_acc", "test accuracy of each study's pick")):
        if name in figure_paths:
            lines += [f"![{title}]({figure_paths[name]})", ""]
    optuna_plots = [name for name in figure_paths if name.startswith(("search-edf-", "search-importance-"))]
    if optuna_plots:
        lines += ["Optuna's own plots: the empirical distribution of each strategy's best validation accuracy over "
                  "its study seeds (right and steep is better), and the parameters' fANOVA importances over random "
                  "search's trials.", ""]
        lines += [f"![{name.removeprefix('search-')}]({figure_paths[name]})" for name in sorted(optuna_plots)] + [""]
    if summ is not None and not summ.empty:
        rows = []
        ebn = [c for c in summ.columns if c.startswith("ebn_")]
        for _, r in summ.iterrows():
            rows.append({
                "workload": r["workload"], "strategy": r["strategy"],
                "best val [95%]": _mi(r, "final_best_val"),
                "test of pick [95%]": _mi(r, "pick_test_acc"),
                "trials to target [95%]": _mi(r, "trials_to_target", 0),
                "reached": f"{r['reached']:.0%}",
                "seconds to target": _f(r["seconds_to_target_median"], 1),
                f"expected best of N = {', '.join(c[4:] for c in ebn)}": ", ".join(_f(r[c]) for c in ebn),
                "diverged": f"{int(r['n_diverged'])}/{int(r['n_trials'])}",
            })
        lines += [markdown.table(pd.DataFrame(rows)), ""]
    imp_rows = []
    for (wl, strat), g in df.groupby(["workload", "strategy"], sort=True):
        studies = sorted(set(g["study"])) if "study" in g else []
        vals = [importance.get(st) for st in studies if importance.get(st)]
        if vals:
            mean = {p: float(np.mean([v.get(p, 0.0) for v in vals])) for p in search.SEARCHED}
            imp_rows.append({"workload": wl, "strategy": strat, "studies": len(vals),
                             **{p: f"{mean[p]:.2f}" for p in search.SEARCHED}})
    if imp_rows:
        lines += ["Parameter importance (fANOVA, mean over studies):", "", markdown.table(pd.DataFrame(imp_rows)), ""]
    return lines
