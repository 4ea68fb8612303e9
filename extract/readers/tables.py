"""Sample list files: rows of whitespace txt, CSV/TSV and Parquet lists, and the Parquet row-group cache.

A row is {"path", "label", "extra": {out column: value}} (Parquet rows also carry "row", "rg",
"rg_row": the row's position in the file and in its row group, to read embedded bytes later).
No torch at import; pyarrow is imported inside the Parquet functions.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .base import Reader
from .labels import SYNSET, parse_int

PATH_COLUMNS = ("path", "filename", "file_name", "file", "image_path")


def list_format(p: Path, fmt: str) -> str:
    """parquet | csv | txt: ``fmt`` unless it is auto, else from the file suffix."""
    if fmt != "auto":
        return fmt
    suf = p.suffix.lower()
    if suf in (".parquet", ".pq"):
        return "parquet"
    if suf in (".csv", ".tsv"):
        return "csv"
    return "txt"


def txt_rows(p: Path) -> list[dict]:
    """'<path> [<label>]' lines; blank lines and # comments skipped."""
    out = []
    for line in p.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) == 2 and parse_int(parts[1]) is None and not SYNSET.match(parts[1]):
            parts = [line]  # a path with a space and no label
        out.append({"path": parts[0], "label": parts[1] if len(parts) == 2 else None, "extra": {}})
    return out


def csv_rows(reader: Reader, p: Path, extra: dict[str, str]) -> list[dict]:
    """Rows of a CSV (TSV by suffix or ``delimiter``) with a header naming the path and label columns."""
    lay = reader.layout
    delim = lay.get("delimiter") or ("\t" if p.suffix.lower() == ".tsv" else ",")
    with open(p, newline="", encoding="utf-8-sig") as fh:
        rows_in = csv.DictReader(fh, delimiter=delim)
        header = rows_in.fieldnames or []
        pcol = lay.get("path_column") or next((c for c in (*PATH_COLUMNS, "image") if c in header), None)
        lcol = lay.get("label_column", "label")
        if pcol not in header:
            raise ValueError(f"dataset {reader.dataset_id!r}: {p} has no path column {pcol!r} "
                             f"({reader.field('path_column')}; columns: {header})")
        _check_extra(reader, p, extra, header)
        return [{"path": r[pcol], "label": r.get(lcol) if lcol in header else None,
                 "extra": {o: r[s] for o, s in extra.items()}} for r in rows_in]


def parquet_rows(reader: Reader, p: Path, embedded: bool, extra: dict[str, str]) -> list[dict]:
    """Rows of a Parquet list: image paths, or (``embedded``) positions of the image bytes."""
    import pyarrow.parquet as pq

    lay = reader.layout
    pf = pq.ParquetFile(p)
    names = pf.schema_arrow.names
    lcol = lay.get("label_column", "label")
    want = [c for c in [lcol, *extra.values()] if c in names]
    if not embedded:
        pcol = lay.get("path_column") or next((c for c in PATH_COLUMNS if c in names), None)
        if pcol not in names:
            raise ValueError(f"dataset {reader.dataset_id!r}: {p} has no path column {pcol!r} "
                             f"({reader.field('path_column')}; columns: {names})")
        want.append(pcol)
    elif lay["image_column"] not in names:
        raise ValueError(f"dataset {reader.dataset_id!r}: {p} has no image column {lay['image_column']!r} "
                         f"({reader.field('image_column')}; columns: {names})")
    _check_extra(reader, p, extra, names)
    table = pf.read(columns=sorted(set(want))) if want else None
    data = {c: table.column(c).to_pylist() for c in set(want)} if table is not None else {}
    rows = []
    row = 0
    for rg in range(pf.num_row_groups):
        for j in range(pf.metadata.row_group(rg).num_rows):
            r = {"row": row, "rg": rg, "rg_row": j, "label": data[lcol][row] if lcol in data else None,
                 "extra": {o: data[s][row] for o, s in extra.items()}}
            if not embedded:
                r["path"] = data[pcol][row]
            rows.append(r)
            row += 1
    return rows


def _check_extra(reader: Reader, p: Path, extra: dict[str, str], columns: list[str]) -> None:
    missing = [c for c in extra.values() if c not in columns]
    if missing:
        raise ValueError(f"dataset {reader.dataset_id!r}: {p} lacks columns {missing} "
                         f"({reader.field('extra_columns')}; columns: {columns})")


def read_parquet_cell(cache: dict[Any, Any], file_index: int, path: str, row_group: int, row: int,
                      column: str) -> bytes:
    """The bytes in ``column`` of one row (binary, or the Hugging Face {bytes, path} struct).

    ``cache`` (a per-process HandleCache's items) keeps the open files and, per file, the last row
    group's column: reads in sample order hit one row group many times in a row.
    """
    key = (file_index, row_group)
    col = cache.get(("rg", key))
    if col is None:
        import pyarrow.parquet as pq

        pf = cache.get(("pf", file_index))
        if pf is None:
            pf = cache[("pf", file_index)] = pq.ParquetFile(path)
        for k in [k for k in cache if k[0] == "rg" and k[1][0] == file_index]:
            del cache[k]
        col = cache[("rg", key)] = pf.read_row_group(row_group, columns=[column]).column(0)
    v = col[row].as_py()
    if isinstance(v, dict):
        v = v.get("bytes")
    return b"" if v is None else bytes(v)
