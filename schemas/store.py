"""Writing stores that obey the contract.

Writers create groups and arrays with deterministic metadata (so two processes preparing the same
run write identical bytes), then fill whole blocks and flag each block done only after every array
of that block is written. Nothing is resized, appended or re-attributed concurrently.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.errors import ContainsArrayError, ContainsGroupError, GroupNotFoundError

from . import integrity, remote, snapshot
from . import layout as L
from .errors import StoreError
from .door import check_run, check_samples, refuse
from .fingerprint import diff, fingerprint, fingerprint_inputs, sample_digest

log = logging.getLogger("schemas")


class FingerprintMismatch(StoreError):
    """A run exists under the same path but was computed from different inputs."""


def created_with() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("beyond-imagenet")
    except PackageNotFoundError:
        own = "source"
    return {"beyond-imagenet": own, "zarr": zarr.__version__, "numpy": np.__version__}


class StoreMissing(StoreError):
    """No store exists at the given location."""


def _target(store: Any, storage_options: Mapping[str, Any] | None, *, read_only: bool) -> Any:
    """What zarr opens: a URL becomes an FsspecStore with the storage options (and their defaults); a path or a
    zarr Store is passed as it is (storage options apply to URLs only)."""
    if remote.is_url(store):
        return remote.zarr_store(str(store), storage_options, read_only=read_only)
    return store


def open_read_only(store: Any, *, storage_options: Mapping[str, Any] | None = None) -> zarr.Group:
    """The store's root group, read-only (a path, an fsspec URL or a zarr Store).

    Raises StoreMissing when nothing is there and StoreError naming the cause otherwise (damaged
    ``zarr.json``, no permission, not a Zarr v3 group): no failure to open passes for "no store yet".
    A URL's network fault (no connection, refused credentials, no bucket) is a
    ``remote.StoreUnreachableError`` naming the URL. ``storage_options`` go to fsspec for a URL.
    """
    target = _target(store, storage_options, read_only=True)
    # A URL is opened as v3 only: zarr would otherwise probe v2 metadata too, in concurrent requests.
    kwargs = {"zarr_format": 3} if target is not store else {}
    try:
        # Object storage: one listing and the metadata copy, not a request per node (schemas.snapshot).
        view = snapshot.SnapshotStore(target) if target is not store else target
        return zarr.open_group(view, mode="r", **kwargs)
    except (FileNotFoundError, GroupNotFoundError) as e:  # zarr's "no group here" errors
        remote.reraise_network(e, str(store))
        if target is not store:
            remote.check_bucket(target, str(store))
        raise StoreMissing(f"{store}: not a Zarr v3 store (nothing there: no zarr.json)") from e
    except json.JSONDecodeError as e:
        raise _damaged_root(store, e) from None
    except Exception as e:  # noqa: BLE001 - whatever the cause, it is named
        remote.reraise_network(e, str(store))
        raise StoreError(f"{store}: not a Zarr v3 store ({type(e).__name__}: {e})") from None


def _damaged_root(store: Any, e: ValueError) -> StoreError:
    return StoreError(f"{str(store).rstrip('/')}/zarr.json: damaged metadata, not JSON ({e}); "
                      f"restore the file or re-extract into a new store")


def damaged_metadata(root: zarr.Group) -> list[str]:
    """Keys of the store's ``zarr.json`` files that do not parse as JSON (one listing, metadata files only)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    async def scan() -> list[str]:
        bad = []
        async for key in root.store.list():
            if key == "zarr.json" or key.endswith("/zarr.json"):
                data = await root.store.get(key, prototype=default_buffer_prototype())
                try:
                    json.loads(data.to_bytes() if data is not None else b"")
                except ValueError:  # JSONDecodeError and UnicodeDecodeError
                    bad.append(key)
        return sorted(bad)

    return sync(scan())


@contextlib.contextmanager
def metadata_errors(root: zarr.Group, url: Any):
    """A ``zarr.json`` below the root that is not JSON (zarr says only "Expecting value ...") as one StoreError
    naming every such file."""
    try:
        yield
    except json.JSONDecodeError as e:
        where = ", ".join(f"{str(url).rstrip('/')}/{key}" for key in damaged_metadata(root)) or f"{url}: a zarr.json"
        raise StoreError(f"{where}: damaged metadata, not JSON ({e}); restore the file, or delete that group and "
                         f"rerun extract run to write it again") from None


