"""Run-epoch rows -> one row per run with the metrics the claims use.

Diverged runs are data: their accuracy counts at chance level (1/n_classes; 0.5 for
binary), their loss as +inf, and `diverged` is 1, so a divergence rate per arm falls out.

A run with `restore_best` is scored with the weights of its best validation epoch (first on
ties; the lowest validation loss for regression), as Keras' restore_best_weights leaves a
model: the engine evaluated exactly those weights, batch-norm statistics included, at the end
of that epoch, so that epoch's metrics are the restored model's. A restored run that diverged
later keeps its best finite epoch (and `diverged` = 1).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

RUN_KEYS = ["workload", "dimension", "arm", "seed"]


def chance(n_classes: int, config_json: str) -> float:
    if n_classes == 0:
        return float("nan")
    return 0.5 if '"task": "binary"' in config_json else 1.0 / n_classes


def summarize_run(g: pd.DataFrame) -> dict:
    g = g.sort_values("epoch")
    first = g.iloc[0]
    ok = g[~g["diverged"]]
    diverged = bool(g["diverged"].any())
    config = json.loads(first["config"])
    per_epoch = float(g["steps"].dropna().iloc[0]) if "steps" in g and g["steps"].notna().any() else np.nan
    # A step budget sets the epochs (engine: ceil(steps / steps per epoch)).
    if config.get("steps") and np.isfinite(per_epoch):
        epochs_budget = int(np.ceil(config["steps"] / per_epoch))
    else:
        epochs_budget = int(config["epochs"])
    chance_acc = chance(int(first["n_classes"]), first["config"])
    regression = int(first["n_classes"]) == 0
    best = None
    if len(ok):
        best = ok.loc[ok["val_loss"].idxmin()] if regression else ok.loc[ok["val_acc"].idxmax()]
    restored = bool(config.get("restore_best")) and best is not None
    last = best if restored else (ok.iloc[-1] if len(ok) else None)
    out = {
        "diverged": float(diverged),
        "diverged_epoch": first["diverged_epoch"] if diverged else np.nan,
        "epochs_used": int(g["epoch"].max()),
        "seconds": float(g["epoch_seconds"].sum()),
        "target_accuracy": float(first["target_accuracy"]),
        "evals_per_epoch": int(config.get("evals_per_epoch", 1)),  # the time to target's resolution
    }
    if (diverged and not restored) or last is None:
        acc = chance_acc
        out.update(final_test_acc=acc, final_val_acc=acc, final_train_acc=acc, best_val_acc=acc,
                   test_at_best_val=acc, final_test_loss=np.inf, final_val_loss=np.inf, final_train_loss=np.inf, gap=np.nan,
                   test_acc_epoch1=acc if len(ok) == 0 else float(ok.iloc[0]["test_acc"]),
                   loss_epoch1=np.inf if len(ok) == 0 else float(ok.iloc[0]["train_loss"]))
    else:
        out.update(
            final_test_acc=float(last["test_acc"]), final_val_acc=float(last["val_acc"]),
            final_train_acc=float(last["train_acc"]), best_val_acc=float(ok["val_acc"].max()),
            test_at_best_val=float(best["test_acc"]), final_test_loss=float(last["test_loss"]),
            final_val_loss=float(last["val_loss"]),
            final_train_loss=float(last["train_loss"]),
            gap=float(last["train_acc"] - last["test_acc"]),
            test_acc_epoch1=float(ok.iloc[0]["test_acc"]), loss_epoch1=float(ok.iloc[0]["train_loss"]),
        )
    # Epochs to the workload's target validation accuracy, in fractions of an epoch where the
    # run measured inside its epochs (evals_per_epoch); never reached (or diverged) is
    # censored at budget + 1 so paired differences stay finite (stated in the report).
    reached = epochs_to_target(ok, out["target_accuracy"])
    out["epochs_to_target"] = reached if reached is not None else float(epochs_budget + 1)
    # The same in optimizer updates (a batch-size comparison counts steps, not epochs) and in
    # seconds of training (the run's mean epoch time, its population's time shared equally).
    out["steps_to_target"] = out["epochs_to_target"] * per_epoch
    out["seconds_to_target"] = out["epochs_to_target"] * float(g["epoch_seconds"].mean())
    # Whether that is a measurement or the stand-in (the report says which, per contrast);
    # a regression run has no accuracy, so no target to reach.
    out["reached_target"] = np.nan if regression else float(reached is not None)
    # Gradient norms per weight layer in epoch 1: spread = log10(max / min) across layers.
    norms = ok.iloc[0]["grad_norms"] if len(ok) else None
    if norms is not None and len(norms) >= 2 and min(norms) > 0:
        logs = np.log10(np.asarray(norms, dtype=float))
        out["grad_first"] = float(norms[0])
        out["grad_spread"] = float(logs.max() - logs.min())
        # The trend with depth: |least-squares slope| of log10(norm) over the layer index,
        # input layer to output layer, in decades per layer (0: no vanishing or exploding).
        out["grad_trend"] = float(abs(np.polyfit(np.arange(len(logs)), logs, 1)[0]))
    else:
        out["grad_first"] = out["grad_spread"] = out["grad_trend"] = np.nan
    return out


def epochs_to_target(ok: pd.DataFrame, target: float) -> float | None:
    """The first point where validation accuracy reached `target`, in epochs (epoch - 1 plus
    the fraction of the epoch's steps done; the epoch's end where no finer points were
    measured); None if it never did."""
    for _, row in ok.sort_values("epoch").iterrows():
        fractions = row.get("val_fractions") if "val_fractions" in row else None
        accs = row.get("val_accs") if "val_accs" in row else None
        if fractions is not None and accs is not None and len(accs):
            for f, a in zip(fractions, accs):
                if a is not None and a >= target:  # None: a NaN (regression) after a parquet round trip
                    return float(row["epoch"] - 1 + f)
        elif row["val_acc"] >= target:
            return float(row["epoch"])
    return None


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: RUN_KEYS, the arm_* factor columns, and the run metrics."""
    arm_cols = [c for c in df.columns if c.startswith("arm_")]
    records = []
    for key, g in df.groupby(RUN_KEYS, sort=False):
        rec = dict(zip(RUN_KEYS, key))
        rec.update({c: g[c].iloc[0] for c in arm_cols})
        rec.update(summarize_run(g))
        records.append(rec)
    return pd.DataFrame(records)
