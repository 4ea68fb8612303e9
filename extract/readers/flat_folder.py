"""The flat-folder layout (ImageNet val): <path>/<image> plus a labels file, or <path>/<synset>/<image>.

No torch at import.
"""
from __future__ import annotations

import csv
import io
import posixpath
import re
from pathlib import Path

from .base import Reader, Scan, list_dirs, list_images, short
from .class_folders import scan_class_folders
from .labels import SYNSET, LabelResolver, parse_int


class FlatFolderReader(Reader):
    """ImageNet val: <path>/<image> + a labels file (LOC_val_solution.csv, "<file> <label>" lines, or
    one label per line in file-name order); with ``class_folders_fallback``, also <path>/<synset>/<image>.
    sample_id = the file name in both layouts."""

    kind = "flat-folder"

    def _probe(self) -> None:
        self._flat = bool(list_images(self.root, self.exts))
        if self._flat:
            self._labels_path = self._find_labels_file()
        elif self.layout.get("class_folders_fallback") and list_dirs(self.root):
            self._labels_path = None
            self.notes.append("read as class folders (<synset>/<image>); sample_id = file name")
        else:
            raise self._missing(self.root, "path", "holds no images" + (
                " and no class folders" if self.layout.get("class_folders_fallback") else ""))

    def _find_labels_file(self) -> Path:
        cands = self.layout["labels_file"]
        cands = [cands] if isinstance(cands, str) else list(cands)
        for c in cands:
            p = Path(c).expanduser()
            p = p if p.is_absolute() else self.root / p
            if p.is_file():
                return p.resolve()
        tried = ", ".join(str((self.root / c).resolve()) for c in cands)
        raise FileNotFoundError(
            f"dataset {self.dataset_id!r}: no labels file for the images in {self.root}; tried {tried} "
            f"({self.field('labels_file')}, relative to the dataset folder)")

    def _scan(self) -> Scan:
        if not self._flat:
            return scan_class_folders(self, self.root, "synsets", basename_ids=True)
        files = list_images(self.root, self.exts)
        by_name = self._read_labels(self._labels_path, files)
        labels: list[int] = []
        missing: list[str] = []
        for f in files:
            stem = f.rsplit(".", 1)[0]
            lab = by_name.get(f, by_name.get(stem))
            if lab is None:
                missing.append(f)
                lab = -1
            labels.append(lab)
        if missing:
            raise ValueError(f"dataset {self.dataset_id!r}: {self._labels_path} has no label for {len(missing)} of "
                             f"{len(files)} images, e.g. {short(missing, 3)}")
        return list(files), labels, {}, list(files)

    def _read_labels(self, path: Path, files: list[str]) -> dict[str, int]:
        res = LabelResolver(self.entry, f"{path}")
        text = path.read_text(encoding="utf-8-sig")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        fmt = self.layout.get("labels_format", "auto")
        head = lines[0].lower() if lines else ""
        if fmt == "loc-csv" or (fmt == "auto" and "imageid" in head and "predictionstring" in head):
            out: dict[str, int] = {}
            for row in csv.DictReader(io.StringIO(text)):
                keys = {k.lower(): v for k, v in row.items() if k}
                img, pred = keys.get("imageid"), keys.get("predictionstring")
                if not img or not pred:
                    continue
                out[img.strip()] = res(pred.split()[0])
            return out
        rows = [re.split(r"[\s,]+", ln) for ln in lines]
        if rows and len(rows[0]) >= 2 and parse_int(rows[0][-1]) is None and not SYNSET.match(rows[0][-1]):
            rows = rows[1:]  # a header line
        if rows and all(len(r) >= 2 for r in rows):
            pairs = [(posixpath.basename(r[0]), r[-1]) for r in rows]
            self._refuse_devkit([t for _, t in pairs], path)
            return {name: res(tok) for name, tok in pairs}
        if rows and all(len(r) == 1 for r in rows):
            toks = [r[0] for r in rows]
            self._refuse_devkit(toks, path)
            numbered = [re.search(r"_(\d{8})\.", f) for f in files]
            if all(numbered):  # ILSVRC2012_val_%08d: line k belongs to image k
                out = {}
                for f, m in zip(files, numbered):
                    k = int(m.group(1))
                    if not 1 <= k <= len(toks):
                        raise ValueError(f"dataset {self.dataset_id!r}: {path} has {len(toks)} labels, none for {f}")
                    out[f] = res(toks[k - 1])
                return out
            if len(toks) != len(files):
                raise ValueError(f"dataset {self.dataset_id!r}: {path} lists {len(toks)} labels for {len(files)} "
                                 "images (one label per line must match the sorted file names)")
            return {f: res(t) for f, t in zip(files, toks)}
        raise ValueError(f"dataset {self.dataset_id!r}: cannot read {path}: expected LOC_val_solution.csv, "
                         "'<file> <label>' lines or one label per line")

    def _refuse_devkit(self, tokens: list[str], path: Path) -> None:
        ints = [parse_int(t) for t in tokens]
        if ints and all(v is not None for v in ints) and max(ints) == int(self.entry["num_labels"]) and min(ints) >= 1:
            raise ValueError(
                f"dataset {self.dataset_id!r}: {path} looks like the devkit's ILSVRC2012_validation_ground_truth.txt "
                "(ILSVRC2012 ids 1..1000, not indices of the sorted synsets); use LOC_val_solution.csv, a txt of "
                "0-based sorted-synset indices or synset ids, or the class-folder layout")
