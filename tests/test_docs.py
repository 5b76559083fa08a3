"""The documentation says what the code does: the verdict rule in docs/statistics.md is the
report's, word for word, and the README's links point at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

from tunebench import report

ROOT = Path(__file__).resolve().parents[1]


def test_the_statistics_page_holds_the_reports_verdict_rule():
    rule = report.VERDICT_RULE.split("\n", 2)[2].strip()
    assert rule in (ROOT / "docs" / "statistics.md").read_text()


def test_readme_links_point_at_files_of_the_repository():
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if target.startswith(("http://", "https://")):
            continue
        assert (ROOT / target).exists(), target
