"""GitHub markdown tables as the published pages write them: cells unpadded, one ``---``
rule per column. (pandas' ``to_markdown`` pads and aligns columns and reformats floats,
which would change every page.)"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd


def row(cells: Iterable) -> str:
    """One table line, ``| a | b |``; each cell through ``str``."""
    return "| " + " | ".join(map(str, cells)) + " |"


def table(header: Iterable, rows: Iterable[Iterable]) -> list[str]:
    """The lines of a table: the header, the ``|---|---|`` rule, then one line per row."""
    header = list(header)
    return [row(header), "|" + "---|" * len(header), *map(row, rows)]


def cell(value, fmt: str = "g", missing: str | None = None) -> str:
    """A float through ``format(value, fmt)``, anything else through ``str``; a missing value
    (NaN, None) as ``missing`` where given (else a NaN float reads ``nan``)."""
    if missing is not None and pd.isna(value):
        return missing
    return format(value, fmt) if isinstance(value, float) else str(value)
