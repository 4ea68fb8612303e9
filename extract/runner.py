"""The extraction runner: every model of a run over every (dataset, transform), block by block, into one store.

Work unit = (dataset, transform, block). For each dataset and transform, a torch DataLoader (``workers``
processes) reads and decodes every image of the pending blocks ONCE and makes one uint8 tensor per
preprocessing geometry (supervised Resize 256 bilinear, CLIP Resize 224 bicubic, ...); every model of the
run is fed from those tensors, normalised on the device with its own mean/std. Each finished block is
written whole for every model that still needed it, then flagged done (``schemas.RunWriter``); a crash
loses at most the blocks in flight and a rerun skips the done ones, model by model.

``shard=(i, n)`` (or torchrun's RANK / WORLD_SIZE) gives this process the blocks ``b % n == i``; every
process prepares the same groups and arrays idempotently, so several processes on several machines can
fill one store.

Bad images (truncated, empty, not an image, unreadable) become ``valid=false`` rows (logits NaN), are
counted and named in the log and in the returned ``RunResult``; ``strict`` stops at the first one instead.
The store keeps them as ``valid == false`` rows of done blocks: ``store_status`` lists them by sample id.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sys
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

import schemas
from schemas import layout as L

log = logging.getLogger("extract")

HEAD_ARRAY = "weights"
HEAD_LOGIT_SCALE = 100.0
# How long a process waits for another one that is preparing the same group (concurrent shards).
PREPARE_WAIT_S = float(os.environ.get("BEYOND_PREPARE_WAIT_S", "60"))


# ---------------------------------------------------------------- errors
class ExtractError(Exception):
    """A problem the user can fix (unknown name, missing data, refused run); the message says what and where."""


class BadImageError(ExtractError):
    """``strict``: an image could not be read or decoded."""


# ---------------------------------------------------------------- small helpers
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


def software_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("beyond-imagenet", "torch", "torchvision", "timm", "open_clip_torch", "pillow", "zarr", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _jsonable(obj: Any) -> Any:
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
    data_root: Path
    manifest: Any

    @property
    def datasets(self) -> list[str]:
        return list(OrderedDict.fromkeys(u.dataset for u in self.units))

    def entry(self, dataset: str) -> dict:
        return self.manifest.dataset(dataset, suite=self.suite)


def _load_manifest(manifest: Any):
    from schemas.manifest import Manifest, load_manifest

    if isinstance(manifest, Manifest):
        return manifest
    try:
        return load_manifest(manifest)
    except FileNotFoundError as e:
        raise ExtractError(str(e)) from None
    except ValueError as e:
        raise ExtractError(str(e)) from None


def _resolve(fn, name: str):
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

    m = _load_manifest(manifest)
    plan: list[tuple[str, list[str]]]
    suite_models: list[str] = []
    suite_root = None
    if suite:
        s = _resolve(m.suite, suite)
        suite_models = list(s["models"])
        suite_root = s.get("data_root")
        plan = [(d, list(s["dataset_transforms"][d])) for d in s["datasets"]]
        if datasets:
            for d in datasets:
                _resolve(m.dataset, d)
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
            _resolve(m.dataset, d)
        plan = [(d, list(transforms or ["center"])) for d in datasets]
    names = list(models or suite_models)
    if not names:
        raise ExtractError("no models: give --models or a --suite")
    specs = []
    for name in OrderedDict.fromkeys(names):
        specs.append(_resolve(resolve_model, name))
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise ExtractError(f"a model is listed twice: {ids}")
    units = []
    for d, ts in plan:
        seen = set()
        for t in ts:
            spec = _resolve(parse_transform, t)
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


# ---------------------------------------------------------------- preprocessing and fingerprints
def geometry_key(pre) -> Any:
    key = pre.geometry_key()
    return tuple(key) if isinstance(key, list) else key


def resolved_preprocess(spec, t) -> dict:
    """What the model sees: its eval preprocessing resolved for transform ``t`` (fingerprinted)."""
    from extract.transforms import output_size

    pre = spec.preprocess
    return {**pre.to_dict(), "transform": t.id, "input_size": int(output_size(t, pre))}


def spec_pretrained(spec, pretrained: bool | None) -> bool | None:
    """Demo models are random-init whatever ``--pretrained`` says; others follow it (None: hub weights)."""
    return None if getattr(spec, "demo", False) else pretrained


def weights_id(spec, weights_file: str | None, pretrained: bool | None) -> str:
    """"timm/<name>", "open_clip/<arch>/<tag>", "file:<sha256>" or "random-init:seed=<n>"."""
    if weights_file:
        p = Path(weights_file).expanduser()
        if not p.is_file():
            raise ExtractError(f"--weights {spec.id}={weights_file}: no such file")
        return str(spec.weights_id(weights=p))
    try:
        return str(spec.weights_id(pretrained=spec_pretrained(spec, pretrained)))
    except ValueError as e:
        raise ExtractError(f"{spec.id}: {e}") from None


def run_fingerprint_inputs(spec, t, *, wid: str, precision: str, digest: str) -> dict:
    return schemas.fingerprint_inputs(
        model=_jsonable(spec.to_dict()),
        weights_id=wid,
        preprocess=_jsonable(resolved_preprocess(spec, t)),
        transform=_jsonable(t.to_dict()),
        precision=precision,
        sample_digest=digest,
    )


# ---------------------------------------------------------------- zero-shot heads in the store
def head_attrs(spec, wid: str, class_names: Sequence[str], templates: Sequence[str], source: str) -> dict:
    """What a zero-shot head was built from; a stored head is reused only when these match."""
    names_digest = hashlib.sha256("\n".join(class_names).encode()).hexdigest()[:16]
    return _jsonable({
        "model": spec.to_dict(),
        "weights_id": wid,
        "class_names": {"source": source, "n": len(class_names), "sha256": names_digest},
        "templates": list(templates),
        "logit_scale": HEAD_LOGIT_SCALE,
        "normalisation": "each prompt embedding L2-normalised, averaged over templates, renormalised",
    })


def read_head(root, model: str, attrs: Mapping[str, Any]) -> np.ndarray | None:
    """The head stored at ``_heads/<model>`` when it was built from ``attrs``; else None."""
    heads = root.get(L.HEADS_GROUP)
    if heads is None or model not in heads:
        return None
    group = heads[model]
    stored = dict(group.attrs)
    if not stored.get("complete") or {k: stored.get(k) for k in attrs} != dict(attrs):
        return None
    if HEAD_ARRAY not in group:
        return None
    return np.asarray(group[HEAD_ARRAY][...], dtype=np.float32)


def write_head(root, model: str, weights: np.ndarray, attrs: Mapping[str, Any]) -> None:
    """Store a zero-shot head at ``_heads/<model>/weights`` [class, embed] float32 (replacing another one)."""
    from zarr.codecs import ZstdCodec

    weights = np.asarray(weights, dtype=np.float32)
    heads = _retry(lambda: _child_group(root, L.HEADS_GROUP), f"{L.HEADS_GROUP}")
    if model in heads:
        old = dict(heads[model].attrs)
        if old.get("complete"):
            if {k: old.get(k) for k in attrs} == dict(attrs):
                return
            del heads[model]  # a head from other inputs (other weights or templates): replace it
        # else another process is writing the same head right now: write the same bytes alongside it
    group = _retry(lambda: _child_group(heads, model), f"{L.HEADS_GROUP}/{model}")
    try:
        arr = group.create_array(HEAD_ARRAY, shape=weights.shape, dtype="float32", chunks=weights.shape,
                                 compressors=ZstdCodec(level=L.ZSTD_LEVEL), dimension_names=("class", "embed"))
    except Exception:  # noqa: BLE001 - created meanwhile by another process: same metadata
        arr = group[HEAD_ARRAY]
    arr[...] = weights
    group.update_attributes({**attrs, "shape": list(weights.shape), "complete": True})  # one write, not one per key


def _child_group(parent, name: str):
    from zarr.errors import ContainsArrayError, ContainsGroupError

    try:
        return parent.create_group(name)
    except (ContainsGroupError, ContainsArrayError):
        return parent[name]


# ---------------------------------------------------------------- concurrent preparation
class _Preparing(Exception):
    """Another process is half-way through preparing this group: wait for it."""


def _retry(fn, what: str, wait_s: float | None = None):
    """Run ``fn`` until it stops tripping over a concurrent writer preparing the same metadata."""
    import zarr.errors as ze

    transient = (ze.ContainsGroupError, ze.ContainsArrayError, json.JSONDecodeError, _Preparing, FileNotFoundError)
    deadline = time.monotonic() + (PREPARE_WAIT_S if wait_s is None else wait_s)
    delay = 0.05
    while True:
        try:
            return fn()
        except transient as e:
            if time.monotonic() > deadline:
                if isinstance(e, _Preparing):
                    raise ExtractError(str(e)) from None
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)


def _open_root(store):
    def attempt():
        try:
            return schemas.open_root(str(store))
        except schemas.StoreError:
            import zarr

            # zarr writes attributes one key at a time: another process may be half-way through the root's.
            attrs = dict(zarr.open_group(str(store), mode="r").attrs)
            if set(attrs) < set(L.ROOT_ATTRS) and attrs.get("schema") in (None, L.SCHEMA):
                raise _Preparing(f"{store}: the store's root attributes were never completed") from None
            raise

    try:
        return _retry(attempt, str(store))
    except schemas.StoreError as e:
        raise ExtractError(str(e)) from None


def _open_run(root, dataset: str, t, spec, *, num_classes, feature_dim, attrs, logits_dtype, overwrite):
    """schemas.open_run, robust to other processes preparing the same run at the same moment.

    zarr creates a group by checking that none exists and then writing its metadata, so a process that
    creates a group a few milliseconds after another one rewrites its metadata without attributes until it
    writes them again itself. A missing dataset digest or run fingerprint is that window: wait and retry.
    """
    fp = schemas.fingerprint(attrs["fingerprint_inputs"])
    path = f"{dataset}/{t.id}/{spec.id}"

    def stored_fingerprint():
        node = zarr_get(root, path)
        return None if node is None else node.attrs.get("fingerprint")

    def attempt():
        if "sample_digest" not in zarr_get(root, dataset).attrs:
            raise _Preparing(f"{dataset}: the dataset group exists but its sample list was never completed "
                             f"(another process is writing it, or one crashed doing so)")
        if not overwrite and zarr_get(root, path) is not None and stored_fingerprint() is None:
            raise _Preparing(
                f"{path}: the run exists but was never fully prepared (another process is preparing it, or one "
                f"crashed while doing so); if no other process is running, rerun with --overwrite")
        try:
            return schemas.open_run(
                root, dataset, t.id, spec.id,
                num_classes=num_classes, feature_dim=feature_dim, attrs=attrs,
                transform_attrs={"transform": _jsonable(t.to_dict())},
                logits_dtype=logits_dtype, overwrite=overwrite,
            )
        except schemas.FingerprintMismatch:
            if stored_fingerprint() in (None, fp):  # attributes rewritten meanwhile: not a real mismatch
                raise _Preparing(f"{path}: being prepared by another process") from None
            raise
        except schemas.StoreError as e:
            if "before its runs" in str(e):
                raise _Preparing(str(e)) from None
            raise
        except KeyError as e:  # an attribute read while a concurrent creator rewrote the group's metadata
            raise _Preparing(f"{path}: attribute {e} missing while another process prepares the run") from None

    try:
        return _retry(attempt, path)
    except schemas.FingerprintMismatch as e:
        raise ExtractError(str(e)) from None
    except schemas.StoreError as e:
        raise ExtractError(str(e)) from None


def zarr_get(group, path: str):
    """A node by path, fresh from the store (None when absent)."""
    try:
        return group[path]
    except KeyError:
        return None


# ---------------------------------------------------------------- datasets
def open_reader(dataset: str, data_root: Path, entry: dict, manifest_path: Any = None):
    """The dataset's reader; a missing folder -> ExtractError naming the path and the manifest entry."""
    from extract.readers import open_reader as _open

    try:
        return _open(dataset, entry, data_root, manifest_path=manifest_path)
    except FileNotFoundError as e:
        raise ExtractError(str(e)) from None
    except ValueError as e:
        raise ExtractError(f"{dataset}: {e}") from None