def open_root(store: Any, *, create: bool = True, storage_options: Mapping[str, Any] | None = None) -> zarr.Group:
    """Open a store for writing (a path, an fsspec URL or a zarr Store); create it if absent.

    ``storage_options`` go to fsspec for a URL (endpoint, credentials, ...); see ``schemas.remote``.
    """
    root_attrs = {"schema": L.SCHEMA, "schema_version": L.SCHEMA_VERSION, "created_with": created_with()}
    target = _target(store, storage_options, read_only=False)
    try:
        # Attributes given at creation land in the group's one metadata write: concurrent creators write
        # identical bytes, and no reader ever sees a root without them.
        root = zarr.open_group(target, mode="r+" if not create else "a", zarr_format=3, attributes=root_attrs)
    except ContainsGroupError:  # another process created it between zarr's existence check and its write
        root = zarr.open_group(target, mode="r+", zarr_format=3)
    except FileNotFoundError as e:
        remote.reraise_network(e, str(store))
        raise StoreError(f"{store}: no store here (expected a Zarr v3 group)") from e
    except json.JSONDecodeError as e:
        raise _damaged_root(store, e) from None
    except Exception as e:  # noqa: BLE001 - a network fault is named with the URL; anything else as it is
        remote.reraise_network(e, str(store))
        raise
    attrs = dict(root.attrs)
    if "schema" not in attrs and not any(True for _ in root.members()):
        root.update_attributes(root_attrs)  # an empty group made by other means: adopt it
    else:
        check_root_attrs(attrs, str(store))
    return root


def check_root_attrs(attrs: Mapping, where: str) -> None:
    if attrs.get("schema") != L.SCHEMA:
        raise StoreError(f"{where}: not a {L.SCHEMA} store (root attribute 'schema' is {attrs.get('schema')!r})")
    if attrs.get("schema_version") != L.SCHEMA_VERSION:
        raise StoreError(
            f"{where}: store schema version {attrs.get('schema_version')!r}, this software reads version "
            f"{L.SCHEMA_VERSION}; re-extract or use a matching release"
        )


def _create(group: zarr.Group, name: str, data: np.ndarray | None = None, **kw) -> zarr.Array:
    """Create an array unless an identical one exists (concurrent writers prepare the same metadata)."""
    try:
        arr = group.create_array(name, compressors=ZstdCodec(level=L.ZSTD_LEVEL),
                                 chunk_key_encoding=L.CHUNK_KEY_ENCODING, **kw)
    except ContainsArrayError:
        arr = group[name]
        if tuple(arr.shape) != tuple(kw["shape"]):
            raise StoreError(f"{arr.path}: exists with shape {arr.shape}, expected {kw['shape']}") from None
    if data is not None:
        arr[...] = data
    return arr


def _group(parent: zarr.Group, name: str, attributes: Mapping[str, Any] | None = None) -> zarr.Group:
    try:
        return parent.create_group(name, attributes=dict(attributes or {}))
    except (ContainsGroupError, ContainsArrayError):
        node = parent[name]
        if not isinstance(node, zarr.Group):
            raise StoreError(f"{node.path}: expected a group, found an array") from None
        return node


def read_attrs(group: zarr.Group, path: str | None = None) -> dict:
    """A fresh snapshot of a group's attributes, read from the store in one go."""
    return dict(zarr.open_group(group.store, path=group.path if path is None else path, mode="r").attrs)


def _settle_attrs(group: zarr.Group, attrs: Mapping[str, Any], tries: int = 8) -> zarr.Group:
    """Write ``attrs`` (one metadata write) and read them back until they stick; returns the fresh group.

    Two processes preparing the same run may both create a group; a late creation rewrites the group's
    metadata without attributes. Every writer's attributes are identical, so rewriting them is safe.
    """
    wanted = jsonable(dict(attrs))
    for attempt in range(tries):
        current = read_attrs(group)
        if all(current.get(k) == v for k, v in wanted.items()):
            return zarr.open_group(group.store, path=group.path, mode="r+")
        group.update_attributes({**current, **wanted})
        time.sleep(0.05 * attempt)
    raise StoreError(f"{group.path}: could not settle the group's attributes (another writer keeps changing them)")


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from the store's JSON attributes (anything else as its ``str``)."""
    return json.loads(json.dumps(obj, default=str))


def _column_array(values: np.ndarray) -> tuple[np.ndarray, Any]:
    values = np.asarray(values)
    if values.dtype.kind in "OU":
        return values.astype(str).astype(object), str
    return values, values.dtype


