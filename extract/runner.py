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

Only an image's own bytes make an invalid row: data that does not decode (truncated, empty, corrupt, not
an image) becomes a ``valid=false`` row (logits NaN) with its reason in ``invalid_reason``, counted and
named in the log and in the returned ``RunResult``; ``strict`` stops at the first one instead. A file
that stays unreadable after the pipeline's retries, or any other exception (a bug), stops the run with a
``SampleError`` naming the file, before its block is flagged done. Decoder warnings (damaged JPEG data,
huge images) leave the row valid and are counted and named. ``extract.status.store_status`` lists the
invalid rows with their reasons; ``retry_invalid`` redoes the blocks that hold them.
Options live in ``extract.options``; selection and fingerprints in ``extract.inventory``.

Before the store is touched: the device exists, ``store`` is not a file, every dataset is found, listed and
holds its manifest's ``expected_samples`` (fewer only with ``allow_partial``, and the dataset group is then
marked ``partial``), every weights file is read.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

import schemas
from schemas import integrity, jsonable
from schemas import layout as L

from extract.errors import ExtractError
from extract.inventory import (
    Selection,
    Unit,
    reader_samples,
    resolve_selection,
    run_fingerprint_inputs,
    sample_columns,
)
from extract.datasets import partial_sample_count
from extract.model_cache import ModelCache
from extract.options import (
    RunOptions,
    check_store_target,
    decode_fingerprint,
    default_batch_size,
    default_device,
    default_precision,
    default_workers,
    device_type,
    is_cuda,
    parse_device,
    parse_weights,
    shard_blocks,
    shard_from_env,
)
from extract.pipeline import BlockImages, block_batches, collate, loader as make_loader
from extract.pipeline import geometries as geometries_of
from extract.spec.models import CLIP_LOGIT_SCALE
from extract.spec.transforms import output_size, resolved_preprocess

log = logging.getLogger("extract")


class BadImageError(ExtractError):
    """``strict``: an image could not be decoded."""


class SampleError(ExtractError):
    """The run stopped at a sample for a reason that is not the image's own: its file stayed unreadable
    after the retries, or the pipeline raised (a bug). Nothing of the sample's block was flagged done."""


# ---------------------------------------------------------------- the store
@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """The store's refusals (another sample list, another fingerprint, not a store) as ExtractErrors."""
    try:
        yield
    except schemas.StoreError as e:
        raise ExtractError(str(e)) from None


def open_store(store, storage_options=None):
    """The store's root group for writing (created with its attributes when absent); ``storage_options`` go to
    fsspec for a URL."""
    with store_errors():
        return schemas.open_root(str(store), storage_options=storage_options)


def dataset_attrs(reader, entry: dict, partial: dict | None = None) -> dict:
    from schemas.label_spaces import label_space_names

    attrs = {"manifest": jsonable(entry), "label_space": entry["label_space"]}
    if partial:
        attrs["partial"] = partial
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


def ensure_dataset_group(root, dataset: str, reader, entry: dict, partial: dict | None = None, *,
                         repair: bool = False, repaired: list | None = None):
    """The dataset group with its sample list (the same list for every process and every rerun).

    ``repair``: a stored sample list that no longer gives its digest is rewritten from the reader's list
    (what was wrong goes to ``repaired``).
    """
    table = reader_samples(reader)
    with store_errors():
        group = schemas.ensure_dataset(root, dataset, sample_id=np.asarray(table.sample_id),
                                       label=np.asarray(table.label), columns=sample_columns(table),
                                       attrs=dataset_attrs(reader, entry, partial))
        if repair:
            damage = schemas.repair_sample_list(group, sample_id=np.asarray(table.sample_id),
                                                label=np.asarray(table.label), columns=sample_columns(table))
            if damage:
                log.warning("%s: the sample list was damaged (%s); rewritten from the dataset", dataset,
                            "; ".join(str(d) for d in damage[:3]))
                if repaired is not None:
                    repaired.append((dataset, "sample list", []))
    return group


