"""The store's error types, shared by ``schemas.store`` and ``schemas.remote`` (stdlib only)."""
from __future__ import annotations


class StoreError(ValueError):
    """A store, or data offered to it, breaks the contract. The message names the path."""


__all__ = ["StoreError"]
