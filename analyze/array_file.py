"""A file of named numpy arrays with a checksum: the entries of ``analyze report --cache``.

Reading an ``.npz`` costs about ten times a plain read of its bytes (zipfile checks CRC-32 piece by piece and
copies each member out), and a report after adding one model reads a thousand such entries. Here a file is
mapped into memory (copy on write: its pages are the page cache's own, not fresh memory filled by a copy), checked
by one CRC-32C over it (google-crc32c: hardware-accelerated), and its arrays are writable views of the mapping.
Entries are only ever replaced whole (``os.replace``), so a mapped file is never cut short under its reader.

Layout: ``MAGIC`` (8 bytes) | CRC-32C of everything after it and itself (4 bytes, little-endian) | header length
(4) | header: JSON ``[[name, dtype, shape, offset], ...]`` | the arrays' bytes, each at a multiple of ``ALIGN``
from the file's start (a mapping starts on a page, so the arrays are aligned in memory too). Object arrays are
refused: nothing is unpickled.
"""
from __future__ import annotations

import json
import math
import mmap
import os
from pathlib import Path
from typing import BinaryIO, Mapping

import google_crc32c
import numpy as np

MAGIC = b"BIA-ARR2"
ALIGN = 64
_LEAD = len(MAGIC) + 4  # the magic and the checksum


def _aligned(size: int) -> int:
    """``size`` rounded up to a multiple of ``ALIGN``."""
    return -(-size // ALIGN) * ALIGN


def write_arrays(f: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` (any shapes, fixed-size dtypes) to the binary file ``f``."""
    parts, header, at = [], [], 0
    for name, value in arrays.items():
        a = np.asarray(value)
        a = a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes a 0-d array 1-d)
        if a.dtype.hasobject:
            raise ValueError(f"array {name!r}: dtype {a.dtype} holds Python objects; only fixed-size dtypes are kept")
        parts.append(a)
        header.append([name, a.dtype.str, list(a.shape), at])
        at += _aligned(a.nbytes)
    text = json.dumps(header).encode()
    start = _aligned(_LEAD + 4 + len(text)) - _LEAD  # the first array's offset from the header length
    head = len(text).to_bytes(4, "little") + text + bytes(start - 4 - len(text))
    crc = google_crc32c.value(head)
    body = [head]
    for a in parts:
        data = a.reshape(-1).view(np.uint8) if a.nbytes else np.zeros(0, np.uint8)
        pad = np.zeros(_aligned(a.nbytes) - a.nbytes, np.uint8)
        for piece in (data, pad):
            crc = google_crc32c.extend(crc, piece)
        body += [data, pad]
    f.write(MAGIC + crc.to_bytes(4, "little"))
    for piece in body:
        f.write(piece)


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a file :func:`write_arrays` wrote; ``ValueError`` naming the file when it is not one, is cut
    short or does not match its checksum."""
    path = Path(path)
    with open(path, "rb") as f:
        lead = f.read(_LEAD)
        size = os.fstat(f.fileno()).st_size - len(lead)
        if lead[:len(MAGIC)] != MAGIC or len(lead) != _LEAD or size < 4:
            raise ValueError(f"{path}: not an array file of the report cache (magic {lead[:len(MAGIC)]!r})")
        buf = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY), np.uint8)[_LEAD:]
    if google_crc32c.value(buf) != int.from_bytes(lead[len(MAGIC):], "little"):
        raise ValueError(f"{path}: checksum mismatch (damaged or cut short)")
    length = int.from_bytes(buf[:4].tobytes(), "little")
    header = json.loads(buf[4:4 + length].tobytes())
    start = _aligned(_LEAD + 4 + length) - _LEAD
    out = {}
    for name, dtype, shape, offset in header:
        dtype = np.dtype(dtype)
        count = int(math.prod(shape))  # not np.prod: a few microseconds each, over thousands of arrays a report
        at = start + offset
        if dtype.hasobject or at + count * dtype.itemsize > size:
            raise ValueError(f"{path}: array {name!r} ({dtype}, {shape}) does not fit the file")
        out[name] = buf[at:at + count * dtype.itemsize].view(dtype).reshape(tuple(shape)) if dtype.itemsize else \
            np.zeros(tuple(shape), dtype)
    return out