def _marked_partial(store, datasets, storage_options=None) -> set[str]:
    """The datasets among ``datasets`` that ``store`` already marks partial (none when there is no store yet)."""
    from extract.status import open_store_read_only

    root = open_store_read_only(store, missing_ok=True, storage_options=storage_options)
    return {d for d in datasets if root is not None and d in root and root[d].attrs.get("partial")}


def _sample_path(reader, sample_id: str) -> str:
    root = getattr(reader, "root", None)
    return str(Path(root) / sample_id) if root is not None else sample_id


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
    warned: list[tuple[str, str]] = field(default_factory=list)   # (sample_id, decoder warning): still valid
    decoded_on_device: int = 0        # --decode gpu: images decoded and resized on the device (the rest: Pillow)
    retried: int | None = None        # retry_invalid: rows stored invalid that were redone (None: not asked)
    still_invalid: int | None = None  # ... of which are invalid again
    input_wait_seconds: float = 0.0   # the loop waited this long for the DataLoader's next batch
    steady_images: int = 0            # images after the first block was written (workers' start, cuDNN's
    steady_seconds: float = 0.0       # autotuning and --compile are behind it) and the time they took

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_s(self) -> float:
        """Throughput after the first block: what a long run approaches."""
        return self.steady_images / self.steady_seconds if self.steady_seconds > 0 else 0.0


@dataclass
class RunResult:
    store: str
    device: str
    precision: str
    batch_size: int
    workers: int
    shard: tuple[int, int] | None
    decode: str = "pil"
    units: list[UnitResult] = field(default_factory=list)
    seconds: float = 0.0
    repaired: list[tuple[str, str, list[int]]] = field(default_factory=list)  # (path, what, blocks) --repair reset

    @property
    def images(self) -> int:
        return sum(u.images for u in self.units)

    @property
    def invalid(self) -> list[tuple[str, str, str, str]]:
        """(dataset, transform, sample_id, reason) of every bad image met by this run."""
        return [(u.dataset, u.transform, s, r) for u in self.units for s, r in u.invalid]

    @property
    def warned(self) -> list[tuple[str, str, str, str]]:
        """(dataset, transform, sample_id, warning) of every decoder warning met by this run."""
        return [(u.dataset, u.transform, s, w) for u in self.units for s, w in u.warned]

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
                     f"{self.device}, {self.precision}, batch {self.batch_size}, {self.workers} workers{shard}, "
                     f"decode {self.decode}); {len(self.invalid)} invalid")
        if self.decode == "gpu":
            lines.append(f"--decode gpu: {sum(u.decoded_on_device for u in self.units)} of {self.images} images "
                         f"decoded and resized on the device, the others by Pillow")
        for path, what, blocks in self.repaired:
            lines.append(f"  repaired: {path}: {what}" + (f" blocks {blocks}" if blocks else ""))
        for d, t, s, r in self.invalid[:20]:
            lines.append(f"  invalid: {d}/{t}: {s}: {r}")
        if len(self.invalid) > 20:
            lines.append(f"  ... and {len(self.invalid) - 20} more (extract status STORE lists them all)")
        if self.warned:
            lines.append(f"{len(self.warned)} decoder warnings (rows stored valid; check these images):")
            lines += [f"  warning: {d}/{t}: {s}: {w}" for d, t, s, w in self.warned[:20]]
            if len(self.warned) > 20:
                lines.append(f"  ... and {len(self.warned) - 20} more (in the log and --json)")
        retried = [u for u in self.units if u.retried is not None]
        if retried:
            lines.append(f"--retry-invalid: {sum(u.retried for u in retried)} rows stored invalid were retried, "
                         f"{sum(u.still_invalid or 0 for u in retried)} are still invalid")
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

    check_store_target(opts.store)
    device = parse_device(opts.device) if opts.device else default_device()
    _check_device_present(device)
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
    if workers < 0:
        raise ExtractError(f"--workers {workers}: must be >= 0 (0 reads images in the main process)")
    decode_fp = decode_fingerprint(opts.decode, device)  # an unknown --decode is refused here
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
    if opts.decode == "gpu":
        from extract.gpu_decode import check_device_decode

        check_device_decode(device, [s.preprocess for s in sel.models])

    t_start = time.perf_counter()
    # Every dataset is found and every weights file read before the store is touched: a missing one fails
    # in seconds, not hours in, and leaves no half-made store behind.
    readers = {d: sel.reader(d) for d in sel.datasets}
    # --repair rewrites what the store already holds: a dataset it marks partial needs no --allow-partial again.
    marked = _marked_partial(opts.store, readers, opts.storage_options) if opts.repair else set()
    partial = {d: partial_sample_count(d, len(reader_samples(r)), sel.entry(d), getattr(r, "root", sel.data_root),
                                       allow_partial=opts.allow_partial or d in marked) for d, r in readers.items()}
    cache = ModelCache(opts, device, precision, None)
    for spec in sel.models:
        cache.weights_id(spec)
        cache.fetch_hub_weights(spec)
    cache.root = root = open_store(opts.store, opts.storage_options)
    result = RunResult(str(opts.store), device, precision, batch_size, workers, shard, opts.decode)
    groups: dict[str, Any] = {}
    with store_errors(), schemas.metadata_errors(root, opts.store):
        for unit in sel.units:
            if unit.dataset not in groups:
                groups[unit.dataset] = ensure_dataset_group(root, unit.dataset, readers[unit.dataset],
                                                            sel.entry(unit.dataset), partial[unit.dataset],
                                                            repair=opts.repair, repaired=result.repaired)
            u = _run_unit(unit, sel, root, groups[unit.dataset], readers[unit.dataset], cache,
                          opts=opts, device=device, precision=precision, batch_size=batch_size,
                          workers=workers, shard=shard, repaired=result.repaired, decode_fp=decode_fp)
            result.units.append(u)
        schemas.refresh_metadata_copy(root)
    result.seconds = time.perf_counter() - t_start
    log.debug("summary\n%s", result.summary())
    return result


