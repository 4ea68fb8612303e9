"""Whole arrays read straight from their chunk or shard files, when they lie on the local file system.

Opening a store reads two small arrays per run (``block_done``, ``block_checksum``: a chunk per block). Through
zarr each costs about 4 ms of its event loop whatever its size: two thirds of what opening the 400 runs of a
report with every run in ``--cache`` took. Read here, the files are read and decoded by the calling thread.

Only plain layouts are read this way: a local store, a regular chunk grid, codecs ``bytes`` then optionally
``zstd``, a numeric or bool dtype. A chunk file that is absent reads as the fill value, as zarr reads it. Any
other layout, and any chunk that does not decode to exactly its size, is left to zarr (``None``), so what a
read returns and every error a damaged chunk raises stay zarr's.

``read_sharded`` does the same for the per-sample arrays the extractor writes (sample ids, labels, columns, valid
flags: one shard a block of rows, zstd chunks inside): zarr reads ImageNet-C's 3.75 M sample ids as 3,750 chunks
through its event loop (about 2 s, 0.9 s for the labels alone, and as much for each run's valid flags), time the
studies' thread spends while the reading threads wait for it to let go of the interpreter.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from numcodecs import VLenUTF8, Zstd
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, VLenUTF8Codec, ZstdCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.storage import LocalStore

ZSTD = Zstd()  # decoding keeps no state between calls: one for every thread
VLEN_UTF8 = VLenUTF8()
EMPTY = 2**64 - 1  # a shard index's offset and size of a chunk that was not written
LIMIT = 1 << 24  # bytes: beyond this an array is not "small", and zarr's concurrent reads pay off


def local_folder(array: zarr.Array) -> Path | None:
    """The folder of a zarr v3 array's chunk files when its store is the local file system and nothing transforms
    its keys; None otherwise (the array is then read through zarr)."""
    store, meta = array.store_path.store, array.metadata
    if not isinstance(store, LocalStore) or getattr(meta, "zarr_format", None) != 3 or meta.storage_transformers:
        return None
    return Path(store.root) / array.store_path.path


def _stored_dtype(dtype: np.dtype, codec: BytesCodec) -> np.dtype:
    """``dtype`` in the byte order the ``bytes`` codec wrote."""
    if dtype.itemsize == 1:
        return dtype
    return dtype.newbyteorder("<" if codec.endian is None or codec.endian.value == "little" else ">")


def read_local(array: zarr.Array) -> np.ndarray | None:
    """Every value of ``array`` read from its chunk files, or None when zarr must read it (see the module)."""
    folder, meta = local_folder(array), array.metadata
    if folder is None:
        return None
    codecs = meta.codecs
    if not (1 <= len(codecs) <= 2 and isinstance(codecs[0], BytesCodec)
            and (len(codecs) == 1 or isinstance(codecs[1], ZstdCodec))):
        return None
    dtype = array.dtype
    if not isinstance(meta.chunk_grid, RegularChunkGrid) or not isinstance(dtype, np.dtype) \
            or dtype.kind not in "biuf" or array.nbytes > LIMIT:
        return None
    stored = _stored_dtype(dtype, codecs[0])
    chunks = array.chunks
    size = int(np.prod(chunks)) * dtype.itemsize
    out = np.full(array.shape, meta.fill_value, dtype)
    grid = [range(-(-n // c)) for n, c in zip(array.shape, chunks)]
    for coords in itertools.product(*grid):
        try:
            data = (folder / meta.encode_chunk_key(coords)).read_bytes()
        except FileNotFoundError:
            continue  # never written: the fill value
        except OSError:
            return None
        if len(codecs) == 2:
            try:
                data = ZSTD.decode(data)
            except (RuntimeError, ValueError):  # damaged: zarr reads it again and names the damage
                return None
        if len(data) != size:
            return None
        where = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, chunks, array.shape))
        values = np.frombuffer(data, stored).reshape(chunks)  # edge chunks are stored whole, padded
        out[where] = values[tuple(slice(0, s.stop - s.start) for s in where)]
    return out


def local_shards(array: zarr.Array) -> tuple[Path, ShardingCodec] | None:
    """The folder of a sharded array's shard files and its sharding codec, when the store is local (``local_folder``)
    and each shard ends in an index read by ``shard_index`` (``bytes`` little-endian, ``crc32c``); else None."""
    folder, meta = local_folder(array), array.metadata
    if folder is None or len(meta.codecs) != 1 or not isinstance(meta.codecs[0], ShardingCodec) \
            or not isinstance(meta.chunk_grid, RegularChunkGrid):
        return None
    sharding = meta.codecs[0]
    index = sharding.index_codecs
    if not (len(index) == 2 and isinstance(index[0], BytesCodec) and isinstance(index[1], Crc32cCodec)
            and (index[0].endian is None or index[0].endian.value == "little")
            and sharding.index_location == ShardingCodecIndexLocation.end):
        return None
    return folder, sharding


def shard_index(data: bytes, chunks: int) -> tuple[np.ndarray, int] | None:
    """A shard's index (``bytes``, ``crc32c``, at its end): each of its ``chunks``' (offset, size) and where the
    chunks' bytes end; None when the shard is too short to hold it or the index does not give its crc32c."""
    body = len(data) - 16 * chunks - 4
    if body < 0 or google_crc32c.value(data[body:-4]) != int.from_bytes(data[-4:], "little"):
        return None
    return np.frombuffer(data, "<u8", 2 * chunks, body).reshape(chunks, 2), body


