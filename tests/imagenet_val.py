"""A tiny ImageNet-val-shaped dataset for the extraction tests (random JPEGs plus LOC_val_solution.csv)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def make_imagenet_val(root: Path, n: int, *, bad: dict[int, bytes] | None = None, seed: int = 0,
                      size=(64, 48)) -> Path:
    """``root/imagenet-val``: n small JPEGs named like ImageNet val plus LOC_val_solution.csv.

    ``bad`` maps a 1-based image number to the bytes written instead of a JPEG.
    """
    from schemas.label_spaces import imagenet_synsets

    folder = root / "imagenet-val"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    synsets = imagenet_synsets()
    rows = ["ImageId,PredictionString"]
    for i in range(1, n + 1):
        name = f"ILSVRC2012_val_{i:08d}"
        w, h = size if i % 3 else size[::-1]
        if bad and i in bad:
            data = bad[i]
        else:
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=90)
            data = buf.getvalue()
        (folder / f"{name}.JPEG").write_bytes(data)
        rows.append(f"{name},{synsets[int(rng.integers(0, 1000))]} 0 0 {w - 1} {h - 1}")
    (folder / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return root
