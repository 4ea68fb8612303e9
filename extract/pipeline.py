"""The data pipeline of a run: a torch Dataset that decodes each image once for every geometry, and its batches.

torch is imported inside the functions that a DataLoader runs, not at import.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from schemas import layout as L

from extract.spec.transforms import output_size


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


def collate(items: list) -> dict:
    """DataLoader items -> one batch: indices, ok flags, error texts and a uint8 tensor per geometry."""
    import torch

    keys = list(items[0][3])
    return {
        "index": np.asarray([it[0] for it in items], dtype=np.int64),
        "ok": np.asarray([it[1] for it in items], dtype=bool),
        "errors": [it[2] for it in items],
        "images": {k: torch.stack([it[3][k] for it in items]) for k in keys},
    }


def worker_init(_: int) -> None:
    """One torch thread per DataLoader worker: the workers are the parallelism."""
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


__all__ = ["BlockImages", "collate", "worker_init", "block_batches"]
