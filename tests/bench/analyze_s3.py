"""``analyze report`` on a store on object storage vs the same store on disk (run by hand; pytest does not collect
tests/bench).

Builds a SYNTHETIC store on disk once (``analyze demo-store`` sizes: ``--n-val`` rows per dataset, 4 models,
imagenet-val at the 13 invariance transforms), copies it into moto's S3 server on 127.0.0.1 (in memory: keep
``--n-val`` modest), then prints in one run:

  (1) the time to open the store for analysis (``StoreReader``: metadata, presence listings) on disk, on S3
      without and with the metadata copy that ``extract run`` writes (``schemas.snapshot``), and for
      comparison zarr's own metadata walk, plain and with zarr's consolidated metadata (a consolidated
      copy; the project does not use it: docs/design.md says why), and
  (2) ``analyze report`` on disk and on S3, each in a subprocess, with the ratio, and whether results.csv
      is identical.

Target (issue 10): the S3 report within 1.5x the local one on the loopback server.

    python tests/bench/analyze_s3.py [--n-val 2000] [--n-boot 200] [--dir /tmp/bench-s3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from loopback import free_port, wait_for_port  # noqa: E402
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def report(store: str, out: Path, n_boot: int, endpoint: str) -> float:
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, **AWS, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "analyze", "report", store, "--out", str(out), "--n-boot", str(n_boot), "--quiet"]
    if store.startswith("s3://"):
        cmd += ["--storage-option", f"endpoint_url={endpoint}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def open_time(store: str, options: dict | None, repeat: int = 3) -> float:
    """Best of ``repeat``: open the store for analysis (what the report does before reading any logits)."""
    from analyze.store import StoreReader

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        StoreReader(store, storage_options=options)
        best = min(best, time.perf_counter() - t0)
    return best


def consolidated_open_time(url: str, options: dict, repeat: int = 3) -> float:
    """Best of ``repeat``: open with consolidated metadata and visit every array's metadata."""
    import zarr

    from schemas.remote import zarr_store

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        root = zarr.open_consolidated(zarr_store(url, options, read_only=True), mode="r", zarr_format=3)
        sum(1 for _ in root.members(max_depth=None))
        best = min(best, time.perf_counter() - t0)
    return best


def plain_walk_time(url: str, options: dict | None, repeat: int = 3) -> float:
    import zarr

    from schemas.remote import is_url, zarr_store

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        target = zarr_store(url, options, read_only=True) if is_url(url) else url
        root = zarr.open_group(target, mode="r", zarr_format=3, use_consolidated=False)
        sum(1 for _ in root.members(max_depth=None))
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-val", type=int, default=2000)
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--dir", type=Path, default=Path("/tmp/bench-s3"))
    args = p.parse_args()
    os.environ.update(AWS)

    import fsspec
    import zarr

    from analyze.synthetic import build_synthetic_store
    from schemas.remote import zarr_store
    from schemas.snapshot import write_metadata_copy

    args.dir.mkdir(parents=True, exist_ok=True)
    local = args.dir / f"store-{args.n_val}.zarr"
    if not (args.dir / f"{local.name}.complete").exists():
        shutil.rmtree(local, ignore_errors=True)
        t0 = time.perf_counter()
        build_synthetic_store(local, n_val=args.n_val)
        (args.dir / f"{local.name}.complete").write_text("ok\n")
        print(f"built {local} in {time.perf_counter() - t0:.1f} s")

    # The server in its own process, as a real endpoint is: in this one it would share the client's GIL.
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        options = {"endpoint_url": endpoint}
        fs = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
        fs.mkdir("bench")
        t0 = time.perf_counter()
        fs.put(str(local), "bench/store.zarr", recursive=True)
        fs.put(str(local), "bench/consolidated.zarr", recursive=True)
        n_objects = len(fs.find("bench/store.zarr"))
        print(f"uploaded {n_objects} objects twice in {time.perf_counter() - t0:.1f} s")
        url, curl = "s3://bench/store.zarr", "s3://bench/consolidated.zarr"
        zarr.consolidate_metadata(zarr_store(curl, options, read_only=False))

        print("\nopen (best of 3)")
        print(f"  StoreReader, disk                    {open_time(str(local), None):7.2f} s")
        print(f"  StoreReader, s3, no metadata copy    {open_time(url, options):7.2f} s")
        n = write_metadata_copy(zarr_store(url, options, read_only=False))  # what extract run does at its end
        print(f"  StoreReader, s3, metadata copy       {open_time(url, options):7.2f} s   ({n} nodes copied)")
        print(f"  zarr metadata walk, disk             {plain_walk_time(str(local), None):7.2f} s")
        print(f"  zarr metadata walk, s3               {plain_walk_time(url, options):7.2f} s")
        print(f"  zarr metadata walk, s3, consolidated {consolidated_open_time(curl, options):7.2f} s")

        print(f"\nanalyze report (--n-boot {args.n_boot})")
        t_disk = report(str(local), args.dir / "report-disk", args.n_boot, endpoint)
        t_s3 = report(url, args.dir / "report-s3", args.n_boot, endpoint)
        same = ((args.dir / "report-disk" / "results.csv").read_bytes()
                == (args.dir / "report-s3" / "results.csv").read_bytes())
        print(f"  disk {t_disk:7.2f} s")
        print(f"  s3   {t_s3:7.2f} s   ({t_s3 / t_disk:.2f}x disk; target <= 1.5x)")
        print(f"  results.csv identical: {same}")
    finally:
        server.kill()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
