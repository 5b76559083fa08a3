"""Write the README's verdict tables from a published report: each claim's summary word and
split, as the report's verdict tables give them, between the README's markers

    <!-- verdicts:begin -->  ...  <!-- verdicts:end -->

Usage: python scripts/readme_verdicts.py [reports/quick/report.md] [README.md]
tests/test_docs.py checks that the README and the report agree."""

from __future__ import annotations

import re
import sys
from pathlib import Path

BEGIN, END = "<!-- verdicts:begin -->", "<!-- verdicts:end -->"
# A verdict-table row of the report: | [C01](#c01) | advice | **word**<br>split | ...
ROW = re.compile(r"^\| \[(?P<id>[A-Z]+\d+)\]\(#[a-z]+\d+\) \| (?P<advice>[^|]+?) +\| \*\*(?P<word>[^*]+)\*\*(?:<br>(?P<split>[^|]+?))? +\|")
SOURCE = re.compile(r"^### (?P<title>.+)$")


def verdicts(report: str) -> list[tuple[str, list[dict]]]:
    """[(source heading, [{id, advice, word, split}])] from the report's Verdicts section."""
    out: list[tuple[str, list[dict]]] = []
    section = report.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        if m := SOURCE.match(line):
            out.append((m["title"], []))
        elif (m := ROW.match(line)) and out:
            out[-1][1].append({k: (m[k] or "").strip() for k in ("id", "advice", "word", "split")})
    return out


def table(report_path: str, report: str) -> str:
    parts = []
    for title, rows in verdicts(report):
        lines = [f"**{title}**", "", "| claim | advice | verdict |", "|---|---|---|"]
        for r in rows:
            split = f" ({r['split']})" if r["split"] else ""
            lines.append(f"| [{r['id']}]({report_path}#{r['id'].lower()}) | {r['advice']} | {r['word']}{split} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main(argv: list[str]) -> int:
    report_path = argv[1] if len(argv) > 1 else "reports/quick/report.md"
    readme = Path(argv[2] if len(argv) > 2 else "README.md")
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"{readme}: no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = table(report_path, Path(report_path).read_text())
    readme.write_text(f"{head}{BEGIN}\n{new}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
