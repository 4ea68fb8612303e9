"""One file's predictions, parsed: sample ids, what the file says per sample, and how it becomes a run's rows."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas import logit_kinds

from .source import Table


@dataclass
class Parsed:
    """A file read into one run. Exactly one of ``decision`` (with ``probability`` for ``top1-probability``) and
    ``scores`` is set, as ``kind`` says (schemas.logit_kinds)."""

    table: Table
    fmt: str                                   # imagenet-x | model-vs-human | table
    dataset: str
    model: str
    sample_id: np.ndarray                      # [m] str, as the dataset's reader names the samples
    kind: str
    decision: np.ndarray | None = None         # [m] int64: class index, or group index in decision_space; -1 none
    decision_space: str = "imagenet-1k"        # imagenet-1k, or a grouped label space (cue-conflict-16)
    probability: np.ndarray | None = None      # [m] the decision's probability (top1-probability)
    scores: np.ndarray | None = None           # [m, C] logits or probabilities
    label: np.ndarray | None = None            # [m] the labels the file gives, if it gives them
    columns: dict[str, np.ndarray] = field(default_factory=dict)   # per-sample columns the file gives
    no_decision: str = "no decision"           # why a -1 decision's row is invalid
    entry: dict | None = None                  # the dataset's entry when data_manifest.yaml has none
    source: str = ""                           # what the file holds, in words (run attrs, report)

    def rows(self, index: np.ndarray, n: int, n_classes: int, groups: list[np.ndarray] | None
             ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``(logits [n, C], valid [n], invalid_reason [n])`` with the file's entry ``i`` at row ``index[i]`` of the
        dataset's ``n`` samples; samples the file lacks are invalid rows saying so."""
        if self.scores is not None:
            enc = (self.scores if self.kind == logit_kinds.CLASSIFIER
                   else logit_kinds.probability_logits(self.scores)).astype(np.float32)
        elif self.kind == logit_kinds.TOP1_PROBABILITY:
            enc = logit_kinds.top1_probability_logits(self.decision, self.probability, n_classes)
        else:
            members = groups if self.decision_space != "imagenet-1k" else None
            enc = logit_kinds.decision_logits(self.decision, n_classes, members)
        logits = np.full((n, n_classes), np.nan, dtype=enc.dtype)
        logits[index] = enc
        valid = np.zeros(n, bool)
        valid[index] = np.isfinite(enc).all(axis=1)
        reasons = [f"not in {self.table.path.name}"] * n
        for i, row in enumerate(index.tolist()):
            reasons[row] = "" if valid[row] else self.no_decision
        return logits, valid, reasons

    def attrs(self, sha256: str) -> dict:
        """The run attributes describing the import (and the fingerprint's weights id)."""
        imported = {"format": self.fmt, "file": self.table.path.name, "sha256": sha256, "rows": len(self.sample_id),
                    "source": self.source}
        out = {"model": {"id": self.model, "kind": "imported"}, "preprocess": {}, "precision": "n/a",
               "logit_kind": self.kind, "weights_id": f"imported:{sha256}", "imported": imported}
        if self.kind == logit_kinds.DECISIONS:
            out["decision_space"] = self.decision_space
        return out


__all__ = ["Parsed"]