def ensure_dataset(
    root: zarr.Group,
    dataset: str,
    *,
    sample_id: np.ndarray,
    label: np.ndarray,
    columns: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any],
) -> zarr.Group:
    """Create the dataset group with its sample list, or check that the existing one is the same list.

    The sample table is checked against ``attrs["manifest"]`` (schemas.door) before anything is written.
    """
    refuse(check_samples(dataset, attrs.get("manifest"), sample_id, label, columns), _where(root), StoreError)
    return _dataset_group(root, dataset, sample_id=sample_id, label=label, columns=columns, attrs=attrs)


def _dataset_group(root: zarr.Group, dataset: str, *, sample_id: np.ndarray, label: np.ndarray,
                   columns: Mapping[str, np.ndarray] | None, attrs: Mapping[str, Any]) -> zarr.Group:
    """ensure_dataset once the sample table has passed the door."""
    sample_id = np.asarray(sample_id).astype(str)
    label = np.asarray(label)
    n = len(sample_id)
    columns = dict(columns or {})
    digest = sample_digest(sample_id, label, columns)
    existing = root.get(dataset)
    stored = read_attrs(existing).get("sample_digest") if isinstance(existing, zarr.Group) else None
    if stored is not None:
        if stored != digest:
            raise StoreError(
                f"{dataset}: the store holds a different sample list ({_list_changes(existing, sample_id, label)}); "
                f"every run of a dataset must use the dataset's sample list: restore the data as it was, "
                f"or extract into a new store"
            )
        return zarr.open_group(root.store, path=dataset, mode="r+")
    group = _group(root, dataset)
    _create(group, L.SAMPLE_ID, sample_id.astype(object), shape=(n,), dtype=str,
            dimension_names=(L.SAMPLE_DIM,), **L.row_chunking(n))
    _create(group, L.LABEL, label.astype(np.int32), shape=(n,), dtype="int32", fill_value=-1,
            dimension_names=(L.SAMPLE_DIM,), **L.row_chunking(n))
    for name, values in columns.items():
        data, dtype = _column_array(values)
        dims = (L.SAMPLE_DIM,) + tuple(f"{name}_{i}" for i in range(1, data.ndim))
        chunking = L.row_chunking(n, data.shape[1] if data.ndim == 2 else None)
        _create(group, name, data, shape=data.shape, dtype=dtype, dimension_names=dims, **chunking)
    # The digest goes last: its presence marks the sample list complete.
    return _settle_attrs(group, {**attrs, "n_samples": n, "sample_digest": digest})


def _list_changes(group: zarr.Group, sample_id: np.ndarray, label: np.ndarray, examples: int = 5) -> str:
    """What differs between the stored sample list and the offered one: ids added, removed, relabelled."""
    try:
        old_ids = np.asarray(group[L.SAMPLE_ID][...]).astype(object).astype(str)
        old_label = np.asarray(group[L.LABEL][...])
    except (KeyError, ValueError, OSError) as e:  # a damaged group: the digests are all there is to compare
        return f"the stored ids could not be read to compare ({type(e).__name__}: {e})"
    old = dict(zip(old_ids.tolist(), old_label.tolist()))
    new = dict(zip(sample_id.tolist(), np.asarray(label).tolist()))
    added = [s for s in new if s not in old]
    removed = [s for s in old if s not in new]
    relabelled = [f"{s} {old[s]}->{new[s]}" for s in new if s in old and old[s] != new[s]]
    parts = [f"{len(items)} {what}: {', '.join(items[:examples])}{', ...' if len(items) > examples else ''}"
             for what, items in (("added", added), ("removed", removed), ("relabelled", relabelled)) if items]
    if parts:
        return f"{len(old)} stored, {len(new)} offered; " + "; ".join(parts)
    if old_ids.tolist() != sample_id.tolist():
        return "the same ids and labels in another order"
    return "the same ids and labels; the per-sample columns differ"


