"""The reproduction check: this store's numbers beside the ones the paper publishes (``data/paper_values.csv``).

For every published value whose key (model, dataset, transform, metric) the results hold:

- ``paper_value`` = the printed value in the results' units (``percent`` divided by 100),
- ``paper_diff`` = value - paper_value,
- ``paper_in_ci`` = ``ci_low - h <= paper_value <= ci_high + h`` with ``h`` half a unit of the paper's last printed
  digit (85.5 % -> h = 0.0005): the paper rounds, so a value that rounds to the printed one counts as inside.
  Null without an interval (``--n-boot 0``).

Only rows with ``compared = true`` are compared; the others (a second printing that disagrees with the first) are
listed beside them in the report, so that it says which of two printings it uses.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import polars as pl

from .context import Section
from .tables import markdown_table

PAPER_VALUES = Path(__file__).resolve().parent / "data" / "paper_values.csv"
FIELDS = ("source", "page", "paper_model", "model", "dataset", "transform", "metric", "printed", "unit",
          "compared", "note")
UNITS = {"percent": 100.0, "fraction": 1.0, "ratio": 1.0}
# The columns results.csv gains (null where the paper publishes nothing for the row).
PAPER_COLUMNS = ("paper_value", "paper_source", "paper_diff", "paper_in_ci")


@dataclass(frozen=True)
class PaperValue:
    source: str
    page: str
    paper_model: str
    model: str
    dataset: str
    transform: str
    metric: str
    printed: str
    unit: str
    compared: bool
    note: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.model, self.dataset, self.transform, self.metric

    @property
    def value(self) -> float:
        """The printed value in the results' units."""
        return float(self.printed) / UNITS[self.unit]

    @property
    def half_unit(self) -> float:
        """Half a unit of the last printed digit, in the results' units (the paper's rounding)."""
        return 0.5 * 10.0 ** Decimal(self.printed).as_tuple().exponent / UNITS[self.unit]

    @property
    def where(self) -> str:
        return f"{self.source}, p. {self.page}" if self.page else self.source


class PaperDataError(ValueError):
    """The bundled paper values are malformed; the message names the file, line and field."""


