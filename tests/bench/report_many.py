"""Many models benchmark of ``analyze report`` (run by hand; pytest does not collect tests/bench).

Part ``many`` (default): a SYNTHETIC store grown to 10, 25 and 50 models (every dataset of the paper's suite but
ImageNet-C and VTAB, ImageNet val at the 13 invariance views), timing

  (1) ``analyze report`` at 10, 25 and 50 models (time per model: linear growth means a constant slope),
  (2) the full report at 50 models with ``--cache DIR`` (it fills the cache),
  (3) the report after adding one model, with the same ``--cache``: target <= 10% of the full report's time.

With ``--feature-dim D`` every run also stores D pooled features, as ``extract run`` writes them, and the agreement
study computes linear CKA for every pair (on at most 1,000 images a dataset, whatever D).

Part ``imagenet-c``: the paper suite at its real size plus ImageNet-C at its real size (3.75 M rows x 4 models,
float16 logits, about 30 GB of logits): ``analyze report`` against a plain read of the same logits, by the
report's own reader and by zarr's array indexing (target: within 1.5x), and its peak memory (target: under 4 GB). It needs about 45 GB of disk; on the 2-core development
machine the store took 12 minutes to build and each read or report a few minutes.

    python tests/bench/report_many.py --work /tmp/many --n-val 300 --n-boot 200       # small, minutes
    python tests/bench/report_many.py --work /data/many --real-size                    # real dataset sizes
    python tests/bench/report_many.py --part imagenet-c --real-size --work /data/inc   # see above
    python tests/bench/report_many.py --part imagenet-c --n-val 100 --imagenet-c-images 40   # a smoke test

Each report runs in a subprocess; the time is its wall time, the memory its peak resident set (``wait4``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from analyze.synthetic import FULL_SIZES, INVARIANCE, MODELS, build_synthetic_store, planted_logits  # noqa: E402


def model_names(n: int) -> dict[str, float]:
    """``n`` synthetic models with top-1 spread over 0.55 .. 0.90."""
    return {f"bench-{i:03d}": 0.55 + 0.35 * i / max(1, n - 1) for i in range(n)}


REPEAT = 1  # --repeat: each report timed this many times, the fastest kept (a shared machine is noisy)


def report(store: Path, out: Path, n_boot: int, cache: Path | None = None) -> tuple[float, float]:
    """Seconds and peak RSS (GB) of ``analyze report`` in a child process, the fastest of ``REPEAT`` runs; with
    ``cache``, each run starts from the cache as it was before the first."""
    before = None
    if cache is not None and REPEAT > 1:
        before = cache.with_name(cache.name + ".before")
        shutil.rmtree(before, ignore_errors=True)
        if cache.exists():
            shutil.copytree(cache, before)
    runs = []
    for _ in range(REPEAT):
        if before is not None:
            shutil.rmtree(cache, ignore_errors=True)
            if before.exists():
                shutil.copytree(before, cache)
        runs.append(_report_once(store, out, n_boot, cache))
    if REPEAT > 1:
        print(f"    {out.name}: " + ", ".join(f"{seconds:.1f}" for seconds, _ in runs) + " s", flush=True)
    return min(runs)


def _report_once(store: Path, out: Path, n_boot: int, cache: Path | None) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # what the bench just wrote (a model's logits, the cache's copy) goes to disk before, not during, the timing
    cmd = [sys.executable, "-m", "analyze", "report", str(store), "--out", str(out), "--n-boot", str(n_boot), "--quiet"]
    if cache is not None:
        cmd += ["--cache", str(cache)]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"analyze report failed (exit {os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}")
    return seconds, usage.ru_maxrss / 1024**2


def grow(store: Path, models: dict[str, float], sizes: dict[str, int], transforms: tuple[str, ...],
         feature_dim: int = 0) -> float:
    t0 = time.perf_counter()
    for name, accuracy in models.items():  # one at a time: each model's logits from a seed of its own
        build_synthetic_store(store, sizes=sizes, transforms=transforms, models={name: accuracy}, seed=0,
                              run_seed=int(name.rsplit("-", 1)[1]), feature_dim=feature_dim)
    return time.perf_counter() - t0


def dataset_sizes(args) -> dict[str, int]:
    return dict(FULL_SIZES) if args.real_size else {d: min(n, args.n_val) for d, n in FULL_SIZES.items()}


def part_many(args) -> dict:
    sizes = dataset_sizes(args)
    transforms = INVARIANCE if args.transforms == "paper" else tuple(args.transforms.split(","))
    counts = sorted(int(c) for c in args.counts.split(","))
    work = args.work
    store, cache = work / "store.zarr", work / "cache"
    for path in (store, cache):
        shutil.rmtree(path, ignore_errors=True)
    everything = model_names(counts[-1] + 1)
    names = list(everything)
    out: dict = {"sizes": sizes, "transforms": list(transforms), "n_boot": args.n_boot,
                 "feature_dim": args.feature_dim, "by_models": {}}
    have = 0
    for count in counts:
        built = grow(store, {m: everything[m] for m in names[have:count]}, sizes, transforms, args.feature_dim)
        have = count
        seconds, peak = report(store, work / f"out-{count}", args.n_boot)
        out["by_models"][count] = {"seconds": seconds, "peak_gb": peak}
        print(f"{count:4d} models: report {seconds:7.1f} s, peak {peak:5.2f} GB   (built in {built:.0f} s)", flush=True)
    full, full_peak = report(store, work / "out-cached-full", args.n_boot, cache)
    print(f"{counts[-1]:4d} models, --cache (cold, fills it): {full:7.1f} s, peak {full_peak:5.2f} GB", flush=True)
    grow(store, {names[-1]: everything[names[-1]]}, sizes, transforms, args.feature_dim)
    added, added_peak = report(store, work / "out-cached-plus-one", args.n_boot, cache)
    plain, _ = report(store, work / f"out-{counts[-1] + 1}", args.n_boot)
    base = out["by_models"][counts[-1]]["seconds"]
    out.update(cold_cache_seconds=full, plus_one_cached_seconds=added, plus_one_plain_seconds=plain,
               ratio=added / base)
    print(f"{counts[-1] + 1:4d} models, --cache (one model new): {added:7.1f} s, peak {added_peak:5.2f} GB; "
          f"without the cache {plain:.1f} s")
    print(f"ratio to the full report at {counts[-1]} models: {added / base:.1%}   target <= 10%")
    slopes = [(out["by_models"][b]["seconds"] - out["by_models"][a]["seconds"]) / (b - a)
              for a, b in zip(counts, counts[1:])]
    print("seconds per added model between the counts: " + ", ".join(f"{s:.2f}" for s in slopes)
          + "   (linear growth: about equal)")
    return out


def imagenet_c_store(store: Path, n_images: int, models: dict[str, float]) -> None:
    """ImageNet-C at ``n_images`` images x 15 corruptions x 5 severities, float16 logits written block by block
    (the whole run never sits in memory), as ``extract run`` writes it under its manifest entry."""
    import schemas
    from schemas.label_spaces import imagenet_synsets
    from schemas.manifest import load_manifest
    from schemas.store import default_dataset_attrs

    layout = load_manifest().dataset("imagenet-c")["layout"]
    corruptions, severities = sorted(layout["corruptions"]), layout["severities"]
    rng = np.random.default_rng(0)
    label = rng.integers(0, 1000, n_images)
    synsets = imagenet_synsets()
    files = [f"{synsets[y]}/ILSVRC2012_val_{i + 1:08d}.JPEG" for i, y in enumerate(label)]
    order = np.argsort(files)
    ids = [f"{c}/{s}/{files[i]}" for c in corruptions for s in severities for i in order]
    labels = np.tile(label[order], len(corruptions) * len(severities)).astype(np.int32)
    columns = {"corruption": np.repeat(np.array(corruptions), len(severities) * n_images),
               "severity": np.tile(np.repeat(np.array(severities, np.int8), n_images), len(corruptions))}
    root = schemas.open_root(store)
    group = schemas.ensure_dataset(root, "imagenet-c", sample_id=np.array(ids), label=labels, columns=columns,
                                   attrs=default_dataset_attrs("imagenet-c"))
    digest = group.attrs["sample_digest"]
    for m, (model, accuracy) in enumerate(models.items()):
        inputs = schemas.fingerprint_inputs(model={"id": model}, weights_id="synthetic", preprocess={},
                                            transform={"id": "center"}, precision="unknown", sample_digest=digest)
        writer = schemas.open_run(root, "imagenet-c", "center", model, num_classes=1000, feature_dim=None,
                                  attrs={"synthetic": True, "model": {"id": model}, "preprocess": {},
                                         "precision": "unknown", "logit_kind": "classifier",
                                         "fingerprint_inputs": inputs},
                                  logits_dtype="float16")
        block_rng = np.random.default_rng([1, m])
        for b in writer.pending_blocks():
            rows = writer.blocks.slice(b)
            writer.write_block(b, planted_logits(block_rng, labels[rows], 1000, accuracy).astype(np.float16))
        print(f"imagenet-c: {model} written", flush=True)


def part_imagenet_c(args) -> dict:
    from analyze_report import print_reads, reads_around  # tests/bench/analyze_report.py: plain reads

    store = args.work / "paper-c.zarr"
    marker = store.with_name(store.name + ".complete")
    if not marker.exists():
        shutil.rmtree(store, ignore_errors=True)
        build_synthetic_store(store, sizes=dataset_sizes(args), transforms=INVARIANCE, models=MODELS)
        imagenet_c_store(store, args.imagenet_c_images, MODELS)
        marker.write_text("ok\n")
    (seconds, peak), nbytes, reads = reads_around(store, 3, lambda: report(store, args.work / "out-paper-c", args.n_boot))
    print(f"(2) analyze report       {seconds:8.1f} s   (n_boot={args.n_boot})")
    print_reads(reads, seconds, nbytes, 1.5)
    print(f"peak memory of (2)       {peak:8.2f} GB  target < 4")
    return {"report_seconds": seconds, "peak_gb": peak, "logits_gb": nbytes / 1e9,
            "read_seconds": {way: best for way, (best, _, _) in reads.items()},
            "ratio": {way: seconds / best for way, (best, _, _) in reads.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("many", "imagenet-c"), default="many")
    p.add_argument("--work", type=Path, default=Path("/tmp/report-many"), help="stores, caches and reports go here")
    p.add_argument("--counts", default="10,25,50", help="model counts to time; the last is the full report")
    p.add_argument("--n-val", type=int, default=300, help="samples per dataset (capped at its real size)")
    p.add_argument("--real-size", action="store_true", help="every dataset at its real size (--n-val ignored)")
    p.add_argument("--transforms", default="paper", help="ImageNet val views: 'paper' (13) or a comma list")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--feature-dim", type=int, default=0, help="pooled features per run, as `extract run` stores them "
                   "(0: logits only, so the agreement study has no CKA to compute)")
    p.add_argument("--imagenet-c-images", type=int, default=50000, help="images per ImageNet-C cell (real: 50000)")
    p.add_argument("--repeat", type=int, default=1, help="time each report without --cache this many times, keep "
                                                        "the fastest")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    args.work.mkdir(parents=True, exist_ok=True)
    result = part_many(args) if args.part == "many" else part_imagenet_c(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
