"""The contract's view of data_manifest.yaml: load, validate, look up datasets and suites.

Also the label spaces and class subsets the manifest refers to, read from the files bundled in
schemas/labels. Never imports torch (the analysis stage uses this module).

    m = load_manifest()                 # repo-root data_manifest.yaml, or $BEYOND_MANIFEST
    m.dataset("imagenet-a")             # resolved entry (a JSON-able dict, with "id")
    m.suite("demo")                     # resolved suite (datasets listed, with "id")
    m.suite_plan("paper")               # [(dataset, [transforms]), ...]
    class_subset_indices("imagenet-a-200")   # ImageNet-1k indices, sorted

`python -m schemas.manifest [PATH]` validates a manifest and prints a summary.
"""
from __future__ import annotations

import copy
import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ENV_VAR = "BEYOND_MANIFEST"
MANIFEST_PATH: Path = Path(__file__).resolve().parents[1] / "data_manifest.yaml"
# A non-editable install ships the manifest inside the package (pyproject package-data).
_PACKAGED_MANIFEST = Path(__file__).resolve().parent / "data_manifest.yaml"
LABELS_DIR: Path = Path(__file__).resolve().parent / "labels"

# ---------------------------------------------------------------- vocabulary
LABEL_SPACES: dict[str, int | None] = {  # name -> size (None: the dataset's own classes)
    "imagenet-1k": 1000,
    "cue-conflict-16": 16,
    "pug-imagenet-151": 151,
    "own": None,
}
LOGIT_SPACES = ("imagenet-1k",)
CLASS_SUBSETS = ("imagenet-a-200", "imagenet-r-200", "pug-imagenet", "cue-conflict-16")
LABEL_KINDS = ("single", "multi")
STUDIES = ("mistakes", "calibration", "robustness", "shape-bias", "synthetic", "transfer", "invariance")
GROUPS = ("natural", "specialized", "structured")
LAYOUT_KINDS = ("class-folders", "flat-folder", "file-list", "webdataset", "imagenet-c", "cue-conflict",
                "pug-imagenet")
CLASS_ORDERS = ("synsets", "numeric", "sorted", "names")

REQUIRED_FIELDS: dict[str, Any] = {  # field -> accepted python type(s)
    "title": str,
    "source": str,
    "layout": dict,
    "label_space": str,
    "num_labels": int,
    "logit_space": str,
    "class_subset": (str, type(None)),
    "label_kind": str,
    "columns": dict,
    "expected_samples": int,
    "label_tables": list,
    "studies": list,
    "group": (str, type(None)),
}

_COMMON_LAYOUT_KEYS = {"kind", "path", "note", "alternatives", "extensions"}
LAYOUT_KEYS: dict[str, set[str]] = {  # kind -> keys accepted besides the common ones
    "class-folders": {"class_order", "sample_id"},
    "flat-folder": {"labels_file", "labels_format", "class_folders_fallback"},
    "file-list": {"files", "format", "path_column", "image_column", "image_root", "label_column",
                  "label_list", "label_set_column", "extra_columns", "delimiter"},
    "webdataset": {"shards", "split_from", "split_field", "splits", "label_from", "label_field",
                   "classnames_file"},
    "imagenet-c": {"corruptions", "severities"},
    "cue-conflict": {"categories_file"},
    "pug-imagenet": {"factors", "metadata_file", "metadata_columns"},
}
LAYOUT_REQUIRED: dict[str, tuple[str, ...]] = {
    "class-folders": ("path", "class_order"),
    "flat-folder": ("path", "labels_file"),
    "file-list": ("path", "files"),
    "webdataset": ("path",),
    "imagenet-c": ("path",),
    "cue-conflict": ("path",),
    "pug-imagenet": ("path",),
}

_SCALAR_DTYPES = ("str", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                  "float16", "float32", "float64")
_LIST_DTYPE = re.compile(r"^(u?int(?:8|16|32|64))\[(max|\d*)\]$")
_TRANSFORM = re.compile(r"^(center|scale-\d+(\.\d+)?|shift-\d+|res-\d+)$")
_DATASET_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SUITE_KEYS = {"description", "models", "datasets", "transforms", "dataset_transforms", "overrides", "data_root"}


class ManifestError(ValueError):
    """A data_manifest.yaml problem; the message names the file, the entry and the field."""


