"""How far ``--decode gpu`` is from the reference Pillow pipeline: pixels after resize, and logits.

Run by hand (pytest does not collect tests/bench); ``tests/bench/gpu_check.py`` runs the same on CUDA:

    python tests/bench/decode_deviation.py --device cpu --n-images 256 --n-full 32

Over synthetic ImageNet-val-shaped JPEGs (``extract_throughput.make_dataset``: 500x375 / 375x500, quality
95, 4:2:0) under ``center``, for each preprocessing geometry of the paper's models (supervised Resize(256,
bilinear) -> 224, CLIP Resize(224, bicubic) -> 224), three pixel paths are compared with Pillow's (the
``--decode pil`` workers):

  gpu      the ``--decode gpu`` pipeline itself (EncodedImages -> DeviceDecoder): torchvision's decode_jpeg
           on the device, then Pillow's integer taps;
  interp   what a plain GPU pipeline would do: the same decode, then torchvision's tensor resize
           (antialias=True, the model's interpolation) and centre crop, rounded to uint8.

Pixels: mean and max |x - x_pil| over every pixel and channel, and the fraction of values that differ.
Logits (fp32): for the tiny demo models over all images and the paper's four at full size (random weights;
CLIP with a random unit head) over ``--n-full`` images: top-1 flips against Pillow's input and the max
relative error, max over images of ``max_j |z_j - z_pil_j| / max_j |z_pil_j|``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
for p in (str(REPO), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

from extract_throughput import make_dataset  # noqa: E402
from schemas.paper import PAPER_MODELS  # noqa: E402

DEMO = ["demo-convnext-sup", "demo-vit-sup", "demo-convnext-clip", "demo-vit-clip"]


def _loader(dataset, collate, rows, batch_size):
    from torch.utils.data import DataLoader

    batches = [list(range(i, min(i + batch_size, rows))) for i in range(0, rows, batch_size)]
    return DataLoader(dataset, batch_sampler=batches, num_workers=0, collate_fn=collate)


def pixels(data_root: Path, specs, n: int, device: str, batch_size: int = 32) -> dict:
    """{path: {geometry: uint8 [n,3,S,S] on the CPU}} for the paths "pil", "gpu" and "interp"."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from extract import gpu_decode, pipeline
    from extract.readers import open_reader
    from schemas.manifest import load_manifest

    reader = open_reader("imagenet-val", load_manifest().dataset("imagenet-val"), data_root)
    geometries = pipeline.geometries(s.preprocess for s in specs)
    out = {"pil": {}, "gpu": {}, "interp": {}}
    ref = pipeline.BlockImages(reader, "center", geometries)
    for batch in _loader(ref, pipeline.collate, n, batch_size):
        for k, v in batch["images"].items():
            out["pil"].setdefault(k, []).append(v)
    enc = gpu_decode.EncodedImages(reader, "center", geometries)
    feed = gpu_decode.DeviceDecoder(enc, device)
    for batch in _loader(enc, gpu_decode.collate_encoded, n, batch_size):
        for k, v in feed(batch).items():
            out["gpu"].setdefault(k, []).append(v.cpu())
        data = [torch.frombuffer(bytearray(reader.read_bytes(int(i))), dtype=torch.uint8) for i in batch["index"]]
        decoded = gpu_decode.decode_jpegs(data, device)
        for k, pre in geometries.items():
            mode = InterpolationMode(pre.interpolation)
            imgs = [TF.center_crop(TF.resize(x, [pre.resize], interpolation=mode, antialias=True), [pre.crop])
                    for x in decoded]
            out["interp"].setdefault(k, []).append(torch.stack(imgs).cpu())
    on_device = feed.on_device
    return {path: {k: torch.cat(v) for k, v in geoms.items()} for path, geoms in out.items()}, on_device


def pixel_stats(a, b) -> dict:
    d = (a.int() - b.int()).abs().double()
    return {"mean_abs": float(d.mean()), "max_abs": int(d.max()), "frac_differ": float((d > 0).double().mean())}


def logit_effect(specs, images: dict, device: str, n: int, batch_size: int = 16) -> dict:
    """Per model: top-1 flips and max relative logit error of each path's pixels against Pillow's (fp32)."""
    import torch

    from extract.models import load_model
    from extract.tensors import normalize

    out = {}
    for spec in specs:
        head = None
        if spec.kind == "zero-shot":
            from extract.hub import output_dims

            dim = output_dims(spec)[1]
            h = np.random.default_rng(0).standard_normal((1000, dim)).astype(np.float32)
            head = h / np.linalg.norm(h, axis=1, keepdims=True)
        model = load_model(spec, device=device, precision="fp32", pretrained=False, head=head)
        key = spec.preprocess.geometry_key()

        def logits(x):
            with torch.inference_mode():
                return torch.cat([model.forward(normalize(x[i:i + batch_size].to(device), spec.preprocess))[0].cpu()
                                  for i in range(0, len(x), batch_size)]).double()

        ref = logits(images["pil"][key][:n])
        row = {"images": int(len(ref))}
        for path in ("gpu", "interp"):
            z = logits(images[path][key][:n])
            rel = ((z - ref).abs().amax(1) / ref.abs().amax(1)).max()
            row[path] = {"top1_flips": int((z.argmax(1) != ref.argmax(1)).sum()), "max_rel_err": float(rel)}
        out[spec.id] = row
        del model
    return out


def measure(data_root: Path, device: str, n_images: int, n_full: int, tiny=DEMO, full=PAPER_MODELS) -> dict:
    """The whole measurement as JSON-able numbers (used by gpu_check.py too)."""
    from extract.spec.models import resolve_model

    warnings.filterwarnings("ignore", message=".*image decoding and encoding capabilities of TorchVision.*")
    tiny_specs = [resolve_model(m) for m in tiny]
    full_specs = [resolve_model(m) for m in full] if n_full else []
    t0 = time.perf_counter()
    images, on_device = pixels(data_root, tiny_specs + full_specs, n_images, device)
    result = {"device": device, "images": n_images, "decoded_on_device": on_device, "pixels": {}}
    for k, ref in images["pil"].items():
        name = f"resize {k[0]} {k[2]} -> crop {k[1]}"
        result["pixels"][name] = {p: pixel_stats(images[p][k], ref) for p in ("gpu", "interp")}
    result["logits_tiny"] = logit_effect(tiny_specs, images, device, n_images)
    if full_specs:
        result["logits_full_size"] = logit_effect(full_specs, images, device, n_full)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-images", type=int, default=256, help="images for the pixels and the tiny models")
    ap.add_argument("--n-full", type=int, default=32, help="images for the full-size models (0: skip them)")
    ap.add_argument("--workdir", default=None, help="where the JPEGs go (default ~/.cache/beyond-imagenet/bench)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "beyond-imagenet" / "bench"
    work = Path(args.workdir) if args.workdir else cache
    root = make_dataset(work / f"data-{args.n_images}", args.n_images, procs=max(1, os.cpu_count() or 2))
    result = measure(root, args.device, args.n_images, args.n_full)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
