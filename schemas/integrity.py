"""Block checksums and chunk presence: a store checked against what was written into it.

Zarr reads a missing chunk as its fill value (NaN logits, ``valid`` false, empty sample ids), so a lost
chunk file passes for invalid rows unless something looks. Two checks look, both stages use them:

- presence: every storage object (a chunk, or a shard when the array is sharded) of every done block
  exists. One listing per array, no data read. ``RunWriter.write_block`` writes every chunk of a block,
  even one that holds only the fill value (``WRITE_ALL``), so an absent object of a done block is a loss.
- checksums: before flagging a block done, the writer records in ``block_checksum[block, array]``
  (uint32) the crc32c of the values it wrote to each row array (``CHECKED``: the array's own dtype,
  C order, little-endian). Reading a block back and recomputing finds a truncated or altered chunk.

The dataset's own arrays (sample_id, label, columns) are written once, together with the sample list's
digest: recomputing the digest from the stored values checks them (``read_sample_list``).

Runs written before checksums have no ``block_checksum`` array (or, when resumed since, no checksum for
their older blocks): those blocks are checked for presence only, and the check says so. Pure functions
over zarr arrays; never imports torch.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import google_crc32c
import numpy as np
import zarr
from zarr.core.sync import sync
from zarr.storage import LocalStore

from . import layout as L
from .remote import reraise_network
from .snapshot import SnapshotStore
from .fingerprint import sample_digest
from .local_arrays import read_local, read_whole

ALGORITHM = "crc32c"
# The row arrays a block checksum covers, in this column order (features only when the run has them).
CHECKED = (L.LOGITS, L.FEATURES, L.VALID)
# zarr skips a chunk that holds only the fill value (an all-invalid block); the writer must not, so that a
# done block always has every chunk.
WRITE_ALL = {"write_empty_chunks": True}


def checksum(values: np.ndarray) -> int:
    """crc32c of an array's values: their C-order, little-endian bytes in the array's own dtype."""
    return extend_checksum(0, values)


def extend_checksum(crc: int, values: np.ndarray) -> int:
    """``crc`` extended by ``values``' bytes as ``checksum`` takes them: the checksum of a block is that of its
    consecutive row ranges, each extending the one before."""
    a = np.ascontiguousarray(values)
    if a.dtype.kind in "OTU":
        raise TypeError(f"checksum: numeric or bool values expected, got dtype {a.dtype}")
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return int(google_crc32c.extend(crc, a.reshape(-1).view(np.uint8)))


def storage_keys(arr: zarr.Array, start: int, stop: int) -> list[str]:
    """Keys, relative to the array, of the storage objects (chunks or shards) holding rows [start, stop)."""
    unit = arr.shards or arr.chunks
    rows = range(start // unit[0], -(-stop // unit[0]))
    rest = [range(-(-size // step)) for size, step in zip(arr.shape[1:], unit[1:])]
    return [arr.metadata.encode_chunk_key(coords) for coords in itertools.product(rows, *rest)]


def _listed(node: zarr.Array | zarr.Group) -> list[str]:
    """The keys, relative to the node, of every object stored under it (one listing, no data read)."""
    prefix = f"{node.path}/" if node.path else ""
    store = node.store_path.store
    if isinstance(store, LocalStore):  # walked here: through zarr's event loop a run's listing costs ten times more
        base = os.path.join(store.root, node.path)
        found: list[str] = []
        for folder, _, names in os.walk(base):  # each folder below base: its relative path by slicing, not relpath
            inner = folder[len(base):].strip(os.sep).replace(os.sep, "/")
            found += [f"{inner}/{name}" if inner else name for name in names]
        return found

    async def collect() -> list[str]:
        return [key async for key in store.list_prefix(prefix)]

    return [key[len(prefix):] for key in sync(collect())]


def stored_keys(arr: zarr.Array) -> set[str]:
    """The keys, relative to the array, of every object stored under it."""
    return set(_listed(arr))


def stored_keys_by_array(group: zarr.Group) -> dict[str, set[str]]:
    """For each child of ``group``: the keys, relative to it, of every object stored under it (one listing
    of the whole group instead of one per array)."""
    out: dict[str, set[str]] = {}
    for key in _listed(group):
        child, _, rest = key.partition("/")
        out.setdefault(child, set()).add(rest)
    return out


def done_flags(group: zarr.Group, arr: zarr.Array | None = None) -> tuple[np.ndarray, list[int]]:
    """A run's ``block_done`` flags, and the blocks whose flag cannot be read (a write cut short by a
    crash): those count as not done, so a rerun writes them again. ``arr``: the group's ``block_done``
    array when the caller has opened it."""
    arr = group[L.BLOCK_DONE] if arr is None else arr
    try:
        flags = read_local(arr)  # a local store's flags without zarr's event loop (None: zarr reads them)
        return np.asarray(arr[...] if flags is None else flags, dtype=bool), []
    except Exception as error:  # noqa: BLE001 - a chunk does not decode: find which, one chunk per block
        reraise_network(error, arr.store)  # a network fault is not a torn flag
        flags = np.zeros(arr.shape[0], dtype=bool)
        torn = []
        for b in range(arr.shape[0]):
            try:
                flags[b] = bool(arr[b])
            except Exception as error:  # noqa: BLE001 - reported to the caller as a torn flag
                reraise_network(error, arr.store)
                torn.append(b)
        return flags, torn


@dataclass(frozen=True)
class Damage:
    """One block of one array (or a whole sample list) that no longer holds what was written."""

    path: str                     # the array (or dataset group) in the store, e.g. imagenet-val/center/m/logits
    block: int | None             # None: the whole array
    rows: tuple[int, int] | None
    problem: str                  # "chunk c/1/0 missing", "unreadable (...)", "checksum mismatch (...)"

    def __str__(self) -> str:
        where = f"block {self.block} (rows {self.rows[0]}:{self.rows[1]}): " if self.block is not None else ""
        return f"{self.path}: {where}{self.problem}"


@dataclass
class RunCheck:
    """What ``check_run`` found in one run."""

    path: str
    damage: list[Damage] = field(default_factory=list)
    unchecked: list[int] = field(default_factory=list)  # done blocks with no recorded checksum: presence only
    torn: list[int] = field(default_factory=list)       # blocks whose done flag cannot be read: not done
    has_checksums: bool = True                          # False: the run was written before checksums

    @property
    def blocks(self) -> list[int]:
        """The damaged blocks: what ``extract run --repair`` re-extracts."""
        return sorted({d.block for d in self.damage if d.block is not None})


def _missing(arr: zarr.Array, keys: set[str], rows: slice) -> list[str]:
    return [k for k in storage_keys(arr, rows.start, rows.stop) if k not in keys]


def _missing_damage(arr: zarr.Array, block: int, rows: slice, missing: list[str]) -> Damage:
    what = "chunk" if len(missing) == 1 else "chunks"
    return Damage(arr.path, block, (rows.start, rows.stop), f"{what} {', '.join(missing)} missing")


def _unreadable(path: str, block: int | None, rows: slice | None, error: BaseException) -> Damage:
    span = None if rows is None else (rows.start, rows.stop)
    return Damage(path, block, span, f"unreadable ({type(error).__name__}: {error})")


def check_run(group: zarr.Group, n: int, *, quick: bool = False, blocks: Iterable[int] | None = None,
              flags: np.ndarray | None = None, members: Mapping[str, Any] | None = None) -> RunCheck:
    """Check every done block of a run (or of ``blocks``): its chunks exist and, unless ``quick``, decode
    to the values whose checksums were recorded. ``n`` is the dataset's sample count; ``flags`` the done
    flags and ``members`` the group's children (``dict(group.members())``) when the caller has them."""
    check = _check_run(group, n, quick=quick, blocks=blocks, flags=flags, members=members)
    if check.damage and isinstance(group.store, SnapshotStore):
        # Listings come from when the store was opened: a block finished since has chunks they do not show.
        fresh = zarr.open_group(group.store.refreshed(), path=group.path, mode="r")
        check = _check_run(fresh, n, quick=quick, blocks=blocks, flags=flags)
    return check