def parse_column_dtype(dtype: str) -> tuple[str, int | None]:
    """``"int16"`` -> ``("int16", None)``; ``"int32[max]"`` -> ``("int32", 0)``; ``"int32[10]"`` -> ``("int32", 10)``.

    The second item is None for a scalar column, 0 for a list padded to the longest list found,
    K for a list padded to exactly K slots. Lists are padded with -1.
    """
    if dtype in _SCALAR_DTYPES:
        return dtype, None
    m = _LIST_DTYPE.match(str(dtype))
    if not m:
        raise ValueError(f"unknown column dtype {dtype!r}; expected one of {', '.join(_SCALAR_DTYPES)} "
                         "or <int dtype>[max] / <int dtype>[K] for padded label lists")
    width = m.group(2)
    return m.group(1), (0 if width in ("max", "") else int(width))


def is_transform_id(name: str) -> bool:
    """center, scale-<s>, shift-<px>, res-<px>."""
    return bool(_TRANSFORM.match(str(name)))


# ---------------------------------------------------------------- the manifest
@dataclass
class Manifest:
    """A validated data_manifest.yaml."""

    path: Path
    datasets: dict[str, dict]
    suites: dict[str, dict]
    label_tables: dict[str, dict] = field(default_factory=dict)

    # -- datasets
    def dataset(self, id: str, suite: str | None = None) -> dict:
        """The resolved entry of dataset ``id`` (a deep copy with ``"id"`` added).

        With ``suite``, the suite's ``overrides`` for that dataset are applied (e.g. the demo
        suite's smaller ``expected_samples``).
        """
        if id not in self.datasets:
            raise ValueError(_unknown("dataset", id, self.datasets, self.path))
        entry = copy.deepcopy(self.datasets[id])
        if suite is not None:
            overrides = self.suite(suite).get("overrides", {}).get(id, {})
            entry.update(copy.deepcopy(overrides))
        return {"id": id, **entry}

    def dataset_ids(self) -> list[str]:
        return list(self.datasets)

    # -- suites
    def suite(self, id: str) -> dict:
        """The resolved suite ``id``: ``datasets`` as a list, ``transforms`` per dataset under
        ``dataset_transforms`` (filled for every dataset), ``overrides``, ``models``, ``"id"``."""
        if id not in self.suites:
            raise ValueError(_unknown("suite", id, self.suites, self.path))
        s = copy.deepcopy(self.suites[id])
        if s.get("datasets") == "all":
            s["datasets"] = list(self.datasets)
        default = list(s.get("transforms") or ["center"])
        per = s.get("dataset_transforms") or {}
        s["transforms"] = default
        s["dataset_transforms"] = {d: list(per.get(d, default)) for d in s["datasets"]}
        s.setdefault("overrides", {})
        s.setdefault("data_root", None)
        s.setdefault("description", "")
        return {"id": id, **s}

    def suite_ids(self) -> list[str]:
        return list(self.suites)

    def suite_plan(self, id: str) -> list[tuple[str, list[str]]]:
        """``[(dataset, [transform, ...]), ...]`` in the suite's dataset order."""
        s = self.suite(id)
        return [(d, s["dataset_transforms"][d]) for d in s["datasets"]]


