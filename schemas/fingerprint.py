"""Identities as hashes: a run's fingerprint (what it was computed from, so that a resume never mixes two
setups) and a sample list's digest (which samples, in which order, with which labels and columns)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import numpy as np

from .layout import SCHEMA_VERSION


def fingerprint_inputs(
    *,
    model: dict,
    weights_id: str,
    preprocess: dict,
    transform: dict,
    precision: str,
    sample_digest: str,
    decode: str | None = None,
) -> dict:
    """The exact inputs the fingerprint hashes (kept in the run's attrs so a mismatch can be explained).

    ``decode`` names a decode path other than the reference (Pillow); absent for the reference, so the
    fingerprints of runs made before it existed stay the same.
    """
    inputs = {
        "model": model,
        "weights_id": weights_id,
        "preprocess": preprocess,
        "transform": transform,
        "precision": precision,
        "sample_digest": sample_digest,
        "schema_version": SCHEMA_VERSION,
    }
    if decode is not None:
        inputs["decode"] = decode
    return inputs


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(inputs: dict) -> str:
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:32]


def diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable differences between two fingerprint input trees: ``field: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{sub}: {old[key]!r} -> (absent)")
            else:
                out.extend(diff(old[key], new[key], sub))
        return out
    if canonical_json(old) != canonical_json(new):
        return [f"{path or '(root)'}: {old!r} -> {new!r}"]
    return []


def sample_digest(sample_id: np.ndarray, label: np.ndarray, columns: Mapping[str, np.ndarray] | None = None) -> str:
    """sha256 over the ordered sample ids, labels and per-sample columns: the identity of a sample list."""
    h = hashlib.sha256()
    h.update("\n".join(map(str, np.asarray(sample_id).tolist())).encode())
    h.update(np.ascontiguousarray(np.asarray(label, dtype=np.int32)).tobytes())
    for name in sorted(columns or {}):
        h.update(name.encode())
        values = np.asarray(columns[name])
        if values.dtype.kind in "OUST":  # T: numpy StringDType, as zarr reads strings back
            h.update("\n".join(map(str, values.tolist())).encode())
        else:
            h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()[:32]
