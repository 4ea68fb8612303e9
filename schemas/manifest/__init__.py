"""The contract's view of data_manifest.yaml: load, validate, look up datasets and suites.

    m = load_manifest()                 # repo-root data_manifest.yaml, or $BEYOND_MANIFEST
    m.dataset("imagenet-a")             # resolved entry (a JSON-able dict, with "id")
    m.suite("demo")                     # resolved suite (datasets listed, with "id")
    m.suite_plan("paper")               # [(dataset, [transforms]), ...]

models.py holds the typed schema, load.py reads the file and words the errors; `python -m schemas.manifest
[PATH]` validates a manifest and prints a summary. The label spaces (schemas.label_spaces) are re-exported
here for the callers that still import them from this package. No torch; nothing from extract/ or analyze/.
"""
from __future__ import annotations

from ..label_spaces import (
    CLASS_SUBSETS,
    LABEL_SPACES,
    LABELS_DIR,
    LOGIT_SPACES,
    class_groups,
    class_subset_indices,
    cue_conflict_categories,
    imagenet_class_names,
    imagenet_synsets,
    label_file,
    label_space_names,
    pug_imagenet_classes,
)
from .load import ENV_VAR, MANIFEST_PATH, ManifestError, load_manifest, parse_manifest
from .models import (
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
    "ENV_VAR", "FORMER_STUDY_NAMES", "LAYOUTS", "LAYOUT_KINDS", "MANIFEST_PATH", "DatasetEntry", "Layout",
    "Manifest", "ManifestError", "StudyId", "Suite", "is_transform_id", "load_manifest", "parse_column_dtype",
    "parse_manifest",
    # label spaces (schemas.label_spaces)
    "CLASS_SUBSETS", "LABELS_DIR", "LABEL_SPACES", "LOGIT_SPACES", "class_groups", "class_subset_indices",
    "cue_conflict_categories", "imagenet_class_names", "imagenet_synsets", "label_file", "label_space_names",
    "pug_imagenet_classes",
]
