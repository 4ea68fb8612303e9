"""A local group's children opened from their ``zarr.json`` files by the calling thread, not zarr's event loop.

Opening a store asks every run for its children (``Group.members``: logits, valid, done flags, checksums...). Through
zarr's event loop that costs about 2.7 ms a run, most of opening a store of 400 runs; read here, each child is
one small file read and zarr's parse of its document, as ``zarr.Array.from_dict`` builds it. The runs of a store
hold a few dozen distinct documents among thousands (every model's ``valid`` array of a dataset is described
alike), so each distinct document is parsed once; zarr's array metadata is immutable (a change of attributes
makes a new one), which lets arrays share it.

Listing the groups themselves (the datasets, their transforms, the runs: ``Group.groups``) through the loop costs
about 1 ms a run more; ``local_groups`` reads each child's ``zarr.json`` here as well.

Only the plain case is taken: a zarr v3 group on the local file system, without consolidated metadata, whose every
entry is a folder holding an array's ``zarr.json`` (``local_members``) or a group's or an array's (``local_groups``).
Anything else (a stray file, a folder without a document, a document that does not parse) returns None, and zarr
opens the group itself, with its own errors and warnings.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache

import zarr
from zarr.core.array import AsyncArray
from zarr.core.group import AsyncGroup
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.storage import LocalStore, StorePath

METADATA = "zarr.json"


@lru_cache(maxsize=4096)
def _metadata(raw: bytes) -> ArrayV3Metadata:
    """The parsed array metadata of one ``zarr.json`` document (shared by equal documents)."""
    document = json.loads(raw)
    if not isinstance(document, dict) or document.get("node_type") != "array":
        raise ValueError("not an array's metadata")
    return ArrayV3Metadata.from_dict(document)


def _documents(group: zarr.Group) -> list[tuple[str, StorePath, bytes]] | None:
    """Each child's name, store path and ``zarr.json`` bytes, for a zarr v3 group on the local file system without
    consolidated metadata whose every entry is a folder holding a document; None otherwise."""
    store, meta = group.store_path.store, group.metadata
    if not isinstance(store, LocalStore) or meta.zarr_format != 3 or meta.consolidated_metadata is not None:
        return None
    folder = os.path.join(store.root, group.path)
    found = []
    try:
        for name in os.listdir(folder):
            if name != METADATA:
                with open(os.path.join(folder, name, METADATA), "rb") as f:
                    found.append((name, StorePath(store, f"{group.path}/{name}" if group.path else name), f.read()))
    except OSError:  # a stray file, a folder without a document: zarr opens the group and reports what is wrong
        return None
    return found


def local_members(group: zarr.Group) -> dict[str, zarr.Array] | None:
    """``dict(group.members())`` for a plain local group (see the module); None where zarr must open it."""
    documents = _documents(group)
    try:
        return None if documents is None else {
            name: zarr.Array(AsyncArray(metadata=_metadata(raw), store_path=path)) for name, path, raw in documents}
    except Exception:  # noqa: BLE001 - not the plain case: zarr opens the group and reports what is wrong
        return None


def local_groups(group: zarr.Group) -> dict[str, zarr.Group] | None:
    """``dict(group.groups())`` for a local group every entry of which is a folder holding a ``zarr.json`` (a
    group's or an array's): the store's datasets, transforms and runs, listed when a store is opened. None where
    zarr must list it (anything else, or a document that does not parse)."""
    documents = _documents(group)
    if documents is None:
        return None
    groups: dict[str, zarr.Group] = {}
    try:
        for name, path, raw in documents:
            document = json.loads(raw)
            if not isinstance(document, dict) or document.get("zarr_format") != 3:
                return None
            if document.get("node_type") != "array":
                groups[name] = zarr.Group(AsyncGroup.from_dict(path, document))
    except Exception:  # noqa: BLE001 - not the plain case: zarr lists the group and reports what is wrong
        return None
    return groups
