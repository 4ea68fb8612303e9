"""The extractor's user-facing error. Stdlib only: every layer of ``extract`` may raise it."""
from __future__ import annotations


class ExtractError(Exception):
    """A problem the user can fix (unknown name, missing data, refused run); the message says what and where."""


__all__ = ["ExtractError"]
