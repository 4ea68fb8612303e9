"""Synthetic stores: random logits with planted accuracies, written through ``schemas.write_run``.

For trying the analysis without a GPU and for the scale benchmark. Every run is flagged ``synthetic`` and
the report says so: these numbers describe no real model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import schemas

from . import labels

MODELS = {"convnext-sup": 0.85, "vit-sup": 0.84, "convnext-clip": 0.70, "vit-clip": 0.68}
# The 13 distinct views of ImageNet val: center is also scale 1, shift 0 and resolution 224.
INVARIANCE = ("center", "scale-1.25", "scale-1.5", "scale-2", "scale-3", "shift-5", "shift-30", "shift-75",
              "shift-100", "res-112", "res-336", "res-512", "res-640")
# Real sizes (the bench) and demo sizes.
FULL_SIZES = {"imagenet-val": 50000, "imagenet-r": 30000, "imagenet-a": 7500, "imagenet-v2": 10000,
              "imagenet-sketch": 50889, "imagenet-hard": 10980, "pug-imagenet": 88328, "cue-conflict": 1280}


def planted_logits(rng: np.random.Generator, label: np.ndarray, n_classes: int, accuracy: float,
                   scale: float = 3.0) -> np.ndarray:
    """Gaussian logits where about ``accuracy`` of the rows have their label as the argmax."""
    logits = rng.standard_normal((len(label), n_classes), dtype=np.float32) * scale
    hit = (rng.random(len(label)) < accuracy) & (label >= 0)
    rows = np.flatnonzero(hit)
    logits[rows, label[rows]] = logits[rows].max(axis=1) + rng.exponential(scale, len(rows)).astype(np.float32)
    return logits


def _val_ids(n: int) -> np.ndarray:
    return np.array([f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(n)])


def _datasets(sizes: dict[str, int], rng: np.random.Generator) -> dict[str, dict]:
    """Sample tables per dataset: ids, labels (in the dataset's label space), columns."""
    out = {}
    ann = labels.imagenet_x()
    for dataset, n in sizes.items():
        columns: dict[str, np.ndarray] = {}
        if dataset == "imagenet-val":
            ids = _val_ids(n)
            # Annotated images get their ImageNet-X class; the rest a random one.
            known = dict(zip(ann.file_name, ann.label))
            label = np.array([known.get(s, -1) for s in ids])
            label = np.where(label >= 0, label, rng.integers(0, 1000, n))
        elif dataset in ("imagenet-a", "imagenet-r"):
            ids = np.array([f"{dataset}/{i:06d}.jpg" for i in range(n)])
            label = rng.choice(labels.subset_indices(f"{dataset}-200"), n)
        elif dataset == "cue-conflict":
            cats = list(labels.cue_conflict_groups())
            k = len(cats)
            shape = np.arange(n) % k
            # Texture differs from shape except for one image in every k (80 of the real 1,280).
            texture = (shape + rng.integers(1, k, n)) % k
            same = np.arange(n) % k == (np.arange(n) // k) % k
            texture[same] = shape[same]
            ids = np.array([f"{cats[s]}/{cats[s]}{i}-{cats[t]}{i}.png" for i, (s, t) in enumerate(zip(shape, texture))])
            label, columns = shape, {"texture_label": texture.astype(np.int16)}
        elif dataset == "pug-imagenet":
            n_pug = len(labels.pug_classes())
            ids = np.array([f"pug/{i:06d}.png" for i in range(n)])
            label = rng.integers(0, n_pug, n)
            columns = {"factor": rng.choice(np.array(["Worlds", "Camera_Yaw"]), n),
                       "world": rng.choice(np.array(["desert", "forest", "city", "beach"]), n),
                       "camera_yaw": rng.choice(np.arange(0, 360, 45), n).astype(np.float32)}
            # The manifest declares every PUG column: the rest unknown, as the reader leaves them ("" / NaN).
            columns.update({c: np.full(n, "") for c in ("character", "texture", "light")})
            columns.update({c: np.full(n, np.nan, np.float32) for c in
                            ("object_yaw", "object_pitch", "object_roll", "scale", "camera_pitch", "camera_roll")})
        elif dataset == "imagenet-hard":
            ids = np.array([f"hard/{i:06d}.jpg" for i in range(n)])
            label = rng.integers(0, 1000, n)
            extra = np.where(rng.random(n) < 0.3, rng.integers(0, 1000, n), -1)
            columns = {"label_set": np.stack([label, extra], axis=1).astype(np.int32),
                       "origin": rng.choice(np.array(["imagenet", "imagenet-v2", "imagenet-sketch"]), n)}
        else:
            ids = np.array([f"{dataset}/{i:06d}.jpg" for i in range(n)])
            label = rng.integers(0, 1000, n)
        out[dataset] = {"sample_id": ids, "label": label.astype(np.int32), "columns": columns}
    return out


def logits_for(dataset: str, table: dict, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Logits in the 1000-class space whose top-1 on ``dataset`` is about ``accuracy``."""
    label = table["label"]
    if dataset == "cue-conflict":
        cats = list(labels.cue_conflict_groups().values())
        target = np.array([cats[s][0] for s in label])
    elif dataset == "pug-imagenet":
        classes = list(labels.pug_classes().values())
        target = np.array([classes[c][0] for c in label])
    else:
        target = label
    return planted_logits(rng, target, 1000, accuracy)


def build_synthetic_store(path: str | Path, *, sizes: dict[str, int] | None = None, n_val: int = 2000,
                          transforms: tuple[str, ...] = INVARIANCE, models: dict[str, float] | None = None,
                          feature_dim: int = 0, seed: int = 0, run_seed: int | None = None,
                          progress=None) -> Path:
    """Write a synthetic store; ``sizes`` defaults to small versions of the paper's datasets.

    The sample tables come from ``seed`` alone, so models added later with the same ``seed`` join the same
    datasets; ``run_seed`` gives those later models logits of their own (by default the logits continue the
    tables' random stream, which restarts with every call)."""
    rng = np.random.default_rng(seed)
    sizes = sizes or {d: min(n, n_val) for d, n in FULL_SIZES.items()}
    models = models or MODELS
    tables = _datasets(sizes, rng)
    if run_seed is not None:
        rng = np.random.default_rng([seed, run_seed])
    jobs = [(d, t, m) for d in tables for t in (transforms if d == "imagenet-val" else ("center",)) for m in models]
    for dataset, transform, model in (progress(jobs) if progress else jobs):
        table = tables[dataset]
        penalty = 0.0 if transform in ("center", "scale-1", "shift-0", "res-224") else 0.1
        logits = logits_for(dataset, table, max(0.05, models[model] - penalty), rng)
        features = (rng.standard_normal((len(logits), feature_dim), dtype=np.float32) if feature_dim else None)
        schemas.write_run(
            path, dataset, transform, model, logits, features,
            sample_id=table["sample_id"], label=table["label"], columns=table["columns"],
            attrs={"synthetic": True, "weights_id": "synthetic", "model": {"id": model}},
        )
    return Path(path)
