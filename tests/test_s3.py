"""Stores on object storage, against a real S3-protocol server: moto's server mode on 127.0.0.1.

The server holds the store; the extractions and analyses run in subprocesses that reach it over loopback with
the standard AWS environment (keys, region, ``AWS_ENDPOINT_URL``) or with ``--storage-option``. What is compared:
the arrays of an ``s3://`` extraction with those of the same extraction into a local folder (a SIGKILL and a
rerun, two shards at once), ``results.csv`` of reports from both, and every object's ETag before and after a
report. The network faults (a closed port, a server that never answers, refused keys, no bucket) must each end
in one line naming the URL, within a bounded time.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import schemas  # noqa: E402
from loopback import free_port, wait_for_port  # noqa: E402
from schemas import layout as L  # noqa: E402
from schemas import remote  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "demo-convnext-sup"
T = "res-64"  # the demo model on 64 x 64 crops: a hundred images in seconds on a CPU
ROWS = 8  # rows per block (schemas.layout.CHUNK_ROWS patched in the subprocesses)
N = 96
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on 127.0.0.1, the AWS environment pointing at it, and a fresh bucket per call."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    saved = {k: os.environ.get(k) for k in (*AWS, "AWS_ENDPOINT_URL", "AWS_PROFILE")}
    os.environ.update(AWS)
    os.environ.pop("AWS_PROFILE", None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    client = boto3.client("s3", endpoint_url=endpoint)

    def bucket() -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=name)
        return name

    def objects(bucket_name: str) -> dict[str, str]:
        """Every object's key -> ETag (what a write would change)."""
        out = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket_name):
            out.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
        return out

    try:
        yield SimpleNamespace(endpoint=endpoint, client=client, bucket=bucket, objects=objects,
                              options={"endpoint_url": endpoint})
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def env(**extra) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        e.pop(k, None)
    e.update(extra)
    return {k: v for k, v in e.items() if v is not None}


# ``python -c SMALL_BLOCKS ROWS PROG ARGS``: extract or analyze with blocks of ROWS rows (every process must agree
# on the layout).
SMALL_BLOCKS = ("import sys\nimport schemas.layout as L\nL.CHUNK_ROWS = int(sys.argv[1])\n"
                "from importlib import import_module\nsys.exit(import_module(sys.argv[2] + '.cli').main(sys.argv[3:]))\n")


