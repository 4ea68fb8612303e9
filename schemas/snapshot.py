"""Opening a store on object storage in a few requests: one listing, and one read of a metadata copy.

Opening a store the plain way costs a request per node's ``zarr.json`` and a listing per array (the
presence checks), each a round trip. Here a read-only view (:class:`SnapshotStore`) answers every listing
from one listing of the whole store taken when it is opened, and every ``zarr.json`` from a copy of all of
them kept in the store (the ``_metadata`` group's attributes, written by :func:`write_metadata_copy` after
a run). Chunks are always read from the store itself.

Correct whatever writers do meanwhile: each copied ``zarr.json`` carries the MD5 of its bytes, and a copy
is used only where the listing reports that MD5 as the object's ETag (S3's ETag of a single-part upload is
the MD5 of its bytes). A node added, rewritten or removed since the copy was made is read from the store;
on a server whose ETags are not MD5s every node is read, as without the copy. The listing is a snapshot:
what is written after the store was opened is not seen (see ``refreshed``).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from typing import AsyncIterator, Mapping

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import WrapperStore

METADATA = "zarr.json"
COPY_GROUP = "_metadata"  # groups whose names start with "_" are not datasets
COPY_ATTR = "metadata_copy"


def _is_metadata(key: str) -> bool:
    return key == METADATA or key.endswith("/" + METADATA)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def _listing(store: Store) -> dict[str, str | None]:
    """Every key below the store's root -> its ETag (quotes stripped), or None where the file system has none."""
    fs, root = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is None or root is None or not getattr(fs, "async_impl", False):
        return {key: None async for key in store.list()}
    found = await fs._find(root, detail=True)
    prefix = root.rstrip("/") + "/"
    return {path[len(prefix):]: (str(info.get("ETag") or info.get("etag") or "").strip('"') or None)
            for path, info in found.items() if path.startswith(prefix) and info.get("type", "file") != "directory"}


async def _read_all(store: Store, keys: list[str]) -> dict[str, bytes]:
    proto = default_buffer_prototype()
    values = await asyncio.gather(*(store.get(key, prototype=proto) for key in keys))
    return {key: value.to_bytes() for key, value in zip(keys, values) if value is not None}


def write_metadata_copy(store: Store) -> int:
    """Copy every ``zarr.json`` of ``store`` (a writable zarr Store) into the ``_metadata`` group's attributes,
    each with the MD5 of its bytes; returns how many. Several writers may do this at once: the last copy
    written stands, and what it misses is read from the store (see the module's docstring)."""
    import zarr

    async def collect() -> dict[str, bytes]:
        keys = sorted(k for k in await _listing(store) if _is_metadata(k) and not k.startswith(COPY_GROUP + "/"))
        return await _read_all(store, keys)

    nodes = sync(collect())
    copy = {key: {"md5": _md5(data), "text": data.decode("utf-8")} for key, data in nodes.items()}
    zarr.create_group(store, path=COPY_GROUP, attributes={COPY_ATTR: copy}, overwrite=True, zarr_format=3)
    return len(copy)


class SnapshotStore(WrapperStore[Store]):
    """A read-only view of ``store``: listings from one listing taken now; each ``zarr.json`` from the
    metadata copy where the listing's ETag equals the copy's MD5, otherwise from the store."""

    def __init__(self, store: Store, keys: Mapping[str, str | None] | None = None,
                 metadata: Mapping[str, bytes] | None = None):
        super().__init__(store)
        self.keys: dict[str, str | None] = dict(keys) if keys is not None else sync(_listing(store))
        self.metadata: dict[str, bytes] = dict(metadata) if metadata is not None else self._current_copies()
        self._sorted = sorted(self.keys)

    def _current_copies(self) -> dict[str, bytes]:
        if f"{COPY_GROUP}/{METADATA}" not in self.keys:
            return {}
        key = f"{COPY_GROUP}/{METADATA}"
        raw = sync(_read_all(self._store, [key])).get(key)
        try:
            copy = json.loads(raw or b"{}").get("attributes", {}).get(COPY_ATTR, {})
        except ValueError:  # a damaged copy is no copy: every node is read from the store
            return {}
        current = {key: raw}  # read just now
        for key, entry in copy.items():
            etag = self.keys.get(key)
            if etag is not None and isinstance(entry, dict) and entry.get("md5") == etag:
                data = str(entry.get("text", "")).encode("utf-8")
                if _md5(data) == etag:
                    current[key] = data
        return current

    def refreshed(self) -> "SnapshotStore":
        """A new snapshot of the same store (a new listing; the copies still current kept)."""
        keys = sync(_listing(self._store))
        return SnapshotStore(self._store, keys, {k: v for k, v in self.metadata.items() if keys.get(k) == _md5(v)})

    # -- reads ------------------------------------------------------------------------------------------
    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if byte_range is None and key in self.metadata:
            return prototype.buffer.from_bytes(self.metadata[key])
        if _is_metadata(key) and key not in self.keys:
            return None  # not there when the store was opened
        return await self._store.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        return key in self.keys

    @property
    def read_only(self) -> bool:
        return True

    # -- listings from the snapshot -------------------------------------------------------------------
    async def list(self) -> AsyncIterator[str]:
        for key in self._sorted:
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._sorted:
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        seen: set[str] = set()
        for key in self._sorted:
            if key.startswith(prefix):
                child = key[len(prefix):].split("/", 1)[0]
                if child not in seen:
                    seen.add(child)
                    yield child

    def __repr__(self) -> str:
        return f"SnapshotStore({self._store!r}, {len(self.keys)} keys, {len(self.metadata)} metadata copies)"
