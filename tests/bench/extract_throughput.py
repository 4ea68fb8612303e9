"""Throughput of the extractor: does decoding once and feeding every model pay off?

Run by hand (pytest does not collect tests/bench):

    python tests/bench/extract_throughput.py --device cuda                      # the paper's four, full size
    python tests/bench/extract_throughput.py --device cpu --n-images 256 \\
        --models demo-convnext-sup demo-vit-sup demo-convnext-clip demo-vit-clip

On synthetic ImageNet-val-shaped JPEGs (500x375 / 375x500, ~110 KB at quality 95: smooth noise, gradients
and grain), with random weights (pretrained off: no download), in one process:

  (a) forward only: all models on ready uint8 batches already on the device (normalise + forward), the
      ceiling for (b);
  (b) ``extract run``: the real runner end to end (read, decode once, one resize per preprocessing
      geometry, every model, write blocks into a real Zarr store);
  (c) four separate single-model passes: the usual evaluation loop, once per model (read, decode,
      preprocess, forward over the dataset).

All three are reported as images per second through ALL the models (an image counts once when every
model has seen it). Targets: (b) >= 0.9 x (a) on an H100; (b) >= 2 x (c).
"""
from __future__ import annotations

import argparse
import functools
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from schemas.paper import PAPER_MODELS  # noqa: E402
DATA_VERSION = "1"
STEADY_AFTER = 4  # batches: one 1,000-row block at batch 250


