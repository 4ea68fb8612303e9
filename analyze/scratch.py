"""Per-thread scratch buffers, reused from call to call.

Memory freshly mapped for every block is paid for again each time: a page fault per page and the kernel
zeroing it before the values are written over it. Under memory pressure (a store larger than the page cache)
that cost more than the decompression itself.
"""
from __future__ import annotations

import threading

import numpy as np

_local = threading.local()


def thread_buffer(name: str, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """This thread's buffer ``name`` as an array of ``shape`` and ``dtype``, valid until the thread's next call
    with that name; kept between calls and grown when too small."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buf = getattr(_local, name, None)
    if buf is None or buf.size < nbytes:
        buf = np.empty(max(nbytes, 1), np.uint8)
        setattr(_local, name, buf)
    return buf[:nbytes].view(dtype).reshape(shape)
