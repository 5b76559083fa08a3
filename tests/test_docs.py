"""The documentation says what the code does: the verdict rule in docs/statistics.md is the
report's, word for word, and the README's links point at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

from tunebench.reporting import report

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


def _readme_verdicts():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_verdicts", ROOT / "scripts" / "readme_verdicts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readmes_verdicts_are_the_published_reports():
    """The README's verdict tables say what reports/quick/report.md says, claim by claim
    (scripts/readme_verdicts.py writes them; rerun it after publishing a report)."""
    rv = _readme_verdicts()
    readme = (ROOT / "README.md").read_text()
    block = readme.split(rv.BEGIN, 1)[1].split(rv.END, 1)[0].strip()
    published = rv.table("reports/quick/report.md", (ROOT / "reports" / "quick" / "report.md").read_text())
    assert published and block == published


def test_the_readme_table_script_reads_the_reports_verdict_rows():
    rv = _readme_verdicts()
    report_text = ("## Verdicts\n\n### the post\n\n| claim | advice | verdict |\n|:--|:--|:--|\n"
                   "| [C01](#c01) | Xavier beats normal. | **supported**<br>supported on 2 (of 2) | x |\n"
                   "| [C02](#c02) | Uniform beats glorot. | **not run** | – |\n\n## Calibration\n")
    got = rv.verdicts(report_text)
    assert got == [("the post", [{"id": "C01", "advice": "Xavier beats normal.", "word": "supported",
                                   "split": "supported on 2 (of 2)"},
                                  {"id": "C02", "advice": "Uniform beats glorot.", "word": "not run", "split": ""}])]
    assert "| [C01](r.md#c01) | Xavier beats normal. | supported (supported on 2 (of 2)) |" in rv.table("r.md", report_text)
