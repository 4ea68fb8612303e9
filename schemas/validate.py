"""Check a store against the contract, and its done blocks against what was written; report every violation
with its path."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import zarr

from . import integrity
from .remote import reraise_network
from . import layout as L
from .door import (
    Violation,
    check_logit_shape,
    check_samples,
    check_transform,
    check_logit_kind,
    nonfinite_problem,
    nonfinite_valid_rows,
)
from .store import StoreError, metadata_errors, open_read_only


def _expect_array(group: zarr.Group, name: str, *, dims: tuple, dtypes: tuple, n: int | None,
                  out: list[Violation]) -> zarr.Array | None:
    path = f"{group.path}/{name}".lstrip("/")
    node = group.get(name)
    if node is None:
        out.append(Violation(path, "missing array"))
        return None
    if not isinstance(node, zarr.Array):
        out.append(Violation(path, "expected an array, found a group"))
        return None
    got_dims = tuple(node.metadata.dimension_names or ())
    if got_dims[: len(dims)] != dims or len(got_dims) != node.ndim:
        out.append(Violation(path, f"dimension_names {got_dims}, expected {dims}"))
    kind = str(node.dtype)
    if not any(kind.startswith(d) or d in kind.lower() for d in dtypes):
        out.append(Violation(path, f"dtype {kind}, expected {' or '.join(dtypes)}"))
    if n is not None and node.shape[0] != n:
        out.append(Violation(path, f"{node.shape[0]} rows, expected {n} (the dataset's sample count)"))
    return node


def _missing_attrs(group: zarr.Group, keys: tuple, out: list[Violation]) -> None:
    missing = [k for k in keys if k not in group.attrs]
    if missing:
        out.append(Violation(group.path or "/", f"missing attributes {missing}"))


def validate_run(group: zarr.Group, n: int, out: list[Violation], entry: Mapping | None = None, *,
                 quick: bool = False, store: str = "STORE") -> None:
    _missing_attrs(group, L.RUN_ATTRS, out)
    before = len(out)
    logits = _expect_array(group, L.LOGITS, dims=(L.SAMPLE_DIM, L.CLASS_DIM), dtypes=L.LOGIT_DTYPES, n=n, out=out)
    if L.FEATURES in group:
        _expect_array(group, L.FEATURES, dims=(L.SAMPLE_DIM, L.FEATURE_DIM), dtypes=("float16", "float32"), n=n, out=out)
    valid = _expect_array(group, L.VALID, dims=(L.SAMPLE_DIM,), dtypes=("bool",), n=n, out=out)
    n_blocks = len(L.Blocks(n))
    done = _expect_array(group, L.BLOCK_DONE, dims=(L.BLOCK_DIM,), dtypes=("bool",), n=n_blocks, out=out)
    if logits is not None and logits.ndim == 2 and logits.chunks[0] != min(L.CHUNK_ROWS, n):
        out.append(Violation(f"{group.path}/{L.LOGITS}", f"row chunks {logits.chunks[0]}, expected {min(L.CHUNK_ROWS, n)}"))
    logits_ok = logits is not None and logits.ndim == 2 and logits.shape[0] == n
    if logits_ok:
        out.extend(check_logit_shape(group.path, entry, logits.shape, logits.dtype, n))
    if done is None or valid is None or done.shape != (n_blocks,) or valid.shape != (n,):
        return
    intact = len(out) == before
    if intact:  # the arrays are as the contract says: check that they hold what was written
        intact = _check_blocks(group, n, out, quick=quick, store=store)
    done_flags, _ = integrity.done_flags(group)
    kind = group.attrs.get("logit_kind")
    out.extend(check_logit_kind(group.path, kind))
    if logits_ok and intact and not quick:  # reads every done block's logits: not in a presence-only check
        out.extend(_row_problems(group, logits, valid, done_flags, n, kind))
    if not done_flags.all():
        out.append(Violation(group.path, f"incomplete: {int(done_flags.sum())} of {n_blocks} blocks done", "warning"))
    elif not any(v.severity == "error" and f"{v.path}/".startswith(f"{group.path}/") for v in out):
        try:
            any_valid = bool(np.asarray(valid[:]).any())
        except Exception as error:  # noqa: BLE001 - --quick reads no chunk: one that does not decode shows here
            reraise_network(error, valid.store)
            out.append(Violation(f"{group.path}/{L.VALID}", f"unreadable ({type(error).__name__}: {error}); "
                                 f"{integrity.run_repair_hint(store, group.path)}"))
            return
        if not any_valid:
            out.append(Violation(f"{group.path}/{L.VALID}", "every sample is invalid: nothing to analyse", "warning"))


def _check_blocks(group: zarr.Group, n: int, out: list[Violation], *, quick: bool, store: str) -> bool:
    """Add what integrity finds; True when no done block is missing or damaged."""
    check = integrity.check_run(group, n, quick=quick)
    hint = integrity.run_repair_hint(store, group.path)
    for path, line in integrity.describe(check.damage):
        out.append(Violation(path, f"{line}; {hint}"))
    if check.torn:
        out.append(Violation(f"{group.path}/{L.BLOCK_DONE}", f"the done flags of blocks {check.torn} cannot be read "
                             f"(a write cut short): they count as not done; rerun to write them again", "warning"))
    if not check.has_checksums:
        out.append(Violation(group.path, "no checksums recorded (written before checksums): chunk presence "
                                         "checked only", "warning"))
    elif check.unchecked:
        out.append(Violation(f"{group.path}/{L.BLOCK_CHECKSUM}", f"no checksum recorded for done blocks "
                             f"{_blocks_text(check.unchecked)} (written before checksums): chunk presence checked "
                             f"only", "warning"))
    return not check.damage


def _blocks_text(blocks: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, blocks[:limit]))
    return shown + (f" and {len(blocks) - limit} more" if len(blocks) > limit else "")


def _row_problems(group: zarr.Group, logits: zarr.Array, valid: zarr.Array, done: np.ndarray, n: int,
                  kind: Any) -> list[Violation]:
    """Rows marked valid with NaN/inf logits, and valid rows not of the form their logit kind says (the first
    block with any), read one done block at a time (bounded memory)."""
    bad, wrong_form = [], []
    blocks = L.Blocks(n)
    for b in np.flatnonzero(done):
        rows = blocks.slice(int(b))
        block, ok = np.asarray(logits[rows]), np.asarray(valid[rows], dtype=bool)
        bad.append(nonfinite_valid_rows(block, ok) + rows.start)
        if not wrong_form:
            wrong_form = check_logit_kind(group.path, kind, block, ok, offset=rows.start)
    return nonfinite_problem(group.path, np.concatenate(bad) if bad else np.empty(0, np.int64), n) + wrong_form


def _validate_samples(name: str, dataset: zarr.Group, entry: Mapping | None, n: int,
                      sid: zarr.Array | None, out: list[Violation]) -> None:
    """The stored sample table through the same door as the data offered to write_run."""
    label = dataset.get(L.LABEL)
    arrays = {c: a for c, a in dataset.arrays() if c not in (L.SAMPLE_ID, L.LABEL)}
    if sid is None or sid.shape != (n,) or not isinstance(label, zarr.Array) or label.shape != (n,):
        return  # reported above as a structural problem
    columns = {c: np.asarray(a[:]) for c, a in arrays.items()}
    out.extend(check_samples(name, entry, np.asarray(sid[:]), np.asarray(label[:]), columns))


def _validate_dataset(name: str, dataset: zarr.Group, out: list[Violation], *, quick: bool, store: str) -> None:
    _missing_attrs(dataset, L.DATASET_ATTRS, out)
    sid = _expect_array(dataset, L.SAMPLE_ID, dims=(L.SAMPLE_DIM,), dtypes=("str", "string", "<U", "object"), n=None, out=out)
    n = int(dataset.attrs.get("n_samples", sid.shape[0] if sid is not None else -1))
    if sid is not None and sid.shape[0] != n:
        out.append(Violation(f"{name}/{L.SAMPLE_ID}", f"{sid.shape[0]} rows, attrs say n_samples={n}"))
    before = len(out)
    _expect_array(dataset, L.LABEL, dims=(L.SAMPLE_DIM,), dtypes=("int",), n=n, out=out)
    entry = dataset.attrs.get("manifest")
    if len(out) == before and sid is not None:
        # A lost chunk reads as fill values: what the table holds is checked only when every chunk is there.
        present = not integrity.check_dataset(dataset, quick=True)
        hint = integrity.dataset_repair_hint(store, name)
        for path, line in integrity.describe(integrity.check_dataset(dataset, quick=quick)):
            out.append(Violation(path, f"{line}; {hint}"))
        if present:
            _validate_samples(name, dataset, entry, n, sid, out)
    for tname, transform in dataset.groups():
        _missing_attrs(transform, L.TRANSFORM_ATTRS, out)
        out.extend(check_transform(name, entry, tname))
        for _, run in transform.groups():
            validate_run(run, n, out, entry, quick=quick, store=store)


def validate(store: Any, *, quick: bool = False, storage_options: Mapping[str, Any] | None = None) -> list[Violation]:
    """Every violation of the contract in ``store`` (a path, fsspec URL or zarr Store); empty when valid.

    Every done block is checked: its chunks exist and decode to the values whose checksums were recorded
    (``quick``: only that its chunks exist); every sample list is checked against its digest.
    ``storage_options`` go to fsspec for a URL; a network fault raises ``remote.StoreUnreachableError``.
    """
    out: list[Violation] = []
    try:
        root = open_read_only(store, storage_options=storage_options)
    except StoreError as e:
        return [Violation(str(store), str(e))]
    attrs = dict(root.attrs)
    missing = [k for k in L.ROOT_ATTRS if k not in attrs]
    if missing:
        return [Violation("/", f"missing root attributes {missing}: not a {L.SCHEMA} store")]
    if attrs["schema"] != L.SCHEMA or attrs["schema_version"] != L.SCHEMA_VERSION:
        return [Violation("/", f"schema {attrs['schema']!r} version {attrs['schema_version']!r}, "
                               f"expected {L.SCHEMA!r} version {L.SCHEMA_VERSION}")]
    try:
        with metadata_errors(root, store):
            for name, dataset in root.groups():
                if not name.startswith("_"):
                    _validate_dataset(name, dataset, out, quick=quick, store=str(store))
    except StoreError as e:
        out.append(Violation(str(store), str(e)))
    return out
