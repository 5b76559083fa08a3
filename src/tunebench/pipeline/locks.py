"""Stale Snakemake locks: a Snakemake killed outright (SIGKILL, a lost terminal, an OOM kill)
leaves its lock files in .snakemake/locks/, and the next run stops with a bare
LockException. Where no Snakemake process works in the folder, the lock is stale and safe
to remove, which is what `snakemake --unlock` does; the Snakefile does it as it is read
(before Snakemake takes its own lock), so the README's command recovers by itself.
"""

from __future__ import annotations

import os
from pathlib import Path


def lock_files(root: Path) -> list[Path]:
    folder = Path(root) / ".snakemake" / "locks"
    return sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []


def _ancestors(pid: int, proc: Path) -> set[int]:
    """`pid` and its parents (a Snakemake run from a shell, or through `make`)."""
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            stat = (proc / str(pid) / "stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return seen


def _processes(root: Path, proc: Path, me: int | None):
    """(pid, argv) of the processes working in `root` (their cwd), other than this one and
    its parents; None where processes cannot be listed (no /proc)."""
    if not proc.is_dir():
        return None
    root = Path(root).resolve()
    mine = _ancestors(os.getpid() if me is None else me, proc)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if cwd == root:
            found.append((int(entry.name), argv))
    return found


def other_snakemakes(root: Path, proc: Path = Path("/proc"), me: int | None = None) -> list[int] | None:
    """Process ids of Snakemake processes working in `root`, other than this one and its
    parents. None where processes cannot be listed: then no lock counts as stale."""
    procs = _processes(root, proc, me)
    # `.venv/bin/snakemake ...` runs as [python, .../snakemake, ...]; `python -m snakemake` too.
    return None if procs is None else [pid for pid, argv in procs if any("snakemake" in Path(a).name for a in argv[:3])]


def orphaned_jobs(root: Path, proc: Path = Path("/proc"), me: int | None = None) -> list[int]:
    """Process ids of tunebench jobs working in `root`: after their Snakemake was killed
    they run on, and still write their outputs."""
    procs = _processes(root, proc, me) or []
    return [pid for pid, argv in procs if argv[1:3] == ["-m", "tunebench.pipeline.cli"]]


class StaleLockWithJobs(RuntimeError):
    """A killed Snakemake's lock, while jobs it started still run."""


def remove_stale(root: Path, proc: Path = Path("/proc")) -> list[Path]:
    """Remove `root`'s Snakemake locks if no Snakemake works there; the removed files.
    Where the killed Snakemake's jobs still run, StaleLockWithJobs says what to do: a new
    run would start the same jobs beside them."""
    locks = lock_files(root)
    if not locks:
        return []
    others = other_snakemakes(root, proc)
    if others is None or others:
        return []
    jobs = orphaned_jobs(root, proc)
    if jobs:
        raise StaleLockWithJobs(
            f"{Path(root) / '.snakemake' / 'locks'} holds the lock of a Snakemake that was killed, and "
            f"{len(jobs)} of its jobs still run (pid {', '.join(map(str, jobs))}): wait for them to end, or stop "
            f"them (kill {' '.join(map(str, jobs))}), then run the same command again")
    for p in locks:
        p.unlink(missing_ok=True)
    return locks