def reader_samples(reader):
    try:
        return reader.samples()
    except FileNotFoundError as e:
        raise ExtractError(str(e)) from None
    except ValueError as e:
        raise ExtractError(f"{reader.dataset_id}: {e}") from None


def dataset_attrs(reader, entry: dict) -> dict:
    from schemas.manifest import label_space_names

    attrs = {"manifest": _jsonable(entry), "label_space": entry["label_space"]}
    names = getattr(reader, "class_names", None)
    if callable(names):
        names = names()
    if names is None:
        try:
            names = label_space_names(entry["label_space"])
        except ValueError:
            names = None
    if names is not None:
        attrs["class_names"] = list(map(str, names))
    return attrs


def _columns(table) -> dict:
    cols = getattr(table, "columns", None) or {}
    return {k: np.asarray(v) for k, v in cols.items()}


def ensure_dataset_group(root, dataset: str, reader, entry: dict):
    """The dataset group with its sample list (the same list for every process and every rerun)."""
    import zarr

    table = reader_samples(reader)

    def attempt():
        schemas.ensure_dataset(root, dataset, sample_id=np.asarray(table.sample_id), label=np.asarray(table.label),
                               columns=_columns(table), attrs=dataset_attrs(reader, entry))
        # Read back from the store: the group handle ensure_dataset returns may predate the attributes that
        # a concurrent writer settled.
        group = zarr.open_group(root.store, path=dataset, mode="r+")
        if "sample_digest" not in group.attrs:
            raise _Preparing(f"{dataset}: the dataset group's sample list was never completed")
        return group

    try:
        return _retry(attempt, dataset)
    except schemas.StoreError as e:
        raise ExtractError(str(e)) from None


