"""Tar member indexing: the samples of an uncompressed tar shard as key -> extension -> (offset, size).

Members are grouped WebDataset-style: ``dir/stem.ext`` belongs to key ``dir/stem`` (the stem ends at
the first dot). With the offsets a sample's bytes are one seek and read, with no tar parsing per read.
No torch at import.
"""
from __future__ import annotations

import posixpath
import tarfile
from typing import IO

Member = tuple[int, int]  # offset of the data in the tar, size in bytes


def index_members(fh: IO[bytes]) -> dict[str, dict[str, Member]]:
    """key -> {lower-case extension: (offset, size)} of the regular, non-hidden members of the tar
    open in ``fh``, keys in the order of their first member. Raises tarfile.ReadError."""
    groups: dict[str, dict[str, Member]] = {}
    for m in tarfile.open(fileobj=fh, mode="r:").getmembers():
        if not m.isfile():
            continue
        d, b = posixpath.split(m.name)
        if b.startswith("."):
            continue
        stem, _, ext = b.partition(".")
        groups.setdefault(f"{d}/{stem}" if d else stem, {})[ext.lower()] = (m.offset_data, m.size)
    return groups


def read_member(fh: IO[bytes], member: Member) -> bytes:
    """The bytes of one indexed member."""
    offset, size = member
    fh.seek(offset)
    return fh.read(size)
