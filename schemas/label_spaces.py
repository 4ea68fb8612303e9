"""Label spaces and class subsets the manifest refers to, read from the files bundled in schemas/labels.

    label_space_names("cue-conflict-16")     # class names in label order
    class_subset_indices("imagenet-a-200")   # ImageNet-1k indices, sorted
    class_groups("pug-imagenet")             # class -> its ImageNet-1k indices

Stdlib, numpy and the bundled files only; no torch.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from .registry import unknown_name

LABELS_DIR: Path = Path(__file__).resolve().parent / "labels"

LABEL_SPACES: dict[str, int | None] = {  # name -> size (None: the dataset's own classes)
    "imagenet-1k": 1000,
    "cue-conflict-16": 16,
    "pug-imagenet-151": 151,
    "own": None,
}
LOGIT_SPACES = ("imagenet-1k",)
CLASS_SUBSETS = ("imagenet-a-200", "imagenet-r-200", "pug-imagenet", "cue-conflict-16")


def label_file(name: str) -> Path:
    """Path of a file in schemas/labels; FileNotFoundError naming it and what is there if missing."""
    p = LABELS_DIR / name
    if not p.is_file():
        have = sorted(x.name for x in LABELS_DIR.iterdir()) if LABELS_DIR.is_dir() else []
        raise FileNotFoundError(f"label file {name!r} not found in {LABELS_DIR} (the package's bundled label "
                                f"files; present: {', '.join(have) or 'none'})")
    return p


@lru_cache(maxsize=None)
def _json_label_file(name: str) -> dict:
    return json.loads(label_file(name).read_text())


@lru_cache(maxsize=None)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k synsets in class-index order (sorted wnids)."""
    return tuple(x.strip() for x in label_file("imagenet_synsets.txt").read_text().split() if x.strip())


@lru_cache(maxsize=None)
def imagenet_class_names() -> tuple[str, ...]:
    return tuple(x for x in label_file("imagenet_classnames.txt").read_text().splitlines() if x.strip())


@lru_cache(maxsize=None)
def cue_conflict_categories() -> tuple[str, ...]:
    """The 16 cue-conflict categories in label order (alphabetical, as the keys of cue_conflict_16.json)."""
    keys = tuple(_json_label_file("cue_conflict_16.json"))
    if list(keys) != sorted(keys):
        raise ValueError(f"{label_file('cue_conflict_16.json')}: categories are expected in alphabetical order")
    return keys


CUE_CONFLICT_STIMULUS = re.compile(r"^(?:([a-z]+)/)?(([a-z]+)\d+-([a-z]+)\d+\.png)$", re.IGNORECASE)


def cue_conflict_stimulus(name: str) -> tuple[str, int, int] | None:
    """``[<shape>/]<shape><i>-<texture><j>.png`` -> ``(sample_id, shape, texture)``: the id the cue-conflict reader
    gives the file (``<shape>/<file>``) and the indices of its shape and texture among the 16 categories.

    None when the name is not of that form, names an unknown category or sits in another shape's folder."""
    m = CUE_CONFLICT_STIMULUS.match(name)
    if m is None:
        return None
    folder, file, shape, texture = m.group(1), m.group(2), m.group(3).lower(), m.group(4).lower()
    cats = cue_conflict_categories()
    if shape not in cats or texture not in cats or (folder is not None and folder.lower() != shape):
        return None
    return f"{shape}/{file}", cats.index(shape), cats.index(texture)


@lru_cache(maxsize=None)
def pug_imagenet_classes() -> tuple[str, ...]:
    """The 151 PUG-ImageNet classes in label order: Python-sorted keys of the class map (as the reference code)."""
    return tuple(sorted(_json_label_file("pug_imagenet_class_to_imagenet_idx.json")))


def label_space_names(label_space: str) -> list[str] | None:
    """Class names of a label space in label order; None for ``own`` (the dataset knows them)."""
    if label_space == "imagenet-1k":
        return list(imagenet_class_names())
    if label_space == "cue-conflict-16":
        return list(cue_conflict_categories())
    if label_space == "pug-imagenet-151":
        return list(pug_imagenet_classes())
    if label_space == "own":
        return None
    raise unknown_name("label space", label_space, LABEL_SPACES)


def class_groups(name: str) -> dict[str, np.ndarray]:
    """For the grouped label spaces: class -> its ImageNet-1k indices, in label order.

    ``cue-conflict-16`` (shape-bias decision: mean probability per group) and ``pug-imagenet``
    (top-1 over 1000 mapped to PUG classes).
    """
    if name in ("cue-conflict-16", "cue-conflict"):
        raw = _json_label_file("cue_conflict_16.json")
        return {k: np.asarray(raw[k], dtype=np.int64) for k in cue_conflict_categories()}
    if name in ("pug-imagenet", "pug-imagenet-151"):
        raw = _json_label_file("pug_imagenet_class_to_imagenet_idx.json")
        return {k: np.asarray(raw[k], dtype=np.int64) for k in pug_imagenet_classes()}
    raise unknown_name("class grouping", name, ("cue-conflict-16", "pug-imagenet"))


def class_subset_indices(name: str | None) -> np.ndarray | None:
    """The ImageNet-1k logit columns of a class subset, sorted ascending (int64); None for None.

    imagenet-a-200 / imagenet-r-200: the 200 indices files; cue-conflict-16: the sorted union of
    the 16 categories' members (207); pug-imagenet: the sorted union of the mapped indices (176).
    """
    if name is None:
        return None
    if name in ("imagenet-a-200", "imagenet-r-200"):
        f = label_file("imagenet_a_indices.txt" if name == "imagenet-a-200" else "imagenet_r_indices.txt")
        idx = np.asarray([int(x) for x in f.read_text().split()], dtype=np.int64)
        return np.unique(idx)
    if name in ("cue-conflict-16", "pug-imagenet"):
        groups = class_groups(name)
        return np.unique(np.concatenate(list(groups.values())).astype(np.int64))
    raise unknown_name("class subset", name, CLASS_SUBSETS)


__all__ = [
    "CLASS_SUBSETS", "LABELS_DIR", "LABEL_SPACES", "LOGIT_SPACES", "class_groups", "class_subset_indices",
    "cue_conflict_categories", "cue_conflict_stimulus", "imagenet_class_names", "imagenet_synsets", "label_file", "label_space_names",
    "pug_imagenet_classes",
]