# ---------------------------------------------------------------- synthetic data
def _jpeg(i: int) -> tuple[str, bytes, int, int]:
    from PIL import Image

    rng = np.random.default_rng([20240601, i])
    w, h = (500, 375) if i % 4 else (375, 500)  # ImageNet val is mostly landscape 500x375
    gh, gw = (int(v) for v in rng.integers(4, 12, size=2))
    grid = rng.integers(0, 256, size=(gh, gw, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    img += ((np.cos(angle) * xx / w + np.sin(angle) * yy / h) * 60)[..., None]
    img += rng.normal(0, 12, size=img.shape)  # grain: ~110 KB per image at quality 95
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=95)
    return f"ILSVRC2012_val_{i:08d}", buf.getvalue(), w, h


def make_dataset(root: Path, n: int, procs: int) -> Path:
    """``root/imagenet-val``: n JPEGs + LOC_val_solution.csv (the imagenet-val manifest layout); reused if there."""
    from schemas.label_spaces import imagenet_synsets

    folder = root / "imagenet-val"
    stamp = folder / ".bench"
    if stamp.is_file() and stamp.read_text() == f"v{DATA_VERSION} n={n}":
        return root
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    synsets = imagenet_synsets()
    rows = ["ImageId,PredictionString"]
    sizes = []
    t0 = time.perf_counter()
    with get_context("fork").Pool(procs) as pool:
        for name, data, w, h in pool.imap(_jpeg, range(1, n + 1), chunksize=16):
            (folder / f"{name}.JPEG").write_bytes(data)
            sizes.append(len(data))
            rows.append(f"{name},{synsets[len(rows) % 1000]} 0 0 {w - 1} {h - 1}")
    (folder / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    stamp.write_text(f"v{DATA_VERSION} n={n}")
    print(f"data: {n} JPEGs, mean {np.mean(sizes) / 1e3:.0f} KB, written in {time.perf_counter() - t0:.1f}s "
          f"to {folder}", flush=True)
    return root


# ---------------------------------------------------------------- helpers
def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_models(specs, cache, transform):
    from extract.spec.transforms import output_size

    return [cache.get(s, output_size(transform, s.preprocess)) for s in specs]


# ---------------------------------------------------------------- (a) forward only
def bench_forward(specs, models, transform, *, device: str, batch_size: int, n_images: int,
                  data_root: Path) -> tuple[float, dict[str, float]]:
    """All models on ready uint8 batches on the device (real decoded images, preprocessed beforehand)."""
    import torch

    from extract import pipeline
    from extract.readers import open_reader
    from schemas.manifest import load_manifest

    m = load_manifest()
    reader = open_reader("imagenet-val", m.dataset("imagenet-val"), data_root)
    data = pipeline.BlockImages(reader, transform, pipeline.geometries(s.preprocess for s in specs))
    # One real batch per geometry, reused: the forward pass does not care which pixels it sees.
    items = [data[i] for i in range(min(batch_size, n_images))]
    batch = pipeline.collate(items)["images"]
    on_device = {k: v.to(device) for k, v in batch.items()}
    keys = [s.preprocess.geometry_key() for s in specs]
    from extract.tensors import normalize
    norms = [functools.partial(normalize, pre=s.preprocess) for s in specs]
    per_model: dict[str, float] = {}
    n_batches = max(1, n_images // batch_size)
    with torch.inference_mode():
        for model, k, norm in zip(models, keys, norms):  # warm up (cudnn autotune, compile)
            model.forward(norm(on_device[k]))
        sync(device)
        for s, model, k, norm in zip(specs, models, keys, norms):
            t0 = time.perf_counter()
            for _ in range(n_batches):
                model.forward(norm(on_device[k]))
            sync(device)
            per_model[s.id] = n_batches * batch_size / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            for model, k, norm in zip(models, keys, norms):
                logits, feats = model.forward(norm(on_device[k]))
        sync(device)
        together = n_batches * batch_size / (time.perf_counter() - t0)
    return together, per_model


# ---------------------------------------------------------------- (b) extract run
def bench_runner(specs, *, store: Path, data_root: Path, device: str, batch_size: int, workers: int,
                 transform: str, compile: bool, decode: str = "pil"):
    from extract import options, runner

    shutil.rmtree(store, ignore_errors=True)
    opts = options.RunOptions(store=str(store), models=[s.id for s in specs], datasets=["imagenet-val"],
                             transforms=[transform], data_root=str(data_root), device=device,
                             batch_size=batch_size, workers=workers, pretrained=False, progress=False,
                             compile=compile, decode=decode, allow_partial=True)  # a few of the 50,000
    t0 = time.perf_counter()
    result = runner.run(opts)
    wall = time.perf_counter() - t0
    unit = result.units[0]
    return unit.images / unit.seconds, unit.seconds, wall, result


# ---------------------------------------------------------------- (c) one model at a time
def _batches(n_images: int, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(i + batch_size, n_images))) for i in range(0, n_images, batch_size)]


def bench_single_passes(specs, models, transform, *, data_root: Path, device: str, batch_size: int,
                        workers: int, n_images: int):
    """The usual loop, once per model: DataLoader(read -> decode -> this model's preprocessing) -> forward.

    Returns img/s through all the models, each model's seconds, and img/s after each loop's first
    STEADY_AFTER batches (the workers' start behind it)."""
    import torch

    from extract import pipeline
    from extract.readers import open_reader
    from schemas.manifest import load_manifest

    m = load_manifest()
    reader = open_reader("imagenet-val", m.dataset("imagenet-val"), data_root)
    cuda = device.startswith("cuda")
    seconds: dict[str, float] = {}
    steady: dict[str, float] = {}  # seconds after each loop's first STEADY_AFTER batches
    for s, model in zip(specs, models):
        key = s.preprocess.geometry_key()
        from extract.tensors import normalize
        norm = functools.partial(normalize, pre=s.preprocess)
        data = pipeline.BlockImages(reader, transform, {key: s.preprocess})
        batches = _batches(n_images, batch_size)
        loader = pipeline.loader(data, batches, pipeline.collate, workers, pin_memory=cuda)
        outs = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i, batch in enumerate(loader):
                if i == STEADY_AFTER:
                    sync(device)
                    t1 = time.perf_counter()
                x = norm(batch["images"][key].to(device, non_blocking=True))
                logits, feats = model.forward(x)
                outs.append((logits.float().cpu(), feats.float().cpu()))
        sync(device)
        end = time.perf_counter()
        seconds[s.id] = end - t0
        if len(batches) > STEADY_AFTER:
            steady[s.id] = end - t1
    total = sum(seconds.values())
    after = n_images - STEADY_AFTER * batch_size  # the batches are full but the last
    steady_rate = after / sum(steady.values()) if len(steady) == len(specs) else 0.0
    return n_images / total, seconds, steady_rate


# ---------------------------------------------------------------- (d) the input pipeline alone
def bench_input(specs, transform, *, data_root: Path, device: str, batch_size: int, workers: int, n_images: int,
                decode: str) -> tuple[float, float]:
    """The run's DataLoader with no model: Pillow decoding and resizing in the workers (``decode="pil"``), or
    bytes in the workers and nvJPEG + the device resize in this process (``"gpu"``). Returns img/s over
    all batches and after the first STEADY_AFTER."""
    from extract import pipeline
    from extract.readers import open_reader
    from extract.runner import input_pipeline
    from schemas.manifest import load_manifest

    reader = open_reader("imagenet-val", load_manifest().dataset("imagenet-val"), data_root)
    data, collate, feed = input_pipeline(reader, transform, pipeline.geometries(s.preprocess for s in specs), decode,
                                         device)
    loader = pipeline.loader(data, _batches(n_images, batch_size), collate, workers,
                             pin_memory=device.startswith("cuda"))
    t0 = t1 = time.perf_counter()
    seen = 0
    for i, batch in enumerate(loader):
        if i == STEADY_AFTER:
            sync(device)
            t1, seen = time.perf_counter(), i * batch_size
        out = feed(batch) if feed is not None else {k: v.to(device, non_blocking=True)
                                                    for k, v in batch["images"].items()}
        del out
    sync(device)
    end = time.perf_counter()
    return n_images / (end - t0), ((n_images - seen) / (end - t1) if seen else 0.0)


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 32 on CPU")
    ap.add_argument("--n-images", type=int, default=None, help="default: 10000 on GPU, 256 on CPU")
    ap.add_argument("--models", nargs="+", default=PAPER_MODELS,
                    help="default: the paper's four (on CPU try the demo-* models or timm:resnet18 "
                         "timm:vit_tiny_patch16_224)")
    ap.add_argument("--transform", default="center")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader processes (default: as extract run)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models")
    ap.add_argument("--decode", choices=("pil", "gpu"), default="pil", help="(b)'s decode path (extract run --decode)")
    ap.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=False,
                    help="hub weights (off by default: random init, nothing to download)")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default=None)
    ap.add_argument("--workdir", default=None, help="where the data and the store go (default: a temp dir, "
                                                    "data kept in ~/.cache/beyond-imagenet/bench)")
    ap.add_argument("--skip", nargs="*", default=[], choices=("a", "b", "c"), help="parts to skip")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    import torch

    from extract import options, runner
    from extract.spec.transforms import parse_transform

    device = args.device or options.default_device()
    cuda = options.is_cuda(device)
    batch_size = args.batch_size or runner.default_batch_size(device)
    n_images = args.n_images or (10000 if cuda else 256)
    workers = runner.default_workers(device) if args.workers is None else args.workers
    precision = args.precision or runner.default_precision(device)
    if not cuda:
        precision = "fp32"
    cache_dir = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "beyond-imagenet" / "bench"
    work = Path(args.workdir) if args.workdir else cache_dir
    work.mkdir(parents=True, exist_ok=True)
    data_root = make_dataset(work / f"data-{n_images}", n_images, procs=max(1, (os.cpu_count() or 2)))
    store = Path(tempfile.mkdtemp(prefix="bench-store-", dir=work)) / "store.zarr"

    sel = runner.resolve_selection(models=args.models, datasets=["imagenet-val"], transforms=[args.transform],
                                   data_root=data_root)
    specs = sel.models
    t = parse_transform(args.transform)
    if cuda:
        torch.backends.cudnn.benchmark = True
    opts = options.RunOptions(store=str(store), models=[s.id for s in specs], pretrained=args.pretrained,
                             compile=args.compile)
    cache = runner.ModelCache(opts, device, precision, root=None)
    t0 = time.perf_counter()
    models = load_models(specs, cache, t)  # builds the zero-shot heads once (shared with the runner)
    gpu = torch.cuda.get_device_name(device) if cuda else f"{os.cpu_count()} CPUs"
    print(f"device {device} ({gpu}), {precision}, batch {batch_size}, {workers} workers, {n_images} images, "
          f"transform {t.id}, models {', '.join(s.id for s in specs)} "
          f"({'pretrained' if args.pretrained else 'random init'}{', compiled' if args.compile else ''}); "
          f"models loaded in {time.perf_counter() - t0:.1f}s", flush=True)

    rows = []
    a = b = c = None
    if "a" not in args.skip:
        a, per_model = bench_forward(specs, models, t, device=device, batch_size=batch_size, n_images=n_images,
                                     data_root=data_root)
        detail = ", ".join(f"{k} {v:.0f}" for k, v in per_model.items())
        rows.append(("(a) forward only, ready tensors", a, f"alone: {detail} img/s"))
        print(f"(a) {a:.1f} img/s", flush=True)
    if "b" not in args.skip:
        del models  # the runner loads its own copies
        cache.loaded.clear()
        if cuda:
            torch.cuda.empty_cache()
        b, loop_s, wall, result = bench_runner(specs, store=store, data_root=data_root, device=device,
                                               batch_size=batch_size, workers=workers, transform=t.id,
                                               compile=args.compile, decode=args.decode)
        rows.append((f"(b) extract run, end to end, --decode {args.decode}", b,
                     f"{result.images} images in {loop_s:.1f}s loop, {wall:.1f}s with model loading"))
        print(f"(b) {b:.1f} img/s", flush=True)
        models = load_models(specs, cache, t)
    if "c" not in args.skip:
        c, seconds, _ = bench_single_passes(specs, models, t, data_root=data_root, device=device,
                                            batch_size=batch_size, workers=workers, n_images=n_images)
        detail = ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
        rows.append((f"(c) {len(specs)} single-model passes", c, detail))
        print(f"(c) {c:.1f} img/s", flush=True)

    print()
    print(f"{'':<36} {'img/s (all models)':>18}   detail")
    for name, value, detail in rows:
        print(f"{name:<36} {value:>18.1f}   {detail}")
    print()
    if a and b:
        target = "target >= 0.90 on an H100" + ("" if cuda else " (not measured here: CPU)")
        print(f"(b)/(a) = {b / a:.2f}   {target}   {'PASS' if b / a >= 0.9 else 'below target'}")
    if b and c:
        print(f"(b)/(c) = {b / c:.2f}   target >= 2.0   {'PASS' if b / c >= 2.0 else 'below target'}")
    shutil.rmtree(store.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