def _unknown(kind: str, id: str, known: dict, path: Path) -> str:
    close = difflib.get_close_matches(str(id), list(known), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"{path}: unknown {kind} {id!r}; {hint}available: {', '.join(known)}"


def _resolve_path(path: str | Path | None) -> Path:
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    if MANIFEST_PATH.exists() or not _PACKAGED_MANIFEST.exists():
        return MANIFEST_PATH
    return _PACKAGED_MANIFEST


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Load and validate a manifest: ``path``, else $BEYOND_MANIFEST, else the repo-root data_manifest.yaml.

    Raises ManifestError (a ValueError) naming the file, the entry and the field of the first
    problems found; FileNotFoundError when the file does not exist.
    """
    p = _resolve_path(path)
    if not p.exists():
        src = "" if path is not None else (f" (from ${ENV_VAR})" if os.environ.get(ENV_VAR) else "")
        raise FileNotFoundError(f"data manifest not found: {p}{src}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ManifestError(f"{p}: not valid YAML: {e}") from None
    return _validate(raw, p)


def _validate(raw: Any, p: Path) -> Manifest:
    errors: list[str] = []

    def err(where: str, msg: str) -> None:
        errors.append(f"{p}: {where}: {msg}")

    if not isinstance(raw, dict):
        raise ManifestError(f"{p}: expected a mapping with 'datasets' and 'suites' at the top level")
    unknown_top = set(raw) - {"datasets", "suites", "label_tables"}
    if unknown_top:
        err("top level", f"unknown keys {sorted(unknown_top)} (expected datasets, suites, label_tables)")
    datasets = raw.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        raise ManifestError(f"{p}: 'datasets' must be a non-empty mapping of dataset id -> entry")
    suites = raw.get("suites") or {}
    tables = raw.get("label_tables") or {}
    if not isinstance(suites, dict):
        err("suites", "must be a mapping of suite id -> suite")
        suites = {}
    if not isinstance(tables, dict):
        err("label_tables", "must be a mapping of table id -> table")
        tables = {}

    for tid, t in tables.items():
        where = f"label_tables.{tid}"
        if not isinstance(t, dict) or "file" not in t:
            err(where, "must be a mapping with at least 'file' (a file in schemas/labels)")
            continue
        if not (LABELS_DIR / str(t["file"])).exists():
            err(f"{where}.file", f"{t['file']!r} not found in {LABELS_DIR}")

    for did, entry in datasets.items():
        _validate_dataset(str(did), entry, tables, err)

    for sid, s in suites.items():
        _validate_suite(str(sid), s, datasets, err)

    if errors:
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ManifestError("\n".join(errors[:20]) + more)
    return Manifest(path=p, datasets={str(k): v for k, v in datasets.items()},
                    suites={str(k): v for k, v in suites.items()}, label_tables=dict(tables))


def _validate_dataset(did: str, entry: Any, tables: dict, err) -> None:
    where = f"datasets.{did}"
    if not _DATASET_ID.match(did):
        err(where, "dataset ids are lower-case letters, digits and '-'")
    if not isinstance(entry, dict):
        err(where, "must be a mapping of fields")
        return
    for name, types in REQUIRED_FIELDS.items():
        if name not in entry:
            err(f"{where}.{name}", "missing field")
        elif not isinstance(entry[name], types) or (types is int and isinstance(entry[name], bool)):
            want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            err(f"{where}.{name}", f"must be {want}, got {type(entry[name]).__name__} {entry[name]!r}")
    extra = set(entry) - set(REQUIRED_FIELDS)
    if extra:
        err(where, f"unknown fields {sorted(extra)} (known: {', '.join(REQUIRED_FIELDS)})")

    space = entry.get("label_space")
    if isinstance(space, str):
        if space not in LABEL_SPACES:
            err(f"{where}.label_space", f"{space!r} not one of {', '.join(LABEL_SPACES)}")
        elif LABEL_SPACES[space] is not None and entry.get("num_labels") != LABEL_SPACES[space]:
            err(f"{where}.num_labels", f"label space {space} has {LABEL_SPACES[space]} labels, got {entry.get('num_labels')!r}")
    if isinstance(entry.get("num_labels"), int) and entry["num_labels"] < 1:
        err(f"{where}.num_labels", "must be >= 1")
    if isinstance(entry.get("logit_space"), str) and entry["logit_space"] not in LOGIT_SPACES:
        err(f"{where}.logit_space", f"{entry['logit_space']!r} not one of {', '.join(LOGIT_SPACES)}")
    cs = entry.get("class_subset")
    if isinstance(cs, str) and cs not in CLASS_SUBSETS:
        err(f"{where}.class_subset", f"{cs!r} not null or one of {', '.join(CLASS_SUBSETS)}")
    kind = entry.get("label_kind")
    if isinstance(kind, str) and kind not in LABEL_KINDS:
        err(f"{where}.label_kind", f"{kind!r} not one of {', '.join(LABEL_KINDS)}")
    cols = entry.get("columns")
    if isinstance(cols, dict):
        for cname, dtype in cols.items():
            if cname in ("sample_id", "label") or str(cname).startswith("_"):
                err(f"{where}.columns.{cname}", "reserved column name")
            try:
                parse_column_dtype(str(dtype))
            except ValueError as e:
                err(f"{where}.columns.{cname}", str(e))
        if kind == "multi" and "label_set" not in cols:
            err(f"{where}.columns", "label_kind multi needs a column label_set: <int dtype>[max]")
        if kind == "multi" and "label_set" in cols and parse_column_dtype_safe(cols["label_set"]) is None:
            err(f"{where}.columns.label_set", "must be a list dtype such as int32[max]")
    if isinstance(entry.get("expected_samples"), int) and entry["expected_samples"] < 0:
        err(f"{where}.expected_samples", "must be >= 0")
    if isinstance(entry.get("label_tables"), list):
        for t in entry["label_tables"]:
            if t not in tables:
                err(f"{where}.label_tables", f"{t!r} is not defined under label_tables (known: {', '.join(tables) or 'none'})")
    if isinstance(entry.get("studies"), list):
        for s in entry["studies"]:
            if s not in STUDIES:
                err(f"{where}.studies", f"{s!r} not one of {', '.join(STUDIES)}")
    group = entry.get("group")
    if isinstance(group, str) and group not in GROUPS:
        err(f"{where}.group", f"{group!r} not null or one of {', '.join(GROUPS)}")
    if did.startswith("vtab-") and group is None and "group" in entry:
        err(f"{where}.group", "a VTAB task needs its group (natural, specialized or structured)")
    if isinstance(entry.get("layout"), dict):
        _validate_layout(f"{where}.layout", entry["layout"], err, allow_alternatives=True)


def parse_column_dtype_safe(dtype: Any) -> int | None:
    try:
        return parse_column_dtype(str(dtype))[1]
    except ValueError:
        return None


def _validate_layout(where: str, layout: dict, err, allow_alternatives: bool) -> None:
    kind = layout.get("kind")
    if kind not in LAYOUT_KINDS:
        err(f"{where}.kind", f"{kind!r} not one of {', '.join(LAYOUT_KINDS)}" if kind else "missing field")
        return
    allowed = _COMMON_LAYOUT_KEYS | LAYOUT_KEYS[kind]
    unknown = set(layout) - allowed
    if unknown:
        err(where, f"unknown keys {sorted(unknown)} for kind {kind} (accepted: {', '.join(sorted(allowed))})")
    for key in LAYOUT_REQUIRED[kind]:
        if key not in layout:
            err(f"{where}.{key}", f"missing field (required for kind {kind})")
    if "path" in layout and (not isinstance(layout["path"], str) or not layout["path"]):
        err(f"{where}.path", "must be a non-empty string (relative to --data-root)")
    if kind == "class-folders" and "class_order" in layout and layout["class_order"] not in CLASS_ORDERS:
        err(f"{where}.class_order", f"{layout['class_order']!r} not one of {', '.join(CLASS_ORDERS)}")
    if kind == "class-folders" and layout.get("sample_id", "relative") not in ("relative", "basename"):
        err(f"{where}.sample_id", "must be relative or basename")
    if kind == "flat-folder" and "labels_file" in layout:
        lf = layout["labels_file"]
        if not (isinstance(lf, str) or (isinstance(lf, list) and lf and all(isinstance(x, str) for x in lf))):
            err(f"{where}.labels_file", "must be a file name or a list of candidate file names")
        if layout.get("labels_format", "auto") not in ("auto", "loc-csv", "txt"):
            err(f"{where}.labels_format", "must be auto, loc-csv or txt")
    if kind == "file-list":
        files = layout.get("files")
        ok = isinstance(files, str) or (isinstance(files, list) and all(isinstance(x, str) for x in files)) or (
            isinstance(files, dict) and all(isinstance(v, str) for v in files.values()))
        if "files" in layout and not ok:
            err(f"{where}.files", "must be a glob, a list of globs, or a mapping split -> glob")
        if "path_column" in layout and "image_column" in layout:
            err(where, "give one of path_column (image paths; the default: column 'path', or the first "
                       "field of a whitespace txt list) or image_column (embedded bytes), not both")
        if layout.get("format", "auto") not in ("auto", "csv", "parquet", "txt"):
            err(f"{where}.format", "must be auto, csv, parquet or txt")
        if "extra_columns" in layout and not isinstance(layout["extra_columns"], dict):
            err(f"{where}.extra_columns", "must be a mapping output column -> source column")
    if kind == "webdataset":
        if layout.get("split_from", "path") not in ("path", "json", "none"):
            err(f"{where}.split_from", "must be path, json or none")
        if layout.get("label_from", "cls") not in ("cls", "json"):
            err(f"{where}.label_from", "must be cls or json")
    if kind == "imagenet-c":
        sev = layout.get("severities", [1, 2, 3, 4, 5])
        if not (isinstance(sev, list) and all(isinstance(s, int) for s in sev)):
            err(f"{where}.severities", "must be a list of integers")
        cor = layout.get("corruptions")
        if cor is not None and not (isinstance(cor, list) and all(isinstance(c, str) for c in cor)):
            err(f"{where}.corruptions", "must be a list of corruption folder names")
    if kind == "pug-imagenet" and "metadata_columns" in layout and not isinstance(layout["metadata_columns"], dict):
        err(f"{where}.metadata_columns", "must be a mapping output column -> CSV column")
    alts = layout.get("alternatives")
    if alts is not None:
        if not allow_alternatives:
            err(f"{where}.alternatives", "alternatives cannot be nested")
        elif not isinstance(alts, list) or not all(isinstance(a, dict) for a in alts):
            err(f"{where}.alternatives", "must be a list of layouts")
        else:
            for i, a in enumerate(alts):
                _validate_layout(f"{where}.alternatives[{i}]", a, err, allow_alternatives=False)


def _validate_suite(sid: str, s: Any, datasets: dict, err) -> None:
    where = f"suites.{sid}"
    if not isinstance(s, dict):
        err(where, "must be a mapping")
        return
    unknown = set(s) - _SUITE_KEYS
    if unknown:
        err(where, f"unknown keys {sorted(unknown)} (known: {', '.join(sorted(_SUITE_KEYS))})")
    ds = s.get("datasets")
    if ds == "all":
        ds = list(datasets)
    if not isinstance(ds, list) or not ds:
        err(f"{where}.datasets", "must be 'all' or a non-empty list of dataset ids")
        ds = []
    for d in ds:
        if d not in datasets:
            err(f"{where}.datasets", _unknown("dataset", d, datasets, Path("")).split(": ", 1)[1])
    models = s.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        err(f"{where}.models", "must be a non-empty list of model ids")
    tr = s.get("transforms", ["center"])
    if not isinstance(tr, list) or not tr:
        err(f"{where}.transforms", "must be a non-empty list of transform ids")
        tr = []
    for t in tr:
        if not is_transform_id(t):
            err(f"{where}.transforms", f"{t!r} is not a transform id (center, scale-<s>, shift-<px>, res-<px>)")
    per = s.get("dataset_transforms") or {}
    if not isinstance(per, dict):
        err(f"{where}.dataset_transforms", "must be a mapping dataset -> list of transforms")
        per = {}
    for d, tl in per.items():
        if d not in ds:
            err(f"{where}.dataset_transforms.{d}", "dataset is not in this suite's datasets")
        if not isinstance(tl, list) or not tl:
            err(f"{where}.dataset_transforms.{d}", "must be a non-empty list of transform ids")
            continue
        for t in tl:
            if not is_transform_id(t):
                err(f"{where}.dataset_transforms.{d}", f"{t!r} is not a transform id")
        if len(set(tl)) != len(tl):
            err(f"{where}.dataset_transforms.{d}", "transforms listed twice")
    ov = s.get("overrides") or {}
    if not isinstance(ov, dict):
        err(f"{where}.overrides", "must be a mapping dataset -> {field: value}")
        ov = {}
    for d, fields in ov.items():
        if d not in ds:
            err(f"{where}.overrides.{d}", "dataset is not in this suite's datasets")
        if not isinstance(fields, dict):
            err(f"{where}.overrides.{d}", "must be a mapping field -> value")
            continue
        for f in fields:
            if f not in REQUIRED_FIELDS:
                err(f"{where}.overrides.{d}.{f}", f"not a dataset field (known: {', '.join(REQUIRED_FIELDS)})")
    if s.get("data_root") not in (None, "demo"):
        err(f"{where}.data_root", "must be null or demo (the bundled demo data)")


# ---------------------------------------------------------------- label files, spaces, subsets
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
    raise ValueError(f"unknown label space {label_space!r}; available: {', '.join(LABEL_SPACES)}")


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
    raise ValueError(f"no class groups for {name!r}; available: cue-conflict-16, pug-imagenet")


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
    raise ValueError(f"unknown class subset {name!r}; available: {', '.join(CLASS_SUBSETS)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        m = load_manifest(argv[0] if argv else None)
    except (ManifestError, FileNotFoundError) as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{m.path}: {len(m.datasets)} datasets, {len(m.suites)} suites - valid")
    for sid in m.suite_ids():
        plan = m.suite_plan(sid)
        print(f"  suite {sid}: {len(plan)} datasets, {sum(len(t) for _, t in plan)} dataset x transform runs "
              f"x {len(m.suite(sid)['models'])} models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