def _sample_path(reader, index: int, sample_id: str) -> str:
    for name in ("path_of", "sample_path", "path"):
        fn = getattr(reader, name, None)
        if callable(fn):
            try:
                return str(fn(index))
            except Exception:  # noqa: BLE001 - only for the message
                break
    root = getattr(reader, "root", None)
    return str(Path(root) / sample_id) if root is not None else sample_id


# ---------------------------------------------------------------- models
# Zero-shot heads built or read in this process, by (model, fingerprint of head_attrs): several runs in one
# process (tests, benchmarks) build each head once.
_HEAD_MEMO: dict[tuple[str, str], np.ndarray] = {}


class ModelCache:
    """Loaded models keyed by (model, input size); zero-shot heads built once per model and kept in the store."""

    def __init__(self, opts: RunOptions, device: str, precision: str, root=None):
        self.opts = opts
        self.device = device
        self.precision = precision
        self.root = root
        self.loaded: dict[tuple[str, int], Any] = {}
        self.heads: dict[str, np.ndarray] = {}
        self.weights = parse_weights(opts.weights)
        self._wid: dict[str, str] = {}

    def weights_id(self, spec) -> str:
        if spec.id not in self._wid:
            self._wid[spec.id] = weights_id(spec, self.weights.get(spec.id), self.opts.pretrained)
        return self._wid[spec.id]

    def get(self, spec, size: int):
        key = (spec.id, int(size))
        if key not in self.loaded:
            # Keep only the models of one input size at a time (a res-* transform reloads at its size).
            for k in [k for k in self.loaded if k[1] != size]:
                del self.loaded[k]
            self.loaded[key] = self._load(spec, int(size))
        return self.loaded[key]

    def _load(self, spec, size: int):
        from extract.models import load_model

        self.weights_id(spec)  # a missing --weights file fails here, before any work
        kwargs: dict[str, Any] = {
            "device": self.device, "precision": self.precision, "image_size": size,
            "weights": self.weights.get(spec.id), "pretrained": spec_pretrained(spec, self.opts.pretrained),
        }
        if spec.kind == "zero-shot":
            kwargs.update(self._head_kwargs(spec))
        t0 = time.perf_counter()
        try:
            model = load_model(spec, **kwargs)
        except FileNotFoundError as e:
            raise ExtractError(f"{spec.id}: {e}") from None
        except ValueError as e:
            raise ExtractError(f"{spec.id}: {e}") from None
        if spec.kind == "zero-shot" and spec.id not in self.heads:
            self._store_head(spec, model)
        if self.opts.compile:
            import torch

            model.forward = torch.compile(model.forward)
        log.info("loaded %s at %dpx on %s (%s) in %.1fs", spec.id, size, self.device, model.precision,
                 time.perf_counter() - t0)
        return model

    def _head_inputs(self, spec):
        from extract.zeroshot import imagenet_class_names, openai_templates

        names, templates = list(imagenet_class_names()), list(openai_templates())
        return names, templates, head_attrs(spec, self.weights_id(spec), names, templates, "imagenet-1k")

    def _head_kwargs(self, spec) -> dict:
        names, templates, attrs = self._head_inputs(spec)
        head = self.heads.get(spec.id)
        memo_key = (spec.id, schemas.fingerprint(attrs))
        if head is None and memo_key in _HEAD_MEMO:
            head = self.heads[spec.id] = _HEAD_MEMO[memo_key]
            if self.root is not None and read_head(self.root, spec.id, attrs) is None:
                write_head(self.root, spec.id, head, attrs)
        if head is None and self.root is not None:
            stored = read_head(self.root, spec.id, attrs)
            if stored is not None:
                log.info("%s: zero-shot head read from %s/%s", spec.id, L.HEADS_GROUP, spec.id)
                head = self.heads[spec.id] = stored
        if head is not None:
            _HEAD_MEMO[memo_key] = head
        return {"class_names": names, "templates": templates, "head": head}

    def _store_head(self, spec, model) -> None:
        head = model.zero_shot_head
        if head is None:
            return
        self.heads[spec.id] = np.asarray(head, dtype=np.float32)
        _, _, attrs = self._head_inputs(spec)
        _HEAD_MEMO[(spec.id, schemas.fingerprint(attrs))] = self.heads[spec.id]
        if self.root is not None:
            write_head(self.root, spec.id, self.heads[spec.id], attrs)
            log.info("%s: zero-shot head built and stored at %s/%s", spec.id, L.HEADS_GROUP, spec.id)