def repair_sample_list(
    group: zarr.Group,
    *,
    sample_id: np.ndarray,
    label: np.ndarray,
    columns: Mapping[str, np.ndarray] | None = None,
) -> list[integrity.Damage]:
    """Rewrite a dataset's sample list when its stored arrays no longer give its digest; returns what was wrong.

    The list offered must be the one the digest was written for (``ensure_dataset`` checked it): the arrays
    are rewritten with the very values, so the store ends bit-identical to an undamaged one.
    """
    damage = integrity.check_dataset(group)
    if not damage:
        return []
    stored = read_attrs(group).get("sample_digest")
    offered = sample_digest(np.asarray(sample_id).astype(str), label, columns)
    if offered != stored:
        raise StoreError(f"{group.path}: the sample list offered (digest {offered}) is not the one the store "
                         f"recorded ({stored}); cannot rewrite it")
    group[L.SAMPLE_ID][...] = np.asarray(sample_id).astype(str).astype(object)
    group[L.LABEL][...] = np.asarray(label).astype(np.int32)
    for name, values in (columns or {}).items():
        group[name][...] = _column_array(values)[0]
    return damage


class RunWriter:
    """Writes one (dataset, transform, model) run block by block."""

    def __init__(self, group: zarr.Group, n_samples: int):
        self.group = group
        self.blocks = L.Blocks(n_samples)
        self._reasons: bool | None = None

    @property
    def path(self) -> str:
        return self.group.path

    def _has_reasons(self) -> bool:
        """Runs created before ``invalid_reason`` existed have no such array (and are written without it)."""
        if self._reasons is None:
            self._reasons = L.INVALID_REASON in self.group
        return self._reasons

    def done_blocks(self) -> np.ndarray:
        flags, torn = integrity.done_flags(self.group)
        if torn:
            log.warning("%s/%s: the done flags of blocks %s cannot be read (a write cut short); they count as not "
                        "done and are written again", self.path, L.BLOCK_DONE, torn)
        return flags

    def pending_blocks(self) -> list[int]:
        return [int(b) for b in np.flatnonzero(~self.done_blocks())]

    def write_block(
        self,
        block: int,
        logits: np.ndarray,
        features: np.ndarray | None = None,
        valid: np.ndarray | None = None,
        seconds: float | None = None,
        invalid_reason: Sequence[str | None] | None = None,
    ) -> None:
        """Write one block whole, then flag it done. ``invalid_reason``: why each invalid row is invalid
        (ignored for valid rows); without it an invalid row's reason says how validity was decided."""
        rows = self.blocks.slice(block)
        n = rows.stop - rows.start
        logits = np.asarray(logits)
        expected = (n, self.group[L.LOGITS].shape[1])
        if logits.shape != expected:
            raise StoreError(f"{self.path}/{L.LOGITS}: block {block} expects shape {expected}, got {logits.shape}")
        default_reason = "marked invalid by the writer (no reason given)"
        if valid is None:
            valid = np.isfinite(logits).all(axis=1)
            default_reason = "logits not finite"
        valid = np.asarray(valid, dtype=bool)
        values = {L.LOGITS: np.where(valid[:, None], logits, np.nan)}
        if L.FEATURES in self.group:
            if features is None:
                raise StoreError(f"{self.path}/{L.FEATURES}: the run has features; block {block} came without them")
            feats = np.asarray(features, dtype=np.float16)
            if feats.shape != (n, self.group[L.FEATURES].shape[1]):
                raise StoreError(f"{self.path}/{L.FEATURES}: block {block} expects {(n, self.group[L.FEATURES].shape[1])}, got {feats.shape}")
            values[L.FEATURES] = np.where(valid[:, None], feats, np.nan)
        values[L.VALID] = valid
        sums = {}
        for name, data in values.items():
            arr = self.group[name]
            # The checksum is of exactly what is stored: the values cast to the array's dtype.
            data = np.ascontiguousarray(data, dtype=arr.dtype)
            arr.with_config(integrity.WRITE_ALL)[rows] = data
            sums[name] = integrity.checksum(data)
        if self._has_reasons():
            self.group[L.INVALID_REASON].with_config(integrity.WRITE_ALL)[rows] = _reasons(
                invalid_reason, valid, default_reason, f"{self.path}/{L.INVALID_REASON}", block)
        table = self.group.get(L.BLOCK_CHECKSUM)
        if table is not None:
            table.with_config(integrity.WRITE_ALL)[block] = [sums[name] for name in table.attrs["arrays"]]
        if seconds is not None:
            self.group[L.BLOCK_SECONDS][block] = seconds
        # Flag last: a block is done only once every array of it, and its checksums, are on disk.
        self.group[L.BLOCK_DONE][block] = True

    def reopen_blocks(self, blocks: Iterable[int]) -> None:
        """Clear the done flags of ``blocks`` (found damaged): the next run writes them again."""
        for b in blocks:
            self.group[L.BLOCK_DONE][int(b)] = False


