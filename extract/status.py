"""What a store holds, from the store alone: blocks done per run and the invalid rows with their reasons
(``extract status``).

No torch at import.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import zarr

from schemas import StoreError, StoreMissing, integrity, metadata_errors, open_read_only
from schemas import layout as L

from extract.errors import ExtractError

NOT_RECORDED = "reason not recorded (stored before invalid_reason existed)"


@dataclass
class RunStatus:
    """One run of a store: how many of its blocks are done and which stored rows are invalid, and why
    (``reasons``, one per invalid row; "reason not recorded" in stores written before reasons were)."""

    path: str
    blocks_done: int
    blocks_total: int
    n_samples: int
    invalid: list[str]
    attrs: dict
    partial: dict | None = None  # {"found", "expected"}: the dataset was extracted with --allow-partial
    damaged: list[str] = field(default_factory=list)  # done blocks whose chunks are missing (presence check)
    reasons: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.blocks_done == self.blocks_total and not self.damaged


def open_store_read_only(store, *, missing_ok: bool = False, storage_options=None) -> zarr.Group | None:
    """The store's root group, read-only; None for a store that does not exist yet when ``missing_ok``.

    Anything else that keeps it from opening (damaged metadata, no permission, not a Zarr group) is an
    ExtractError naming the store and the cause.
    """
    try:
        return open_read_only(str(store), storage_options=storage_options)
    except StoreMissing as e:
        if missing_ok:
            return None
        raise ExtractError(str(e)) from None
    except StoreError as e:
        raise ExtractError(str(e)) from None


def store_status(store, *, storage_options=None) -> list[RunStatus]:
    """Every run of a store: blocks done / total and the sample ids of its invalid rows (in done blocks)."""
    root = open_store_read_only(store, storage_options=storage_options)
    try:
        with metadata_errors(root, store):
            return [status for dname, dgroup in sorted(root.groups()) if not dname.startswith("_")
                    for status in _dataset_status(dname, dgroup)]
    except StoreError as e:
        raise ExtractError(str(e)) from None


def _dataset_status(dname: str, dgroup: zarr.Group) -> list[RunStatus]:
    n = int(dgroup.attrs.get("n_samples", 0))
    lost = [str(d) for d in integrity.check_dataset(dgroup, quick=True)]
    ids: list[np.ndarray] = []

    def sample_ids() -> np.ndarray:  # read once per dataset, only when needed
        if not ids:
            ids.append(np.asarray(dgroup[L.SAMPLE_ID][...]).astype(object))
        return ids[0]

    out = []
    for tname, tgroup in sorted(dgroup.groups()):
        for mname, run_group in sorted(tgroup.groups()):
            status = _run_status(f"{dname}/{tname}/{mname}", run_group, n, sample_ids)
            if L.BLOCK_DONE in run_group:  # chunk presence only: a listing per array, no data read
                status.damaged += lost + [str(d) for d in integrity.check_run(run_group, n, quick=True).damage]
            status.partial = dgroup.attrs.get("partial")
            out.append(status)
    return out


def _run_status(path: str, group, n: int, ids) -> RunStatus:
    blocks = L.Blocks(n)
    done = integrity.done_flags(group)[0] if L.BLOCK_DONE in group else np.zeros(len(blocks), bool)
    invalid: list[str] = []
    reasons: list[str] = []
    if done.any() and L.VALID in group:
        try:
            valid = np.asarray(group[L.VALID][...], dtype=bool)
        except Exception as error:  # noqa: BLE001 - a chunk that does not decode: the run is damaged, said so
            return RunStatus(path, int(done.sum()), len(blocks), n, [], dict(group.attrs),
                             damaged=[f"{group.path}/{L.VALID}: unreadable ({type(error).__name__}: {error})"])
        row_done = np.repeat(done, blocks.rows)[:n]
        bad = np.flatnonzero(row_done & ~valid)
        if bad.size:
            invalid = ids()[bad].tolist()
            stored = (np.asarray(group[L.INVALID_REASON][...]).astype(object)[bad] if L.INVALID_REASON in group
                      else [""] * bad.size)
            reasons = [str(r) if r else NOT_RECORDED for r in stored]
    return RunStatus(path, int(done.sum()), len(blocks), n, invalid, dict(group.attrs), reasons=reasons)


__all__ = ["RunStatus", "open_store_read_only", "store_status"]
