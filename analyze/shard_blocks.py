"""A block of a run read as one local shard file, its chunks decompressed straight into their rows.

The extractor writes a run's logits as one shard a block (schemas.layout: 10,000 rows of 1,000-row zstd
chunks, every class in each chunk). zarr reads such a block through its event loop: the file, then every chunk
decoded into a buffer of its own and copied into the result on the loop's single thread, which a report's
reading threads all wait on. Here the calling thread reads the file, checks the shard index's crc32c and
decompresses each chunk into its rows of the result: about a third less processor time a byte, and the reading
threads work side by side.

Only that layout, in a store on the local file system, is read this way. A shard that is not whole and clean
(no file, a chunk left empty because it held only the fill value, an index or a frame that does not check) is
left to zarr, so what a read returns, and every error a damaged block raises, stay zarr's.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BytesCodec, ZstdCodec

from schemas.local_arrays import EMPTY, ZSTD, local_shards, shard_index

from .scratch import thread_buffer

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def frame_content_size(frame: memoryview) -> int | None:
    """The decompressed size a zstd frame's header records (RFC 8878, 3.1.1.1); None when it records none."""
    if len(frame) < 6 or bytes(frame[:4]) != ZSTD_MAGIC:
        return None
    descriptor = frame[4]
    single_segment = (descriptor >> 5) & 1
    at = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]  # window byte, dictionary id
    width = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    if width == 0 or len(frame) < at + width:
        return None
    value = int.from_bytes(frame[at:at + width], "little")
    return value + 256 if width == 2 else value


class ShardBlocks:
    """Whole shards of one local 2-D array, each read by ``read(rows)``."""

    def __init__(self, folder: Path, array: zarr.Array):
        self.folder, self.array = folder, array
        self.rows, self.columns = array.shape
        self.shard_rows, self.chunk_rows = array.shards[0], array.chunks[0]
        self.per_shard = self.shard_rows // self.chunk_rows
        self.dtype = array.dtype

    @classmethod
    def of(cls, array: zarr.Array) -> ShardBlocks | None:
        """The reader of ``array`` when it is laid out as the extractor writes runs in a local store, else None."""
        found = local_shards(array) if array.ndim == 2 and sys.byteorder == "little" else None
        if found is None:
            return None
        folder, sharding = found
        inner = sharding.codecs
        plain = isinstance(inner[0], BytesCodec) and (inner[0].endian is None or inner[0].endian.value == "little")
        if not (len(inner) == 2 and plain and isinstance(inner[1], ZstdCodec)):  # values as they lie in memory here
            return None
        shard, chunk = array.shards, array.chunks
        if shard[1] != array.shape[1] or chunk[1] != array.shape[1] or shard[0] % chunk[0] or array.dtype.hasobject:
            return None  # a shard or chunk not spanning every column, or not whole chunks of rows
        return cls(folder, array)

    def read(self, rows: slice, reuse: bool = False) -> np.ndarray | None:
        """The values of ``rows`` when they are exactly one shard, whole and clean on disk; None for zarr to read.
        ``reuse``: the values are returned in this thread's buffer, valid until its next read with ``reuse``."""
        start, stop = rows.start, rows.stop
        if rows.step not in (None, 1) or start % self.shard_rows or stop != min(start + self.shard_rows, self.rows):
            return None
        data = _read_file(self.folder / self.array.metadata.encode_chunk_key((start // self.shard_rows, 0)))
        index = shard_index(data, self.per_shard) if data is not None else None
        if index is None:
            return None
        table, body = index
        shape = (stop - start, self.columns)
        out = thread_buffer("block", shape, self.dtype) if reuse else np.empty(shape, self.dtype)
        chunk_bytes = self.chunk_rows * self.columns * self.dtype.itemsize
        frames = memoryview(data)
        for first in range(0, len(out), self.chunk_rows):
            offset, size = (int(v) for v in table[first // self.chunk_rows])
            if offset == EMPTY or offset + size > body:
                return None
            frame = frames[offset:offset + size]
            if frame_content_size(frame) != chunk_bytes:
                return None
            # The last shard's last chunk may reach past the array's end: it is stored whole, padded.
            padded = first + self.chunk_rows > len(out)
            into = np.empty((self.chunk_rows, self.columns), self.dtype) if padded else out[first:first + self.chunk_rows]
            try:
                ZSTD.decode(frame, out=into)
            except (RuntimeError, ValueError):  # a damaged frame: zarr reads it again and names the damage
                return None
            if padded:
                out[first:] = into[: len(out) - first]
        return out


def _read_file(path: Path) -> np.ndarray | None:
    """The file's bytes in this thread's buffer (valid until its next call), or None when it cannot be read."""
    try:
        with open(path, "rb", buffering=0) as f:
            data = thread_buffer("shard file", (os.fstat(f.fileno()).st_size,), np.uint8)
            got = 0
            while got < len(data):
                n = f.readinto(data[got:])
                if not n:
                    return None  # shorter than it was a moment ago: being replaced; zarr reads it
                got += n
    except OSError:
        return None
    return data
