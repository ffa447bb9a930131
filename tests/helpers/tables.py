"""Reading the Markdown tables that the benchmark scripts print (``benchmarks/report.py``)."""
from __future__ import annotations

from typing import List


def table_rows(text: str) -> List[List[str]]:
    """The cells of every Markdown table row in ``text`` (padding stripped), header included."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ")]


def table_row(text: str, first_cell: str) -> List[str]:
    """The cells of the one table row of ``text`` whose first cell is ``first_cell``."""
    rows = [r for r in table_rows(text) if r[0] == first_cell]
    assert len(rows) == 1, f"{len(rows)} table rows start with {first_cell!r} in:\n{text}"
    return rows[0]
