"""Studies: one file per section of the paper; the file name is the study's registry key.

Each module has ``TITLE``, ``wants(key, entry) -> bool`` (whether it reads that run's logits; ``entry`` is the
dataset's manifest entry, ``StoreReader.manifest_entry``) and ``run(ctx: Context) -> None``, which adds tidy
rows and a report section. A study reads the datasets whose manifest entry lists it under ``studies``
(``Context.datasets_for``): the module name is the name there and in ``analyze report --studies``.
A study whose data the store lacks adds a section saying so and nothing else.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from schemas.registry import unknown_name

# Report order, following the paper.
ORDER = ("robustness", "imagenet_x", "shape_bias", "calibration", "pug", "invariance", "transfer", "agreement")


# Studies run before the others (their sections stay in report order): agreement draws a matrix a dataset, the most
# drawing of any study, and its figures are drawn while the other studies compute rather than after them all.
DRAW_EARLY = ("agreement",)


def run_order(names: list[str]) -> list[str]:
    """The order to run ``names`` in: the ``DRAW_EARLY`` ones first, the rest as given."""
    return [n for n in names if n in DRAW_EARLY] + [n for n in names if n not in DRAW_EARLY]


def available() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return [s for s in ORDER if s in found] + sorted(found - set(ORDER))


def get(name: str) -> ModuleType:
    names = available()
    if name not in names:
        raise unknown_name("study", name, names)
    return importlib.import_module(f"{__name__}.{name}")
