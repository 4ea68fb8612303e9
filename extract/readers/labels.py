"""Labels: label tokens and label lists to indices of a label space, and class folders to labels.

No torch at import.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from schemas import label_spaces
from schemas import manifest as M
from schemas.registry import unknown_name

from .base import short

SYNSET = re.compile(r"^n\d{8}$")


def parse_int(text: Any) -> int | None:
    """An integer from text such as '3', ' 3 ' or '3.0'; None if it is not one."""
    try:
        return int(str(text).strip())
    except ValueError:
        try:
            f = float(str(text).strip())
        except ValueError:
            return None
        return int(f) if f.is_integer() else None


def parse_label_list(value: Any) -> list:
    """A label list from parquet (list), JSON text '[1, 2]' or '1;2' / '1|2' / '1 2' text."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            return list(json.loads(text))
        except json.JSONDecodeError:
            text = text.strip("[]")
    return [t for t in re.split(r"[;|,\s]+", text) if t]


def synset_index() -> dict[str, int]:
    """ImageNet synset -> its index in the sorted synsets (the imagenet-1k label order)."""
    return {s: i for i, s in enumerate(label_spaces.imagenet_synsets())}


class LabelResolver:
    """Maps a label token (int index, synset, class name) to an index of the entry's label space."""

    def __init__(self, entry: dict, where: str):
        self.space = entry["label_space"]
        self.n = int(entry["num_labels"])
        self.where = where
        self._names: dict[str, int] | None = None

    def _lookup(self) -> dict[str, int]:
        if self._names is None:
            names: dict[str, int] = {}
            if self.space == "imagenet-1k":
                names.update(synset_index())
            listed = label_spaces.label_space_names(self.space) or []
            for i, s in enumerate(listed):
                names.setdefault(s, i)
                names.setdefault(s.lower(), i)
            self._names = names
        return self._names

    def __call__(self, token: Any) -> int:
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
            v = int(token)
        else:
            v = parse_int(token)
        if v is None:
            names = self._lookup()
            key = str(token).strip()
            v = names.get(key, names.get(key.lower()))
            if v is None:
                raise ValueError(f"{self.where}: label {token!r} is neither an index nor a class of label space "
                                 f"{self.space}")
        if not 0 <= v < self.n:
            raise ValueError(f"{self.where}: label {v} outside label space {self.space} (0..{self.n - 1})")
        return v


def class_index_map(classes: list[str], order: str, entry: dict, *, where: str, dataset_id: str,
                    root: Path) -> dict[str, int]:
    """Class folder name -> label by ``order`` (the manifest's ``class_order``, field ``where``):

    synsets (index in the sorted ImageNet synsets), numeric (the folder name is the index, compared
    as a number), sorted (position in the sorted folder names: torchvision ImageFolder), names (the
    label space's class names). ``dataset_id`` and ``root`` only word the errors.
    """
    res = LabelResolver(entry, where)
    if order == "synsets":
        if entry["label_space"] != "imagenet-1k":
            raise ValueError(f"{where}: 'synsets' needs label_space imagenet-1k")
        index = synset_index()
        bad = [c for c in classes if c not in index]
        if bad:
            raise ValueError(f"dataset {dataset_id!r}: class folders {short(bad)} under {root} are "
                             f"not ImageNet synsets ({where} = 'synsets')")
        return {c: index[c] for c in classes}
    if order == "numeric":
        bad = [c for c in classes if parse_int(c) is None or not c.strip().lstrip("-").isdigit()]
        if bad:
            raise ValueError(f"dataset {dataset_id!r}: class folders {short(bad)} under {root} are "
                             f"not numbers ({where} = 'numeric')")
        return {c: res(int(c)) for c in classes}
    if order == "sorted":
        if len(classes) > int(entry["num_labels"]):
            raise ValueError(f"dataset {dataset_id!r}: {len(classes)} class folders under {root}, "
                             f"more than num_labels = {entry['num_labels']}")
        return {c: i for i, c in enumerate(sorted(classes))}
    if order == "names":
        return {c: res(c) for c in classes}
    raise unknown_name("class order", order, M.CLASS_ORDERS, where=where)
