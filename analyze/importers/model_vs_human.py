"""model-vs-human raw-data CSVs: ``subj, session, trial, rt, object_response, category, condition, imagename``.

One file = one observer (a human subject or a model) in one session: ``<dataset>_<observer>_session[-_]<n>.csv``
(bethgelab/model-vs-human ``raw-data/<dataset>/``). ``object_response`` is the 16-way decision (``na``: no
answer, an invalid row), ``category`` the shape / true category, ``imagename`` the stimulus, for human
observers behind a session prefix (``0001_s5n_s01_0_bird_00_bird3-bird2.png``) that is dropped.

- ``cue-conflict`` goes into the manifest's ``cue-conflict`` dataset: sample id ``<shape>/<stimulus>`` and the
  texture category from the stimulus name, as the cue-conflict reader gives them.
- The other model-vs-human datasets share the 16-category label space: they become ``mvh-<dataset>`` with an
  entry made here (sample id = the stimulus name, ``condition`` kept as a column), read by the robustness
  study as 16-class accuracy.

The run holds ``decisions`` in ``decision_space = cue-conflict-16``.
"""
from __future__ import annotations

import re

import numpy as np

from schemas import label_spaces, logit_kinds
from schemas.registry import close_names

from .parsed import Parsed
from .source import SHOWN, Table, stem

FORMAT = "model-vs-human"
COLUMNS = ("subj", "object_response", "category", "imagename")
SPACE = "cue-conflict-16"
NO_ANSWER = "na"
FILE_NAME = re.compile(r"^(?P<dataset>[A-Za-z0-9-]+)_(?P<observer>.+?)_session[-_]?(?P<session>\d+)$")
# Trial, experiment, subject, condition, category, index, then the stimulus (which may hold "_").
PREFIX = re.compile(r"^\d{4}_[^_]+_[^_]+_[^_]+_[^_]+_\d+_(?P<stimulus>.+)$")
# The datasets of model-vs-human's raw-data folder besides cue-conflict (all in the 16 categories).
OTHER_DATASETS = ("colour", "contrast", "edge", "eidolonI", "eidolonII", "eidolonIII", "false-colour", "high-pass",
                  "low-pass", "phase-scrambling", "power-equalisation", "rotation", "silhouette", "sketch",
                  "stylized", "uniform-noise")


def matches(table: Table) -> bool:
    """The file's name or columns look like this format's (a column may be missing: parse names it)."""
    return FILE_NAME.match(stem(table.path)) is not None or sum(c in table.columns for c in COLUMNS) >= 2


def store_dataset(name: str) -> str:
    """The store's dataset id for a model-vs-human dataset name."""
    return "cue-conflict" if name == "cue-conflict" else f"mvh-{name.lower()}"


def entry(dataset: str) -> dict:
    """The dataset entry of a model-vs-human dataset other than cue-conflict (data_manifest.yaml has none)."""
    return {"id": dataset, "title": f"model-vs-human {dataset.removeprefix('mvh-')} (16 categories)",
            "source": "bethgelab/model-vs-human raw-data (Geirhos et al., NeurIPS 2021); code MIT, stimuli per dataset",
            "label_space": SPACE, "num_labels": 16, "logit_space": "imagenet-1k", "class_subset": SPACE,
            "label_kind": "single", "columns": {"condition": "str"}, "studies": ["robustness"], "group": None}


def stimulus(imagename: str) -> str:
    """The stimulus file name: ``imagename`` without a session prefix (and any folder)."""
    name = imagename.replace("\\", "/").rsplit("/", 1)[-1]
    m = PREFIX.match(name)
    return m.group("stimulus") if m else name