def _check_run(group: zarr.Group, n: int, *, quick: bool, blocks: Iterable[int] | None,
               flags: np.ndarray | None, members: Mapping[str, Any] | None = None) -> RunCheck:
    part = L.Blocks(n)
    check = RunCheck(group.path)
    # Every child's metadata in one request batch and every stored key in one listing: opening a store of
    # a thousand runs is otherwise a dozen round trips through zarr per run.
    children = dict(group.members()) if members is None else members
    if flags is None:
        done_array = children.get(L.BLOCK_DONE)
        flags, check.torn = done_flags(group, done_array if isinstance(done_array, zarr.Array) else None)
    wanted = range(len(part)) if blocks is None else blocks
    done = [b for b in wanted if 0 <= b < min(len(part), len(flags)) and flags[b]]
    arrays = {name: children[name] for name in CHECKED if isinstance(children.get(name), zarr.Array)}
    table = children.get(L.BLOCK_CHECKSUM)
    check.has_checksums = isinstance(table, zarr.Array)
    columns = list(table.attrs.get("arrays", ())) if check.has_checksums else []
    listed = stored_keys_by_array(group)
    keys = {name: listed.get(name, set()) for name in arrays}
    recorded: dict[int, np.ndarray] = {}
    table_keys = listed.get(L.BLOCK_CHECKSUM, set()) if check.has_checksums else set()
    for b in done:
        rows = part.slice(b)
        lost = False
        for name, arr in arrays.items():
            missing = _missing(arr, keys[name], rows)
            if missing:
                check.damage.append(_missing_damage(arr, b, rows, missing))
                lost = True
        if not check.has_checksums or _missing(table, table_keys, slice(b, b + 1)):
            check.unchecked.append(b)
        elif not quick and not lost:
            try:
                recorded[b] = np.asarray(table[b])
            except Exception as error:  # noqa: BLE001 - reported as damage of the checksum itself
                reraise_network(error, table.store)
                check.damage.append(_unreadable(table.path, b, slice(b, b + 1), error))
    if quick:
        return check
    damaged = set(check.blocks)
    for b in done:
        if b in damaged:
            continue
        rows = part.slice(b)
        for name, arr in arrays.items():
            try:
                values = arr[rows]
            except Exception as error:  # noqa: BLE001 - a chunk that does not decode is damage, named
                reraise_network(error, arr.store)
                check.damage.append(_unreadable(arr.path, b, rows, error))
                continue
            if b in recorded and name in columns:
                want, got = int(recorded[b][columns.index(name)]), checksum(values)
                if want != got:
                    check.damage.append(Damage(arr.path, b, (rows.start, rows.stop), mismatch(want, got)))
    return check