def _check_device_present(device: str) -> None:
    """The device exists on this machine (checked before the store is touched)."""
    import torch

    if is_cuda(device):
        if not torch.cuda.is_available():
            raise ExtractError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        index, count = torch.device(device).index, torch.cuda.device_count()
        if index is not None and index >= count:
            raise ExtractError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ExtractError("--device mps: Apple's MPS backend is not available on this machine; use --device cpu")


def _run_attrs(spec, t, model, *, wid, precision, fp_inputs, device, decode: str, source: dict | None = None) -> dict:
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
        "device_type": device_type(device),
        "decode": _decode_attrs(decode, device),
        "software": software_versions(),
        "loaded": describe,
        "fingerprint_inputs": fp_inputs,
    }
    if source:
        attrs["weights_source"] = jsonable(source)  # the hub repo, file and snapshot revision the weights came from
    if spec.kind == "zero-shot":
        attrs["logit_kind"] = "zero-shot"
        attrs["zero_shot"] = {"class_names": "imagenet-1k", "templates": "openai-imagenet-80",
                              "logit_scale": CLIP_LOGIT_SCALE, "head": f"{L.HEADS_GROUP}/{spec.id}"}
    return attrs


def _decode_attrs(decode: str, device: str) -> dict:
    """How the run's pixels were made (``--decode``), for the run's attrs."""
    if decode == "pil":
        return {"path": "pil", "detail": "Pillow decode, resize and crop in the DataLoader workers (the reference)"}
    from extract.resample import pillow_pass_order

    kind = device_type(device)
    return {"path": "gpu", "device_type": kind,
            "detail": (f"JPEG: torchvision.io.decode_jpeg on {kind}"
                       f"{' (nvJPEG)' if kind == 'cuda' else ' (libjpeg-turbo)'}; resize and crop: Pillow's "
                       f"integer taps in torch (pass order: {pillow_pass_order()}); other formats, CMYK/Adobe/MPO "
                       f"JPEGs, damaged JPEG data and what the device fails to decode: Pillow")}


