"""What a run covers and what a store holds: options, selection, fingerprints, ``extract plan`` and ``status``.

``resolve_selection`` turns a suite and/or explicit lists into model specs and (dataset, transform) units;
``plan`` says what a run would do without running it; ``store_status`` says, from the store alone, which
blocks are done and which rows are invalid. The run loop itself is ``extract.runner``. No torch at import.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

import schemas
from schemas import layout as L


class ExtractError(Exception):
    """A problem the user can fix (unknown name, missing data, refused run); the message says what and where."""


# ---------------------------------------------------------------- shards, devices, weights
def parse_shard(text: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        i, n = (int(v) for v in text)
    else:
        try:
            a, b = text.split("/")
            i, n = int(a), int(b)
        except ValueError:
            raise ExtractError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ExtractError(f"--shard {i}/{n}: expected 0 <= i < n")
    return i, n


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """torchrun's RANK / WORLD_SIZE, when set."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return parse_shard(f"{env['RANK']}/{env['WORLD_SIZE']}")
    return None


def shard_blocks(n_blocks: int, shard: tuple[int, int] | None) -> list[int]:
    """The blocks of one shard: block b goes to shard b % n."""
    if shard is None:
        return list(range(n_blocks))
    i, n = shard
    return [b for b in range(n_blocks) if b % n == i]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - the extract extra is missing
        return False
    return bool(torch.cuda.is_available())


def default_device(env: Mapping[str, str] | None = None) -> str:
    """cuda (cuda:LOCAL_RANK under torchrun) when a GPU is there, else cpu."""
    env = os.environ if env is None else env
    if cuda_available():
        return f"cuda:{env['LOCAL_RANK']}" if "LOCAL_RANK" in env else "cuda"
    return "cpu"


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def default_batch_size(device: str) -> int:
    return 256 if is_cuda(device) else 32


def default_precision(device: str) -> str:
    return "bf16" if is_cuda(device) else "fp32"


def default_workers(device: str) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus - 1, 16)) if is_cuda(device) else 0


