"""Label tables the analysis joins onto stored runs, read from files bundled in schemas/labels.

The label spaces and class subsets themselves come from the contract (schemas.label_spaces); this module adds
the per-image tables (ReaL, ImageNet-X).

Loaded lazily and cached: importing the analysis costs nothing.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from schemas import label_spaces

IMAGENET_X_FACTORS = (
    "pose", "background", "pattern", "color", "smaller", "shape", "partial_view", "subcategory",
    "texture", "larger", "darker", "object_blocking", "person_blocking", "style", "brighter",
    "multiple_objects",
)


def label_path(name: str) -> Path:
    return label_spaces.label_file(name)


def subset_indices(name: str) -> np.ndarray:
    """ImageNet-1k indices of a class subset: ``imagenet-a-200`` / ``imagenet-r-200``."""
    return label_spaces.class_subset_indices(name)


def cue_conflict_groups() -> dict[str, np.ndarray]:
    """The 16 cue-conflict categories (sorted by name) -> their ImageNet-1k member indices."""
    return label_spaces.class_groups("cue-conflict-16")


def pug_classes() -> dict[str, np.ndarray]:
    """The PUG-ImageNet classes (sorted by name) -> their ImageNet-1k indices."""
    return label_spaces.class_groups("pug-imagenet")


@lru_cache(maxsize=None)
def real_labels() -> dict[str, tuple[int, ...]]:
    """ImageNet-ReaL label sets keyed by validation file name (ILSVRC2012_val_%08d.JPEG)."""
    with gzip.open(label_path("imagenet_real_labels.json.gz"), "rt") as f:
        sets = json.load(f)
    return {f"ILSVRC2012_val_{i + 1:08d}.JPEG": tuple(s) for i, s in enumerate(sets)}


@dataclass(frozen=True)
class ImageNetX:
    """ImageNet-X top-factor annotations of the validation set (prototypes flagged)."""

    file_name: np.ndarray   # [image] str
    label: np.ndarray       # [image] int, the annotated class
    prototype: np.ndarray   # [image] bool
    factors: np.ndarray     # [image, factor] bool, one-hot top factor

    def without_prototypes(self) -> "ImageNetX":
        keep = ~self.prototype
        return ImageNetX(self.file_name[keep], self.label[keep], self.prototype[keep], self.factors[keep])


@lru_cache(maxsize=None)
def imagenet_x() -> ImageNetX:
    import polars as pl  # its CSV reader: a fifth of the time of csv.reader and numpy's conversions

    with gzip.open(label_path("imagenet_x_val_top_factor.csv.gz"), "rb") as f:
        table = pl.read_csv(f.read(), infer_schema_length=0)  # every column as text, converted below
    header = table.columns
    if tuple(header[3:]) != IMAGENET_X_FACTORS:
        raise ValueError(f"imagenet_x_val_top_factor.csv.gz: factor columns {header[3:]}, expected {IMAGENET_X_FACTORS}")
    numbers = lambda names: table.select(names).cast(pl.Int64).to_numpy()  # noqa: E731
    return ImageNetX(
        file_name=table[header[0]].to_numpy().astype(str),
        label=numbers(header[1])[:, 0],
        prototype=numbers(header[2])[:, 0].astype(bool),
        factors=numbers(header[3:]).astype(bool),
    )


def base_file_name(sample_id: str) -> str:
    """The image file name of a sample id (``n01440764/ILSVRC2012_val_00000293.JPEG`` -> the last part)."""
    return sample_id.rsplit("/", 1)[-1]
