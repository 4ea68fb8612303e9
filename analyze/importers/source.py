"""Reading the files ``analyze import`` takes, keeping where each value came from (file, line, column).

CSV (optionally gzipped), Parquet, NPZ and NPY. A problem with the content is an ``ImportProblem`` whose message
names the file, the line (CSV: the line in the file, the header being line 1; Parquet/NPZ/NPY: the row, from 1)
and the column, what was expected and what was found.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from schemas.registry import close_names

SHOWN = 5  # problems quoted per file before "... and N more"


class ImportProblem(ValueError):
    """A file cannot be imported as it is; nothing was written. The message lists every problem found."""


@dataclass(frozen=True)
class Problem:
    where: str     # "file:line N" or "file"
    column: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.where}: " + (f"column {self.column!r}: " if self.column else "") + self.message


@dataclass
class Table:
    """A file's columns as arrays, with the line or row each value came from."""

    path: Path
    columns: dict[str, np.ndarray]
    lines: np.ndarray                 # [n] the line (CSV) or row (others) of each entry
    unit: str = "line"
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def name(self) -> str:
        return str(self.path)

    def at(self, i: int | None = None) -> str:
        """``file:line N`` for entry ``i`` (``file:line 1`` = the header when ``i`` is None and the file is CSV)."""
        if i is None:
            return f"{self.name}:line 1" if self.unit == "line" else self.name
        return f"{self.name}:{self.unit} {int(self.lines[i])}"

    def problem(self, i: int | None, column: str | None, message: str) -> None:
        self.problems.append(Problem(self.at(i), column, message))

    def whole(self, message: str) -> None:
        """A problem of the file as a whole (no one line)."""
        self.problems.append(Problem(self.name, None, message))

    def has(self, *names: str) -> bool:
        return all(n in self.columns for n in names)

    def require(self, names: Sequence[str], what: str) -> bool:
        """Every column of ``names`` is present; else one problem per missing column naming what is there."""
        missing = [n for n in names if n not in self.columns]
        for n in missing:
            near = close_names(n, list(self.columns))
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            self.problem(None, n, f"missing{hint}; expected the columns of {what}: {', '.join(names)}; "
                                  f"found {', '.join(self.columns) or 'no columns'}")
        return not missing

    def text(self, name: str) -> np.ndarray:
        """A column as stripped strings."""
        return np.asarray([str(v).strip() for v in self.columns[name].tolist()], dtype=object)

    def integers(self, name: str, what: str) -> np.ndarray | None:
        """A column as int64; a problem per value that is not an integer (None when any is not)."""
        return self._numbers(name, what, np.int64, "iu", _integer)

    def floats(self, name: str, what: str) -> np.ndarray | None:
        """A column as float64; a problem per value that is not a number (None when any is not)."""
        return self._numbers(name, what, np.float64, "fiu", float)

    def _numbers(self, name: str, what: str, dtype, kinds: str, parse) -> np.ndarray | None:
        values = self.columns[name]
        if values.dtype.kind in kinds:
            return values.astype(dtype)
        out = np.empty(len(values), dtype)
        bad = []
        for i, v in enumerate(values.tolist()):
            try:
                out[i] = parse(v)
            except (TypeError, ValueError):
                bad.append(i)
        for i in bad[:SHOWN]:
            self.problem(i, name, f"expected {what}, found {values[i]!r}")
        return None if bad else out

    def unique(self, name: str, values: np.ndarray, what: str) -> bool:
        """``values`` (one per entry, derived from column ``name``) hold no repeat; a problem per repeat."""
        first: dict[str, int] = {}
        ok = True
        shown = 0
        for i, v in enumerate(values.tolist()):
            if v in first:
                ok = False
                if shown < SHOWN:
                    self.problem(i, name, f"duplicate {what} {v!r}, already on {self.unit} {int(self.lines[first[v]])}; "
                                          f"each {what} once per file")
                shown += 1
            else:
                first[v] = i
        return ok


