"""A whole small array read straight from its chunk files, when it lies on the local file system.

Opening a store reads two small arrays per run (``block_done``, ``block_checksum``: a chunk per block). Through
zarr each costs about 4 ms of its event loop whatever its size: two thirds of what opening the 400 runs of a
report with every run in ``--cache`` took. Read here, the files are read and decoded by the calling thread.

Only plain layouts are read this way: a local store, a regular chunk grid, codecs ``bytes`` then optionally
``zstd``, a numeric or bool dtype. A chunk file that is absent reads as the fill value, as zarr reads it. Any
other layout, and any chunk that does not decode to exactly its size, is left to zarr (``None``), so what a
read returns and every error a damaged chunk raises stay zarr's.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import zarr
from numcodecs import Zstd
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.chunk_grids import RegularChunkGrid
from zarr.storage import LocalStore

ZSTD = Zstd()  # decoding keeps no state between calls: one for every thread
LIMIT = 1 << 24  # bytes: beyond this an array is not "small", and zarr's concurrent reads pay off


def local_folder(array: zarr.Array) -> Path | None:
    """The folder of a zarr v3 array's chunk files when its store is the local file system and nothing transforms
    its keys; None otherwise (the array is then read through zarr)."""
    store, meta = array.store_path.store, array.metadata
    if not isinstance(store, LocalStore) or getattr(meta, "zarr_format", None) != 3 or meta.storage_transformers:
        return None
    return Path(store.root) / array.store_path.path


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
    endian = codecs[0].endian
    stored = dtype.newbyteorder("<" if endian is None or endian.value == "little" else ">") if dtype.itemsize > 1 \
        else dtype
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
