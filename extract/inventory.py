"""What a run covers: selection of models and (dataset, transform) units, fingerprint inputs and ``extract plan``.

``resolve_selection`` turns a suite and/or explicit lists into model specs and (dataset, transform) units;
``plan`` says what a run would do without running it. Options are ``extract.options``, what a store
holds is ``extract.status`` and the run loop is ``extract.runner``. No torch at import.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

import schemas
from schemas import integrity, jsonable
from schemas import layout as L

from extract.errors import ExtractError
from extract.options import (
    RunOptions,
    decode_fingerprint,
    default_device,
    default_precision,
    is_cuda,
    parse_weights,
    shard_blocks,
    shard_from_env,
)
from extract.spec.models import ModelSpec, resolve_model
from extract.spec.transforms import TransformSpec, parse_transform, resolved_preprocess
from extract.status import open_store_read_only


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


@dataclass
class PlanRow:
    dataset: str
    transform: str
    model: str
    images: int | None
    blocks_total: int | None
    blocks_mine: int | None
    blocks_done: int | None
    bytes: int | None
    state: str


def plan(opts: RunOptions) -> list[PlanRow]:
    """What ``run(opts)`` would do: per (dataset, transform, model), images, blocks, bytes and what is done."""
    from extract.hub import output_dims  # sizes from the libraries' configs (imports torch)

    sel = resolve_selection(suite=opts.suite, models=opts.models, datasets=opts.datasets,
                            transforms=opts.transforms, data_root=opts.data_root, manifest=opts.manifest,
                            need_data_root=False)
    device = opts.device or default_device()
    precision = (opts.precision or default_precision(device)) if is_cuda(device) else "fp32"  # as run() does
    shard = opts.shard if opts.shard is not None else shard_from_env()
    weights = parse_weights(opts.weights)
    decode = decode_fingerprint(opts.decode, device)
    root = open_store_read_only(opts.store, missing_ok=True, storage_options=opts.storage_options)
    samples = {d: _samples_found(sel, d) for d in sel.datasets}
    rows = []
    for unit in sel.units:
        n, digest, found = samples[unit.dataset]
        blocks = L.Blocks(n) if n else None
        mine = len(shard_blocks(len(blocks), shard)) if blocks else 0
        for spec in sel.models:
            dims = output_dims(spec)
            nbytes = None  # unknown unless both the sample count and the output sizes are
            if n and dims is not None:
                classes, fdim = dims
                nbytes = n * (classes * 4 + (fdim or 0) * 2 + 1) + len(blocks) * 5
            done, state = None, "new" if found == "found" else found
            if root is not None and unit.dataset in root:
                dg = root[unit.dataset]
                stored_digest = dg.attrs.get("sample_digest")
                if digest is not None and stored_digest and stored_digest != digest:
                    state = "refused: the store holds another sample list of this dataset"
                elif unit.transform.id in dg and spec.id in dg[unit.transform.id]:
                    g = dg[unit.transform.id][spec.id]
                    flags = integrity.done_flags(g)[0] if L.BLOCK_DONE in g else None
                    done = int(flags[shard_blocks(len(flags), shard)].sum()) if flags is not None else 0
                    state = f"{done}/{mine} blocks done"
                    old = g.attrs.get("fingerprint_inputs")
                    if old is not None and stored_digest:
                        try:
                            wid = weights_id(spec, weights.get(spec.id), opts.pretrained)
                            new = run_fingerprint_inputs(spec, unit.transform, wid=wid, precision=precision,
                                                         digest=stored_digest, decode=decode)
                            changes = schemas.fingerprint_diff(old, new)
                            if changes:
                                state = f"fingerprint differs ({'; '.join(changes)}): refused unless --overwrite"
                        except ExtractError as e:
                            state = str(e)
            rows.append(PlanRow(unit.dataset, unit.transform.id, spec.id, n,
                                len(blocks) if blocks else None, mine, done, nbytes, state))
    return rows


def _samples_found(sel: Selection, dataset: str) -> tuple[int, str | None, str]:
    """(number of samples, sample digest or None, "found" or why not) of one dataset of a plan."""
    entry = sel.entry(dataset)
    if sel.data_root is None:
        return int(entry["expected_samples"]), None, "expected (no --data-root)"
    try:
        table = reader_samples(sel.reader(dataset))
    except ExtractError as e:
        return int(entry["expected_samples"]), None, f"missing: {e}"
    digest = schemas.sample_digest(np.asarray(table.sample_id).astype(str), np.asarray(table.label),
                                   sample_columns(table))
    return len(table.sample_id), digest, "found"