def _reasons(given: Sequence[str | None] | None, valid: np.ndarray, default: str, where: str,
             block: int) -> np.ndarray:
    """The ``invalid_reason`` values of a block: "" for valid rows, the reason (or ``default``) otherwise."""
    out = np.full(len(valid), default, dtype=object)
    if given is not None:
        if len(given) != len(valid):
            raise StoreError(f"{where}: block {block} expects {len(valid)} reasons, got {len(given)}")
        out[:] = [str(r) if r else default for r in given]
    out[valid] = ""
    return out


def open_run(
    root: zarr.Group,
    dataset: str,
    transform: str,
    model: str,
    *,
    num_classes: int,
    feature_dim: int | None,
    attrs: Mapping[str, Any],
    transform_attrs: Mapping[str, Any] | None = None,
    logits_dtype: str = "float32",
    overwrite: bool = False,
) -> RunWriter:
    """Create (or reopen for resumption) the arrays of one run.

    ``attrs`` must hold ``fingerprint_inputs``; an existing run with other inputs is refused with the list
    of what differs, unless ``overwrite``.
    """
    if logits_dtype not in L.LOGIT_DTYPES:
        raise StoreError(f"{dataset}/{transform}/{model}: logits dtype {logits_dtype!r}, expected one of {L.LOGIT_DTYPES}")
    # A concurrent writer may be (re)creating the dataset group: give it a moment to settle.
    for attempt in range(20):
        dataset_attrs = read_attrs(root, dataset) if dataset in root else {}
        if "sample_digest" in dataset_attrs:
            break
        time.sleep(0.1 * min(attempt, 5))
    else:
        raise StoreError(f"{dataset}: create the dataset group (ensure_dataset) before its runs")
    n = int(dataset_attrs["n_samples"])
    inputs = attrs["fingerprint_inputs"]
    fp = fingerprint(inputs)
    run_attrs = {**attrs, "fingerprint": fp}
    tattrs = dict(transform_attrs or {"transform": {"id": transform}})
    tgroup = _settle_attrs(_group(root[dataset], transform, tattrs), tattrs)
    path = f"{dataset}/{transform}/{model}"
    # A run group without a fingerprint is one being prepared (here or by a concurrent writer): ours to finish.
    old = read_attrs(tgroup, f"{tgroup.path}/{model}") if model in tgroup else {}
    if "fingerprint" in old and old["fingerprint"] != fp:
        if not overwrite:
            changes = diff(old.get("fingerprint_inputs", {}), inputs)
            raise FingerprintMismatch(
                f"{path}: the store holds this run computed from other inputs; refusing to resume. "
                f"What differs: {'; '.join(changes) or 'the fingerprint'}. Use --overwrite to replace it."
            )
    if overwrite and model in tgroup:
        del tgroup[model]
    group = _group(tgroup, model, run_attrs)
    blocks = L.Blocks(n)
    _create(group, L.LOGITS, shape=(n, num_classes), dtype=logits_dtype, fill_value=np.nan,
            dimension_names=(L.SAMPLE_DIM, L.CLASS_DIM), **L.row_chunking(n, num_classes))
    if feature_dim:
        _create(group, L.FEATURES, shape=(n, feature_dim), dtype=L.FEATURE_DTYPE, fill_value=np.nan,
                dimension_names=(L.SAMPLE_DIM, L.FEATURE_DIM), **L.row_chunking(n, feature_dim))
    _create(group, L.VALID, shape=(n,), dtype="bool", fill_value=False,
            dimension_names=(L.SAMPLE_DIM,), **L.row_chunking(n))
    _create(group, L.INVALID_REASON, shape=(n,), dtype=str, dimension_names=(L.SAMPLE_DIM,), **L.row_chunking(n))
    # One chunk per block: concurrent writers of different blocks never touch the same object.
    for name, dtype, fill in ((L.BLOCK_DONE, "bool", False), (L.BLOCK_SECONDS, "float32", np.nan)):
        _create(group, name, shape=(len(blocks),), dtype=dtype, fill_value=fill, chunks=(1,),
                dimension_names=(L.BLOCK_DIM,))
    checked = [L.LOGITS] + ([L.FEATURES] if feature_dim else []) + [L.VALID]
    _create(group, L.BLOCK_CHECKSUM, shape=(len(blocks), len(checked)), dtype="uint32", fill_value=0,
            chunks=(1, len(checked)), dimension_names=(L.BLOCK_DIM, L.ARRAY_DIM),
            attributes={"arrays": checked, "algorithm": integrity.ALGORITHM})
    return RunWriter(_settle_attrs(group, run_attrs), n)