def _run_unit(unit: Unit, sel: Selection, root, dgroup, reader, cache: ModelCache, *, opts: RunOptions,
              device: str, precision: str, batch_size: int, workers: int, shard, repaired: list,
              decode_fp: str | None = None) -> UnitResult:
    import torch

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
    retry_rows: set[int] = set()
    for spec in sel.models:
        wid = cache.weights_id(spec)
        fp_inputs = run_fingerprint_inputs(spec, t, wid=wid, precision=precision, digest=digest, decode=decode_fp)
        path = f"{unit.dataset}/{t.id}/{spec.id}"
        damaged = _damaged_blocks(root, path, n, mine) if opts.repair else []
        if (not damaged and not opts.overwrite and _done(root, path, fp_inputs, mine)
                and not (opts.retry_invalid and _invalid_blocks(root[path], blocks, mine))):
            continue  # nothing to do for this model: do not even load it
        model = cache.get(spec, output_size(t, spec.preprocess))
        if model.precision != precision:  # the model knows best what it runs in
            fp_inputs = run_fingerprint_inputs(spec, t, wid=wid, precision=model.precision, digest=digest,
                                               decode=decode_fp)
        with store_errors():
            writer = schemas.open_run(
                root, unit.dataset, t.id, spec.id, num_classes=int(model.num_classes),
                feature_dim=int(model.feature_dim) or None,
                attrs=_run_attrs(spec, t, model, wid=wid, precision=model.precision, fp_inputs=fp_inputs,
                                 device=device, decode=opts.decode, source=cache.sources.get(spec.id)),
                transform_attrs={"transform": jsonable(t.to_dict())},
                logits_dtype=logits_dtype, overwrite=opts.overwrite)
        if damaged and not opts.overwrite:  # the fingerprint matched (open_run): its damaged blocks are redone
            writer.reopen_blocks(damaged)
            repaired.append((path, "missing or damaged", damaged))
            log.warning("%s: blocks %s missing or damaged; re-extracting them (--repair)", path, damaged)
        if opts.retry_invalid:
            retry_rows |= _reopen_invalid_blocks(writer, blocks, mine)
        pending = set(writer.pending_blocks()) & set(mine)
        if pending:
            runs.append(_Run(spec, model, writer, spec.preprocess, pending))
    todo = sorted(set().union(*(r.pending for r in runs))) if runs else []
    res.blocks_skipped = len(mine) - len(todo)
    if opts.retry_invalid:
        res.retried, res.still_invalid = len(retry_rows), 0
    if not todo:
        log.info("%s/%s: all %d blocks of this shard done for every model; skipped", unit.dataset, t.id, len(mine))
        return res

    # One decoded image feeds every model; one resized tensor per preprocessing geometry.
    geometries = geometries_of(r.pre for r in runs)
    data, collate_fn, feed = input_pipeline(reader, t, geometries, opts.decode, device)
    batches = block_batches(blocks, todo, batch_size)
    loader = make_loader(data, batches, collate_fn, workers, pin_memory=is_cuda(device))
    sample_ids = None  # read lazily: only to name bad images

    invalid_rows: set[int] = set()

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
    t_steady, images_steady = t0, 0
    log.info("%s/%s: %d blocks (%d images) x %d models, %d geometries, batch %d, %d workers on %s",
             unit.dataset, t.id, len(todo), n_images, len(runs), len(geometries), batch_size, workers, device)
    try:
        with torch.inference_mode():
            for batch in _timed(loader, res):
                idx = batch["index"]
                b = int(idx[0]) // blocks.rows
                st = state.get(b)
                if st is None:
                    rows = blocks.slice(b)
                    st = state[b] = {"t0": time.perf_counter(), "seen": 0, "rows": rows.stop - rows.start,
                                     "ok": [], "reasons": [],
                                     "out": {r.spec.id: ([], []) for r in runs if b in r.pending}}
                # --decode gpu decodes here, where a JPEG the device fails on can still stop or invalidate its row
                on_device = (feed(batch) if feed is not None
                             else {k: v.to(device, non_blocking=True) for k, v in batch["images"].items()})
                for i, message in batch["stop"]:
                    raise _stopped(unit.dataset, t.id, reader, name_of(int(i)), b, message)
                for j, notes in enumerate(batch["warnings"]):
                    for note in notes:
                        sid = name_of(int(idx[j]))
                        res.warned.append((sid, note))
                        log.warning("%s/%s: decoder warning for %s (row stored valid): %s", unit.dataset, t.id,
                                    sid, note)
                bad = np.flatnonzero(~batch["ok"])
                for j in bad:
                    sid, reason = name_of(int(idx[j])), batch["errors"][j]
                    if opts.strict:
                        raise BadImageError(
                            f"{unit.dataset}: bad image {_sample_path(reader, sid)} (sample {sid}): "
                            f"{reason}; --strict stops here (without it the row is stored valid=false and the run "
                            f"goes on)")
                    res.invalid.append((sid, reason))
                    invalid_rows.add(int(idx[j]))
                    log.warning("%s/%s: invalid image %s (stored valid=false): %s", unit.dataset, t.id, sid, reason)
                st["ok"].append(batch["ok"])
                st["reasons"] += batch["errors"]
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
                    if res.blocks_written == 1:
                        t_steady, images_steady = time.perf_counter(), res.images
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
    if res.blocks_written > 1:
        res.steady_images, res.steady_seconds = res.images - images_steady, t0 + res.seconds - t_steady
    res.decoded_on_device = feed.on_device if feed is not None else 0
    if opts.retry_invalid:
        res.still_invalid = len(retry_rows & invalid_rows)
    steady = f", {res.steady_images_per_s:.1f} after the first block" if res.steady_seconds else ""
    log.info("%s/%s: %d images in %.1fs (%.1f img/s through %d models%s; %.1fs waiting for decoded images), "
             "%d invalid", unit.dataset, t.id, res.images, res.seconds, res.images_per_s, len(runs), steady,
             res.input_wait_seconds, len(res.invalid))
    return res


