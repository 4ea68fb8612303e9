"""The file-list layout: samples listed in CSV, Parquet or whitespace txt files, by path or embedded bytes.

No torch at import; pyarrow is imported only for Parquet lists (see tables.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .base import Reader, Scan, short
from .labels import LabelResolver, parse_label_list
from .tables import csv_rows, list_format, parquet_rows, read_parquet_cell, txt_rows


class FileListReader(Reader):
    """Lists of samples in CSV, Parquet or whitespace txt files (``files``: a glob, a list of globs, or
    a mapping split -> glob, which fills column ``split``). Images by path (``path_column``, relative
    to ``image_root`` or the list file's folder) or embedded bytes (``image_column``; Parquet only:
    binary or the Hugging Face {bytes, path} struct). ``label_list: true`` reads label lists into
    ``label_set`` (label = the first entry)."""

    kind = "file-list"

    def _file_groups(self) -> list[tuple[str | None, list[Path]]]:
        spec = self.layout["files"]
        items = list(spec.items()) if isinstance(spec, dict) else [(None, g) for g in
                                                                     ([spec] if isinstance(spec, str) else spec)]
        return [(split, sorted(p for p in self.root.glob(pattern) if p.is_file())) for split, pattern in items]

    def _probe(self) -> None:
        groups = self._file_groups()
        empty = [str(self.root / str(self.layout["files"][s] if isinstance(self.layout["files"], dict) else
                                     self.layout["files"])) for s, fs in groups if not fs]
        if isinstance(self.layout["files"], dict) and empty:
            raise self._missing(self.root, "files", f"lacks list files {short(empty)}")
        if not any(fs for _, fs in groups):
            raise self._missing(self.root, "files", "has no list files matching")

    def _scan(self) -> Scan:
        lay = self.layout
        res = LabelResolver(self.entry, self.field("label_column"))
        embedded = "image_column" in lay
        label_list = bool(lay.get("label_list"))
        set_col = lay.get("label_set_column", "label_set")
        extra: dict[str, str] = dict(lay.get("extra_columns") or {})
        groups = self._file_groups()
        has_split = isinstance(lay["files"], dict)
        ids: list[str] = []
        labels: list[int] = []
        locs: list = []
        cols: dict[str, list] = {k: [] for k in extra}
        if label_list:
            cols[set_col] = []
        if has_split:
            cols["split"] = []
        self._parquet_files: list[str] = []
        for split, files in groups:
            for p in files:
                fmt = list_format(p, lay.get("format", "auto"))
                rel_file = p.relative_to(self.root).as_posix()
                if fmt == "parquet":
                    rows = parquet_rows(self, p, embedded, extra)
                elif fmt == "csv":
                    rows = csv_rows(self, p, extra)
                else:
                    rows = txt_rows(p)
                if embedded and fmt != "parquet":
                    raise ValueError(f"{self.field('image_column')}: embedded image bytes are read from Parquet only "
                                     f"({p} is {fmt})")
                img_root = self._image_root(p)
                for r in rows:
                    if embedded:
                        ids.append(f"{rel_file}#{r['row']:06d}")
                        locs.append(("pq", len(self._parquet_files), r["rg"], r["rg_row"]))
                    else:
                        path = str(r["path"]).replace("\\", "/")
                        full = Path(os.path.normpath(path if os.path.isabs(path) else img_root / path))
                        rel = os.path.relpath(full, self.root)
                        sid = Path(rel).as_posix() if not rel.startswith("..") else path
                        ids.append(sid)
                        locs.append(str(full))
                    if label_list:
                        lst = [res(t) for t in parse_label_list(r.get("label"))]
                        cols[set_col].append(lst)
                        labels.append(lst[0] if lst else -1)
                    else:
                        lab = r.get("label")
                        labels.append(-1 if lab is None or str(lab).strip() in ("", "-1") else res(lab))
                    for out in extra:
                        cols[out].append(r["extra"][out])
                    if has_split:
                        cols["split"].append(split)
                if fmt == "parquet":
                    self._parquet_files.append(str(p))
        return ids, labels, cols, locs

    def _image_root(self, list_file: Path) -> Path:
        ir = self.layout.get("image_root")
        if ir is None:
            return list_file.parent
        p = Path(ir).expanduser()
        return p if p.is_absolute() else self.root / p

    def _read_loc(self, loc: Any) -> bytes:
        if isinstance(loc, str):  # a path
            with open(loc, "rb") as f:
                return f.read()
        _, fi, rg, j = loc  # embedded bytes: ("pq", file index, row group, row in the group)
        return read_parquet_cell(self._handles.items(), fi, self._parquet_files[fi], rg, j,
                                 self.layout["image_column"])
