"""Where a search job keeps its Optuna journal, and which of the old journals may go.

A job's journal is `<strategy>-<settings digest>-<code digest>.journal` in its workload's
folder under results/search. The settings digest lets a profile switch and back resume the
studies it left (Snakemake reruns the job; its complete studies are read back, not
retrained). The code digest (stages.code_digest) keeps a rerun for changed code from
resuming the old code's studies; so a journal of other code is never read again, and once
a job of the current code has written its table, the other code's journals for the same
strategy are deleted (`stale`). A journal of the older naming, `<strategy>-<one
digest>.journal` (settings and code hashed together; CHANGELOG.md), is always old code's.

Kept free of optuna and torch: the Snakefile imports it while it is read."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_NAME = re.compile(r"(?P<strategy>\w+)-(?P<settings>[0-9a-f]{10})-(?P<code>[0-9a-f]{12})\.journal")
_OLD_NAME = re.compile(r"(?P<strategy>\w+)-[0-9a-f]{10}\.journal")


def journal_path(folder: str | Path, strategy: str, settings: str, code: str) -> Path:
    """The journal of a search job with these `settings` (any text, e.g. JSON) run by the
    code whose digest is `code` (12 hex digits, stages.code_digest)."""
    if not re.fullmatch(r"[0-9a-f]{12}", code):
        raise ValueError(f"code digest {code!r} is not 12 hex digits")
    digest = hashlib.sha256(settings.encode()).hexdigest()[:10]
    return Path(folder) / f"{strategy}-{digest}-{code}.journal"


def stale(journal: str | Path) -> list[Path]:
    """The journals beside `journal` of the same strategy that other code wrote (a name of
    the old form included). Nothing for a journal not named by journal_path, so a journal
    named by hand never costs another its studies."""
    journal = Path(journal)
    own = _NAME.fullmatch(journal.name)
    if own is None:
        return []
    found = []
    for path in sorted(journal.parent.glob("*.journal")):
        other = _NAME.fullmatch(path.name)
        if other and other["strategy"] == own["strategy"] and other["code"] != own["code"]:
            found.append(path)
        old = _OLD_NAME.fullmatch(path.name)
        if old and old["strategy"] == own["strategy"]:
            found.append(path)
    return found
