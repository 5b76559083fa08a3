"""Markdown tables for the report, through pandas (DataFrame.to_markdown, i.e. tabulate)."""

from __future__ import annotations

import pandas as pd


def table(df: pd.DataFrame) -> str:
    """A pipe table: cells as written, '|' escaped, no number parsing (tabulate would turn
    "0.10" into "0.1" and right-align text)."""
    text = df.astype(str).apply(lambda col: col.str.replace("|", "\\|", regex=False))
    return text.to_markdown(index=False, disable_numparse=True)
