"""ImageNet-X prediction files: ``file_name, predicted_class[, predicted_probability]`` on ImageNet val.

The format of facebookresearch/imagenetx ``model_predictions/``: one row per validation image, the file name
(a path is reduced to its file name, the sample id of ``imagenet-val``), the top-1 class (an index 0..999, or
a synset id) and optionally its softmax probability. Without probabilities the run holds ``decisions``; with
them ``top1-probability`` (calibration reads the probability; nothing else of the distribution is known).
"""
from __future__ import annotations

import numpy as np

from schemas import label_spaces, logit_kinds
from schemas.registry import close_names

from .parsed import Parsed
from .source import SHOWN, Table, stem

FORMAT = "imagenet-x"
COLUMNS = ("file_name", "predicted_class")
PROBABILITY = "predicted_probability"
DATASET = "imagenet-val"


def matches(table: Table) -> bool:
    """The file's columns look like this format's (one of them may be missing: parse names it)."""
    return "file_name" in table.columns and any(c.startswith("predicted") for c in table.columns)


def parse(table: Table, *, model: str | None = None, dataset: str | None = None) -> Parsed | None:
    """The file as one run, or None with the problems recorded on ``table``."""
    if not table.require(COLUMNS, "an ImageNet-X prediction file (file_name, predicted_class[, predicted_probability])"):
        return None
    ids = np.asarray([name.replace("\\", "/").rsplit("/", 1)[-1] for name in table.text("file_name")], dtype=object)
    table.unique("file_name", ids, "image")
    pred = _classes(table)
    prob = _probabilities(table) if PROBABILITY in table.columns else None
    if pred is None or table.problems or (PROBABILITY in table.columns and prob is None):
        return None
    kind = logit_kinds.DECISIONS if prob is None else logit_kinds.TOP1_PROBABILITY
    what = "top-1 class" + ("" if prob is None else " and its probability")
    return Parsed(table, FORMAT, dataset or DATASET, model or stem(table.path), ids, kind, decision=pred,
                  probability=prob, source=f"ImageNet-X prediction file ({what} per image)")


def _classes(table: Table) -> np.ndarray | None:
    """``predicted_class`` as ImageNet-1k indices: integers 0..999 or synset ids (n01440764)."""
    synsets = {s: i for i, s in enumerate(label_spaces.imagenet_synsets())}
    out = np.empty(len(table), np.int64)
    bad = 0
    for i, v in enumerate(table.text("predicted_class").tolist()):
        if v.lstrip("-").isdigit() and 0 <= int(v) < len(synsets):
            out[i] = int(v)
            continue
        if v in synsets:
            out[i] = synsets[v]
            continue
        if bad < SHOWN:
            near = close_names(v, synsets) if not v.lstrip("-").isdigit() else []
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            table.problem(i, "predicted_class", f"expected an ImageNet-1k class index 0..{len(synsets) - 1} or a "
                                                f"synset id, found {v!r}{hint}")
        bad += 1
    return None if bad else out


def _probabilities(table: Table) -> np.ndarray | None:
    p = table.floats(PROBABILITY, "the top-1 class's probability, a number in [0.001, 1]")
    if p is None:
        return None
    # The top-1 of 1000 probabilities is at least 1/1000: a smaller value is not the decision's probability.
    bad = np.flatnonzero(~((p >= 1e-3 - 1e-9) & (p <= 1 + 1e-6)))
    for i in bad[:SHOWN]:
        table.problem(int(i), PROBABILITY, f"expected the top-1 class's probability in [0.001, 1], found {p[i]!r}")
    return None if bad.size else np.clip(p, 0.0, 1.0)


__all__ = ["COLUMNS", "DATASET", "FORMAT", "matches", "parse"]
