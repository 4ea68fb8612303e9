"""``extract plan``: what a run would do, one line per dataset x transform with its models grouped, each missing
dataset explained once, and the totals (images, model-images, store size, estimated time).

``plan`` reads the data root and the store (never writes); ``format_plan`` is the text. Selection and
fingerprints are ``extract.inventory``. No torch at import (``extract.hub`` reads the output sizes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import schemas
from schemas import integrity
from schemas import layout as L

from extract.errors import ExtractError
from extract.inventory import (
    Selection,
    reader_samples,
    resolve_selection,
    run_fingerprint_inputs,
    sample_columns,
    weights_id,
)
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
from extract.status import open_store_read_only

# The stated throughput when the store has measured none: `extract run` with the paper's four base models fed
# together by Pillow-decoding workers on one H200 with 16 cores (random weights, bf16 backbone, batch 250, 15
# workers), 1,271 img/s after the first block (tests/bench/gpu_check.py; docs/benchmarks.md), i.e. about 5,080
# model-images per second. A figure of that machine, not a measurement of this one.
STATED_MODEL_IMAGES_PER_S = 5084.0
STATED_SOURCE = "stated: the paper's four base models on one H200 (16 cores), Pillow decoding (1,271 img/s)"


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

    @property
    def model_images_todo(self) -> int:
        """Images this process still has to put through this model (its pending share of the blocks)."""
        if not self.images or not self.blocks_total or self.state.startswith(("refused", "fingerprint")):
            return 0
        pending = (self.blocks_mine or 0) - (self.blocks_done or 0)
        return self.images * max(pending, 0) // self.blocks_total


@dataclass
class DatasetPlan:
    samples: int           # found, else the manifest's expected_samples
    found: str             # "found" | "expected" (no --data-root) | "missing"
    message: str = ""      # missing: what is missing, where, and where to get it (the reader's error)


@dataclass
class Plan:
    rows: list[PlanRow]
    datasets: dict[str, DatasetPlan]
    models: list[str]
    measured: tuple[int, float] | None = None  # (images, seconds) of the store's done blocks of these units
    shard: tuple[int, int] | None = None


def plan(opts: RunOptions) -> Plan:
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
    found = {d: _samples_found(sel, d) for d in sel.datasets}
    dims = {spec.id: output_dims(spec) for spec in sel.models}
    rows = []
    measured_images, measured_s = 0, 0.0
    for unit in sel.units:
        info, digest = found[unit.dataset]
        n = info.samples
        blocks = L.Blocks(n) if n else None
        mine = len(shard_blocks(len(blocks), shard)) if blocks else 0
        timed = False
        for spec in sel.models:
            nbytes = None  # unknown unless both the sample count and the output sizes are
            if n and dims[spec.id] is not None:
                classes, fdim = dims[spec.id]
                nbytes = n * (classes * 4 + (fdim or 0) * 2 + 1) + len(blocks) * 5
            done, state = None, "new" if info.found != "missing" else "new (dataset missing)"
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
                    if not timed and flags is not None and flags.any() and L.BLOCK_SECONDS in g:
                        # one model's blocks per unit: a block's seconds are those of all the models fed with it
                        timed = True
                        seconds = np.asarray(g[L.BLOCK_SECONDS][...], dtype=np.float64)
                        ok = flags & np.isfinite(seconds)
                        measured_images += sum(blocks.slice(int(b)).stop - blocks.slice(int(b)).start
                                               for b in np.flatnonzero(ok))
                        measured_s += float(seconds[ok].sum())
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
    return Plan(rows, {d: info for d, (info, _) in found.items()}, [s.id for s in sel.models],
                (measured_images, measured_s) if measured_s > 0 else None, shard)


def _samples_found(sel: Selection, dataset: str) -> tuple[DatasetPlan, str | None]:
    """(what the plan knows of the dataset, its sample digest or None)."""
    entry = sel.entry(dataset)
    if sel.data_root is None:
        return DatasetPlan(int(entry["expected_samples"]), "expected"), None
    try:
        table = reader_samples(sel.reader(dataset))
    except ExtractError as e:
        layouts = [entry["layout"], *entry["layout"].get("alternatives", [])]
        paths = [sel.data_root / str(lay["path"]) for lay in layouts]
        message = (f"not at {' nor at '.join(map(str, paths))}; get it from: {entry.get('source', '?')}"
                   if not any(p.exists() for p in paths) else str(e))  # there, but incomplete: the reader says what
        return DatasetPlan(int(entry["expected_samples"]), "missing", message), None
    digest = schemas.sample_digest(np.asarray(table.sample_id).astype(str), np.asarray(table.label),
                                   sample_columns(table))
    return DatasetPlan(len(table.sample_id), "found"), digest


# ---------------------------------------------------------------- text
def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _grouped_state(rows: list[PlanRow]) -> str:
    """One state for the unit when its models agree, else each state with its models."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(r.state, []).append(r.model)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{', '.join(models)}: {state}" for state, models in groups.items())


