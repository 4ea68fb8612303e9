"""Scale benchmark of ``analyze report`` (run by hand; pytest does not collect tests/bench).

Builds a full-size SYNTHETIC store once (4 models; imagenet-val 50,000 x 1000 at the 13 invariance
transforms; ImageNet-R, -A, -V2, -Sketch, -Hard, PUG-ImageNet and cue-conflict at their real sizes;
pooled features too), then times

  (1) reading the logits arrays the report reads, block by block, nothing else, and
  (2) ``analyze report`` over the store, in a subprocess, with its peak resident memory.

Targets on a 2-core machine: (2) within 2x of (1); peak memory under 4 GB.

    python tests/bench/analyze_report.py --store /tmp/bench.zarr [--n-boot 1000] [--features 768]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from analyze.store import StoreReader  # noqa: E402
from analyze.synthetic import FULL_SIZES, build_synthetic_store  # noqa: E402


def _marker(store: Path) -> Path:
    """Beside the store, not in it: the store holds nothing but the contract's groups."""
    return store.with_name(store.name + ".complete")


def build(store: Path, features: int) -> float:
    t0 = time.perf_counter()
    build_synthetic_store(store, sizes=FULL_SIZES, feature_dim=features,
                          progress=lambda jobs: tqdm(jobs, desc="building synthetic store", unit="run"))
    _marker(store).write_text("ok\n")
    return time.perf_counter() - t0


def read_only(store: Path, threads: int, through_zarr: bool = False) -> tuple[float, int]:
    """Seconds to read every logits block of every run the report reads, with the report's thread pool
    and task layout (one task per block, all runs in one pool), and the bytes read: by the report's own
    reader (its shards a chunk at a time into each thread's reused buffer, and checksums), or ``through_zarr``: by
    zarr's array indexing, as any script would."""
    reader = StoreReader(store)
    keys = [k for k in reader.runs() if not k.dataset.startswith("vtab-")]
    tasks = [(key, rows) for key in keys for rows in reader.blocks(key)]
    arrays = {key: reader.root[f"{key.path}/logits"] for key in keys}
    read = ((lambda task: arrays[task[0]][task[1]].nbytes) if through_zarr else
            (lambda task: sum(values.nbytes for _, values in reader.logit_parts(*task))))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(read, tasks))
    return time.perf_counter() - t0, total


READS = {"the report's reader": False, "zarr's array indexing": True}


def reads_around(store: Path, threads: int, run_report):
    """``run_report()`` between two rounds of plain reads, one by each way of ``READS``: (the report's result, the
    bytes read, {way: (faster read, first, second)}). The page cache's state favours no one way."""
    first = {way: read_only(store, threads, zarr) for way, zarr in READS.items()}
    result = run_report()
    second = {way: read_only(store, threads, zarr)[0] for way, zarr in READS.items()}
    nbytes = next(iter(first.values()))[1]
    return result, nbytes, {way: (min(first[way][0], second[way]), first[way][0], second[way]) for way in READS}


def print_reads(reads: dict, report_s: float, nbytes: int, target: float) -> None:
    print(f"logits read              {nbytes / 1e9:8.2f} GB (decompressed)")
    for way, (best, first, second) in reads.items():
        print(f"(1) read only, by {way}: {best:.1f} s ({nbytes / 1e6 / best:,.0f} MB/s; reads before and after (2): "
              f"{first:.1f} s, {second:.1f} s); ratio (2)/(1) {report_s / best:.2f}   target <= {target:g}")


def report(store: Path, out: Path, n_boot: int) -> tuple[float, float]:
    """Seconds and peak RSS (GB) of ``analyze report`` in a child process."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "analyze", "report", str(store), "--out", str(out),
                    "--n-boot", str(n_boot), "--quiet"], check=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, peak_kb / 1024**2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=Path("/tmp/bench.zarr"))
    p.add_argument("--out", type=Path, default=Path("/tmp/bench-report"))
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--features", type=int, default=768, help="pooled feature width written per run (0: none)")
    p.add_argument("--threads", type=int, default=3, help="read threads (the report uses 3)")
    args = p.parse_args()
    if not _marker(args.store).exists():
        print(f"building {args.store} (once) ...")
        print(f"built in {build(args.store, args.features):.0f} s")
    size = sum(f.stat().st_size for f in args.store.rglob("*") if f.is_file())
    # Read, report, read: the report is compared with the faster of the two reads of each way.
    (report_s, peak_gb), nbytes, reads = reads_around(args.store, args.threads,
                                                      lambda: report(args.store, args.out, args.n_boot))
    print(f"store on disk            {size / 1e9:8.2f} GB")
    print(f"(2) analyze report       {report_s:8.1f} s   (n_boot={args.n_boot})")
    print_reads(reads, report_s, nbytes, 2)
    print(f"peak memory of (2)       {peak_gb:8.2f} GB  target < 4")


if __name__ == "__main__":
    main()