# ---------------------------------------------------------------- the data pipeline
class BlockImages:
    """torch Dataset: index -> (index, ok, error, {geometry: uint8 [3,S,S]}). Decodes each image once."""

    def __init__(self, reader, transform, geometries: Mapping[Any, Any]):
        from extract.transforms import output_size

        self.reader = reader
        self.transform = transform
        self.geometries = dict(geometries)  # key -> a Preprocess with that geometry
        self.sizes = {k: int(output_size(transform, pre)) for k, pre in self.geometries.items()}

    def __getitem__(self, index: int):
        import torch

        from extract.readers import decode_image
        from extract.transforms import apply_transform, to_uint8_tensor

        try:
            try:
                data = self.reader.read_bytes(index)
            except OSError:  # a flaky filesystem gets a second chance before the row is written invalid
                time.sleep(0.5)
                data = self.reader.read_bytes(index)
            img = decode_image(data)
            out = {k: to_uint8_tensor(apply_transform(img, self.transform, pre)) for k, pre in self.geometries.items()}
            return index, True, None, out
        except (ValueError, OSError, SyntaxError) as e:  # ImageDecodeError is a ValueError; read errors: OSError
            reason = f"{type(e).__name__}: {e}"
            out = {k: torch.zeros(3, s, s, dtype=torch.uint8) for k, s in self.sizes.items()}
            return index, False, reason, out


