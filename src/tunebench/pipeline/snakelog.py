"""Snakemake's own log, read back: when each job started and finished, how many training jobs
ran at once, and how far a run got. The GPU check times the pipeline end to end with it, and
the fault tests check the `gpu` resource with it.

    python -m tunebench.pipeline.snakelog .snakemake/log/<run>.snakemake.log [--json out.json]

Snakemake (9.x) writes, for each job, a bracketed wall-clock stamp (1 s resolution) and then
either a job header (`rule NAME:` / `localrule NAME:` and indented `jobid:`, `wildcards:`
lines), `Finished jobid: N (Rule: NAME)`, or `Error in rule NAME:` with a `jobid:` line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

TRAINING_RULES = ("run_ablation", "run_search")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d{1,2} \d\d:\d\d:\d\d \d{4})\]$")
HEADER = re.compile(r"^(?:local)?rule (\w+):$")
ERROR = re.compile(r"^Error in rule (\w+):$")
FINISHED = re.compile(r"^Finished jobid: (\d+)")
PROGRESS = re.compile(r"^(\d+) of (\d+) steps \(", re.MULTILINE)
SPAN_COLUMNS = ["jobid", "rule", "wildcards", "start", "end", "seconds", "status", "training_at_start"]


def _stamp(text: str) -> datetime:
    return datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y")


def job_spans(log: str, training_rules: tuple[str, ...] = TRAINING_RULES) -> pd.DataFrame:
    """One row per job the log started: rule, wildcards, start and end stamps, seconds, status
    (done / failed / unfinished: still running when the log ends, e.g. killed by a time limit)
    and training_at_start: how many training jobs were running once it started (itself
    included; 0 for other rules), counted in the order the log wrote its events."""
    jobs: dict[str, dict] = {}
    running: set[str] = set()  # training jobs started and not yet finished or failed
    stamp = None
    pending = None  # ("start" | "error", rule) until its jobid line comes
    for raw in log.splitlines():
        line = raw.strip()
        if m := STAMP.match(line):
            stamp = _stamp(m.group(1))
        elif m := HEADER.match(line):
            pending = ("start", m.group(1))
        elif m := ERROR.match(line):
            pending = ("error", m.group(1))
        elif pending and line.startswith("jobid:"):
            kind, rule = pending
            jobid = line.split(":", 1)[1].strip()
            if kind == "start":
                if rule in training_rules:
                    running.add(jobid)
                jobs[jobid] = {"jobid": int(jobid), "rule": rule, "wildcards": "", "start": stamp, "end": None,
                               "status": "unfinished",
                               "training_at_start": len(running) if rule in training_rules else 0}
                pending = ("wildcards", jobid)
            elif jobid in jobs:
                jobs[jobid].update(end=stamp, status="failed")
                running.discard(jobid)
                pending = None
        elif pending and pending[0] == "wildcards" and line.startswith("wildcards:"):
            jobs[pending[1]]["wildcards"] = line.split(":", 1)[1].strip()
        elif m := FINISHED.match(line):
            jobid = m.group(1)
            if jobid in jobs:
                jobs[jobid].update(end=stamp, status="done")
            running.discard(jobid)
            pending = None
    spans = pd.DataFrame(list(jobs.values()), columns=[c for c in SPAN_COLUMNS if c != "seconds"])
    spans["start"] = pd.to_datetime(spans["start"])
    spans["end"] = pd.to_datetime(spans["end"])
    spans.insert(5, "seconds", (spans["end"] - spans["start"]).dt.total_seconds())
    return spans


def most_at_once(spans: pd.DataFrame) -> int:
    """The most training jobs that ran side by side."""
    return int(spans["training_at_start"].max()) if len(spans) else 0


@dataclass
class RunSummary:
    """How a Snakemake run went, from its log."""
    steps_done: int
    steps_total: int | None  # None: the log never reported progress
    complete: bool
    wall_seconds: float  # first stamp to last (1 s resolution)
    training_jobs_at_once: int
    jobs: dict[str, int] = field(default_factory=dict)  # status -> count
    per_rule: list[dict] = field(default_factory=list)  # rule, jobs, done, seconds (sum), slowest
    slowest: list[dict] = field(default_factory=list)  # the longest jobs, done or not


def summarize(log: str, top: int = 8) -> RunSummary:
    spans = job_spans(log)
    progress = PROGRESS.findall(log)
    done, total = (int(progress[-1][0]), int(progress[-1][1])) if progress else (0, None)
    stamps = [_stamp(m.group(1)) for m in map(STAMP.match, (ln.strip() for ln in log.splitlines())) if m]
    wall = (max(stamps) - min(stamps)).total_seconds() if stamps else 0.0
    per_rule = []
    for rule, g in spans.groupby("rule", sort=False):
        per_rule.append({"rule": rule, "jobs": len(g), "done": int((g["status"] == "done").sum()),
                         "seconds": float(g["seconds"].sum()), "slowest": float(g["seconds"].max())})
    finished_or_not = spans.assign(seconds=spans["seconds"].fillna(
        (pd.Timestamp(max(stamps)) - spans["start"]).dt.total_seconds() if stamps else 0.0))
    slowest = finished_or_not.sort_values("seconds", ascending=False).head(top)
    return RunSummary(
        steps_done=done, steps_total=total, complete=total is not None and done == total, wall_seconds=wall,
        training_jobs_at_once=most_at_once(spans), jobs=spans["status"].value_counts().to_dict(),
        per_rule=per_rule,
        slowest=[{"rule": r.rule, "wildcards": r.wildcards, "seconds": float(r.seconds), "status": r.status}
                 for r in slowest.itertuples()])


def render(s: RunSummary) -> str:
    total = "?" if s.steps_total is None else s.steps_total
    lines = [f"snakemake: {s.steps_done} of {total} steps {'(complete)' if s.complete else '(NOT complete)'} "
             f"in {s.wall_seconds:.0f} s ({s.wall_seconds / 60:.1f} min); jobs {s.jobs}; "
             f"at most {s.training_jobs_at_once} training jobs at once"]
    lines += [f"    {r['rule']}: {r['done']}/{r['jobs']} done, {r['seconds']:.0f} s in all, slowest {r['slowest']:.0f} s"
              for r in s.per_rule]
    lines += ["  slowest jobs:"] + [f"    {j['rule']} {j['wildcards']}: {j['seconds']:.0f} s ({j['status']})"
                                   for j in s.slowest]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tunebench.pipeline.snakelog", description=__doc__.split("\n\n")[0])
    ap.add_argument("log", type=Path, help="Snakemake's log (its output, or .snakemake/log/*.snakemake.log)")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    if not args.log.is_file():
        print(f"error: no Snakemake log at {args.log}", file=sys.stderr)
        return 2
    s = summarize(args.log.read_text(errors="replace"))
    print(render(s))
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(s), indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
