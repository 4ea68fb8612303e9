"""Markdown tables of tidy result rows, models side by side."""
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


def side_by_side(rows: list[dict], models: list[str], row_keys: list[str], key_of: Callable[[dict], str],
                 label: str, cell: Callable[[dict | None], str] = fmt_value) -> str:
    """One table row per key, one column per model."""
    index = {(key_of(r), r["model"]): r for r in rows}
    body = [[k] + [cell(index.get((k, m))) for m in models] for k in row_keys]
    return markdown_table([label] + models, body)