def extract_proc(tmp: Path, args: list[str], environ: dict | None = None) -> subprocess.Popen:
    """``extract ARGS`` in a fresh process with blocks of ROWS rows."""
    return subprocess.Popen([sys.executable, "-c", SMALL_BLOCKS, str(ROWS), "extract", *args], cwd=str(REPO),
                            env=environ or env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cli(prog: str, *args, environ: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SMALL_BLOCKS, str(ROWS), prog, *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=environ or env(), timeout=timeout)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """This process reads the stores with the same blocks as the subprocesses wrote them."""
    monkeypatch.setattr(L, "CHUNK_ROWS", ROWS)


def run_args(store: str, data: Path) -> list[str]:
    return ["-q", "run", "--store", store, "--models", MODEL, "--datasets", "imagenet-val", "--transforms", T,
            "center", "--data-root", str(data), "--device", "cpu", "--batch-size", "8", "--workers", "0",
            "--no-progress", "--allow-partial"]  # a generated imagenet-val of N images, not 50,000


def finish(p: subprocess.Popen, timeout: int = 300) -> tuple[str, str]:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    return out, err


RUN_ARRAYS = (L.LOGITS, L.FEATURES, L.VALID, L.BLOCK_DONE, L.BLOCK_CHECKSUM)


def arrays(store: str, transform: str = T, options: dict | None = None) -> dict[str, np.ndarray]:
    root = schemas.open_read_only(store, storage_options=options)
    run = root[f"imagenet-val/{transform}/{MODEL}"]
    out = {k: np.asarray(run[k][...]) for k in RUN_ARRAYS}
    out["sample_id"] = np.asarray(root["imagenet-val/sample_id"][...]).astype(object).astype(str)
    out["label"] = np.asarray(root["imagenet-val/label"][...])
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    pytest.importorskip("torch")
    from imagenet_val import make_imagenet_val

    return make_imagenet_val(tmp_path_factory.mktemp("data"), N, bad={7: b""})


@pytest.fixture(scope="module")
def local(data, tmp_path_factory):
    """The same extraction into a local folder, uninterrupted, in one process."""
    tmp = tmp_path_factory.mktemp("local")
    store = str(tmp / "local.zarr")
    finish(extract_proc(tmp, run_args(store, data)))
    return store


@pytest.fixture(scope="module")
def on_s3(s3, data, tmp_path_factory):
    """The extraction into s3://, endpoint and keys from the environment."""
    tmp = tmp_path_factory.mktemp("s3run")
    url = f"s3://{s3.bucket()}/store.zarr"
    out, _ = finish(extract_proc(tmp, run_args(url, data)))
    assert f"total: {2 * N} images" in out  # two transforms
    return url


# ---------------------------------------------------------------- storage options
def test_storage_options_parse_nest_and_merge_under_the_defaults():
    pairs = [remote.parse_pair(t) for t in ("endpoint_url=http://127.0.0.1:9000", "anon=TRUE", "use_ssl=false",
                                            "config_kwargs.read_timeout=60", "config_kwargs.retries.max_attempts=7",
                                            "x=1.5", "region_name=eu-west-1", "token=")]
    opts = remote.parse_storage_options(pairs)
    assert opts == {"endpoint_url": "http://127.0.0.1:9000", "anon": True, "use_ssl": False, "x": 1.5,
                    "config_kwargs": {"read_timeout": 60, "retries": {"max_attempts": 7}},
                    "region_name": "eu-west-1", "token": ""}
    merged = remote.effective_options("s3://b/s.zarr", opts)
    # the caller's values win, key by key; the defaults fill the rest
    assert merged["config_kwargs"] == {"connect_timeout": 5, "read_timeout": 60,
                                       "retries": {"max_attempts": 7, "mode": "standard"}}
    assert merged["retries"] == remote.S3_DEFAULTS["retries"] and merged["anon"] is True
    assert remote.effective_options("s3://b/s.zarr", {}) == remote.S3_DEFAULTS
    assert remote.effective_options("gs://b/s.zarr", {"token": "t"}) == {"token": "t"}  # defaults are s3's
    assert not remote.is_url("/tmp/s.zarr") and not remote.is_url("file:///tmp/s.zarr")
    assert remote.is_url("s3://b/s.zarr")
    for bad in ("novalue", "=x", "a..b=1"):
        with pytest.raises(Exception, match="KEY=VALUE"):
            remote.parse_pair(bad)
    with pytest.raises(ValueError, match="already given a value"):
        remote.parse_storage_options(["a=1", "a.b=2"])


def test_a_bad_storage_option_is_one_usage_line():
    p = cli("analyze", "validate", "s3://bkt/s.zarr", "--storage-option", "endpoint_url")
    assert p.returncode == 2 and "KEY=VALUE" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_missing_s3fs_names_the_extra(tmp_path):
    """Without s3fs, an s3:// URL is refused in one line naming the extra that installs it."""
    script = tmp_path / "no_s3fs.py"
    script.write_text("import sys\nsys.modules['s3fs'] = None  # as if not installed\n"
                      "from importlib import import_module\n"
                      "sys.exit(import_module(sys.argv[1] + '.cli').main(sys.argv[2:]))\n")
    for prog, args in (("analyze", ["validate", "s3://bkt/s.zarr"]),
                       ("analyze", ["report", "s3://bkt/s.zarr", "--out", str(tmp_path / "r")]),
                       ("extract", ["status", "s3://bkt/s.zarr"])):
        p = subprocess.run([sys.executable, str(script), prog, *args], capture_output=True, text=True, cwd=REPO,
                           env=env(), timeout=120)
        text = p.stdout + p.stderr
        assert p.returncode != 0 and "install beyond-imagenet[s3] (s3fs)" in text and "s3://bkt/s.zarr" in text, text
        assert "Traceback" not in text
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- extraction into s3://
def test_extraction_into_s3_equals_the_local_one(s3, local, on_s3, data, tmp_path):
    for t in (T, "center"):
        assert_same(arrays(local, t), arrays(on_s3, t))
    root, ref = schemas.open_read_only(on_s3), schemas.open_read_only(local)
    assert dict(root["imagenet-val"].attrs) == dict(ref["imagenet-val"].attrs)
    assert root[f"imagenet-val/{T}/{MODEL}"].attrs["fingerprint"] == ref[f"imagenet-val/{T}/{MODEL}"].attrs["fingerprint"]
    assert not arrays(on_s3)[L.VALID][6]  # the empty image 7 is an invalid row there too
    p = cli("extract", "verify", on_s3)
    assert p.returncode == 0 and "0 errors" in p.stdout, p.stdout + p.stderr
    p = cli("extract", "status", on_s3)
    assert p.returncode == 0 and p.stdout.count(f"blocks {N // ROWS}/{N // ROWS}  complete") == 2, p.stdout
    # a rerun finds every block done and writes nothing
    before = s3.objects(on_s3.split("/")[2])
    out, _ = finish(extract_proc(tmp_path, run_args(on_s3, data)))
    assert "total: 0 images" in out
    assert s3.objects(on_s3.split("/")[2]) == before


def test_analysis_reads_s3_gives_the_local_results_and_writes_nothing(s3, local, on_s3, tmp_path):
    bucket = on_s3.split("/")[2]
    before = s3.objects(bucket)
    assert len(before) > 20
    # --storage-option instead of the environment's endpoint
    no_endpoint = env(AWS_ENDPOINT_URL=None)
    opt = ["--storage-option", f"endpoint_url={s3.endpoint}"]
    p = cli("analyze", "validate", on_s3, *opt, environ=no_endpoint)
    assert p.returncode == 0 and p.stdout.strip().endswith("0 errors, 0 warnings"), p.stdout + p.stderr
    p = cli("extract", "verify", on_s3, *opt, environ=no_endpoint)
    assert p.returncode == 0 and "0 errors" in p.stdout, p.stdout + p.stderr
    outs = {}
    for name, store, extra in (("s3", on_s3, opt), ("local", local, [])):
        outs[name] = tmp_path / name
        p = cli("analyze", "report", store, "--out", outs[name], "--n-boot", "50", "--quiet", *extra,
                environ=no_endpoint)
        assert p.returncode == 0, p.stderr
    for f in ("results.csv", "differences.csv"):
        assert (outs["s3"] / f).read_text() == (outs["local"] / f).read_text(), f
    assert len((outs["s3"] / "results.csv").read_text().splitlines()) > 3
    assert s3.objects(bucket) == before  # no object added, removed or rewritten
    # the Python API takes the same options
    import analyze

    reader = analyze.open_store(on_s3, storage_options={"endpoint_url": s3.endpoint})
    assert [k.path for k in reader.runs()] == [f"imagenet-val/center/{MODEL}", f"imagenet-val/{T}/{MODEL}"]
    key = reader.runs()[0]
    np.testing.assert_array_equal(reader.logits(key, slice(0, ROWS)), arrays(local, "center")[L.LOGITS][:ROWS])
    assert schemas.validate(on_s3, storage_options={"endpoint_url": s3.endpoint}) == []


def two_blocks_done(url: str, p: subprocess.Popen, timeout: float = 240) -> bool:
    """Wait until the run in ``p`` has flagged two blocks done in ``url``; False if it ended first or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        try:
            root = schemas.open_read_only(url)
            if int(np.asarray(root[f"imagenet-val/{T}/{MODEL}/block_done"][...]).sum()) >= 2:
                return True
        except (KeyError, schemas.StoreError, FileNotFoundError):
            pass
        time.sleep(0.05)
    return False


def test_sigkill_mid_run_then_resume_equals_uninterrupted(s3, local, data, tmp_path):
    url = f"s3://{s3.bucket()}/killed.zarr"
    p = extract_proc(tmp_path, run_args(url, data))
    try:
        if two_blocks_done(url, p):
            p.send_signal(signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed = arrays(url)
    assert 2 <= killed[L.BLOCK_DONE].sum() < N // ROWS
    assert [v for v in schemas.validate(url) if v.severity == "error"] == []
    rows = np.repeat(killed[L.BLOCK_DONE], ROWS)
    np.testing.assert_array_equal(killed[L.LOGITS][rows], arrays(local)[L.LOGITS][rows])
    finish(extract_proc(tmp_path, run_args(url, data)))
    for t in (T, "center"):
        assert_same(arrays(local, t), arrays(url, t))
    assert [v for v in schemas.validate(url) if v.severity == "error"] == []


def test_two_shards_at_once_lose_nothing(s3, local, data, tmp_path):
    url = f"s3://{s3.bucket()}/sharded.zarr"
    procs = [extract_proc(tmp_path, run_args(url, data) + ["--shard", f"{i}/2"]) for i in range(2)]
    outs = [finish(p) for p in procs]
    for out, _ in outs:
        assert f"total: {N} images" in out  # half of each of two transforms
    for t in (T, "center"):
        assert_same(arrays(local, t), arrays(url, t))
    assert schemas.validate(url) == []


@pytest.mark.parametrize("where", ["local", "s3"])
def test_torchrun_two_processes_on_cpu_equal_one(s3, local, data, tmp_path, where):
    """``torchrun --nproc-per-node 2``: each process takes its blocks from RANK / WORLD_SIZE, into one store."""
    script = tmp_path / "small_blocks_cli.py"  # torchrun runs a script (or -m module) per process
    script.write_text(SMALL_BLOCKS)
    store = str(tmp_path / "torchrun.zarr") if where == "local" else f"s3://{s3.bucket()}/torchrun.zarr"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(script), str(ROWS), "extract", *run_args(store, data)],
                       capture_output=True, text=True, cwd=REPO, env=env(), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "shard 0/2" in p.stdout and "shard 1/2" in p.stdout, p.stdout  # two processes, one shard each
    for t in (T, "center"):
        assert_same(arrays(local, t), arrays(store, t))
    assert schemas.validate(store) == []


# ---------------------------------------------------------------- network faults
class SilentServer:
    """Accepts connections on 127.0.0.1, reads the request and never answers: a request timeout."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for c in self.held:
            c.close()
        self.sock.close()


@pytest.fixture(scope="module")
def strict_s3(s3):
    """A second moto server that checks credentials (every request needs a known IAM key): wrong keys."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**env(), "INITIAL_NO_AUTH_ACTION_COUNT": "0"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=30)


def fault_cases(s3, strict_s3, silent: SilentServer) -> list[tuple[str, str, list[str], str]]:
    bucket = s3.bucket()
    url = f"s3://{bucket}/store.zarr"
    fast = ["--storage-option", "config_kwargs.read_timeout=1", "--storage-option", "config_kwargs.connect_timeout=1",
            "--storage-option", "config_kwargs.retries.max_attempts=1"]  # one try per s3fs retry: seconds, not 20
    return [
        ("unreachable", url, ["--storage-option", f"endpoint_url=http://127.0.0.1:{free_port()}"],
         "cannot connect to the object storage endpoint"),
        ("timeout", url, ["--storage-option", f"endpoint_url=http://127.0.0.1:{silent.port}", *fast],
         "did not answer in time"),
        ("wrong keys", url, ["--storage-option", f"endpoint_url={strict_s3}", "--storage-option", "key=wrong",
                             "--storage-option", "secret=wrong"], "access denied"),
        ("missing bucket", f"s3://no-such-{uuid.uuid4().hex[:8]}/store.zarr",
         ["--storage-option", f"endpoint_url={s3.endpoint}"], "does not exist"),
    ]


@pytest.mark.parametrize("command", ["analyze validate", "analyze report", "extract status", "extract verify"])
def test_network_faults_are_one_line_naming_the_url(s3, strict_s3, command, tmp_path):
    silent = SilentServer()
    try:
        for name, url, opts, expected in fault_cases(s3, strict_s3, silent):
            prog, sub = command.split()
            extra = ["--out", str(tmp_path / name)] if sub == "report" else []
            t0 = time.monotonic()
            p = cli(prog, sub, url, *extra, *opts, timeout=120)
            seconds = time.monotonic() - t0
            lines = p.stderr.strip().splitlines()
            assert p.returncode == 1, (name, p.stdout, p.stderr)
            assert len(lines) == 1 and lines[0].startswith(f"{command}: error: {url}: "), (name, p.stderr)
            assert expected in lines[0], (name, lines[0])
            assert "Traceback" not in p.stderr and "different Context" not in p.stderr
            assert seconds < 60, (name, seconds)
    finally:
        silent.close()


def test_extract_run_against_an_unreachable_endpoint_is_one_line(s3, data, tmp_path):
    url = f"s3://{s3.bucket()}/store.zarr"
    p = extract_proc(tmp_path, [*run_args(url, data), "--storage-option",
                                f"endpoint_url=http://127.0.0.1:{free_port()}"])
    out, err = p.communicate(timeout=180)
    assert p.returncode == 1, err
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1 and url in lines[0] and "cannot connect" in lines[0] and "rerun to resume" in lines[0]
    assert "Traceback" not in err


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 to the S3 server, that ``cut()`` closes: every open connection is dropped and the
    port refuses new ones, as when a network link or the endpoint goes away mid-run."""

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                down, _ = self.sock.accept()
            except OSError:
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                down.close()
                continue
            with self.lock:
                self.conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.stop.set()
        self.sock.close()
        with self.lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()


def test_a_network_fault_mid_run_resumes_like_after_a_kill(s3, local, data, tmp_path):
    """The endpoint goes away after two blocks: the run ends in one line naming the URL, done blocks stay done,
    and a rerun against the endpoint fills in the rest, equal to an uninterrupted run."""
    url = f"s3://{s3.bucket()}/cut.zarr"
    proxy = CuttableProxy(int(s3.endpoint.rsplit(":", 1)[1]))
    fast = ["--storage-option", "config_kwargs.read_timeout=2", "--storage-option", "config_kwargs.connect_timeout=1",
            "--storage-option", "config_kwargs.retries.max_attempts=1"]
    p = extract_proc(tmp_path, [*run_args(url, data), "--storage-option", f"endpoint_url=http://127.0.0.1:{proxy.port}",
                                *fast])
    try:
        if two_blocks_done(url, p):
            proxy.cut()
        out, err = p.communicate(timeout=120)
    finally:
        proxy.cut()
        if p.poll() is None:
            p.kill()
    assert proxy.stop.is_set(), "the run ended before the network could be cut"
    assert p.returncode == 1, err
    errors = [line for line in err.strip().splitlines() if "error" in line]
    assert len(errors) == 1 and url in errors[0] and "rerun to resume" in errors[0], err
    assert "Traceback" not in err
    cut = arrays(url)
    assert 2 <= cut[L.BLOCK_DONE].sum() < N // ROWS
    assert [v for v in schemas.validate(url) if v.severity == "error"] == []
    finish(extract_proc(tmp_path, run_args(url, data)))
    for t in (T, "center"):
        assert_same(arrays(local, t), arrays(url, t))
    assert schemas.validate(url) == []


# ---------------------------------------------------------------- opening in a few requests
def copy_bucket(s3, url: str) -> str:
    """A copy of the store at ``url`` in a new bucket (server-side copies); returns its URL."""
    src, prefix = url[len("s3://"):].split("/", 1)
    dst = s3.bucket()
    for key in s3.objects(src):
        s3.client.copy_object(Bucket=dst, Key=key, CopySource={"Bucket": src, "Key": key})
    return f"s3://{dst}/{prefix}"


class CountingRequests:
    """Counts the S3 requests this process makes (s3fs's one entry point to botocore)."""

    def __init__(self, monkeypatch):
        import s3fs

        self.calls: list[str] = []
        real = s3fs.S3FileSystem._call_s3

        async def counted(fs, method, *args, **kwargs):
            self.calls.append(method if isinstance(method, str) else getattr(method, "__name__", str(method)))
            return await real(fs, method, *args, **kwargs)

        monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)