def parse_weights(items: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["vit-sup=/ckpt/vit.safetensors", ...]`` -> ``{"vit-sup": "/ckpt/vit.safetensors"}``."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out: dict[str, str] = {}
    for item in items:
        model, sep, path = str(item).partition("=")
        if not sep or not model or not path:
            raise ExtractError(f"--weights {item!r}: expected MODEL=FILE")
        out[model.strip()] = path.strip()
    return out


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from the store's JSON attributes."""
    return json.loads(json.dumps(obj, default=str))


# ---------------------------------------------------------------- options and selection
@dataclass
class RunOptions:
    """Everything ``extract run`` takes (the CLI fills it from its arguments)."""

    store: str | Path
    models: Sequence[str] = ()
    datasets: Sequence[str] = ()
    transforms: Sequence[str] = ()
    suite: str | None = None
    data_root: str | Path | None = None
    device: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    shard: tuple[int, int] | None = None
    strict: bool = False
    overwrite: bool = False
    precision: str | None = None
    weights: Mapping[str, str] = field(default_factory=dict)
    pretrained: bool = True
    manifest: Any = None          # a path, a schemas.manifest.Manifest, or None (the default manifest)
    progress: bool | None = None  # None: a bar when stderr is a terminal
    seed: int = 0
    compile: bool = False


@dataclass
class Unit:
    """One (dataset, transform) of a run: every model over every block."""

    dataset: str
    transform: Any  # extract.transforms.TransformSpec


@dataclass
class Selection:
    models: list            # [ModelSpec]
    units: list[Unit]
    suite: str | None
    data_root: Path | None
    manifest: Any

    @property
    def datasets(self) -> list[str]:
        return list(OrderedDict.fromkeys(u.dataset for u in self.units))

    def entry(self, dataset: str) -> dict:
        return self.manifest.dataset(dataset, suite=self.suite)


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
    from extract.models import resolve_model
    from extract.transforms import parse_transform

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


# ---------------------------------------------------------------- what a run is computed from
def resolved_preprocess(spec, t) -> dict:
    """What the model sees: its eval preprocessing resolved for transform ``t`` (fingerprinted)."""
    from extract.transforms import output_size

    pre = spec.preprocess
    return {**pre.to_dict(), "transform": t.id, "input_size": int(output_size(t, pre))}


def spec_pretrained(spec, pretrained: bool | None) -> bool | None:
    """Demo models are random-init whatever ``--pretrained`` says; others follow it (None: hub weights)."""
    return None if spec.demo else pretrained


def weights_id(spec, weights_file: str | None, pretrained: bool | None) -> str:
    """``ModelSpec.weights_id`` of a run's model, its problems as ExtractErrors naming the option."""
    try:
        return spec.weights_id(weights=weights_file, pretrained=spec_pretrained(spec, pretrained))
    except FileNotFoundError:
        raise ExtractError(f"--weights {spec.id}={weights_file}: no such file") from None
    except ValueError as e:
        raise ExtractError(f"{spec.id}: {e}") from None


def run_fingerprint_inputs(spec, t, *, wid: str, precision: str, digest: str) -> dict:
    return schemas.fingerprint_inputs(
        model=jsonable(spec.to_dict()),
        weights_id=wid,
        preprocess=jsonable(resolved_preprocess(spec, t)),
        transform=jsonable(t.to_dict()),
        precision=precision,
        sample_digest=digest,
    )


# ---------------------------------------------------------------- datasets
@contextlib.contextmanager
def _dataset_errors(dataset: str) -> Iterator[None]:
    """A reader's FileNotFoundError (it names the path and the manifest field) or ValueError as ExtractError."""
    try:
        yield
    except FileNotFoundError as e:
        raise ExtractError(str(e)) from None
    except ValueError as e:
        raise ExtractError(f"{dataset}: {e}") from None


def open_reader(dataset: str, data_root: Path, entry: dict, manifest_path: Any = None):
    """The dataset's reader; a missing folder -> ExtractError naming the path and the manifest entry."""
    from extract.readers import open_reader as _open

    with _dataset_errors(dataset):
        return _open(dataset, entry, data_root, manifest_path=manifest_path)


def reader_samples(reader):
    """The reader's sample table; a missing or malformed list -> ExtractError."""
    with _dataset_errors(reader.dataset_id):
        return reader.samples()


def sample_columns(table) -> dict[str, np.ndarray]:
    cols = getattr(table, "columns", None) or {}
    return {k: np.asarray(v) for k, v in cols.items()}


# ---------------------------------------------------------------- status
@dataclass
class RunStatus:
    path: str
    blocks_done: int
    blocks_total: int
    n_samples: int
    invalid: list[str]
    attrs: dict

    @property
    def complete(self) -> bool:
        return self.blocks_done == self.blocks_total


def _open_read_only(store):
    import zarr

    return zarr.open_group(str(store), mode="r")


def store_status(store) -> list[RunStatus]:
    """Every run of a store: blocks done / total and the sample ids of its invalid rows (in done blocks)."""
    try:
        root = _open_read_only(store)
    except Exception as e:  # noqa: BLE001
        raise ExtractError(f"{store}: not a store ({type(e).__name__}: {e})") from None
    out = []
    for dname, dgroup in sorted(root.groups()):
        if dname.startswith("_"):
            continue
        n = int(dgroup.attrs.get("n_samples", 0))
        ids: list[np.ndarray] = []

        def sample_ids(dgroup=dgroup, ids=ids) -> np.ndarray:  # read once per dataset, only when needed
            if not ids:
                ids.append(np.asarray(dgroup[L.SAMPLE_ID][...]).astype(object))
            return ids[0]

        for tname, tgroup in sorted(dgroup.groups()):
            for mname, run_group in sorted(tgroup.groups()):
                out.append(_run_status(f"{dname}/{tname}/{mname}", run_group, n, sample_ids))
    return out


def _run_status(path: str, group, n: int, ids) -> RunStatus:
    blocks = L.Blocks(n)
    done = np.asarray(group[L.BLOCK_DONE][...], dtype=bool) if L.BLOCK_DONE in group else np.zeros(len(blocks), bool)
    invalid: list[str] = []
    if done.any() and L.VALID in group:
        valid = np.asarray(group[L.VALID][...], dtype=bool)
        row_done = np.repeat(done, blocks.rows)[:n]
        bad = np.flatnonzero(row_done & ~valid)
        if bad.size:
            invalid = ids()[bad].tolist()
    return RunStatus(path, int(done.sum()), len(blocks), n, invalid, dict(group.attrs))


# ---------------------------------------------------------------- plan
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
    from extract.models import output_dims

    sel = resolve_selection(suite=opts.suite, models=opts.models, datasets=opts.datasets,
                            transforms=opts.transforms, data_root=opts.data_root, manifest=opts.manifest,
                            need_data_root=False)
    device = opts.device or default_device()
    precision = (opts.precision or default_precision(device)) if is_cuda(device) else "fp32"  # as run() does
    shard = opts.shard if opts.shard is not None else shard_from_env()
    weights = parse_weights(opts.weights)
    try:
        root = _open_read_only(opts.store)
    except Exception:  # noqa: BLE001 - no store yet
        root = None
    samples = {d: _samples_found(sel, d) for d in sel.datasets}
    rows = []
    for unit in sel.units:
        n, digest, found = samples[unit.dataset]
        blocks = L.Blocks(n) if n else None
        mine = len(shard_blocks(len(blocks), shard)) if blocks else 0
        for spec in sel.models:
            classes, fdim = output_dims(spec)
            nbytes = n * (classes * 4 + (fdim or 0) * 2 + 1) + (len(blocks) * 5 if blocks else 0) if n else None
            done, state = None, "new" if found == "found" else found
            if root is not None and unit.dataset in root:
                dg = root[unit.dataset]
                stored_digest = dg.attrs.get("sample_digest")
                if digest is not None and stored_digest and stored_digest != digest:
                    state = "refused: the store holds another sample list of this dataset"
                elif unit.transform.id in dg and spec.id in dg[unit.transform.id]:
                    g = dg[unit.transform.id][spec.id]
                    flags = np.asarray(g[L.BLOCK_DONE][...], dtype=bool) if L.BLOCK_DONE in g else None
                    done = int(flags[shard_blocks(len(flags), shard)].sum()) if flags is not None else 0
                    state = f"{done}/{mine} blocks done"
                    old = g.attrs.get("fingerprint_inputs")
                    if old is not None and stored_digest:
                        try:
                            wid = weights_id(spec, weights.get(spec.id), opts.pretrained)
                            new = run_fingerprint_inputs(spec, unit.transform, wid=wid, precision=precision,
                                                         digest=stored_digest)
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
        table = reader_samples(open_reader(dataset, sel.data_root, entry, sel.manifest.path))
    except ExtractError as e:
        return int(entry["expected_samples"]), None, f"missing: {e}"
    digest = schemas.sample_digest(np.asarray(table.sample_id).astype(str), np.asarray(table.label),
                                   sample_columns(table))
    return len(table.sample_id), digest, "found"
