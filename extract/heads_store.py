"""Zero-shot heads kept in the store: ``_heads/<model>/weights`` with what each was built from.

Reruns and other processes read a stored head instead of building it again. No torch at import.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np
from zarr.codecs import ZstdCodec
from zarr.errors import ContainsArrayError, ContainsGroupError

from schemas import jsonable
from schemas import layout as L

from extract.spec.models import CLIP_LOGIT_SCALE, ModelSpec


def class_names_sha256(class_names: Sequence[str]) -> str:
    """Identity of a list of class names (the prompts' order)."""
    return hashlib.sha256("\n".join(class_names).encode()).hexdigest()


HEAD_ARRAY = "weights"


def head_attrs(spec: ModelSpec, wid: str, class_names: Sequence[str], templates: Sequence[str], source: str) -> dict:
    """What a zero-shot head was built from; a stored head is reused only when these match."""
    return jsonable({
        "model": spec.to_dict(),
        "weights_id": wid,
        "class_names": {"source": source, "n": len(class_names), "sha256": class_names_sha256(class_names)[:16]},
        "templates": list(templates),
        "logit_scale": CLIP_LOGIT_SCALE,
        "normalisation": "each prompt embedding L2-normalised, averaged over templates, renormalised",
    })


def read_head(root, model: str, attrs: Mapping[str, Any]) -> np.ndarray | None:
    """The head stored at ``_heads/<model>`` when it was built from ``attrs``; else None."""
    heads = root.get(L.HEADS_GROUP)
    if heads is None or model not in heads:
        return None
    group = heads[model]
    stored = dict(group.attrs)
    if not stored.get("complete") or {k: stored.get(k) for k in attrs} != dict(attrs):
        return None
    if HEAD_ARRAY not in group:
        return None
    return np.asarray(group[HEAD_ARRAY][...], dtype=np.float32)


def write_head(root, model: str, weights: np.ndarray, attrs: Mapping[str, Any]) -> None:
    """Store a zero-shot head at ``_heads/<model>/weights`` [class, embed] float32 (replacing another one).

    Processes that write the same head at once write the same bytes; "complete" goes last, in the same
    metadata write as the other attributes.
    """
    weights = np.asarray(weights, dtype=np.float32)
    heads = _child_group(root, L.HEADS_GROUP)
    if model in heads:
        old = dict(heads[model].attrs)
        if old.get("complete"):
            if {k: old.get(k) for k in attrs} == dict(attrs):
                return
            del heads[model]  # a head from other inputs (other weights or templates): replace it
        # else another process is writing the same head right now: write the same bytes alongside it
    group = _child_group(heads, model)
    try:
        arr = group.create_array(HEAD_ARRAY, shape=weights.shape, dtype="float32", chunks=weights.shape,
                                 compressors=ZstdCodec(level=L.ZSTD_LEVEL), chunk_key_encoding=L.CHUNK_KEY_ENCODING,
                                 dimension_names=("class", "embed"))
    except ContainsArrayError:  # created meanwhile by another process: the same metadata
        arr = group[HEAD_ARRAY]
    arr[...] = weights
    group.update_attributes({**attrs, "shape": list(weights.shape), "complete": True})


def _child_group(parent, name: str):
    try:
        return parent.create_group(name)
    except (ContainsGroupError, ContainsArrayError):
        return parent[name]


__all__ = ["HEAD_ARRAY", "class_names_sha256", "head_attrs", "read_head", "write_head"]