def mismatch(recorded: int, found: int) -> str:
    return (f"checksum mismatch: the block holds other values than were written ({ALGORITHM} recorded "
            f"{recorded:08x}, found {found:08x})")


def read_sample_list(group: zarr.Group) -> tuple[dict[str, np.ndarray], list[Damage]]:
    """Every array of a dataset group (sample_id, label, columns), and what is wrong with them: blocks that
    do not decode, or values that no longer give the ``sample_digest`` written with them."""
    values: dict[str, np.ndarray] = {}
    damage: list[Damage] = []
    for name, arr in group.arrays():
        try:
            values[name] = read_whole(arr)
        except Exception as error:  # noqa: BLE001 - some chunk does not decode: name the blocks, one by one
            reraise_network(error, arr.store)
            part = L.Blocks(arr.shape[0])
            for b in range(len(part)):
                try:
                    arr[part.slice(b)]
                except Exception as error:  # noqa: BLE001 - reported as damage
                    reraise_network(error, arr.store)
                    damage.append(_unreadable(arr.path, b, part.slice(b), error))
    stored = group.attrs.get("sample_digest")
    if damage or stored is None or L.SAMPLE_ID not in values or L.LABEL not in values:
        return values, damage
    columns = {k: v for k, v in values.items() if k not in (L.SAMPLE_ID, L.LABEL)}
    try:
        found = sample_digest(values[L.SAMPLE_ID], values[L.LABEL], columns)
    except (TypeError, ValueError) as error:  # a label array of another shape or kind: not the list written
        found = f"not computable ({type(error).__name__}: {error})"
    if found != stored:
        damage.append(Damage(group.path, None, None,
                             f"the sample ids, labels and columns no longer give the sample_digest written with "
                             f"them (recorded {stored}, found {found}): a chunk was altered or lost"))
    return values, damage


def check_dataset(group: zarr.Group, *, quick: bool = False) -> list[Damage]:
    """A dataset's sample list: every sample_id chunk exists and, unless ``quick``, every array decodes and
    the values give the recorded digest. (Label and column chunks holding only the fill value are
    legitimately absent, so only the digest can tell their loss.)"""
    damage: list[Damage] = []
    sid = group.get(L.SAMPLE_ID)
    if isinstance(sid, zarr.Array):
        keys = stored_keys(sid)
        part = L.Blocks(sid.shape[0])
        for b in range(len(part)):
            missing = _missing(sid, keys, part.slice(b))
            if missing:
                damage.append(_missing_damage(sid, b, part.slice(b), missing))
    if quick or damage:
        return damage
    return read_sample_list(group)[1]


def describe(damage: Sequence[Damage], limit: int = 5) -> list[tuple[str, str]]:
    """(array path, one line) per damaged array: the first ``limit`` damaged blocks with their rows and
    what is wrong."""
    by_path: dict[str, list[Damage]] = {}
    for d in damage:
        by_path.setdefault(d.path, []).append(d)
    out = []
    for path, items in by_path.items():
        parts = [str(d)[len(path) + 2:] for d in items[:limit]]
        more = f"; and {len(items) - limit} more blocks" if len(items) > limit else ""
        out.append((path, "; ".join(parts) + more))
    return out


def run_repair_hint(store: str, run_path: str) -> str:
    """The command that re-extracts exactly the damaged blocks of a run."""
    dataset, transform, model = run_path.strip("/").split("/", 2)
    return (f"re-extract the damaged blocks with: extract run --store {store} --repair --datasets {dataset} "
            f"--transforms {transform} --models {model} --data-root DIR")


def dataset_repair_hint(store: str, dataset: str) -> str:
    """The command that rewrites a dataset's sample list from the dataset's files."""
    return (f"the dataset's sample list is damaged; rewrite it from the dataset's files with: extract run "
            f"--store {store} --repair --datasets {dataset} --models MODEL --data-root DIR (any model of the store)")


__all__ = ["ALGORITHM", "CHECKED", "WRITE_ALL", "Damage", "RunCheck", "check_dataset", "check_run",
           "checksum", "dataset_repair_hint", "describe", "done_flags", "mismatch",
           "read_sample_list", "run_repair_hint", "storage_keys", "stored_keys"]
