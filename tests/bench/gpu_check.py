"""One-shot check of the GPU stage on a CUDA box: correctness, ``extract run`` + ``extract verify`` (eager and
compiled, Pillow and GPU decoding), ``torchrun`` into one store, throughput against the targets, and the
deviation of ``--decode gpu`` from Pillow. Prints one JSON summary (also written to ``--out FILE``).

Run by hand (pytest does not collect tests/bench):

    python tests/bench/gpu_check.py --out gpu_check.json                 # a CUDA box: about 5 min on an H200
    python tests/bench/gpu_check.py --device cpu --out /tmp/check.json   # the same script on the CPU, small

Random weights throughout (nothing is downloaded). On CUDA: the paper's four models at full size, 6,000
synthetic ImageNet-val-shaped JPEGs (``extract_throughput.make_dataset``), batch 250 (a divisor of the
1,000-row blocks: no ragged batch, so ``--compile`` compiles one shape), bf16 backbone. On the CPU: the four
tiny demo models, 48 images in blocks of 16.

Stages (each one's errors are caught and reported in its entry, so one failure does not hide the rest):

  environment   versions, the GPU, bf16, whether torchvision decodes JPEGs on the device (nvJPEG)
  correctness   the models as ``extract run`` loads them (bf16 backbone, fp32 head, channels_last) on the
                device vs fp32 on the CPU, the same 64 images: top-1 agreement, max relative logit error
  extract_run   ``extract run`` into a store then ``extract verify``: Pillow decoding and GPU decoding (eager);
                throughput of each, their logits compared
  torchrun      ``torch.distributed.run --nproc-per-node 2`` on the one device into one store vs the
                single-process Pillow store of extract_run
  throughput    (a) forward only on ready tensors, eager; (c) one model at a time; (d) the input pipeline
                alone (the DataLoader, and for --decode gpu the device decode), no model
  deviation     ``tests/bench/decode_deviation.py`` on the device (nvJPEG vs libjpeg-turbo + Pillow)
  compiled      ``extract run --decode gpu --compile`` (logits against the eager GPU-decoding store) and
                (a) compiled: last, since compiling takes the longest
  profile       only with --profile: ``extract run`` (--decode gpu and pil, eager) over PROFILE_IMAGES images
                under torch.profiler; each run's operators by device time and by CPU time go to
                ``profile_<decode>.txt`` beside --out, its top operators into the summary
  targets       --decode gpu --compile >= 0.9 x compiled forward-only and >= 5 x (c); Pillow >= 0.6 x eager
                forward-only (meaningful on an H100/H200 with the paper's four). Judged on the rates after
                the first 1,000-row block ("steady": the workers' start, cuDNN's autotuning and compiling
                behind them, as in a 50,000-image run); the whole runs' ratios ("end_to_end") beside them

The summary is written to ``--out`` after every stage, so a run cut short keeps the stages it finished.

Relative logit error of an image: ``max_j |z_j - ref_j| / max_j |ref_j|``; the max over the images is reported.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from schemas.paper import PAPER_MODELS  # noqa: E402

DEMO = ["demo-convnext-sup", "demo-vit-sup", "demo-convnext-clip", "demo-vit-clip"]
STAGES = ("environment", "correctness", "extract_run", "torchrun", "throughput", "deviation", "compiled", "profile")
PROFILE_IMAGES = 2000
TARGETS = {"gpu_compile_over_compiled_forward": 0.9, "gpu_compile_over_single_passes": 5.0,
           "pil_over_eager_forward": 0.6}
# extract's CLI with the block size patched (CPU runs use small blocks so that two processes share the work)
WRAPPER = ("import sys\nimport schemas.layout as L\nL.CHUNK_ROWS = int(sys.argv.pop(1))\n"
           "from extract.cli import main\nraise SystemExit(main(sys.argv[1:]))\n")


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cuda(device: str) -> bool:
    return device.startswith("cuda")


def sync(device: str) -> None:
    import torch

    if cuda(device):
        torch.cuda.synchronize()


def rel_err(z, ref) -> float:
    """max over images of max_j |z_j - ref_j| / max_j |ref_j|."""
    z, ref = np.asarray(z, np.float64), np.asarray(ref, np.float64)
    return float((np.abs(z - ref).max(1) / np.maximum(np.abs(ref).max(1), 1e-30)).max())


def compare(z, ref) -> dict:
    z, ref = np.asarray(z), np.asarray(ref)
    return {"top1_agreement": float((z.argmax(1) == ref.argmax(1)).mean()), "max_rel_err": rel_err(z, ref),
            "bitwise_equal": bool(np.array_equal(z, ref))}


def stage(summary: dict, name: str, fn, device: str) -> dict:
    import torch

    log(f"{name} ...")
    if cuda(device):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        entry = {"ok": True, **fn()}
    except Exception as e:  # noqa: BLE001 - reported in the summary; the other stages still run
        entry = {"ok": False, "error": f"{type(e).__name__}: {e}",
                 "traceback": traceback.format_exc().splitlines()[-12:]}
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    if cuda(device):
        entry["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    summary["stages"][name] = entry
    log(f"{name}: {'ok' if entry['ok'] else 'FAILED ' + entry['error']} in {entry['seconds']} s")
    return entry


# ---------------------------------------------------------------- stages
def environment(device: str) -> dict:
    import open_clip
    import PIL
    import timm
    import torch
    import torchvision
    import zarr

    from extract.gpu_decode import check_device_decode
    from extract.spec.models import SUPERVISED_PREPROCESS

    out = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "timm": timm.__version__, "open_clip": open_clip.__version__, "pillow": PIL.__version__,
           "zarr": zarr.__version__, "cpus": os.cpu_count()}
    if cuda(device):
        out.update(gpu=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                   bf16=bool(torch.cuda.is_bf16_supported()),
                   memory_gb=round(torch.cuda.get_device_properties(device).total_memory / 1e9, 1))
    try:
        check_device_decode(device, [SUPERVISED_PREPROCESS])
        out["device_jpeg_decode"] = True
    except Exception as e:  # noqa: BLE001 - the answer, not a failure of this stage
        out["device_jpeg_decode"] = f"no: {e}"
    return out


def _pixels(specs, data_root: Path, n: int) -> dict:
    """The first n images through the Pillow pipeline: {geometry: uint8 [n,3,S,S]}."""
    import torch

    from extract import pipeline
    from extract.readers import open_reader
    from schemas.manifest import load_manifest

    reader = open_reader("imagenet-val", load_manifest().dataset("imagenet-val"), data_root)
    data = pipeline.BlockImages(reader, "center", pipeline.geometries(s.preprocess for s in specs))
    batch = pipeline.collate([data[i] for i in range(n)])
    assert batch["ok"].all(), "the synthetic images must all decode"
    return {k: torch.as_tensor(v) for k, v in batch["images"].items()}


def _logits(model, x, pre, device: str, batch: int = 32) -> np.ndarray:
    import torch

    from extract.tensors import normalize

    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(model.forward(normalize(x[i:i + batch].to(device), pre))[0].float().cpu())
    return torch.cat(out).numpy()


def correctness(specs, data_root: Path, device: str, precision: str, n: int) -> dict:
    """The models as the run loads them on the device vs fp32 on the CPU, on the same n images."""
    import torch

    from extract.model_cache import ModelCache
    from extract.options import RunOptions

    images = _pixels(specs, data_root, n)
    opts = RunOptions(store="unused", pretrained=False)
    on_dev, on_cpu = ModelCache(opts, device, precision, None), ModelCache(opts, "cpu", "fp32", None)
    out: dict = {"images": n, "models": {}}
    for spec in specs:
        x = images[spec.preprocess.geometry_key()]
        m = on_dev.get(spec, spec.preprocess.crop)
        z_dev = _logits(m, x, spec.preprocess, device)
        used = m.precision
        on_dev.loaded.clear()
        if cuda(device):
            torch.cuda.empty_cache()
        z_cpu = _logits(on_cpu.get(spec, spec.preprocess.crop), x, spec.preprocess, "cpu")
        on_cpu.loaded.clear()
        row = compare(z_dev, z_cpu)
        row["precision"] = used
        out["models"][spec.id] = row
    # bf16 keeps ~3 significant digits: a random-weight model's logits stay within a few percent of fp32
    out["ok"] = all(r["max_rel_err"] < 0.1 and np.isfinite(r["max_rel_err"]) for r in out["models"].values())
    return out


def _store_logits(store: Path, models) -> dict:
    import zarr

    g = zarr.open_group(str(store), mode="r")["imagenet-val/center"]
    return {m: np.asarray(g[m]["logits"][...]) for m in models}


def _verify(store: Path) -> dict:
    import contextlib
    import io

    from extract.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["verify", str(store)])
    return {"rc": rc, "last_line": buf.getvalue().strip().splitlines()[-1]}


RUN_VARIANTS = {"pil": dict(decode="pil"), "gpu": dict(decode="gpu"), "gpu_compile": dict(decode="gpu", compile=True)}
LOGIT_PAIRS = (("gpu", "pil"), ("gpu_compile", "gpu"))


def extract_runs(specs, data_root: Path, work: Path, cfg: dict, names: list[str]) -> dict:
    """``extract run`` + ``extract verify`` for each variant in ``names`` (keys of RUN_VARIANTS); the logits
    of each against its reference store in LOGIT_PAIRS, where that store is in ``work``."""
    import schemas.layout as L
    from extract import runner
    from extract.options import RunOptions

    L.CHUNK_ROWS = cfg["rows"]
    models = [s.id for s in specs]
    out: dict = {"runs": {}}
    for name in names:
        kw = RUN_VARIANTS[name]
        store = work / f"{name}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        t0 = time.perf_counter()
        try:
            result = runner.run(RunOptions(store=str(store), models=models, datasets=["imagenet-val"],
                                           transforms=["center"], data_root=str(data_root), device=cfg["device"],
                                           batch_size=cfg["batch_size"], workers=cfg["workers"], pretrained=False,
                                           progress=False, allow_partial=True, **kw))
        except Exception as e:  # noqa: BLE001 - reported; the other variants still run
            out["runs"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                                 "traceback": traceback.format_exc().splitlines()[-8:]}
            continue
        unit = result.units[0]
        verify = _verify(store)
        out["runs"][name] = {"ok": verify["rc"] == 0 and not result.invalid, "images": unit.images,
                             "img_per_s": round(unit.images_per_s, 1),
                             "steady_img_per_s": round(unit.steady_images_per_s, 1),
                             "input_wait_seconds": round(unit.input_wait_seconds, 1),
                             "loop_seconds": round(unit.seconds, 1),
                             "wall_seconds": round(time.perf_counter() - t0, 1),
                             "decoded_on_device": unit.decoded_on_device, "invalid": len(result.invalid),
                             "verify": verify}
        log(f"  extract run {name}: {unit.images} images at {unit.images_per_s:.0f} img/s "
            f"({unit.steady_images_per_s:.0f} after the first block; {unit.input_wait_seconds:.1f} s waiting for "
            f"input); verify rc {verify['rc']}")
    done = [n for n, r in out["runs"].items() if r.get("ok")]
    out["logits"] = {}
    for a, b in LOGIT_PAIRS:
        if a in done and (work / f"{b}.zarr").exists():
            za, zb = _store_logits(work / f"{a}.zarr", models), _store_logits(work / f"{b}.zarr", models)
            out["logits"][f"{a} vs {b}"] = {m: compare(za[m], zb[m]) for m in models}
    out["ok"] = len(done) == len(names)
    return out


def _copy_heads(src: Path, dst: Path) -> None:
    """The zero-shot heads of one store into another (so that torchrun's processes do not build them again)."""
    import zarr

    import schemas
    from extract.heads_store import HEAD_ARRAY, write_head
    from schemas import layout as L

    g = zarr.open_group(str(src), mode="r")
    if L.HEADS_GROUP not in g:
        return
    root = schemas.open_root(str(dst))
    for model in g[L.HEADS_GROUP].group_keys():
        h = g[L.HEADS_GROUP][model]
        attrs = {k: v for k, v in h.attrs.items() if k not in ("shape", "complete")}
        write_head(root, model, np.asarray(h[HEAD_ARRAY][...]), attrs)


def torchrun(specs, data_root: Path, work: Path, cfg: dict) -> dict:
    """Two processes on the one device into one store, against the single-process Pillow store."""
    ref = work / "pil.zarr"
    if not ref.exists():
        raise RuntimeError("no single-process store to compare with (extract_run's pil run failed)")
    store = work / "torchrun.zarr"
    shutil.rmtree(store, ignore_errors=True)
    _copy_heads(ref, store)
    wrapper = work / "extract_blocks.py"
    wrapper.write_text(WRAPPER)
    models = [s.id for s in specs]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(wrapper),
           str(cfg["rows"]), "run", "--store", str(store), "--models", *models, "--datasets", "imagenet-val",
           "--transforms", "center", "--data-root", str(data_root), "--device", cfg["device"], "--batch-size",
           str(cfg["batch_size"]), "--workers", str(max(cfg["workers"] // 2, 0)), "--allow-partial",
           "--no-progress", "--no-pretrained"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=cfg["timeout"])
    out: dict = {"rc": p.returncode, "seconds_run": round(time.perf_counter() - t0, 1)}
    if p.returncode != 0:
        out.update(ok=False, stderr_tail=p.stderr.strip().splitlines()[-15:])
        return out
    out["verify"] = _verify(store)
    a, b = _store_logits(store, models), _store_logits(ref, models)
    out["models"] = {m: compare(a[m], b[m]) for m in models}
    # one process or two feed every model the same batches: equal up to cuDNN's choice of algorithm per process
    out["ok"] = out["verify"]["rc"] == 0 and all(r["bitwise_equal"] or (r["top1_agreement"] == 1.0
                                                                        and r["max_rel_err"] < 1e-2)
                                                  for r in out["models"].values())
    return out


def throughput(specs, data_root: Path, cfg: dict, compiled: bool) -> dict:
    """(a) forward only, compiled or eager, and with eager (c) one model at a time (extract_throughput's)."""
    import torch

    from extract.model_cache import ModelCache
    from extract.options import RunOptions
    from extract.spec.transforms import parse_transform
    from extract_throughput import bench_forward, bench_input, bench_single_passes, load_models

    t = parse_transform("center")
    device, bs, n = cfg["device"], cfg["batch_size"], cfg["n_images"]
    out: dict = {}
    cache = ModelCache(RunOptions(store="unused", pretrained=False, compile=compiled), device, cfg["precision"], None)
    models = load_models(specs, cache, t)
    together, alone = bench_forward(specs, models, t, device=device, batch_size=bs, n_images=min(n, 40 * bs),
                                    data_root=data_root)
    out["forward_compiled" if compiled else "forward_eager"] = {
        "img_per_s": round(together, 1), "alone_img_per_s": {k: round(v, 1) for k, v in alone.items()}}
    log(f"  (a) forward only{' compiled' if compiled else ''}: {together:.0f} img/s")
    if not compiled:
        c, seconds, c_steady = bench_single_passes(specs, models, t, data_root=data_root, device=device,
                                                   batch_size=bs, workers=cfg["workers"], n_images=n)
        out["single_passes"] = {"img_per_s": round(c, 1), "steady_img_per_s": round(c_steady, 1),
                                "seconds": {k: round(v, 1) for k, v in seconds.items()}}
        log(f"  (c) one model at a time: {c:.0f} img/s ({c_steady:.0f} after each pass's first block)")
        for decode in ("pil", "gpu"):
            d, d_steady = bench_input(specs, t, data_root=data_root, device=device, batch_size=bs,
                                      workers=cfg["workers"], n_images=n, decode=decode)
            out[f"input_only_{decode}"] = {"img_per_s": round(d, 1), "steady_img_per_s": round(d_steady, 1)}
            log(f"  (d) input only, --decode {decode}: {d:.0f} img/s ({d_steady:.0f} after the first block)")
    del models
    cache.loaded.clear()
    if cuda(device):
        torch.cuda.empty_cache()
    return out


def compiled(specs, data_root: Path, work: Path, cfg: dict) -> dict:
    """``extract run --decode gpu --compile`` and the compiled forward-only ceiling."""
    run = extract_runs(specs, data_root, work, cfg, ["gpu_compile"])
    forward = throughput(specs, data_root, cfg, compiled=True)
    return {**run, **forward, "ok": run["ok"]}


def targets(summary: dict) -> dict:
    stages = summary["stages"]
    runs = {**stages.get("extract_run", {}).get("runs", {}), **stages.get("compiled", {}).get("runs", {})}
    tp = {**stages.get("throughput", {}), **stages.get("compiled", {})}

    def rate(d, *keys):
        for k in keys:
            d = (d or {}).get(k)
        return d

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    out = {}
    for key, run, ceiling in (("gpu_compile_over_compiled_forward", "gpu_compile", "forward_compiled"),
                              ("gpu_compile_over_single_passes", "gpu_compile", "single_passes"),
                              ("pil_over_eager_forward", "pil", "forward_eager")):
        steady_ceiling = "img_per_s" if ceiling.startswith("forward") else "steady_img_per_s"
        row = {"target": TARGETS[key],
               # after the first block: the workers' start, cuDNN's autotuning and compiling behind it
               "steady": ratio(rate(runs, run, "steady_img_per_s"), rate(tp, ceiling, steady_ceiling)),
               "end_to_end": ratio(rate(runs, run, "img_per_s"), rate(tp, ceiling, "img_per_s"))}
        row["met"] = None if row["steady"] is None else bool(row["steady"] >= row["target"])
        out[key] = row
    return out


def profile(specs, cfg: dict, out_dir: Path, work: Path) -> dict:
    """``extract run`` under torch.profiler (a smaller dataset: a trace of every kernel): where the device and the
    main thread spend their time."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    from extract_throughput import make_dataset

    n = min(cfg["n_images"], PROFILE_IMAGES)
    data_root = make_dataset(work / f"data-{n}", n, procs=max(1, os.cpu_count() or 2))
    sort = "device_time_total" if cuda(cfg["device"]) else "cpu_time_total"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda(cfg["device"]) else [])
    out: dict = {"images": n}
    for decode in ("gpu", "pil"):
        with profiler(activities=activities) as prof:
            run = extract_runs(specs, data_root, work / f"profile-{decode}", {**cfg, "n_images": n}, [decode])
        averages = prof.key_averages()
        text = "\n\n".join(f"sorted by {key}:\n" + averages.table(sort_by=key, row_limit=40)
                            for key in dict.fromkeys([sort, "cpu_time_total"]))
        path = out_dir / f"profile_{decode}.txt"
        path.write_text(text + "\n")
        top = sorted(averages, key=lambda e: getattr(e, sort), reverse=True)[:12]
        out[decode] = {"run": run["runs"].get(decode), "table": path.name,
                       "top": [{"name": e.key, "calls": e.count,
                                "device_ms": round(e.device_time_total / 1e3, 1),
                                "cpu_ms": round(e.cpu_time_total / 1e3, 1)} for e in top]}
        log(f"  profile --decode {decode}: {path}")
    out["ok"] = all((out[d]["run"] or {}).get("ok") for d in ("gpu", "pil"))
    return out


def deviation(data_root: Path, cfg: dict) -> dict:
    import torch

    from decode_deviation import measure

    torch.backends.cudnn.allow_tf32 = False  # fp32 logits: only the pixels differ between the paths
    torch.backends.cuda.matmul.allow_tf32 = False
    return measure(data_root, cfg["device"], cfg["deviation_images"], cfg["deviation_full"], tiny=DEMO,
                   full=PAPER_MODELS if cfg["deviation_full"] else [])


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--out", help="also write the JSON summary here")
    ap.add_argument("--models", nargs="+", help="default: the paper's four on CUDA, the demo models on the CPU")
    ap.add_argument("--n-images", type=int, help="default: 6000 on CUDA, 48 on the CPU")
    ap.add_argument("--batch-size", type=int, help="default: 250 on CUDA, 8 on the CPU")
    ap.add_argument("--workers", type=int, help="DataLoader workers (default: as extract run on CUDA, 2 on the CPU)")
    ap.add_argument("--skip", nargs="*", default=[], choices=STAGES)
    ap.add_argument("--no-compile", action="store_true", help="leave out the --compile runs (as --skip compiled)")
    ap.add_argument("--profile", action="store_true", help="also profile extract run (the profile stage)")
    ap.add_argument("--workdir", help="data and stores (default: a temp dir; the JPEGs are kept in ~/.cache)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    warnings.filterwarnings("ignore", message=".*image decoding and encoding capabilities of TorchVision.*")
    import torch

    from extract.options import default_device, default_workers
    from extract.spec.models import resolve_model
    from extract_throughput import make_dataset

    device = args.device or default_device()
    on_gpu = cuda(device)
    cfg = {"device": device, "precision": "bf16" if on_gpu else "fp32",
           "n_images": args.n_images or (6000 if on_gpu else 48),
           "batch_size": args.batch_size or (250 if on_gpu else 8),
           "workers": args.workers if args.workers is not None else (default_workers(device) if on_gpu else 2),
           "rows": 1000 if on_gpu else 16,
           "correctness_images": 64 if on_gpu else 8, "deviation_images": 256 if on_gpu else 32,
           "deviation_full": 64 if on_gpu else 0, "timeout": 240}
    specs = [resolve_model(m) for m in (args.models or (PAPER_MODELS if on_gpu else DEMO))]
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "beyond-imagenet" / "bench"
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary: dict = {"device": device, "models": [s.id for s in specs], "config": cfg, "stages": {}}
    data_root = make_dataset((Path(args.workdir) if args.workdir else cache) / f"data-{cfg['n_images']}",
                             cfg["n_images"], procs=max(1, os.cpu_count() or 2))
    steps = [("environment", lambda: environment(device)),
             ("correctness", lambda: correctness(specs, data_root, device, cfg["precision"],
                                                 cfg["correctness_images"])),
             ("extract_run", lambda: extract_runs(specs, data_root, work, cfg, ["pil", "gpu"])),
             ("torchrun", lambda: torchrun(specs, data_root, work, cfg)),
             ("throughput", lambda: throughput(specs, data_root, cfg, compiled=False)),
             ("deviation", lambda: deviation(data_root, cfg)),
             ("compiled", lambda: compiled(specs, data_root, work, cfg)),
             ("profile", lambda: profile(specs, cfg, Path(args.out).resolve().parent if args.out else work, work))]
    assert [n for n, _ in steps] == list(STAGES)
    skip = set(args.skip) | ({"compiled"} if args.no_compile else set()) | (set() if args.profile else {"profile"})

    def finish(complete: bool) -> str:
        summary["targets"] = targets(summary)
        if on_gpu:
            summary["peak_gpu_memory_gb"] = max((s.get("peak_gpu_memory_gb") or 0)
                                                for s in summary["stages"].values())
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        summary["complete"] = complete
        summary["ok"] = complete and all(s.get("ok") is not False for s in summary["stages"].values())
        text = json.dumps(summary, indent=1, default=str)
        if args.out:  # after every stage: a run cut short keeps what it finished
            tmp = Path(args.out + ".tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, args.out)
        return text

    for name, fn in steps:
        if name in skip:
            summary["stages"][name] = {"ok": None, "skipped": True}
        else:
            stage(summary, name, fn, device)
        finish(False)
    text = finish(True)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(text)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
