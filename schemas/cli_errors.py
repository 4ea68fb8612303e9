"""What both command lines share for their one-line errors: the OS's refusals and option ranges. Stdlib only.

``extract`` and ``analyze`` print ``<prog> <command>: error: ...`` and exit 1 or 2, never a traceback: an
OSError (read-only, disk full, no permission) names the path, what the system said and the likely fix;
a bad option value is refused by argparse in one line, before anything is read or written.
"""
from __future__ import annotations

import argparse
import errno
from pathlib import Path
from typing import Callable

_READ_ONLY = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted"}
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def os_error_message(e: OSError, where: str | Path, *, after: str = "") -> str:
    """``where: what happened (file); fix`` for an OSError met while working on ``where``.

    ``after`` follows the fix (e.g. what a rerun does with the work already done).
    """
    code = e.errno
    reason = _READ_ONLY.get(code) or _FULL.get(code) or e.strerror or str(e) or type(e).__name__
    files = [str(f) for f in (e.filename, e.filename2) if f and str(f) != str(where)]
    if code in _READ_ONLY:
        fix = "fix its permissions or mount, or choose a location you can write to"
    elif code in _FULL:
        fix = "free space there, or choose a location on a disk with room"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        reason, fix = "a file stands where a folder is needed", "choose another path, or move the file away"
    else:
        fix = "check the path and the file system"
    detail = f" ({', '.join(files)})" if files else ""
    return f"{where}: {reason}{detail}; {fix}{'; ' + after if after else ''}"


def failed_path(e: OSError, default: str | Path | None) -> str:
    """The path to name for ``e``: ``default`` (the store, the output folder) when the failing file lies in
    it or the system named none, else the file the system named."""
    named = e.filename
    if named is None or default is None:
        return str(named if named is not None else default)
    inside = Path(str(named)).resolve().is_relative_to(Path(str(default)).expanduser().resolve())
    return str(default) if inside else str(named)


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= {low}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: must be >= {low}")
        return value

    parse.__name__ = f"integer >= {low}"  # argparse names the type in some of its messages
    return parse


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, ``<prog>: error: ...`` (exit 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


__all__ = ["OneLineParser", "failed_path", "int_at_least", "os_error_message"]
