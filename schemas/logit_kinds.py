"""What a run's ``logits`` array holds: its ``logit_kind`` attribute, what each kind can tell, and how imported
predictions are encoded into the ``[sample, class]`` array every run has.

A run's rows are always ``[n, C]`` over the logit space (C = 1000), so every study reads every run the same
way. Kinds that are not logits are encoded so that the float64 softmax the analysis computes gives back exactly
what was known, and nothing more is claimed: the kind says which derived quantities are meaningful.

=================  ===========================================================  ===============================
kind               stored row (valid rows)                                      provides
=================  ===========================================================  ===============================
classifier         the model's logits                                           decision, confidence,
zero-shot          100 x cosine to the class prompts (``{"zero-shot": {...}}``)  probabilities, logits
probabilities      ``log p`` (p clipped below at 1e-30): softmax gives back p   decision, confidence,
                                                                                probabilities
top1-probability   ``log p`` at the decided class, ``log((1 - p) / (C - 1))``   decision, confidence
                   elsewhere: softmax gives p as the confidence of the decision
decisions          1 on the decided class, 0 elsewhere (float16). A decision    decision
                   in a grouped label space (``decision_space`` cue-conflict-16)
                   puts 1 on every member class of the decided category, so the
                   mean-probability category decision is that category
=================  ===========================================================  ===============================

- ``decision``: the argmax (the top-1 class; for ``decisions`` and ``top1-probability`` over all C classes,
  never restricted to a class subset). Top-1, ImageNet-X error ratios, PUG accuracy, shape bias.
- ``confidence``: the probability of the decision (ECE, reliability diagrams).
- ``probabilities``: the whole distribution (mean true-class probability, the mean-probability category
  decision of shape bias, a confidence renormalised over a class subset).
- ``logits``: raw scores (no study needs them beyond the softmax today).

numpy only.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

CLASSIFIER, ZERO_SHOT = "classifier", "zero-shot"
PROBABILITIES, TOP1_PROBABILITY, DECISIONS = "probabilities", "top1-probability", "decisions"

CAPABILITIES = ("decision", "confidence", "probabilities", "logits")
PROVIDES: dict[str, frozenset[str]] = {
    CLASSIFIER: frozenset(CAPABILITIES),
    ZERO_SHOT: frozenset(CAPABILITIES),
    PROBABILITIES: frozenset({"decision", "confidence", "probabilities"}),
    TOP1_PROBABILITY: frozenset({"decision", "confidence"}),
    DECISIONS: frozenset({"decision"}),
}
KINDS = tuple(PROVIDES)
# In words, for notes: what a run of this kind holds.
HOLDS = {
    CLASSIFIER: "logits", ZERO_SHOT: "zero-shot logits", PROBABILITIES: "class probabilities",
    TOP1_PROBABILITY: "top-1 decisions with their probability only", DECISIONS: "decisions only",
}
PROBABILITY_FLOOR = 1e-30  # log(0) is -inf, which the door refuses; e^-69 is 0 for every metric here


def kind_name(logit_kind: Any) -> str:
    """The kind's name: a string as stored, or the key of a one-key dict (``{"zero-shot": {...}}``).

    A run without the attribute reads as ``classifier`` (stores written before imports existed)."""
    if logit_kind is None:
        return CLASSIFIER
    if isinstance(logit_kind, Mapping) and len(logit_kind) == 1:
        return str(next(iter(logit_kind)))
    return str(logit_kind)


def provides(logit_kind: Any, capability: str) -> bool:
    """Whether runs of this kind support ``capability`` (one of CAPABILITIES); unknown kinds support nothing."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; expected one of {', '.join(CAPABILITIES)}")
    return capability in PROVIDES.get(kind_name(logit_kind), frozenset())


def decision_logits(pred: np.ndarray, n_classes: int, members: list[np.ndarray] | None = None) -> np.ndarray:
    """``decisions`` rows: 1 on the decided class (or every member class of the decided group), 0 elsewhere.

    ``pred``: one index per sample into the classes (or into ``members``, the groups' classes); -1 = no
    decision, a NaN row (stored invalid).
    """
    pred = np.asarray(pred, dtype=np.int64)
    out = np.zeros((len(pred), n_classes), np.float16)
    rows = np.flatnonzero(pred >= 0)
    if members is None:
        out[rows, pred[rows]] = 1
    else:
        for g, idx in enumerate(members):
            hit = rows[pred[rows] == g]
            out[np.ix_(hit, np.asarray(idx))] = 1
    out[pred < 0] = np.nan
    return out


def top1_probability_logits(pred: np.ndarray, prob: np.ndarray, n_classes: int) -> np.ndarray:
    """``top1-probability`` rows: the softmax is ``p`` on the decided class and ``(1 - p) / (C - 1)`` elsewhere.

    The decision stays the argmax as long as ``p >= 1/C``, which holds for the top-1 of any distribution."""
    pred = np.asarray(pred, dtype=np.int64)
    p = np.asarray(prob, dtype=np.float64)
    rest = np.log(np.maximum(1.0 - p, PROBABILITY_FLOOR) / (n_classes - 1))
    out = np.repeat(rest[:, None], n_classes, axis=1)
    rows = np.flatnonzero(pred >= 0)
    out[rows, pred[rows]] = np.log(np.maximum(p[rows], PROBABILITY_FLOOR))
    out[pred < 0] = np.nan
    return out.astype(np.float32)


def probability_logits(probs: np.ndarray) -> np.ndarray:
    """``probabilities`` rows: ``log p``, so that the softmax gives back ``p`` (renormalised)."""
    probs = np.asarray(probs, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.log(np.maximum(probs, PROBABILITY_FLOOR)).astype(np.float32)


def bad_rows(logit_kind: Any, logits: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, str]:
    """Valid rows that do not have the form their kind says, and what that form is ("" when none is checked).

    ``decisions``: values 0 or 1 with at least one 1. ``probabilities``: ``exp`` sums to 1 within 1e-3.
    """
    kind = kind_name(logit_kind)
    if kind not in (DECISIONS, PROBABILITIES):
        return np.empty(0, np.int64), ""
    block = np.asarray(logits, dtype=np.float64)
    ok_rows = np.asarray(valid, dtype=bool) & np.isfinite(block).all(axis=1)
    if kind == DECISIONS:
        good = np.isin(block, (0.0, 1.0)).all(axis=1) & (block == 1.0).any(axis=1)
        return np.flatnonzero(ok_rows & ~good), "values 0 or 1 with at least one 1 (the decided classes)"
    if kind == PROBABILITIES:
        with np.errstate(over="ignore"):
            total = np.exp(block).sum(axis=1)
        return np.flatnonzero(ok_rows & (np.abs(total - 1.0) > 1e-3)), "log-probabilities whose exp sums to 1"
    return np.empty(0, np.int64), ""


__all__ = [
    "CAPABILITIES", "CLASSIFIER", "DECISIONS", "HOLDS", "KINDS", "PROBABILITIES", "PROVIDES", "TOP1_PROBABILITY",
    "ZERO_SHOT", "bad_rows", "decision_logits", "kind_name", "probability_logits", "provides",
    "top1_probability_logits",
]