def read_sharded(array: zarr.Array) -> np.ndarray | None:
    """Every value of a 1-D sharded array read from its shard files, or None when zarr must read it.

    The layout read: a local store, a regular grid of whole shards, chunks of ``bytes`` (numeric or bool) or
    ``vlen-utf8`` then ``zstd``, the shard index (``bytes``, ``crc32c``) at the end. An absent shard file or a
    chunk the index marks unwritten reads as the fill value, as in zarr; an index that does not check, a frame
    that does not decode or a chunk of another size is left to zarr, which raises. Strings come back as an object
    array of ``str`` (as numcodecs decodes them) where zarr gives numpy's StringDType: the same values.
    """
    found = local_shards(array) if array.ndim == 1 else None
    if found is None:
        return None
    (folder, sharding), meta = found, array.metadata
    inner = sharding.codecs
    strings = isinstance(inner[0], VLenUTF8Codec)
    if not (len(inner) == 2 and isinstance(inner[1], ZstdCodec) and (strings or isinstance(inner[0], BytesCodec))):
        return None
    dtype = array.dtype
    if strings != (dtype.kind == "T") or (not strings and (not isinstance(dtype, np.dtype) or dtype.kind not in "biuf")):
        return None
    (n,), (shard,), (chunk,) = array.shape, array.shards, array.chunks  # zarr refuses shards not whole chunks
    per_shard, stored = shard // chunk, None if strings else _stored_dtype(dtype, inner[0])
    out = np.full(n, meta.fill_value, object if strings else dtype)
    for first in range(0, n, shard):
        try:
            data = (folder / meta.encode_chunk_key((first // shard,))).read_bytes()
        except FileNotFoundError:
            continue  # never written: the fill value
        except OSError:
            return None
        index = shard_index(data, per_shard)
        if index is None:
            return None
        table, body = index
        frames = memoryview(data)
        for c, (offset, size) in enumerate(table.tolist()):
            start = first + c * chunk
            if (offset == EMPTY and size == EMPTY) or start >= n:  # never written, or wholly past the array's end
                continue
            if offset + size > body:  # a half-empty entry too: zarr reads it, and raises
                return None
            try:
                decoded = ZSTD.decode(frames[offset:offset + size])
                values = VLEN_UTF8.decode(decoded) if strings else np.frombuffer(decoded, stored)
            except (RuntimeError, ValueError, TypeError):  # damaged: zarr reads it again and names the damage
                return None
            if len(values) != chunk:  # chunks are stored whole, the last one padded
                return None
            out[start:start + chunk] = values[: n - start]
    return out


def read_whole(array: zarr.Array) -> np.ndarray:
    """Every value of ``array``: from its files where its layout is one read here (strings then as objects), else
    through zarr (whose errors stand)."""
    got = read_sharded(array) if array.shards is not None else read_local(array)
    return got if got is not None else np.asarray(array[...])
