"""Markdown tables of tidy result rows, models side by side.

Readable at any number of models: up to ``MODEL_COLUMNS`` models are columns (the paper's layout); beyond that the
table is transposed, one row per model, and a table wider than ``MAX_COLUMNS`` is split into several that each
repeat the first column. Nothing is cut.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable


def fmt_value(row: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    """``value [ci_low, ci_high]`` scaled (percent by default); an em dash when absent."""
    if row is None or row["value"] is None or math.isnan(row["value"]):
        return "—"
    text = f"{row['value'] * scale:.{digits}f}"
    if not math.isnan(row.get("ci_low", math.nan)):
        text += f" [{row['ci_low'] * scale:.{digits}f}, {row['ci_high'] * scale:.{digits}f}]"
    return text


def markdown_table(header: list[str], body: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


MODEL_COLUMNS = 8    # more models than this: one row per model
MAX_COLUMNS = 9      # value columns per table before it is split


def split_columns(header: list[str], body: list[list[str]], width: int = MAX_COLUMNS) -> str:
    """``markdown_table``, split into tables of at most ``width`` value columns, each repeating the first column."""
    if len(header) <= width + 1:
        return markdown_table(header, body)
    parts = []
    for start in range(1, len(header), width):
        cols = [0] + list(range(start, min(start + width, len(header))))
        parts.append(markdown_table([header[c] for c in cols], [[row[c] for c in cols] for row in body]))
    return "\n\n".join(parts)


def by_model(label: str, keys: list[str], models: list[str], cell: Callable[[str, str], str]) -> str:
    """A keys x models table (``cell(key, model)``): models as columns when few, as rows when many."""
    if len(models) <= MODEL_COLUMNS:
        return split_columns([label] + models, [[k] + [cell(k, m) for m in models] for k in keys])
    return split_columns(["model"] + keys, [[m] + [cell(k, m) for k in keys] for m in models])


def side_by_side(rows: list[dict], models: list[str], row_keys: list[str], key_of: Callable[[dict], str],
                 label: str, cell: Callable[[dict | None], str] = fmt_value) -> str:
    """One table row per key, one column per model (transposed for many models, see ``by_model``)."""
    index = {(key_of(r), r["model"]): r for r in rows}
    return by_model(label, row_keys, models, lambda k, m: cell(index.get((k, m))))