def write_run(
    store: Any,
    dataset: str,
    transform: str,
    model: str,
    logits: np.ndarray,
    features: np.ndarray | None = None,
    *,
    sample_id: np.ndarray,
    label: np.ndarray,
    columns: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any] | None = None,
    valid: np.ndarray | None = None,
    invalid_reason: Sequence[str | None] | None = None,
    dataset_attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Write a complete, valid run from arrays; returns its path in the store.

    For logits computed elsewhere. ``valid`` defaults to rows without NaN; ``invalid_reason`` says why each
    invalid row is invalid. ``dataset_attrs`` defaults to the data_manifest.yaml entry of ``dataset`` (required
    for a dataset the manifest does not know). ``attrs`` may describe the model (``model``, ``preprocess``,
    ``precision``, ``logit_kind``, ...): decisions or probabilities instead of logits are encoded with
    ``schemas.logit_kinds`` and written with their ``logit_kind``. Everything offered is first checked against
    the entry (schemas.door): on any problem a StoreError lists them all and nothing is written; what the
    report will not use as meant is a StoreWarning.
    """
    t0 = time.perf_counter()
    dataset_attrs = dataset_attrs or default_dataset_attrs(dataset)
    # Everything is checked before the store is opened: a refused run writes nothing, not even the root.
    refuse(check_run(dataset, transform, model, dataset_attrs.get("manifest"), sample_id=sample_id, label=label,
                     columns=columns, logits=logits, features=features, valid=valid,
                     logit_kind=(attrs or {}).get("logit_kind")), str(store), StoreError)
    logits = np.asarray(logits)
    root = open_root(store, storage_options=storage_options)
    group = _dataset_group(root, dataset, sample_id=sample_id, label=label, columns=columns, attrs=dataset_attrs)
    run_attrs = _external_run_attrs(model, transform, group.attrs["sample_digest"], attrs or {})
    writer = open_run(
        root, dataset, transform, model,
        num_classes=logits.shape[1],
        feature_dim=None if features is None else np.shape(features)[1],
        attrs=run_attrs,
        logits_dtype="float16" if logits.dtype == np.float16 else "float32",
        overwrite=overwrite,
    )
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
    reasons = None if invalid_reason is None else list(invalid_reason)
    for b in writer.pending_blocks():
        rows = writer.blocks.slice(b)
        writer.write_block(
            b,
            logits[rows],
            None if features is None else np.asarray(features)[rows],
            None if valid is None else valid[rows],
            seconds=time.perf_counter() - t0,
            invalid_reason=None if reasons is None else reasons[rows],
        )
    refresh_metadata_copy(root)
    return writer.path


def refresh_metadata_copy(root: zarr.Group) -> None:
    """After writing to a store on object storage: renew the copy of its metadata that lets readers open it in
    a few requests (``schemas.snapshot``; always correct, only faster while current). A local store has none."""
    if remote.is_url(_where(root)):
        snapshot.write_metadata_copy(root.store)


def _where(root: zarr.Group) -> str:
    """The store's location, for messages."""
    return remote.store_url(root.store)


def default_dataset_attrs(dataset: str) -> dict:
    """Dataset attrs from the manifest entry: what the analysis needs to interpret labels and columns."""
    from .manifest import load_manifest

    entry = load_manifest().dataset(dataset)
    return {"manifest": entry, "label_space": entry["label_space"]}


def _external_run_attrs(model: str, transform: str, digest: str, given: Mapping[str, Any]) -> dict:
    spec = given.get("model", {"id": model})
    preprocess = given.get("preprocess", {})
    precision = given.get("precision", "unknown")
    inputs = given.get("fingerprint_inputs") or fingerprint_inputs(
        model=spec,
        weights_id=str(given.get("weights_id", "external")),
        preprocess=preprocess,
        transform={"id": transform},
        precision=precision,
        sample_digest=digest,
    )
    return {
        **given,
        "model": spec,
        "preprocess": preprocess,
        "precision": precision,
        "logit_kind": given.get("logit_kind", "classifier"),
        "fingerprint_inputs": inputs,
    }
