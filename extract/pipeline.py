"""The data pipeline of a run: a torch Dataset that decodes each image once for every geometry, and its batches.

torch is imported inside the functions that a DataLoader runs, not at import.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from schemas import layout as L

from extract.spec.transforms import output_size


# A read that fails with an OSError is tried again after 0.25, 0.5, 1 and 2 s (3.75 s in all): a file
# server's hiccup gets through; a file that stays unreadable stops the run (it is not the image's fault).
READ_RETRIES = 4
READ_BACKOFF_S = 0.25

OK, INVALID, STOP = "ok", "invalid", "stop"


class BlockImages:
    """torch Dataset: index -> (index, status, message, warnings, {geometry: uint8 [3,S,S]}).

    Decodes each image once. ``status`` is OK; INVALID when the image's own bytes do not decode
    (``message``: the ImageDecodeError), which makes an invalid row; or STOP when anything else went wrong
    (a read that kept failing, a bug in the transform code): ``message`` says what, and the run stops
    before the block is flagged done. ``warnings``: what the decoder warned about (the row stays valid).
    """

    def __init__(self, reader, transform, geometries: Mapping[Any, Any]):
        self.reader = reader
        self.transform = transform
        self.geometries = dict(geometries)  # key -> a Preprocess with that geometry
        self.sizes = {k: int(output_size(transform, pre)) for k, pre in self.geometries.items()}

    def __getitem__(self, index: int):
        try:
            data = self._read(index)
        except _ReadFailed as e:
            return index, STOP, str(e), [], self.zeros()
        except Exception as e:  # noqa: BLE001 - not the image's fault: the run stops and names it
            return index, STOP, unexpected(e), [], self.zeros()
        return (index, *self.prepare(data))

    def prepare(self, data: bytes) -> tuple[str, str | None, list[str], Any]:
        """What a worker makes of a sample's bytes: (status, message, warnings, pixels); here Pillow's."""
        return self.pixels(data)

    def pixels(self, data: bytes) -> tuple[str, str | None, list[str], dict]:
        """Encoded bytes -> (status, message, warnings, {geometry: uint8 [3,S,S]}) by Pillow: the reference."""
        from extract.imaging import apply_transform
        from extract.readers import ImageDecodeError, decode
        from extract.tensors import to_uint8_tensor

        status, message, warnings, out = OK, None, [], None
        try:
            decoded = decode(data)
            warnings = decoded.warnings
            out = {k: to_uint8_tensor(apply_transform(decoded.image, self.transform, pre))
                   for k, pre in self.geometries.items()}
        except ImageDecodeError as e:
            status, message = INVALID, f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - not the image's fault: the run stops and names it
            status, message = STOP, unexpected(e)
        return status, message, warnings, self.zeros() if out is None else out

    def zeros(self) -> dict:
        """The pixels of a row that has none (invalid, or stopping the run)."""
        import torch

        return {k: torch.zeros(3, s, s, dtype=torch.uint8) for k, s in self.sizes.items()}

    def _read(self, index: int) -> bytes:
        delay, t0, attempt = READ_BACKOFF_S, time.monotonic(), 0
        while True:
            try:
                return self.reader.read_bytes(index)
            except OSError as e:
                attempt += 1
                if attempt > READ_RETRIES:
                    raise _ReadFailed(f"unreadable: {attempt} reads over {time.monotonic() - t0:.1f} s failed, "
                                      f"the last with {type(e).__name__}: {e}") from None
                time.sleep(delay)
                delay *= 2


class _ReadFailed(Exception):
    """A sample's bytes could not be read, after every retry."""


def unexpected(e: BaseException) -> str:
    """An exception that is no fault of the image: its type, text, where it was raised, and the traceback
    (the runner logs the traceback at debug level)."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    where = f" (raised at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"unexpected {type(e).__name__}: {e}{where}\n" + "".join(traceback.format_exception(e))


def collate(items: list) -> dict:
    """DataLoader items -> one batch: indices, ok flags, per-row messages (an invalid row's reason), decoder
    warnings, the (index, message) of rows that stop the run, and a uint8 tensor per geometry."""
    import torch

    keys = list(items[0][4])
    return {
        "index": np.asarray([it[0] for it in items], dtype=np.int64),
        "ok": np.asarray([it[1] == OK for it in items], dtype=bool),
        "errors": [it[2] if it[1] == INVALID else None for it in items],
        "warnings": [it[3] for it in items],
        "stop": [(it[0], it[2]) for it in items if it[1] == STOP],
        "images": {k: torch.stack([it[4][k] for it in items]) for k in keys},
    }


def worker_init(_: int) -> None:
    """One torch thread per DataLoader worker: the workers are the parallelism."""
    import torch

    torch.set_num_threads(1)


def geometries(preprocesses: Iterable[Any]) -> dict[Any, Any]:
    """One preprocessing per geometry key ``(resize, crop, interpolation)``: the resized tensors a batch holds."""
    out: dict[Any, Any] = {}
    for pre in preprocesses:
        out.setdefault(pre.geometry_key(), pre)
    return out


def loader(data, batches: list[list[int]], collate_fn, workers: int, pin_memory: bool):
    """The DataLoader of a run: given batches, one torch thread a worker, two batches ahead a worker."""
    from torch.utils.data import DataLoader

    return DataLoader(data, batch_sampler=batches, num_workers=workers, collate_fn=collate_fn, pin_memory=pin_memory,
                      worker_init_fn=worker_init if workers else None, prefetch_factor=2 if workers else None,
                      persistent_workers=False)


def block_batches(blocks: L.Blocks, todo: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches that never cross a block boundary, each block from its first row (the same batches in every
    process, rerun and shard, so results do not depend on how the work was split)."""
    out = []
    for b in todo:
        rows = blocks.slice(b)
        for s in range(rows.start, rows.stop, batch_size):
            out.append(list(range(s, min(s + batch_size, rows.stop))))
    return out


__all__ = ["BlockImages", "READ_RETRIES", "READ_BACKOFF_S", "collate", "unexpected", "worker_init", "block_batches"]
