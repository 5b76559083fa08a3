"""Side by side: the two pipeline runs of slots_vs_threads.sh (wall time and results)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

KEYS = ["workload", "dimension", "arm", "seed"]


def differing_runs(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """Per run, whether any metric differs (NaN equals NaN; times left out)."""
    a, b = a.sort_values(KEYS).reset_index(drop=True), b.sort_values(KEYS).reset_index(drop=True)
    assert a[KEYS].equals(b[KEYS]), "the two runs trained different grids"
    differs = np.zeros(len(a), bool)
    for col in a.columns:
        if col == "seconds" or col.startswith("arm_"):
            continue
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x):
            x, y = x.to_numpy(float), y.to_numpy(float)
            differs |= ~((x == y) | (np.isnan(x) & np.isnan(y)))
        else:
            differs |= (x.astype(str) != y.astype(str)).to_numpy()
    return pd.Series(differs, index=pd.MultiIndex.from_frame(a[KEYS]))


def main(out: Path) -> None:
    wall = {w: json.loads((out / f"{w}.json").read_text())["wall_seconds"] for w in ("threads", "slots")}
    runs = {w: pd.read_parquet(out / f"{w}-runs.parquet") for w in ("threads", "slots")}
    verdicts = {w: pd.read_csv(out / f"{w}-verdicts.csv") for w in ("threads", "slots")}
    diff = differing_runs(runs["threads"], runs["slots"])
    v = verdicts["threads"].merge(verdicts["slots"], on=["claim", "workload"], suffixes=("_threads", "_slots"))
    flipped = v[v["verdict_threads"] != v["verdict_slots"]]
    print("| way | wall s | x threads |\n|---|---|---|")
    for w in ("threads", "slots"):
        print(f"| {w} | {wall[w]:.0f} | {wall['threads'] / wall[w]:.2f} |")
    by_job = diff[diff].groupby(level=["workload", "dimension"]).size()
    print(f"runs whose metrics differ: {int(diff.sum())} of {len(diff)}"
          + (f" ({', '.join(f'{w}/{d} {n}' for (w, d), n in by_job.items())})" if len(by_job) else ""))
    print(f"verdicts that differ: {len(flipped)} of {len(v)} (claim x workload rows and per-claim rows)")
    for _, r in flipped.iterrows():
        print(f"  {r['claim']} {r['workload']}: {r['verdict_threads']} (threads) vs {r['verdict_slots']} (slots)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
