"""A block of a run read as one local shard file, its chunks decompressed straight into their rows.

The extractor writes a run's logits as one shard a block (schemas.layout: 10,000 rows of 1,000-row zstd
chunks, every class in each chunk). zarr reads such a block through its event loop: the file, then every chunk
decoded into a buffer of its own and copied into the result on the loop's single thread, which a report's
reading threads all wait on. Here the calling thread reads the shard's index (checking its crc32c), then each
chunk's frame, and decompresses it into its rows of the result: about a third less processor time a byte, and the
reading threads work side by side. ``parts`` decompresses a chunk at a time into a buffer of the thread's own
instead: a report summarises a block without holding it whole, each reading thread reusing a few megabytes rather
than taking a block's worth of fresh memory (which the system must zero, page by page) for every block.

Only that layout, in a store on the local file system, is read this way. A shard that is not whole and clean
(no file, a chunk left empty because it held only the fill value, an index or a frame that does not check) is
left to zarr, so what a read returns, and every error a damaged block raises, stay zarr's.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

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

    def read(self, rows: slice) -> np.ndarray | None:
        """The values of ``rows`` when they are exactly one shard, whole and clean on disk; None for zarr to read."""
        found = self._frames(rows)
        if found is None:
            return None
        out = np.empty((rows.stop - rows.start, self.columns), self.dtype)
        try:
            for part, values in self._decoded(*found, len(out), out):
                if not np.may_share_memory(values, out):  # the padded last chunk
                    out[part] = values
        except NotReadHere:
            return None
        return out

    def parts(self, rows: slice) -> Iterator[tuple[slice, np.ndarray]] | None:
        """The values of ``rows`` a chunk at a time, as ``(rows within them, values)``, each in this thread's buffer
        (valid until the next part), when ``rows`` are exactly one shard whose index checks; None for zarr to read.
        A frame that does not decode raises ``NotReadHere`` when its turn comes: zarr reads the block then."""
        found = self._frames(rows)
        return None if found is None else self._decoded(*found, rows.stop - rows.start)

    def _frames(self, rows: slice) -> tuple[BinaryIO, list[tuple[int, int, int]]] | None:
        """The open shard file of ``rows`` and each chunk's (first row, offset, size), from the shard's index; None
        when ``rows`` are not one shard, or the file or its index cannot be read."""
        start, stop = rows.start, rows.stop
        if rows.step not in (None, 1) or start % self.shard_rows or stop != min(start + self.shard_rows, self.rows):
            return None
        try:
            f = open(self.folder / self.array.metadata.encode_chunk_key((start // self.shard_rows, 0)), "rb",
                     buffering=0)
        except OSError:
            return None
        try:
            size, tail = os.fstat(f.fileno()).st_size, 16 * self.per_shard + 4
            f.seek(max(0, size - tail))
            index = shard_index(f.read(tail), self.per_shard)  # None when the file is too short or does not check
            if index is None:
                raise NotReadHere
            frames = []
            for first in range(0, stop - start, self.chunk_rows):
                offset, length = (int(v) for v in index[0][first // self.chunk_rows])
                if offset == EMPTY or offset + length > size - tail:
                    raise NotReadHere
                frames.append((first, offset, length))
        except (OSError, NotReadHere):
            f.close()
            return None
        return f, frames

    def _decoded(self, f: BinaryIO, frames: list[tuple[int, int, int]], n: int,
                 out: np.ndarray | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """Each chunk's rows and values, decoded into ``out``'s rows or else this thread's buffer; closes ``f``."""
        chunk_bytes = self.chunk_rows * self.columns * self.dtype.itemsize
        try:
            for first, offset, length in frames:
                frame = thread_buffer("frame", (length,), np.uint8)
                if not _read_at(f, offset, frame) or frame_content_size(memoryview(frame)) != chunk_bytes:
                    raise NotReadHere
                stop = min(first + self.chunk_rows, n)
                # The last shard's last chunk may reach past the array's end: it is stored whole, padded.
                into = (out[first:stop] if out is not None and stop - first == self.chunk_rows else
                        thread_buffer("chunk", (self.chunk_rows, self.columns), self.dtype))
                try:
                    ZSTD.decode(frame, out=into)
                except (RuntimeError, ValueError) as error:  # a damaged frame: zarr reads it again and names it
                    raise NotReadHere from error
                yield slice(first, stop), into[: stop - first]
        finally:
            f.close()


def _read_at(f: BinaryIO, offset: int, into: np.ndarray) -> bool:
    """Fill ``into`` with the file's bytes from ``offset``; False when the file ends first (it is being replaced)."""
    f.seek(offset)
    view, got = memoryview(into).cast("B"), 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            return False
        got += n
    return True


class NotReadHere(Exception):
    """The shard is not whole and clean after all (a frame did not decode as its index said): zarr reads the block."""