def test_the_metadata_copy_opens_a_store_in_a_few_requests_and_only_while_current(s3, on_s3, monkeypatch):
    import zarr

    from schemas.snapshot import COPY_GROUP, SnapshotStore

    url = copy_bucket(s3, on_s3)
    bucket, prefix = url[len("s3://"):].split("/", 1)
    nodes = sorted(k for k in s3.objects(bucket) if k.endswith("zarr.json") and f"/{COPY_GROUP}/" not in k)
    assert len(nodes) >= 10
    counter = CountingRequests(monkeypatch)

    def walk(root) -> dict[str, dict]:
        """Every node's attributes, as zarr reads them."""
        return {path: dict(node.attrs) for path, node in root.members(max_depth=None)
                if not path.startswith(COPY_GROUP)}

    reference = walk(zarr.open_group(remote.zarr_store(url, None, read_only=True), mode="r", zarr_format=3))
    plain = len(counter.calls)
    assert plain >= len(nodes)  # a request per node at least
    counter.calls.clear()
    root = schemas.open_read_only(url)
    copies = {key[len(prefix) + 1:] for key in nodes} | {f"{COPY_GROUP}/zarr.json"}
    assert isinstance(root.store, SnapshotStore) and set(root.store.metadata) == copies
    assert walk(root) == reference
    assert len(counter.calls) <= 3, counter.calls  # one listing, the copy, nothing per node

    # A node rewritten after the copy was made: its copy no longer matches the listing's ETag, and the store's
    # own bytes are read.
    run_meta = f"{prefix}/imagenet-val/{T}/{MODEL}/zarr.json"
    import json

    doc = json.loads(s3.client.get_object(Bucket=bucket, Key=run_meta)["Body"].read())
    doc["attributes"]["note"] = "rewritten after the copy"
    s3.client.put_object(Bucket=bucket, Key=run_meta, Body=json.dumps(doc).encode())
    # ... and a group added after it: seen, from the store
    zarr.create_group(remote.zarr_store(url, None, read_only=False), path="imagenet-val/added", zarr_format=3)
    root = schemas.open_read_only(url)
    assert set(root.store.metadata) == copies - {run_meta[len(prefix) + 1:]}
    assert root[f"imagenet-val/{T}/{MODEL}"].attrs["note"] == "rewritten after the copy"
    assert "added" in dict(root["imagenet-val"].groups())
