"""The contract's view of data_manifest.yaml: load, validate, look up datasets and suites.

    m = load_manifest()                 # repo-root data_manifest.yaml, or $BEYOND_MANIFEST
    m.dataset("imagenet-a")             # resolved entry (a JSON-able dict, with "id")
    m.suite("demo")                     # resolved suite (datasets listed, with "id")
    m.suite_plan("paper")               # [(dataset, [transforms]), ...]

models.py holds the typed schema, load.py reads the file and words the errors; `python -m schemas.manifest
[PATH]` validates a manifest and prints a summary. Label spaces are schemas.label_spaces. No torch; nothing
from extract/ or analyze/.
"""
from __future__ import annotations

from .load import ENV_VAR, MANIFEST_PATH, ManifestError, load_manifest, parse_manifest
from .models import (
    CLASS_ORDERS,
    FORMER_STUDY_NAMES,
    LAYOUT_KINDS,
    LAYOUTS,
    DatasetEntry,
    Layout,
    Manifest,
    StudyId,
    Suite,
    is_transform_id,
    parse_column_dtype,
)

__all__ = [
    # manifest
    "CLASS_ORDERS", "ENV_VAR", "FORMER_STUDY_NAMES", "LAYOUTS", "LAYOUT_KINDS", "MANIFEST_PATH", "DatasetEntry", "Layout",
    "Manifest", "ManifestError", "StudyId", "Suite", "is_transform_id", "load_manifest", "parse_column_dtype",
    "parse_manifest",
]