def input_pipeline(reader, transform, geometries: dict, decode: str, device: str):
    """(dataset, collate function, feed) of a decode path: ``--decode pil`` resizes in the workers and has no
    feed; ``--decode gpu`` sends JPEG bytes, which ``feed(batch)`` decodes and resizes on ``device``."""
    if decode == "gpu":
        from extract.gpu_decode import DeviceDecoder, EncodedImages, collate_encoded

        data = EncodedImages(reader, transform, geometries)
        return data, collate_encoded, DeviceDecoder(data, device)
    return BlockImages(reader, transform, geometries), collate, None


def _timed(loader, res: UnitResult):
    """The loader's batches; the time spent waiting for each is added to ``res.input_wait_seconds``."""
    it = iter(loader)
    while True:
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        res.input_wait_seconds += time.perf_counter() - t
        yield batch


def _stopped(dataset: str, transform: str, reader, sid: str, block: int, message: str) -> SampleError:
    """The SampleError for a sample that stops the run (its traceback, if any, goes to the debug log)."""
    first, _, detail = message.partition("\n")
    if detail:
        log.debug("%s/%s: %s: traceback in the pipeline:\n%s", dataset, transform, sid, detail)
    return SampleError(
        f"{dataset}/{transform}: stopped at {_sample_path(reader, sid)} (sample {sid}): {first}. This is not a "
        f"fault of the image's data, so no row was stored invalid; block {block} was not flagged done and the "
        f"blocks finished before it are kept. Fix the cause (the file, the file system or the code"
        f"{'; -v shows the traceback' if detail else ''}) and rerun: the run resumes at this block")