def load_paper_values(path: str | Path = PAPER_VALUES) -> list[PaperValue]:
    """Every row of the paper-values CSV, checked: known unit, a decimal number, compared true/false, and at most
    one compared value per key."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise PaperDataError(f"{path}: line 1: expected the columns {','.join(FIELDS)}, "
                                 f"found {','.join(reader.fieldnames or [])}")
        out, seen = [], {}
        for line, row in enumerate(reader, start=2):
            def bad(field: str, expected: str) -> PaperDataError:
                return PaperDataError(f"{path}: line {line}: {field}: expected {expected}, found {row[field]!r}")

            if row["unit"] not in UNITS:
                raise bad("unit", " or ".join(UNITS))
            try:
                number = Decimal(row["printed"])
            except InvalidOperation:
                raise bad("printed", "a decimal number as printed in the paper") from None
            if not number.is_finite():
                raise bad("printed", "a finite decimal number")
            if row["compared"] not in ("true", "false"):
                raise bad("compared", "true or false")
            for field in ("source", "model", "dataset", "transform", "metric"):
                if not row[field]:
                    raise bad(field, "a value")
            value = PaperValue(**{**row, "compared": row["compared"] == "true"})
            if value.compared:
                if value.key in seen:
                    raise bad("compared", f"false: line {seen[value.key]} already compares {'/'.join(value.key)}")
                seen[value.key] = line
            out.append(value)
    return out


def compare(results: pl.DataFrame, paper: list[PaperValue]) -> pl.DataFrame:
    """One row per compared paper value the results hold: the result, the paper's value, the difference and
    whether the paper's value lies in the result's interval (widened by the paper's rounding)."""
    index = {(r["model"], r["dataset"], r["transform"], r["metric"]): r for r in results.iter_rows(named=True)}
    rows = []
    for p in paper:
        r = index.get(p.key)
        if not p.compared or r is None or r["value"] is None or math.isnan(r["value"]):
            continue
        has_ci = r["ci_low"] is not None and not math.isnan(r["ci_low"])
        rows.append({"model": p.model, "dataset": p.dataset, "transform": p.transform, "metric": p.metric,
                     "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                     "paper_value": p.value, "paper_source": p.where, "paper_diff": r["value"] - p.value,
                     "paper_in_ci": (r["ci_low"] - p.half_unit <= p.value <= r["ci_high"] + p.half_unit)
                     if has_ci else None, "unit": p.unit, "printed": p.printed, "note": p.note})
    schema = {"model": pl.Utf8, "dataset": pl.Utf8, "transform": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64, "paper_value": pl.Float64, "paper_source": pl.Utf8,
              "paper_diff": pl.Float64, "paper_in_ci": pl.Boolean, "unit": pl.Utf8, "printed": pl.Utf8, "note": pl.Utf8}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def annotate(results: pl.DataFrame, check: pl.DataFrame) -> pl.DataFrame:
    """``results`` with the paper columns (null where the paper publishes nothing for the row)."""
    keys = ["model", "dataset", "transform", "metric"]
    return (results.with_row_index("_order").join(check.select(keys + list(PAPER_COLUMNS)), on=keys, how="left")
            .sort("_order").drop("_order"))


def _digits(printed: str) -> int:
    """Decimals to show: those the paper prints (at least one)."""
    return max(1, -Decimal(printed).as_tuple().exponent)


def _shown(value: float, unit: str, digits: int) -> str:
    return f"{value * UNITS[unit]:.{digits}f}"


def section(check: pl.DataFrame, paper: list[PaperValue], models: list[str]) -> Section | None:
    """"Paper vs this store": one table per source table or figure, then the paper's second printings."""
    if not any(p.model in models for p in paper):
        return None
    if check.is_empty():
        return Section("Paper vs this store", "The paper publishes values for "
                       f"{', '.join(sorted({p.model for p in paper if p.model in models}))}, but the store holds none "
                       "of the datasets, transforms or metrics they are for.")
    inside = check["paper_in_ci"].drop_nulls()
    head = (f"{len(check)} values the paper publishes for this store's models; "
            + (f"**{int(inside.sum())} of {len(inside)}** lie inside this store's 95% bootstrap interval (widened by "
               "half the paper's last printed digit, which the paper rounds to)." if len(inside) else
               "no intervals (bootstrap disabled)."))
    parts = [head, "Values in the paper's units (percent, or ECE as a fraction, or the error ratio); "
             "`results.csv` has the same as columns `paper_value`, `paper_source`, `paper_diff`, `paper_in_ci`."]
    keys = ["model", "dataset", "transform", "metric"]
    for source in dict.fromkeys(check["paper_source"].to_list()):
        rows = check.filter(pl.col("paper_source") == source)
        # Columns that do not vary within a table go to its title.
        same = [k for k in keys[1:] if rows[k].n_unique() == 1]
        shown = [k for k in keys if k not in same]
        body = []
        for r in rows.iter_rows(named=True):
            digits = _digits(r["printed"])
            ci = (f" [{_shown(r['ci_low'], r['unit'], digits)}, {_shown(r['ci_high'], r['unit'], digits)}]"
                  if r["paper_in_ci"] is not None else "")
            verdict = {True: "yes", False: "**no**", None: "—"}[r["paper_in_ci"]]
            body.append([r[k] for k in shown] + [_shown(r["value"], r["unit"], digits) + ci, r["printed"],
                                                 f"{r['paper_diff'] * UNITS[r['unit']]:+.{digits}f}", verdict])
        title = f"**{source}**" + (f" ({', '.join(rows[k][0] for k in same)})" if same else "")
        parts.append(title + "\n\n" + markdown_table(shown + ["this store [95% CI]", "paper", "diff", "inside"], body))
    held = {(r["model"], r["dataset"], r["transform"], r["metric"]): r for r in check.iter_rows(named=True)}
    twice, qualified = [], {}
    for p in paper:
        r = held.get(p.key)
        if r is None:
            continue
        if not p.compared and Decimal(p.printed) != Decimal(r["printed"]):
            twice.append(f"`{p.model}` {p.dataset} {p.transform} {p.metric}: {p.where} prints {p.printed}, "
                         f"{r['paper_source']} {r['printed']} (compared); this store "
                         f"{_shown(r['value'], r['unit'], _digits(p.printed))}")
        elif p.compared and p.note:
            qualified.setdefault((p.where, p.note), []).append(p.model)
    if twice:
        parts.append("Where the paper prints the same number twice, differently:\n\n" + "\n".join(f"- {t}" for t in twice))
    if qualified:
        parts.append("What the paper says about its values:\n\n" + "\n".join(
            f"- {where} ({', '.join(models)}): {note}" for (where, note), models in qualified.items()))
    return Section("Paper vs this store", "\n\n".join(parts))


def report_check(results: pl.DataFrame, models: list[str]) -> tuple[pl.DataFrame, Section | None]:
    """``results`` with the paper columns, and the report's "Paper vs this store" section (None when the store
    holds none of the paper's models)."""
    paper = load_paper_values()
    check = compare(results, paper)
    return annotate(results, check), section(check, paper, models)
