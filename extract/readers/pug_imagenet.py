"""The pug-imagenet layout: <path>/<Factor>/<Class>/<image>, factor values from an optional CSV.

No torch at import.
"""
from __future__ import annotations

import csv
import posixpath
import re
import warnings
from typing import Any

from schemas import label_spaces

from .base import Reader, Scan, list_dirs, list_images, short


def _squash(name: str) -> str:
    """A class name compared loosely: lower case, no spaces, underscores or hyphens."""
    return re.sub(r"[\s_\-]", "", name.lower())


class PugImageNetReader(Reader):
    """PUG: ImageNet: <path>/<Factor>/<Class>/<image>; label = index of Class in the sorted PUG classes;
    column factor = the factor folder; other factor columns from the optional metadata CSV."""

    kind = "pug-imagenet"
    DEFAULT_FACTORS = ("Worlds", "Camera_Pitch", "Camera_Yaw", "Camera_Roll", "Object_Pitch", "Object_Yaw",
                       "Object_Roll", "Object_Scale", "Object_Texture", "Scene_Light")

    def _factors(self) -> list[str]:
        return list(self.layout.get("factors") or self.DEFAULT_FACTORS)

    def _probe(self) -> None:
        missing = [f for f in self._factors() if not (self.root / f).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"dataset {self.dataset_id!r}: factor folders {short(missing)} missing under {self.root} "
                f"({self.field('factors')}; expected <path>/<Factor>/<Class>/<image>); obtain it from: "
                f"{self.entry.get('source', '?')}")

    @staticmethod
    def _class_index() -> dict[str, int]:
        classes = label_spaces.pug_imagenet_classes()
        index = {c: i for i, c in enumerate(classes)}
        for i, c in enumerate(classes):  # exact names first, then the loose forms
            index.setdefault(c.lower(), i)
            index.setdefault(_squash(c), i)
        return index

    def _scan(self) -> Scan:
        index = self._class_index()
        declared = self.entry.get("columns") or {}
        meta_cols: dict[str, str] = dict(self.layout.get("metadata_columns") or {})
        meta = self._read_metadata(meta_cols)
        ids: list[str] = []
        labels: list[int] = []
        cols: dict[str, list] = {"factor": [], **{out: [] for out in meta_cols}}
        unmatched = 0
        for factor in self._factors():
            for cls in list_dirs(self.root / factor):
                lab = index.get(cls, index.get(cls.lower(), index.get(_squash(cls))))
                if lab is None:
                    raise ValueError(f"dataset {self.dataset_id!r}: class folder {self.root / factor / cls} is not a "
                                     "PUG-ImageNet class (keys of pug_imagenet_class_to_imagenet_idx.json)")
                for f in list_images(self.root / factor / cls, self.exts):
                    rel = f"{factor}/{cls}/{f}"
                    ids.append(rel)
                    labels.append(lab)
                    cols["factor"].append(factor)
                    row = None
                    if meta is not None:
                        row = meta.get(rel) or meta.get(f"{cls}/{f}") or meta.get(f)
                        unmatched += row is None
                    for out, src in meta_cols.items():
                        cols[out].append(self._value(row, src, out, declared.get(out, "str")))
        if meta is not None and unmatched:
            self.notes.append(f"{unmatched} images have no row in the metadata CSV; their factor values are empty")
            warnings.warn(f"pug-imagenet: {unmatched} of {len(ids)} images have no row in "
                          f"{self.root / self.layout.get('metadata_file', '')}", stacklevel=2)
        return ids, labels, cols, ids

    def _read_metadata(self, meta_cols: dict[str, str]) -> dict[str, dict] | None:
        name = self.layout.get("metadata_file")
        if not name:
            return None
        p = self.root / name
        if not p.is_file():
            if meta_cols:
                self.notes.append(f"no metadata CSV {p}: factor value columns left empty")
                warnings.warn(f"pug-imagenet: {p} not found; columns {', '.join(meta_cols)} are left empty "
                              f"({self.field('metadata_file')})", stacklevel=3)
            return None
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            return {}
        keycol = next((k for k in rows[0] if k and k.strip().lower() in ("filename", "file_name", "file", "path")),
                      None)
        if keycol is None:
            raise ValueError(f"dataset {self.dataset_id!r}: {p} has no filename column (columns: {list(rows[0])})")
        out: dict[str, dict] = {}
        seen_base: dict[str, int] = {}
        for r in rows:
            key = str(r[keycol]).strip().replace("\\", "/").lstrip("./")
            out[key] = r
            base = posixpath.basename(key)
            seen_base[base] = seen_base.get(base, 0) + 1
            parts = key.split("/")
            if len(parts) >= 2:
                out.setdefault("/".join(parts[-2:]), r)
        # file-name keys only where the name is unique in the CSV
        for r in rows:
            key = str(r[keycol]).strip().replace("\\", "/").lstrip("./")
            base = posixpath.basename(key)
            if seen_base[base] == 1:
                out.setdefault(base, r)
        missing = [src for src in meta_cols.values() if src not in rows[0]]
        if missing:
            raise ValueError(f"dataset {self.dataset_id!r}: {p} lacks columns {missing} named in "
                             f"{self.field('metadata_columns')} (it has {list(rows[0])})")
        return out

    def _value(self, row: dict | None, src: str, out: str, dtype: str) -> Any:
        raw = None if row is None else row.get(src)
        if str(dtype).startswith("float"):
            if raw is None or str(raw).strip() == "":
                return float("nan")
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{self.manifest_path}: datasets.{self.dataset_id}.columns.{out}: CSV value {raw!r} "
                                 f"of {src!r} is not a number; declare the column as str") from None
        return "" if raw is None else str(raw)