class Normalizer:
    """``extract.transforms.normalize`` with the same arithmetic, mean and std kept on the device (no
    host-to-device copy, hence no stream synchronisation, per batch)."""

    def __init__(self, pre, device):
        import torch

        self.mean = torch.tensor(pre.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        self.std = torch.tensor(pre.std, dtype=torch.float32, device=device).view(-1, 1, 1)

    def __call__(self, batch_uint8):
        import torch

        x = batch_uint8.to(torch.float32) / 255.0
        return (x - self.mean) / self.std


def collate(items):
    import torch

    keys = list(items[0][3])
    return {
        "index": np.asarray([it[0] for it in items], dtype=np.int64),
        "ok": np.asarray([it[1] for it in items], dtype=bool),
        "errors": [it[2] for it in items],
        "images": {k: torch.stack([it[3][k] for it in items]) for k in keys},
    }


def _worker_init(_):
    import torch

    torch.set_num_threads(1)


def block_batches(blocks: L.Blocks, todo: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches that never cross a block boundary, each block from its first row (the same batches in every
    process, rerun and shard, so results do not depend on how the work was split)."""
    out = []
    for b in todo:
        rows = blocks.slice(b)
        for s in range(rows.start, rows.stop, batch_size):
            out.append(list(range(s, min(s + batch_size, rows.stop))))
    return out


# ---------------------------------------------------------------- results
@dataclass
class UnitResult:
    dataset: str
    transform: str
    models: list[str]
    blocks_total: int
    blocks_mine: int
    blocks_skipped: int = 0
    blocks_written: int = 0
    images: int = 0
    model_images: int = 0
    seconds: float = 0.0
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (sample_id, reason)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RunResult:
    store: str
    device: str
    precision: str
    batch_size: int
    workers: int
    shard: tuple[int, int] | None
    units: list[UnitResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images(self) -> int:
        return sum(u.images for u in self.units)

    @property
    def invalid(self) -> list[tuple[str, str, str, str]]:
        """(dataset, transform, sample_id, reason) of every bad image met by this run."""
        return [(u.dataset, u.transform, s, r) for u in self.units for s, r in u.invalid]

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [f"{'dataset':<18} {'transform':<11} {'blocks':>13} {'images':>9} {'seconds':>9} {'img/s':>9} {'invalid':>7}"]
        for u in self.units:
            blocks = f"{u.blocks_written}+{u.blocks_skipped}/{u.blocks_mine}"
            lines.append(f"{u.dataset:<18} {u.transform:<11} {blocks:>13} {u.images:>9} {u.seconds:>9.1f} "
                         f"{u.images_per_s:>9.1f} {len(u.invalid):>7}")
        shard = f", shard {self.shard[0]}/{self.shard[1]}" if self.shard else ""
        lines.append(f"total: {self.images} images in {self.seconds:.1f}s = {self.images_per_s:.1f} img/s "
                     f"(each through {max((len(u.models) for u in self.units), default=0)} models; "
                     f"{self.device}, {self.precision}, batch {self.batch_size}, {self.workers} workers{shard}); "
                     f"{len(self.invalid)} invalid")
        for d, t, s, r in self.invalid[:20]:
            lines.append(f"  invalid: {d}/{t}: {s}: {r}")
        if len(self.invalid) > 20:
            lines.append(f"  ... and {len(self.invalid) - 20} more (extract status STORE lists them all)")
        lines.append("blocks: written+skipped(done before)/this process's share")
        return "\n".join(lines)


# ---------------------------------------------------------------- the runner
@dataclass
class _Run:
    spec: Any
    model: Any
    writer: schemas.RunWriter
    pre: Any
    pending: set


def run(opts: RunOptions) -> RunResult:
    """Extract every selected (dataset, transform, model) into ``opts.store``; returns what was done."""
    import torch

    device = opts.device or default_device()
    if is_cuda(device) and not torch.cuda.is_available():
        raise ExtractError(f"--device {device}: CUDA is not available on this machine")
    precision = opts.precision or default_precision(device)
    if precision not in ("bf16", "fp32"):
        raise ExtractError(f"--precision {precision!r}: expected bf16 or fp32")
    if precision == "bf16" and not is_cuda(device):
        log.info("precision bf16 asked on %s: bf16 autocast is for CUDA; running fp32", device)
        precision = "fp32"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("precision bf16 asked but %s does not support bf16; running fp32", device)
        precision = "fp32"
    batch_size = int(opts.batch_size or default_batch_size(device))
    if batch_size < 1:
        raise ExtractError(f"--batch-size {batch_size}: must be >= 1")
    workers = default_workers(device) if opts.workers is None else int(opts.workers)
    shard = opts.shard if opts.shard is not None else shard_from_env()
    if opts.overwrite and shard is not None and shard[1] > 1:
        raise ExtractError("--overwrite with --shard: one process would delete what another one writes; "
                           "replace the runs with one unsharded --overwrite run (or delete them), then shard")
    sel = resolve_selection(suite=opts.suite, models=opts.models, datasets=opts.datasets,
                            transforms=opts.transforms, data_root=opts.data_root, manifest=opts.manifest)
    unknown = set(parse_weights(opts.weights)) - {s.id for s in sel.models}
    if unknown:
        raise ExtractError(f"--weights for {sorted(unknown)}: not among the run's models {[s.id for s in sel.models]}")
    if is_cuda(device):
        if ":" in device:
            torch.cuda.set_device(torch.device(device))  # pinned memory, cudnn and friends follow it
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True

    t_start = time.perf_counter()
    root = _open_root(opts.store)
    cache = ModelCache(opts, device, precision, root)
    result = RunResult(str(opts.store), device, precision, batch_size, workers, shard)
    # Every dataset is found and listed before any work: a missing one fails in seconds, not hours in.
    readers = {d: open_reader(d, sel.data_root, sel.entry(d), sel.manifest.path) for d in sel.datasets}
    for spec in sel.models:
        cache.weights_id(spec)
    groups: dict[str, Any] = {}
    for unit in sel.units:
        if unit.dataset not in groups:
            groups[unit.dataset] = ensure_dataset_group(root, unit.dataset, readers[unit.dataset],
                                                        sel.entry(unit.dataset))
        u = _run_unit(unit, sel, root, groups[unit.dataset], readers[unit.dataset], cache,
                      opts=opts, device=device, precision=precision, batch_size=batch_size,
                      workers=workers, shard=shard)
        result.units.append(u)
    result.seconds = time.perf_counter() - t_start
    log.debug("summary\n%s", result.summary())
    return result


def _run_attrs(spec, t, model, *, wid, precision, fp_inputs, device) -> dict:
    describe = _jsonable(model.describe()) if hasattr(model, "describe") else {}
    describe.pop("software", None)
    if isinstance(describe.get("logit_kind"), dict):  # "given" vs "computed" head: not part of the run
        describe["logit_kind"].get("zero-shot", {}).pop("head_source", None)
    attrs = {
        "model": _jsonable(spec.to_dict()),
        "weights_id": wid,
        "weights": "random" if wid.startswith("random-init") else wid,
        "preprocess": _jsonable(resolved_preprocess(spec, t)),
        "precision": precision,
        "precision_detail": ("backbone bf16 autocast; classifier head and CLIP logit product fp32"
                             if precision == "bf16" else "fp32 throughout"),
        "logit_kind": "classifier",
        "device_type": "cuda" if is_cuda(device) else str(device).split(":")[0],
        "software": software_versions(),
        "loaded": describe,
        "fingerprint_inputs": fp_inputs,
    }
    if spec.kind == "zero-shot":
        attrs["logit_kind"] = "zero-shot"
        attrs["zero_shot"] = {"class_names": "imagenet-1k", "templates": "openai-imagenet-80",
                              "logit_scale": HEAD_LOGIT_SCALE, "head": f"{L.HEADS_GROUP}/{spec.id}"}
    return attrs


def _run_unit(unit: Unit, sel: Selection, root, dgroup, reader, cache: ModelCache, *, opts: RunOptions,
              device: str, precision: str, batch_size: int, workers: int, shard) -> UnitResult:
    import torch
    from torch.utils.data import DataLoader

    from extract.transforms import output_size

    t = unit.transform
    n = int(dgroup.attrs["n_samples"])
    digest = dgroup.attrs["sample_digest"]
    entry = sel.entry(unit.dataset)
    logits_dtype = entry.get("logits_dtype", "float32")
    blocks = L.Blocks(n)
    mine = shard_blocks(len(blocks), shard)
    res = UnitResult(unit.dataset, t.id, [s.id for s in sel.models], len(blocks), len(mine))

    runs: list[_Run] = []
    for spec in sel.models:
        wid = cache.weights_id(spec)
        fp_inputs = run_fingerprint_inputs(spec, t, wid=wid, precision=precision, digest=digest)
        if not opts.overwrite and _done(root, f"{unit.dataset}/{t.id}/{spec.id}", fp_inputs, mine):
            continue  # nothing to do for this model: do not even load it
        model = cache.get(spec, output_size(t, spec.preprocess))
        if model.precision != precision:  # the model knows best what it runs in
            fp_inputs = run_fingerprint_inputs(spec, t, wid=wid, precision=model.precision, digest=digest)
        writer = _open_run(root, unit.dataset, t, spec, num_classes=int(model.num_classes),
                           feature_dim=int(model.feature_dim) or None,
                           attrs=_run_attrs(spec, t, model, wid=wid, precision=model.precision,
                                            fp_inputs=fp_inputs, device=device),
                           logits_dtype=logits_dtype, overwrite=opts.overwrite)
        pending = set(writer.pending_blocks()) & set(mine)
        if pending:
            runs.append(_Run(spec, model, writer, spec.preprocess, pending))
    todo = sorted(set().union(*(r.pending for r in runs))) if runs else []
    res.blocks_skipped = len(mine) - len(todo)
    if not todo:
        log.info("%s/%s: all %d blocks of this shard done for every model; skipped", unit.dataset, t.id, len(mine))
        return res

    # One decoded image feeds every model; one resized tensor per preprocessing geometry.
    geometries: dict[Any, Any] = {}
    for r in runs:
        geometries.setdefault(geometry_key(r.pre), r.pre)
    norms = {r.spec.id: Normalizer(r.pre, device) for r in runs}
    data = BlockImages(reader, t, geometries)
    batches = block_batches(blocks, todo, batch_size)
    cuda = is_cuda(device)
    loader = DataLoader(
        data, batch_sampler=batches, num_workers=workers, collate_fn=collate, pin_memory=cuda,
        worker_init_fn=_worker_init if workers else None, prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
    sample_ids = None  # read lazily: only to name bad images

    def name_of(index: int) -> str:
        nonlocal sample_ids
        if sample_ids is None:
            sample_ids = np.asarray(dgroup[L.SAMPLE_ID][...]).astype(object)
        return str(sample_ids[index])

    n_images = sum(blocks.slice(b).stop - blocks.slice(b).start for b in todo)
    bar = _progress(opts, total=n_images, desc=f"{unit.dataset}/{t.id}")
    writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="block-writer")
    in_flight: list[Future] = []
    state: dict[int, dict] = {}
    t0 = time.perf_counter()
    log.info("%s/%s: %d blocks (%d images) x %d models, %d geometries, batch %d, %d workers on %s",
             unit.dataset, t.id, len(todo), n_images, len(runs), len(geometries), batch_size, workers, device)
    try:
        with torch.inference_mode():
            for batch in loader:
                idx = batch["index"]
                b = int(idx[0]) // blocks.rows
                st = state.get(b)
                if st is None:
                    rows = blocks.slice(b)
                    st = state[b] = {"t0": time.perf_counter(), "seen": 0, "rows": rows.stop - rows.start,
                                     "ok": [], "out": {r.spec.id: ([], []) for r in runs if b in r.pending}}
                bad = np.flatnonzero(~batch["ok"])
                for j in bad:
                    sid, reason = name_of(int(idx[j])), batch["errors"][j]
                    if opts.strict:
                        raise BadImageError(
                            f"{unit.dataset}: bad image {_sample_path(reader, int(idx[j]), sid)} (sample {sid}): "
                            f"{reason}; --strict stops here (without it the row is stored valid=false and the run "
                            f"goes on)")
                    res.invalid.append((sid, reason))
                    log.warning("%s/%s: invalid image %s (stored valid=false): %s", unit.dataset, t.id, sid, reason)
                st["ok"].append(batch["ok"])
                on_device = {k: v.to(device, non_blocking=True) for k, v in batch["images"].items()}
                for r in runs:
                    if r.spec.id not in st["out"]:
                        continue
                    x = norms[r.spec.id](on_device[geometry_key(r.pre)])
                    logits, feats = r.model.forward(x)
                    st["out"][r.spec.id][0].append(logits.detach().float())
                    st["out"][r.spec.id][1].append(None if feats is None else feats.detach().float())
                    res.model_images += len(idx)
                st["seen"] += len(idx)
                res.images += len(idx)
                if bar is not None:
                    bar.update(len(idx))
                    if res.invalid:
                        bar.set_postfix(invalid=len(res.invalid), refresh=False)
                if st["seen"] == st["rows"]:
                    del state[b]
                    in_flight.append(_flush_block(writer_pool, b, st, runs))
                    res.blocks_written += 1
                    # Bound the blocks in flight (memory; what a crash can lose).
                    while len(in_flight) > 2:
                        in_flight.pop(0).result()
        for f in in_flight:
            f.result()
    finally:
        writer_pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
    res.seconds = time.perf_counter() - t0
    log.info("%s/%s: %d images in %.1fs (%.1f img/s through %d models), %d invalid", unit.dataset, t.id,
             res.images, res.seconds, res.images_per_s, len(runs), len(res.invalid))
    return res


def _done(root, path: str, fp_inputs: dict, blocks: Sequence[int]) -> bool:
    """The run at ``path`` has these inputs and all of ``blocks`` done."""
    node = zarr_get(root, path)
    if node is None or node.attrs.get("fingerprint") != schemas.fingerprint(fp_inputs) or L.BLOCK_DONE not in node:
        return False
    flags = np.asarray(node[L.BLOCK_DONE][...], dtype=bool)
    return bool(flags[list(blocks)].all()) if len(blocks) else True


def _flush_block(pool: ThreadPoolExecutor, b: int, st: dict, runs: list[_Run]) -> Future:
    """Move a finished block to the host and hand it to the writer thread."""
    import torch

    valid = np.concatenate(st["ok"])
    seconds = time.perf_counter() - st["t0"]
    jobs = []
    for r in runs:
        if r.spec.id not in st["out"]:
            continue
        logits_list, feats_list = st["out"][r.spec.id]
        logits = torch.cat(logits_list).cpu().numpy()
        feats = None if feats_list[0] is None else torch.cat(feats_list).cpu().numpy()
        jobs.append((r.writer, logits, feats))

    def write():
        for writer, logits, feats in jobs:
            writer.write_block(b, logits, feats, valid, seconds=seconds)

    return pool.submit(write)


def _progress(opts: RunOptions, *, total: int, desc: str):
    show = opts.progress if opts.progress is not None else sys.stderr.isatty()
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, dynamic_ncols=True, smoothing=0.05)


# ---------------------------------------------------------------- plan and status
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


def store_status(store) -> list[RunStatus]:
    """Every run of a store: blocks done / total and the sample ids of its invalid rows (in done blocks)."""
    import zarr

    try:
        root = zarr.open_group(str(store), mode="r")
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
    import zarr

    sel = resolve_selection(suite=opts.suite, models=opts.models, datasets=opts.datasets,
                            transforms=opts.transforms, data_root=opts.data_root, manifest=opts.manifest,
                            need_data_root=False)
    device = opts.device or default_device()
    precision = opts.precision or default_precision(device)
    if not is_cuda(device):
        precision = "fp32"  # as run() does
    shard = opts.shard if opts.shard is not None else shard_from_env()
    weights = parse_weights(opts.weights)
    try:
        root = zarr.open_group(str(opts.store), mode="r")
    except Exception:  # noqa: BLE001 - no store yet
        root = None
    samples: dict[str, tuple[int | None, str | None, str]] = {}
    for d in sel.datasets:
        entry = sel.entry(d)
        if sel.data_root is None:
            samples[d] = (int(entry["expected_samples"]), None, "expected (no --data-root)")
            continue
        try:
            reader = open_reader(d, sel.data_root, entry, sel.manifest.path)
            table = reader_samples(reader)
            digest = schemas.sample_digest(np.asarray(table.sample_id).astype(str), np.asarray(table.label),
                                           _columns(table))
            samples[d] = (len(table.sample_id), digest, "found")
        except ExtractError as e:
            samples[d] = (int(entry["expected_samples"]), None, f"missing: {e}")
    rows = []
    for unit in sel.units:
        n, digest, found = samples[unit.dataset]
        blocks = L.Blocks(n) if n else None
        mine = len(shard_blocks(len(blocks), shard)) if blocks else 0
        for spec in sel.models:
            classes, fdim = _model_dims(spec)
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


def _model_dims(spec) -> tuple[int, int | None]:
    """(classes, feature dim) without loading weights (timm on the meta device; open_clip's config)."""
    try:
        if spec.family == "timm":
            import torch
            import timm

            with torch.device("meta"):
                m = timm.create_model(spec.hub_name, pretrained=False)
            return int(m.num_classes), int(m.num_features if not hasattr(m, "head_hidden_size")
                                           else m.head_hidden_size)
        if spec.family == "open_clip":
            import open_clip

            from extract.models import register_demo_configs

            register_demo_configs()
            return 1000, int(open_clip.get_model_config(spec.arch)["embed_dim"])
    except Exception:  # noqa: BLE001 - an estimate only
        pass
    return 1000, None