def _invalid_blocks(group, blocks: L.Blocks, mine: Sequence[int]) -> dict[int, np.ndarray]:
    """Done blocks of ``mine`` that hold rows stored invalid: block -> the rows' indices."""
    done = np.asarray(group[L.BLOCK_DONE][...], dtype=bool)
    if not done[list(mine)].any():
        return {}
    valid = np.asarray(group[L.VALID][...], dtype=bool)
    out = {}
    for b in mine:
        rows = blocks.slice(b)
        bad = np.flatnonzero(~valid[rows]) + rows.start
        if done[b] and bad.size:
            out[b] = bad
    return out


def _reopen_invalid_blocks(writer: schemas.RunWriter, blocks: L.Blocks, mine: Sequence[int]) -> set[int]:
    """retry_invalid: clear the done flag of the blocks holding rows stored invalid (the pending blocks are
    then redone whole, as after a crash); returns the invalid rows."""
    found = _invalid_blocks(writer.group, blocks, mine)
    if found:
        writer.reopen_blocks(sorted(found))
        log.info("%s: --retry-invalid: %d rows stored invalid in %d blocks; redoing those blocks", writer.path,
                 sum(len(v) for v in found.values()), len(found))
    return {int(i) for rows in found.values() for i in rows}


def _done(root, path: str, fp_inputs: dict, blocks: Sequence[int]) -> bool:
    """The run at ``path`` has these inputs and all of ``blocks`` done."""
    try:
        node = root[path]
    except KeyError:
        return False
    if node.attrs.get("fingerprint") != schemas.fingerprint(fp_inputs) or L.BLOCK_DONE not in node:
        return False
    flags, _ = integrity.done_flags(node)
    return bool(flags[list(blocks)].all()) if len(blocks) else True


def _damaged_blocks(root, path: str, n: int, blocks: Sequence[int]) -> list[int]:
    """``--repair``: the done blocks of ``blocks`` whose chunks are missing or do not match their checksums."""
    try:
        node = root[path]
    except KeyError:
        return []
    if L.BLOCK_DONE not in node:
        return []
    return integrity.check_run(node, n, blocks=blocks).blocks


def _flush_block(pool: ThreadPoolExecutor, b: int, st: dict, runs: list[_Run]) -> Future:
    """Move a finished block to the host and hand it to the writer thread."""
    import torch

    valid = np.concatenate(st["ok"])
    reasons = list(st["reasons"])
    seconds = time.perf_counter() - st["t0"]
    jobs = []
    on_cuda = False
    for r in runs:
        if r.spec.id not in st["out"]:
            continue
        logits_list, feats_list = st["out"][r.spec.id]
        on_cuda = logits_list[0].device.type == "cuda"
        jobs.append((r.writer, _to_host(torch.cat(logits_list)),
                     None if feats_list[0] is None else _to_host(torch.cat(feats_list))))
    # On CUDA the copies are queued behind the block's last batch: the loop goes on feeding the device
    # while the writer thread waits for them.
    done = None
    if on_cuda:
        done = torch.cuda.Event()
        done.record()

    def write():
        if done is not None:
            done.synchronize()
        for writer, logits, feats in jobs:
            writer.write_block(b, logits.numpy(), None if feats is None else feats.numpy(), valid, seconds=seconds,
                               invalid_reason=reasons)

    return pool.submit(write)


def _to_host(t):
    """A device tensor's copy in host memory: on CUDA pinned and queued (not yet there: see ``_flush_block``)."""
    import torch

    if t.device.type != "cuda":
        return t.cpu()
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


def _progress(opts: RunOptions, *, total: int, desc: str):
    show = opts.progress if opts.progress is not None else sys.stderr.isatty()
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, dynamic_ncols=True, smoothing=0.05)


