"""What a run covers: selection of models and (dataset, transform) units, and fingerprint inputs.

``resolve_selection`` turns a suite and/or explicit lists into model specs and (dataset, transform) units.
Options are ``extract.options``, ``extract plan`` is ``extract.plan``, what a store holds is
``extract.status`` and the run loop is ``extract.runner``. No torch at import.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

import schemas
from schemas import jsonable

from extract.errors import ExtractError
from extract.spec.models import ModelSpec, resolve_model
from extract.spec.transforms import TransformSpec, parse_transform, resolved_preprocess


@dataclass
class Unit:
    """One (dataset, transform) of a run: every model over every block."""

    dataset: str
    transform: TransformSpec


@dataclass
class Selection:
    models: list[ModelSpec]
    units: list[Unit]
    suite: str | None
    data_root: Path | None
    manifest: Any

    @property
    def datasets(self) -> list[str]:
        return list(OrderedDict.fromkeys(u.dataset for u in self.units))

    def entry(self, dataset: str) -> dict:
        return self.manifest.dataset(dataset, suite=self.suite)

    def reader(self, dataset: str):
        """The dataset's reader; a missing folder or list -> ExtractError naming the path and the manifest field."""
        from extract.readers import open_reader

        with _dataset_errors(dataset):
            return open_reader(dataset, self.entry(dataset), self.data_root, manifest_path=self.manifest.path)


def get_manifest(manifest: Any = None):
    """A ``schemas.manifest.Manifest`` from itself, a path or None (the default); problems -> ExtractError."""
    from schemas.manifest import Manifest, load_manifest

    if isinstance(manifest, Manifest):
        return manifest
    try:
        return load_manifest(manifest)
    except (FileNotFoundError, ValueError) as e:
        raise ExtractError(str(e)) from None


def lookup(fn: Callable[[str], Any], name: str) -> Any:
    """``fn(name)`` with an unknown name's KeyError / ValueError (did-you-mean included) as an ExtractError."""
    try:
        return fn(name)
    except (KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise ExtractError(str(msg)) from None


def resolve_selection(
    *,
    suite: str | None = None,
    models: Sequence[str] = (),
    datasets: Sequence[str] = (),
    transforms: Sequence[str] = (),
    data_root: str | Path | None = None,
    manifest: Any = None,
    need_data_root: bool = True,
) -> Selection:
    """Suite and/or explicit lists -> model specs and (dataset, transform) units; unknown names -> ExtractError.

    With a suite, explicit ``models`` / ``datasets`` / ``transforms`` narrow or replace the suite's.
    """
    m = get_manifest(manifest)
    plan: list[tuple[str, list[str]]]
    suite_models: list[str] = []
    suite_root = None
    if suite:
        s = lookup(m.suite, suite)
        suite_models = list(s["models"])
        suite_root = s.get("data_root")
        plan = [(d, list(s["dataset_transforms"][d])) for d in s["datasets"]]
        if datasets:
            for d in datasets:
                lookup(m.dataset, d)
            wanted = list(datasets)
            plan = [(d, ts) for d, ts in plan if d in wanted] + [
                (d, list(s["transforms"])) for d in wanted if d not in dict(plan)]
        if transforms:
            plan = [(d, list(transforms)) for d, _ in plan]
    else:
        missing = [flag for flag, v in (("--models", models), ("--datasets", datasets)) if not v]
        if missing:
            raise ExtractError(f"say what to run: --suite NAME (available: {', '.join(m.suite_ids())}) "
                               f"or {' and '.join(missing)}")
        for d in datasets:
            lookup(m.dataset, d)
        plan = [(d, list(transforms or ["center"])) for d in datasets]
    names = list(models or suite_models)
    if not names:
        raise ExtractError("no models: give --models or a --suite")
    specs = [lookup(resolve_model, name) for name in OrderedDict.fromkeys(names)]
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise ExtractError(f"a model is listed twice: {ids}")
    units = []
    for d, ts in plan:
        seen = set()
        for t in ts:
            spec = lookup(parse_transform, t)
            if spec.id not in seen:
                seen.add(spec.id)
                units.append(Unit(d, spec))
    if not units:
        raise ExtractError("nothing selected: no dataset x transform left")
    root = resolve_data_root(data_root, suite_root=suite_root, required=need_data_root)
    return Selection(models=specs, units=units, suite=suite, data_root=root, manifest=m)


def resolve_data_root(data_root: str | Path | None, *, suite_root: str | None = None, required: bool = True) -> Path | None:
    if data_root is None:
        if suite_root == "demo":
            from extract.datasets import demo_data_root

            return Path(demo_data_root())
        if not required:
            return None
        raise ExtractError("no --data-root: say where the datasets live (each manifest entry's layout.path is "
                           "relative to it), or run --suite demo for the bundled demo data")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise ExtractError(f"--data-root {root}: no such directory")
    return root


def spec_pretrained(spec: ModelSpec, pretrained: bool | None) -> bool | None:
    """Demo models are random-init whatever ``--pretrained`` says; others follow it (None: hub weights)."""
    return None if spec.demo else pretrained


def weights_id(spec: ModelSpec, weights_file: str | None, pretrained: bool | None) -> str:
    """``ModelSpec.weights_id`` of a run's model, its problems as ExtractErrors naming the option."""
    try:
        return spec.weights_id(weights=weights_file, pretrained=spec_pretrained(spec, pretrained))
    except FileNotFoundError:
        raise ExtractError(f"--weights {spec.id}={weights_file}: no such file") from None
    except ValueError as e:
        raise ExtractError(f"{spec.id}: {e}") from None


def run_fingerprint_inputs(spec: ModelSpec, t: TransformSpec, *, wid: str, precision: str, digest: str,
                           decode: str | None = None) -> dict:
    """``decode``: ``options.decode_fingerprint`` (None for the Pillow path)."""
    return schemas.fingerprint_inputs(
        model=jsonable(spec.to_dict()),
        weights_id=wid,
        preprocess=jsonable(resolved_preprocess(spec, t)),
        transform=jsonable(t.to_dict()),
        precision=precision,
        sample_digest=digest,
        decode=decode,
    )


@contextlib.contextmanager
def _dataset_errors(dataset: str) -> Iterator[None]:
    """A reader's FileNotFoundError (it names the path and the manifest field) or ValueError as ExtractError."""
    try:
        yield
    except FileNotFoundError as e:
        raise ExtractError(str(e)) from None
    except ValueError as e:
        raise ExtractError(f"{dataset}: {e}") from None


def reader_samples(reader):
    """The reader's sample table; a missing or malformed list -> ExtractError."""
    with _dataset_errors(reader.dataset_id):
        return reader.samples()


def sample_columns(table) -> dict[str, np.ndarray]:
    cols = getattr(table, "columns", None) or {}
    return {k: np.asarray(v) for k, v in cols.items()}
