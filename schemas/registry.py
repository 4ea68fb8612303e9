"""Named registries and the one message for an unknown name ("did you mean ...? available: ...").

Every user-facing lookup (models, transforms, datasets, suites, layouts, studies) raises
``UnknownName`` through ``unknown_name``, so a typo reads the same wherever it is made.
Stdlib only: both stages import it.
"""
from __future__ import annotations

import difflib
from typing import Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")

SHOWN = 20  # names listed after "available:" before the list is cut


class UnknownName(ValueError):
    """A name no registry knows; the message suggests the closest names and lists the available ones."""


def close_names(name: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.5) -> list[str]:
    """Up to ``n`` candidates closest to ``name`` (difflib ratio >= ``cutoff``), case-insensitively."""
    candidates = list(dict.fromkeys(str(c) for c in candidates))
    by_lower: dict[str, str] = {}
    for c in candidates:
        by_lower.setdefault(c.lower(), c)
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=cutoff)
    return [by_lower[c] for c in close]


def unknown_name(noun: str, name: object, available: Iterable[str], *, extra: str = "",
                 suggestions: Iterable[str] | None = None, where: str = "") -> UnknownName:
    """The error for an unknown ``name``: ``[<where>: ]unknown <noun> 'x'; did you mean 'y'? available: ...``.

    ``suggestions`` replaces the difflib guesses (for syntaxes such as ``scale-<s>``); ``extra`` is
    appended after the list (other accepted forms).
    """
    names = list(dict.fromkeys(str(a) for a in available))
    close = list(suggestions) if suggestions is not None else close_names(str(name), names)
    message = f"{where}: " if where else ""
    message += f"unknown {noun} {str(name)!r}"
    if close:
        message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
    tail = []
    if names:
        tail.append("available: " + ", ".join(names[:SHOWN])
                    + (f", ... ({len(names)} in all)" if len(names) > SHOWN else ""))
    if extra:
        tail.append(extra)
    if tail:
        message += (" " if close else "; ") + "; ".join(tail)
    return UnknownName(message)


class Registry(Generic[T]):
    """Names -> entries of one kind; duplicate names are refused, unknown ones get ``unknown_name``."""

    def __init__(self, noun: str, *, extra: str = "") -> None:
        self.noun = noun
        self.extra = extra
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.noun} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name(self.noun, name, self._entries, extra=self.extra) from None

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()


__all__ = ["UnknownName", "Registry", "close_names", "unknown_name"]
