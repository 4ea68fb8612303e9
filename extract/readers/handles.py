"""The per-process cache of open file handles (and other open objects) a reader keeps between reads.

A forked DataLoader worker must not share its parent's file offsets, and a pickled reader must not
carry open files, so the cache empties itself in a new process and pickles as empty.
No torch at import.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any


class HandleCache:
    """Keyed open objects of the current process; anything with ``close`` is closed by ``close()``."""

    def __init__(self) -> None:
        self._items: dict[Any, Any] = {}
        self._pid: int | None = None

    def items(self) -> dict[Any, Any]:
        """This process's cache (a fresh, empty one after a fork)."""
        pid = os.getpid()
        if self._pid != pid:
            self._items = {}
            self._pid = pid
        return self._items

    def file(self, key: Any, path: str | Path, max_open: int = 16) -> IO[bytes]:
        """The open binary file ``path`` under ``key``; beyond ``max_open`` files the oldest is closed."""
        cache = self.items()
        fh = cache.get(key)
        if fh is None:
            if len(cache) >= max_open:
                cache.pop(next(iter(cache))).close()
            fh = cache[key] = open(path, "rb")
        return fh

    def close(self) -> None:
        for h in list(self._items.values()):
            close = getattr(h, "close", None)
            if close:
                close()
        self._items = {}

    def __getstate__(self) -> dict:
        return {"_items": {}, "_pid": None}
