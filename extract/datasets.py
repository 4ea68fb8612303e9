"""Datasets by manifest id: open a reader, check what is on disk, and the bundled demo data.

    reader = open_dataset("imagenet-a", "/data")        # FileNotFoundError names path + manifest field
    table = reader.samples()                              # SampleTable, sorted by sample_id
    img = decode_image(reader.read_bytes(0))              # RGB PIL image or ImageDecodeError
    for s in check_datasets("/data"): print(s)            # present | missing | wrong size | error
    root = demo_data_root()                               # cue-conflict (160 real) + synthetic imagenet-val (64)
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.label_spaces import imagenet_synsets
from schemas.manifest import Manifest, load_manifest

from .errors import ExtractError
from .readers import (  # noqa: F401  (re-exported: one import for the runner)
    IMAGE_EXTENSIONS,
    DatasetReader,
    ImageDecodeError,
    SampleTable,
    decode_image,
    open_reader,
)

DEMO_DATA_DIR = Path(__file__).resolve().parent / "demo_data"
DEMO_ENV_VAR = "BEYOND_DEMO_DATA"
_SYNTHETIC_VERSION = "1"

__all__ = [
    "DatasetReader", "DatasetStatus", "ImageDecodeError", "SampleTable", "check_datasets", "decode_image",
    "demo_data_root", "format_statuses", "make_synthetic_imagenet_val", "open_dataset", "partial_sample_count",
]


def _manifest(manifest: Manifest | str | Path | None) -> Manifest:
    if isinstance(manifest, Manifest):
        return manifest
    return load_manifest(manifest)


def open_dataset(dataset_id: str, data_root: str | Path, manifest: Manifest | str | Path | None = None, *,
                 suite: str | None = None) -> DatasetReader:
    """The reader of manifest dataset ``dataset_id`` under ``data_root``.

    ``reader.entry`` is the resolved manifest entry (JSON-able; with ``suite``, that suite's
    overrides applied). Unknown id -> ValueError with did-you-mean; missing data ->
    FileNotFoundError naming the full path and the manifest entry and field.
    """
    m = _manifest(manifest)
    entry = m.dataset(dataset_id, suite=suite)
    return open_reader(dataset_id, entry, Path(data_root).expanduser(), manifest_path=m.path)


@dataclass
class DatasetStatus:
    """What `extract ls datasets --data-root DIR` prints for one dataset."""

    dataset_id: str
    status: str              # "present" | "missing" | "wrong size" | "error"
    path: str                # where it was looked for
    found: int | None        # samples found (None: not counted / missing)
    expected: int | None     # expected_samples of the manifest entry
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "present"

    def __str__(self) -> str:
        if self.status == "present":
            n = f"{self.found} samples" if self.found is not None else "found (not counted)"
            return f"{self.dataset_id:<20} present     {n}  {self.path}"
        if self.status == "wrong size":
            return f"{self.dataset_id:<20} wrong size  found {self.found}, expected {self.expected}  {self.path}"
        if self.status == "missing":
            return f"{self.dataset_id:<20} missing     {self.path}"
        first = self.message.splitlines()[0] if self.message else ""
        return f"{self.dataset_id:<20} {self.status:<11} {first}"


def check_datasets(data_root: str | Path, manifest: Manifest | str | Path | None = None,
                   ids: list[str] | None = None, *, suite: str | None = None,
                   count: bool = True) -> list[DatasetStatus]:
    """Status of each dataset (``ids``; default: the suite's datasets, else all) under ``data_root``.

    present: found with ``expected_samples`` samples; wrong size: found N, expected M; missing:
    its folder is not there (message names path and manifest field); error: found but unreadable
    (e.g. an unknown class folder). ``count=False`` only checks that the layout is there.
    """
    m = _manifest(manifest)
    if ids is None:
        ids = list(m.suite(suite)["datasets"]) if suite else m.dataset_ids()
    out: list[DatasetStatus] = []
    for did in ids:
        entry = m.dataset(did, suite=suite)
        expected = entry.get("expected_samples")
        guess = Path(data_root).expanduser() / str(entry["layout"]["path"])
        try:
            reader = open_reader(did, entry, Path(data_root).expanduser(), manifest_path=m.path)
        except FileNotFoundError as e:
            out.append(DatasetStatus(did, "missing", str(guess), None, expected, str(e)))
            continue
        except (ValueError, OSError) as e:
            out.append(DatasetStatus(did, "error", str(guess), None, expected, str(e)))
            continue
        if not count:
            out.append(DatasetStatus(did, "present", str(reader.root), None, expected))
            continue
        try:
            n = len(reader.samples())
        except (ValueError, OSError) as e:
            out.append(DatasetStatus(did, "error", str(reader.root), None, expected, str(e)))
            continue
        if expected is not None and n != expected:
            out.append(DatasetStatus(did, "wrong size", str(reader.root), n, expected,
                                     f"found {n}, expected {expected}"))
        else:
            out.append(DatasetStatus(did, "present", str(reader.root), n, expected))
    return out


def partial_sample_count(dataset_id: str, found: int, entry: dict, where: str | Path, *,
                         allow_partial: bool) -> dict | None:
    """``{"found": n, "expected": m}`` when the dataset holds fewer samples than its ``expected_samples``.

    Without ``allow_partial`` that is refused (ExtractError naming the folder, both counts and the manifest
    field): numbers from 40 of 50,000 images must not pass for the dataset's.
    """
    expected = entry.get("expected_samples")
    if expected is None or found >= int(expected):
        return None
    if not allow_partial:
        raise ExtractError(f"{dataset_id}: found {found} samples under {where}, the manifest expects {expected} "
                         f"(datasets.{dataset_id}.expected_samples); complete the dataset, or pass --allow-partial to extract "
                         f"it anyway (the store then marks it partial and the report flags its numbers)")
    return {"found": int(found), "expected": int(expected)}


def format_statuses(statuses: list[DatasetStatus], verbose: bool = False) -> str:
    """A plain-text table of check_datasets() results; ``verbose`` adds the full reason under each
    dataset that is not present (paths tried, manifest field, where to obtain it)."""
    lines = []
    for s in statuses:
        lines.append(str(s))
        if verbose and not s.ok and s.message:
            lines.extend("    " + ln for ln in s.message.splitlines())
    n_ok = sum(s.ok for s in statuses)
    lines.append(f"{n_ok} of {len(statuses)} datasets present")
    return "\n".join(lines)


# ---------------------------------------------------------------- demo data
def make_synthetic_imagenet_val(root: str | Path, n: int = 64, seed: int = 0) -> Path:
    """Write ``n`` synthetic ImageNet-val-like JPEGs into ``root`` (deterministic for a given seed).

    Files ILSVRC2012_val_%08d.JPEG (1-based), 500x375 or 375x500, smooth random content (a bicubic
    upsampled random grid plus a gradient), and LOC_val_solution.csv (ImageId,PredictionString with
    a random class synset and a whole-image box) - the layout of the imagenet-val flat-folder entry.
    Returns ``root``.
    """
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    synsets = imagenet_synsets()
    rows = ["ImageId,PredictionString"]
    for i in range(1, n + 1):
        rng = np.random.default_rng([seed, i])
        w, h = (500, 375) if rng.random() < 0.5 else (375, 500)
        gh, gw = int(rng.integers(3, 9)), int(rng.integers(3, 9))
        grid = rng.integers(0, 256, size=(gh, gw, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(grid, "RGB").resize((w, h), Image.BICUBIC), dtype=np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        grad = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) * rng.uniform(20, 60)
        img = np.clip(img + grad[..., None] - grad.mean(), 0, 255).astype(np.uint8)
        name = f"ILSVRC2012_val_{i:08d}"
        Image.fromarray(img, "RGB").save(root / f"{name}.JPEG", format="JPEG", quality=90)
        label = int(rng.integers(0, 1000))
        rows.append(f"{name},{synsets[label]} 0 0 {w - 1} {h - 1}")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return root


def _default_demo_dir() -> Path:
    env = os.environ.get(DEMO_ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "beyond-imagenet" / "demo"


def demo_data_root(path: str | Path | None = None, *, n: int = 64, seed: int = 0) -> Path:
    """A data root for the demo suite: <root>/cue-conflict (the bundled real images) and
    <root>/imagenet-val (synthetic, generated on first use).

    ``path`` defaults to $BEYOND_DEMO_DATA, else ~/.cache/beyond-imagenet/demo (XDG_CACHE_HOME
    respected). Idempotent; regenerates when ``n``/``seed`` or the generator version change.
    """
    root = Path(path).expanduser() if path is not None else _default_demo_dir()
    root.mkdir(parents=True, exist_ok=True)

    cue = root / "cue-conflict"
    src = DEMO_DATA_DIR / "cue-conflict"
    if not src.is_dir():
        raise FileNotFoundError(f"bundled demo data missing: {src} (reinstall the package)")
    if not cue.exists() or (cue.is_symlink() and not cue.resolve().is_dir()):
        if cue.is_symlink():
            cue.unlink()
        try:
            cue.symlink_to(src, target_is_directory=True)
        except OSError:  # no symlinks (some filesystems): copy
            shutil.copytree(src, cue)

    val = root / "imagenet-val"
    stamp = f"synthetic imagenet-val v{_SYNTHETIC_VERSION} n={n} seed={seed}\n"
    marker = val / ".synthetic"
    if not (marker.is_file() and marker.read_text() == stamp):
        tmp = Path(tempfile.mkdtemp(prefix=".imagenet-val-", dir=root))
        try:
            make_synthetic_imagenet_val(tmp, n=n, seed=seed)
            (tmp / ".synthetic").write_text(stamp)
            if val.exists():
                shutil.rmtree(val)
            try:
                os.replace(tmp, val)
            except OSError:  # another process won the race: use theirs
                if not (val / ".synthetic").is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root