def _integer(value) -> int:
    """``"3"`` or ``"3.0"`` as 3; anything else (``"3.5"``, ``"x"``) a ValueError."""
    f = float(value)
    if not f.is_integer():
        raise ValueError(value)
    return int(f)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stem(path: Path) -> str:
    """The file name without its extensions (``ResNet50.csv.gz`` -> ``ResNet50``)."""
    name = path.name
    for ext in (".gz", ".csv", ".parquet", ".npz", ".npy", ".tsv"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return name


def kind_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for ext in ("csv", "tsv", "parquet", "npz", "npy"):
        if name.endswith(f".{ext}"):
            return ext
    raise ImportProblem(f"{path}: unknown file type (expected .csv, .csv.gz, .parquet, .npz or .npy)")


def read_table(path: Path) -> Table:
    """The file as columns; an NPY is one column ``scores`` ([n, C])."""
    path = Path(path)
    if not path.is_file():
        raise ImportProblem(f"{path}: no such file")
    kind = kind_of(path)
    if kind in ("csv", "tsv"):
        return _read_csv(path, "\t" if kind == "tsv" else ",")
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - named with the file
            raise ImportProblem(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        cols = {name: _parquet_column(table.column(name)) for name in table.column_names}
        return Table(path, cols, np.arange(1, table.num_rows + 1), unit="row")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - named with the file
        raise ImportProblem(f"{path}: not a readable {kind.upper()} file ({type(e).__name__}: {e})") from None
    cols = {"scores": loaded} if kind == "npy" else {k: loaded[k] for k in loaded.files}
    lengths = {k: len(v) for k, v in cols.items() if np.ndim(v) >= 1}
    if len(set(lengths.values())) > 1:
        raise ImportProblem(f"{path}: arrays of different lengths ({', '.join(f'{k}: {n}' for k, n in lengths.items())}); "
                            f"expected one entry per sample in each")
    n = next(iter(lengths.values()), 0)
    return Table(path, cols, np.arange(1, n + 1), unit="row")


def _parquet_column(column) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type):
        rows = column.to_pylist()
        width = {len(r) for r in rows if r is not None}
        if len(width) == 1 and None not in rows:
            return np.asarray(rows, dtype=np.float64)
        return np.asarray(rows, dtype=object)
    return column.to_numpy(zero_copy_only=False)


def _read_csv(path: Path, delimiter: str) -> Table:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
            return _parse_csv(path, f, delimiter)
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ImportProblem(f"{path}: cannot be read as text CSV ({type(e).__name__}: {e})") from None


def _parse_csv(path: Path, f: io.TextIOBase, delimiter: str) -> Table:
    reader = csv.reader(f, delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise ImportProblem(f"{path}:line 1: empty file (expected a header line naming the columns)")
    header = [h.strip() for h in header]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise ImportProblem(f"{path}:line 1: column {repeated[0]!r}: named twice in the header")
    rows, lines, problems = [], [], []
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append(Problem(f"{path}:line {reader.line_num}", None,
                                    f"expected {len(header)} fields as the header has, found {len(row)}"))
            continue
        rows.append(row)
        lines.append(reader.line_num)
    cols = {h: np.asarray([r[j] for r in rows], dtype=object) for j, h in enumerate(header)}
    return Table(path, cols, np.asarray(lines, dtype=np.int64), unit="line", problems=problems[:SHOWN])


def raise_problems(tables: Iterable[Table], extra: Sequence[str] = ()) -> None:
    """One ImportProblem listing every problem found (nothing written), if there is any."""
    lines = list(extra)
    for t in tables:
        shown = t.problems[: SHOWN * 2]
        lines += [str(p) for p in shown]
        if len(t.problems) > len(shown):
            lines.append(f"{t.name}: ... and {len(t.problems) - len(shown)} more problems")
    if len(lines) == 1:
        raise ImportProblem(f"nothing written: {lines[0]}")
    if lines:
        raise ImportProblem(f"nothing written, {len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines))


__all__ = ["ImportProblem", "Problem", "Table", "kind_of", "raise_problems", "read_table", "sha256", "stem"]
