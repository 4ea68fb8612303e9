"""The class-folders layout: <path>/<class>/<image>, class -> label by ``class_order``.

No torch at import.
"""
from __future__ import annotations

from pathlib import Path

from .base import Reader, Scan, list_dirs, list_images
from .labels import class_index_map


def scan_class_folders(reader: Reader, root: Path, order: str, basename_ids: bool) -> Scan:
    """The images of every class folder under ``root``; sample_id <class>/<file>, or the file name
    (``basename_ids``). Folder -> label by class_index_map with ``order``."""
    classes = list_dirs(root)
    mapping = class_index_map(classes, order, reader.entry, where=reader.field("class_order"),
                              dataset_id=reader.dataset_id, root=reader.root)
    ids: list[str] = []
    labels: list[int] = []
    locs: list[str] = []
    for c in classes:
        lab = mapping[c]
        for f in list_images(root / c, reader.exts):
            rel = f"{c}/{f}"
            ids.append(f if basename_ids else rel)
            labels.append(lab)
            locs.append(rel)
    return ids, labels, {}, locs


class ClassFoldersReader(Reader):
    """<path>/<class>/<image>; class -> label by ``class_order``:
    synsets (index in the label space's synset list), numeric (the folder name is the index,
    compared as a number), sorted (position in the sorted folder names: torchvision ImageFolder),
    names (the label space's class names)."""

    kind = "class-folders"

    def _probe(self) -> None:
        if not list_dirs(self.root):
            raise self._missing(self.root, "path", "has no class folders (expected <path>/<class>/<image>)")

    def _scan(self) -> Scan:
        return scan_class_folders(self, self.root, self.layout["class_order"],
                                  basename_ids=self.layout.get("sample_id", "relative") == "basename")

    def class_names(self) -> list[str] | None:
        if self.entry["label_space"] == "own" and self.layout["class_order"] == "sorted":
            return list_dirs(self.root)
        return super().class_names()
