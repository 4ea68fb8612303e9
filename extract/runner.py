"""The extraction run loop: every model of a run over every (dataset, transform), block by block, into one store.

Work unit = (dataset, transform, block). For each dataset and transform, a torch DataLoader (``workers``
processes) reads and decodes every image of the pending blocks ONCE and makes one uint8 tensor per
preprocessing geometry (supervised Resize 256 bilinear, CLIP Resize 224 bicubic, ...); every model of the
run is fed from those tensors, normalised on the device with its own mean/std. Each finished block is
written whole for every model that still needed it, then flagged done (``schemas.RunWriter``); a crash
loses at most the blocks in flight and a rerun skips the done ones, model by model.

``shard=(i, n)`` (or torchrun's RANK / WORLD_SIZE) gives this process the blocks ``b % n == i``; every
process prepares the same groups and arrays through ``schemas`` (idempotent and safe to run at once), so
several processes on several machines can fill one store.

Bad images (truncated, empty, not an image, unreadable) become ``valid=false`` rows (logits NaN), are
counted and named in the log and in the returned ``RunResult``; ``strict`` stops at the first one instead.
The store keeps them as ``valid == false`` rows of done blocks: ``extract.status.store_status`` lists
them by sample id. Options live in ``extract.options``; selection and fingerprints in ``extract.inventory``.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

import schemas
from schemas import jsonable
from schemas import layout as L

from extract.errors import ExtractError
from extract.heads_store import head_attrs, read_head, write_head
from extract.inventory import (
    Selection,
    Unit,
    reader_samples,
    resolve_selection,
    run_fingerprint_inputs,
    sample_columns,
    spec_pretrained,
    weights_id,
)
from extract.options import (
    RunOptions,
    default_batch_size,
    default_device,
    default_precision,
    default_workers,
    is_cuda,
    parse_weights,
    shard_blocks,
    shard_from_env,
)
from extract.spec.models import CLIP_LOGIT_SCALE
from extract.spec.transforms import output_size, resolved_preprocess

log = logging.getLogger("extract")


class BadImageError(ExtractError):
    """``strict``: an image could not be read or decoded."""


# ---------------------------------------------------------------- the store
@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """The store's refusals (another sample list, another fingerprint, not a store) as ExtractErrors."""
    try:
        yield
    except schemas.StoreError as e:
        raise ExtractError(str(e)) from None


def open_store(store):
    """The store's root group for writing (created with its attributes when absent)."""
    with store_errors():
        return schemas.open_root(str(store))


def dataset_attrs(reader, entry: dict) -> dict:
    from schemas.manifest import label_space_names

    attrs = {"manifest": jsonable(entry), "label_space": entry["label_space"]}
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


def ensure_dataset_group(root, dataset: str, reader, entry: dict):
    """The dataset group with its sample list (the same list for every process and every rerun)."""
    table = reader_samples(reader)
    with store_errors():
        return schemas.ensure_dataset(root, dataset, sample_id=np.asarray(table.sample_id),
                                      label=np.asarray(table.label), columns=sample_columns(table),
                                      attrs=dataset_attrs(reader, entry))


def _sample_path(reader, sample_id: str) -> str:
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
        except (FileNotFoundError, ValueError) as e:
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

        self.reader = reader
        self.transform = transform
        self.geometries = dict(geometries)  # key -> a Preprocess with that geometry
        self.sizes = {k: int(output_size(transform, pre)) for k, pre in self.geometries.items()}

    def __getitem__(self, index: int):
        import torch

        from extract.imaging import apply_transform
        from extract.readers import decode_image
        from extract.tensors import to_uint8_tensor

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
    root = open_store(opts.store)
    cache = ModelCache(opts, device, precision, root)
    result = RunResult(str(opts.store), device, precision, batch_size, workers, shard)
    # Every dataset is found and listed before any work: a missing one fails in seconds, not hours in.
    readers = {d: sel.open_reader(d) for d in sel.datasets}
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
    from extract.models import software_versions

    describe = jsonable(model.describe()) if hasattr(model, "describe") else {}
    describe.pop("software", None)
    if isinstance(describe.get("logit_kind"), dict):  # "given" vs "computed" head: not part of the run
        describe["logit_kind"].get("zero-shot", {}).pop("head_source", None)
    attrs = {
        "model": jsonable(spec.to_dict()),
        "weights_id": wid,
        "weights": "random" if wid.startswith("random-init") else wid,
        "preprocess": jsonable(resolved_preprocess(spec, t)),
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
                              "logit_scale": CLIP_LOGIT_SCALE, "head": f"{L.HEADS_GROUP}/{spec.id}"}
    return attrs


def _run_unit(unit: Unit, sel: Selection, root, dgroup, reader, cache: ModelCache, *, opts: RunOptions,
              device: str, precision: str, batch_size: int, workers: int, shard) -> UnitResult:
    import torch
    from torch.utils.data import DataLoader

    from extract.tensors import normalize

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
        with store_errors():
            writer = schemas.open_run(
                root, unit.dataset, t.id, spec.id, num_classes=int(model.num_classes),
                feature_dim=int(model.feature_dim) or None,
                attrs=_run_attrs(spec, t, model, wid=wid, precision=model.precision, fp_inputs=fp_inputs,
                                 device=device),
                transform_attrs={"transform": jsonable(t.to_dict())},
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
        geometries.setdefault(r.pre.geometry_key(), r.pre)
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
                            f"{unit.dataset}: bad image {_sample_path(reader, sid)} (sample {sid}): "
                            f"{reason}; --strict stops here (without it the row is stored valid=false and the run "
                            f"goes on)")
                    res.invalid.append((sid, reason))
                    log.warning("%s/%s: invalid image %s (stored valid=false): %s", unit.dataset, t.id, sid, reason)
                st["ok"].append(batch["ok"])
                on_device = {k: v.to(device, non_blocking=True) for k, v in batch["images"].items()}
                for r in runs:
                    if r.spec.id not in st["out"]:
                        continue
                    x = normalize(on_device[r.pre.geometry_key()], r.pre)
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
    try:
        node = root[path]
    except KeyError:
        return False
    if node.attrs.get("fingerprint") != schemas.fingerprint(fp_inputs) or L.BLOCK_DONE not in node:
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