def format_plan(p: Plan, throughput: float | None = None) -> str:
    """The plan as text: the models once, a line per dataset x transform, the missing datasets once, totals.

    The estimated time is the model-images still to do over a rate: ``throughput`` (images per second
    through all the run's models) when given, else measured from the store's done blocks of these units,
    else ``STATED_MODEL_IMAGES_PER_S``.
    """
    by_unit: dict[tuple[str, str], list[PlanRow]] = {}
    for r in p.rows:
        by_unit.setdefault((r.dataset, r.transform), []).append(r)
    n_models = len(p.models)
    lines = [f"models ({n_models}): {', '.join(p.models)}"]
    w_ds = max([len("dataset")] + [len(d) for d, _ in by_unit])
    lines.append(f"{'dataset':<{w_ds}}  {'transform':<11} {'images':>9} {'blocks':>7} {'store':>10}  state")
    for (d, t), rows in by_unit.items():
        r0 = rows[0]
        sizes = [r.bytes for r in rows]
        size = fmt_bytes(sum(sizes)) if None not in sizes else "?"
        blocks = r0.blocks_mine if r0.blocks_mine is not None else "?"
        lines.append(f"{d:<{w_ds}}  {t:<11} {r0.images or 0:>9,} {blocks:>7} {size:>10}  "
                     f"{_grouped_state(rows)}")
    missing = {d: info for d, info in p.datasets.items() if info.found == "missing"}
    if missing:
        lines.append(f"{len(missing)} of {len(p.datasets)} datasets missing (sizes above are the manifest's "
                     f"expected_samples; the run refuses until they are there or left out with --datasets):")
        lines += [f"  {d}: {info.message}" for d, info in missing.items()]
    if any(info.found == "expected" for info in p.datasets.values()):
        lines.append("no --data-root: image counts are the manifest's expected_samples")
    images = sum(by_unit[u][0].images or 0 for u in by_unit)
    model_images = sum(r.images or 0 for r in p.rows)
    total = sum(r.bytes or 0 for r in p.rows)
    todo_bytes = sum((r.bytes or 0) * max((r.blocks_mine or 0) - (r.blocks_done or 0), 0)
                     // max(r.blocks_total or 1, 1) for r in p.rows)
    unknown = sum(r.bytes is None for r in p.rows)
    todo = sum(r.model_images_todo for r in p.rows)
    if throughput:
        rate, source = throughput * n_models, f"--throughput {throughput:g} img/s"
    elif p.measured:
        img, sec = p.measured
        rate, source = img / sec * n_models, f"measured: {img:,} images in {fmt_duration(sec)} in this store"
    else:
        rate, source = STATED_MODEL_IMAGES_PER_S, f"{STATED_SOURCE}; --throughput IMG_PER_S for yours"
    shard = f" (shard {p.shard[0]}/{p.shard[1]})" if p.shard else ""
    lines.append(
        f"total: {len(by_unit)} dataset x transform units x {n_models} models = {len(p.rows)} runs; "
        f"{images:,} images to decode, {model_images:,} model-images; store ~{fmt_bytes(total)} uncompressed "
        f"(logits float32 + features float16)" + (f", sizes of {unknown} runs unknown (not counted)" if unknown else ""))
    lines.append(
        f"to do by this process{shard}: {todo:,} model-images, ~{fmt_bytes(todo_bytes)} to write; "
        f"estimated {fmt_duration(todo / rate)} at {rate / n_models:,.0f} img/s through the {n_models} models "
        f"({source})")
    return "\n".join(lines)


__all__ = ["PlanRow", "DatasetPlan", "Plan", "plan", "format_plan", "fmt_bytes", "fmt_duration",
           "STATED_MODEL_IMAGES_PER_S"]
