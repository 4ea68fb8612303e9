"""Find, read and validate data_manifest.yaml; pydantic's errors become ``ManifestError`` lines.

Each line reads ``<file>: <dotted field path>: <what was expected>, got <what was found>``, e.g.
``data_manifest.yaml: datasets.imagenet-val.layout.labels_file: missing field (required for kind flat-folder)``.
No torch; nothing from extract/ or analyze/.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..registry import unknown_name
from .models import LAYOUT_KINDS, Manifest

ENV_VAR = "BEYOND_MANIFEST"
_SCHEMAS = Path(__file__).resolve().parents[1]
MANIFEST_PATH: Path = _SCHEMAS.parent / "data_manifest.yaml"
# A non-editable install ships the manifest inside the package (pyproject package-data).
_PACKAGED_MANIFEST = _SCHEMAS / "data_manifest.yaml"
SHOWN_ERRORS = 20
# libyaml's safe loader where PyYAML was built with it: the same documents, several times faster (a report parses
# the manifest on every start).
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(ValueError):
    """A data_manifest.yaml problem; the message names the file, the entry and the field."""


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
    text = p.read_text()
    try:
        raw = yaml.load(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        try:  # again by the pure-Python parser: its message quotes the offending line
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ManifestError(f"{p}: not valid YAML: {e}") from None
    return parse_manifest(raw, p)


def parse_manifest(raw: Any, path: Path) -> Manifest:
    """Validate the content of a manifest file; ManifestError lists the problems found."""
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {line}" for line in error_lines(e)]
        more = f"\n... and {len(lines) - SHOWN_ERRORS} more" if len(lines) > SHOWN_ERRORS else ""
        raise ManifestError("\n".join(lines[:SHOWN_ERRORS]) + more) from None
    manifest._path = path
    return manifest


def error_lines(error: ValidationError) -> list[str]:
    """``<dotted path>: <message>`` for each error, without pydantic's union tags and key markers."""
    return list(dict.fromkeys(_line(e) for e in error.errors()))


def _line(e: dict) -> str:
    parts: list[str] = []
    kind = None
    for i, item in enumerate(e["loc"]):
        if item == "[key]":
            continue
        if item in LAYOUT_KINDS and i > 0 and (e["loc"][i - 1] == "layout" or isinstance(e["loc"][i - 1], int)):
            kind = item  # the discriminated union's tag, not a field
            continue
        parts.append(f"[{item}]" if isinstance(item, int) else f".{item}")
    ctx = e.get("ctx") or {}
    if e["type"] == "manifest_rule":
        parts.append(f".{ctx['field']}")
        message = ctx["message"]
    elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
        parts.append(".kind")
        message = (str(unknown_name("layout kind", ctx["tag"], LAYOUT_KINDS)) if "tag" in ctx else "missing field")
    elif e["type"] == "missing":
        message = "missing field" + (f" (required for kind {kind})" if kind else "")
    else:
        message = e["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        if "got " not in message and repr(e["input"]) not in message:
            message += f", got {_found(e['input'])}"
    where = "".join(parts).lstrip(".") or "top level"
    return f"{where}: {message}"


def _found(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"