def parse(table: Table, *, model: str | None = None, dataset: str | None = None) -> Parsed | None:
    """The file as one run, or None with the problems recorded on ``table``."""
    if not table.require(COLUMNS, "a model-vs-human raw-data file"):
        return None
    named = FILE_NAME.match(stem(table.path))
    name = dataset.removeprefix("mvh-") if dataset else (named.group("dataset") if named else None)
    if name is None:
        table.whole("cannot tell the dataset: the file name is not <dataset>_<observer>_session-<n>.csv; "
                    "give --dataset cue-conflict (or mvh-<name>)")
        return None
    if name != "cue-conflict" and name not in OTHER_DATASETS and name.lower() not in map(str.lower, OTHER_DATASETS):
        near = close_names(name, ("cue-conflict",) + OTHER_DATASETS)
        table.whole(f"unknown model-vs-human dataset {name!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                    + f"; expected cue-conflict or one of {', '.join(OTHER_DATASETS)}")
        return None
    _one_value(table, "subj", "observer")
    if "session" in table.columns:
        _one_value(table, "session", "session")
    cats = list(label_spaces.cue_conflict_categories())
    decision = _categories(table, "object_response", cats, allow_na=True)
    label = _categories(table, "category", cats, allow_na=False)
    stimuli = [stimulus(v) for v in table.text("imagename").tolist()]
    table.unique("imagename", np.asarray(stimuli, dtype=object), "image")
    ds = store_dataset(name)
    columns: dict[str, np.ndarray] = {}
    if ds == "cue-conflict":
        ids, texture = _cue_conflict(table, stimuli, label, cats)
        columns["texture_label"] = texture
    else:
        ids = np.asarray(stimuli, dtype=object)
        columns["condition"] = table.text("condition") if "condition" in table.columns else np.full(len(ids), "", object)
    if table.problems or decision is None or label is None:
        return None
    observer = model or (named.group("observer") if named else str(table.columns["subj"][0]).strip())
    return Parsed(table, FORMAT, ds, observer, ids, logit_kinds.DECISIONS, decision=decision, decision_space=SPACE,
                  label=label, columns=columns, no_decision="no answer (object_response na)",
                  entry=None if ds == "cue-conflict" else entry(ds),
                  source=f"model-vs-human raw data ({name}: one 16-way decision per image)")


def _one_value(table: Table, column: str, what: str) -> None:
    """A file holds one observer in one session: every row has the first row's value."""
    values = table.text(column)
    if not len(values):
        return
    differ = np.flatnonzero(values != values[0])
    if differ.size:
        i = int(differ[0])
        table.problem(i, column, f"expected one {what} per file ({values[0]!r}, as on {table.unit} "
                                 f"{int(table.lines[0])}), found {values[i]!r}: mixed {what}s ({differ.size} rows); "
                                 f"split the file, one per {what}")


def _categories(table: Table, column: str, cats: list[str], *, allow_na: bool) -> np.ndarray | None:
    index = {c: i for i, c in enumerate(cats)}
    out = np.empty(len(table), np.int64)
    bad = 0
    for i, v in enumerate(table.text(column).tolist()):
        key = v.lower()
        if key in index:
            out[i] = index[key]
        elif allow_na and key == NO_ANSWER:
            out[i] = -1
        else:
            if bad < SHOWN:
                near = close_names(key, cats)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                table.problem(i, column, f"unknown class name {v!r}{hint}; expected one of the 16 categories "
                                         f"{', '.join(cats)}" + (" or na (no answer)" if allow_na else ""))
            bad += 1
    return None if bad else out


def _cue_conflict(table: Table, stimuli: list[str], label: np.ndarray | None, cats: list[str]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Sample ids ``<shape>/<stimulus>`` and texture categories; the file's ``category`` must be the shape."""
    ids = np.empty(len(stimuli), object)
    texture = np.full(len(stimuli), -1, np.int16)
    for i, name in enumerate(stimuli):
        parsed = label_spaces.cue_conflict_stimulus(name)
        if parsed is None:
            table.problem(i, "imagename", f"expected a cue-conflict stimulus <shape><i>-<texture><j>.png of the 16 "
                                          f"categories (after the session prefix), found {name!r}")
            continue
        ids[i], shape, texture[i] = parsed
        if label is not None and label[i] != shape:
            table.problem(i, "category", f"expected the stimulus's shape {cats[shape]!r} ({name}), found "
                                         f"{cats[label[i]]!r}")
    return ids, texture


__all__ = ["COLUMNS", "FORMAT", "OTHER_DATASETS", "entry", "matches", "parse", "stimulus", "store_dataset"]
