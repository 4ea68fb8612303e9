"""The cue-conflict layout: <path>/<shape>/<shape><i>-<texture><j>.png (Geirhos et al. stimuli).

No torch at import.
"""
from __future__ import annotations

import json
import re

from schemas import label_spaces

from .base import Reader, Scan, list_dirs, list_images


class CueConflictReader(Reader):
    """<path>/<shape>/<shape><i>-<texture><j>.png: label = shape index, texture_label = texture index,
    both in the 16 categories of cue_conflict_16.json (alphabetical)."""

    kind = "cue-conflict"
    NAME = re.compile(r"^([a-z]+)(\d+)-([a-z]+)(\d+)\.png$", re.IGNORECASE)

    def _categories(self) -> list[str]:
        name = self.layout.get("categories_file", "cue_conflict_16.json")
        if name == "cue_conflict_16.json":
            return list(label_spaces.cue_conflict_categories())
        return list(json.loads(label_spaces.label_file(name).read_text()))

    def _probe(self) -> None:
        if not list_dirs(self.root):
            raise self._missing(self.root, "path", "has no shape folders (expected <path>/<shape>/<file>.png)")

    def _scan(self) -> Scan:
        cats = {c: i for i, c in enumerate(self._categories())}
        ids: list[str] = []
        labels: list[int] = []
        tex: list[int] = []
        for shape in list_dirs(self.root):
            if shape not in cats:
                raise ValueError(f"dataset {self.dataset_id!r}: folder {self.root / shape} is not one of the 16 "
                                 f"categories ({', '.join(cats)})")
            for f in list_images(self.root / shape, self.exts):
                m = self.NAME.match(f)
                if not m:
                    raise ValueError(f"dataset {self.dataset_id!r}: {self.root / shape / f}: file name is not "
                                     "<shape><i>-<texture><j>.png")
                s, t = m.group(1).lower(), m.group(3).lower()
                if s != shape or t not in cats:
                    raise ValueError(f"dataset {self.dataset_id!r}: {self.root / shape / f}: shape {s!r} / texture "
                                     f"{t!r} do not match the folder {shape!r} and the 16 categories")
                ids.append(f"{shape}/{f}")
                labels.append(cats[shape])
                tex.append(cats[t])
        return ids, labels, {"texture_label": tex}, ids
