"""Faults of single images (issue 8, part 2): only the image's own failure makes an invalid row.

Each test plants one fault in a small generated dataset and runs the tiny demo models on the CPU:
high-bit-depth images (scaled, not clipped), a JPEG with zeroed bytes (a named decoder warning), a flaky
and a dead file server (retried; then the run stops without flagging the block), a bug in the transform
code (stops), a broken symbolic link (refused at listing time), the stored reasons of invalid rows
(``extract status``) and ``--retry-invalid``. Expected pixels and logits are computed here independently
(numpy, torchvision, a direct forward pass), never by the code under test.
"""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

import zarr  # noqa: E402
from PIL import Image  # noqa: E402

from schemas import layout as L  # noqa: E402

from extract import pipeline, runner  # noqa: E402
from extract.cli import main  # noqa: E402
from extract.options import RunOptions  # noqa: E402
from extract.readers import ImageDecodeError, decode  # noqa: E402
from extract.readers.base import Reader  # noqa: E402
from extract.readers.jpeg_scan import jpeg_damage  # noqa: E402
from extract.status import store_status  # noqa: E402
from imagenet_val import make_imagenet_val  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SUP = "demo-convnext-sup"
ROWS = 8  # rows per block: 20 images are blocks 0-7, 8-15, 16-19
N = 20
RUN = f"imagenet-val/center/{SUP}"


@pytest.fixture(autouse=True)
def small_blocks_fast_retries(monkeypatch):
    monkeypatch.setattr(L, "CHUNK_ROWS", ROWS)
    monkeypatch.setattr(pipeline, "READ_BACKOFF_S", 0.001)
    # extract's CLI points its log handler at the sys.stderr of the test that called it; start each test
    # without it, so that a direct runner.run does not write into a closed capture.
    log = logging.getLogger("extract")
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "propagate", True)


def opts(store, data_root, **kw) -> RunOptions:
    base = dict(store=str(store), models=[SUP], datasets=["imagenet-val"], transforms=["center"],
                data_root=str(data_root), device="cpu", batch_size=4, workers=0, progress=False,
                allow_partial=True)  # a few generated images stand for imagenet-val
    base.update(kw)
    return RunOptions(**base)


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def run_args(store, data, *extra) -> list:
    return ["run", "--store", store, "--models", SUP, "--datasets", "imagenet-val", "--data-root", data,
            "--device", "cpu", "--batch-size", 4, "--no-progress", "--allow-partial", *extra]


def arrays(store, path=RUN) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")[path]
    return {k: np.asarray(g[k][...]) for k in (L.LOGITS, L.FEATURES, L.VALID, L.BLOCK_DONE, L.BLOCK_SECONDS)}


def assert_rows_equal(a: dict, b: dict, rows) -> None:
    for k in (L.LOGITS, L.FEATURES, L.VALID):
        np.testing.assert_array_equal(a[k][rows], b[k][rows], err_msg=k)


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("extract run: error:")]
    assert len(lines) == 1, err
    return lines[0]


def sample_name(i: int) -> str:
    """The file name (and sample id) of image number i (1-based) of make_imagenet_val."""
    return f"ILSVRC2012_val_{i:08d}.JPEG"


def jpeg(seed: int, size=(96, 72), quality: int = 92) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def zero_middle(data: bytes, count: int = 200) -> bytes:
    out = bytearray(data)
    mid = len(out) // 2
    out[mid: mid + count] = bytes(count)
    return bytes(out)


def png16(a: np.ndarray) -> bytes:
    """A 16-bit PNG (gray [H, W] or RGB [H, W, 3]) written by hand: an encoder independent of PIL."""
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if a.ndim == 3 else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def direct_logits(img: Image.Image) -> np.ndarray:
    """The demo model's logits for one RGB image: transform, normalise and forward, one image at a time."""
    import torch

    from extract.imaging import apply_transform
    from extract.models import load_model
    from extract.spec.models import resolve_model
    from extract.spec.transforms import parse_transform
    from extract.tensors import normalize, to_uint8_tensor

    spec = resolve_model(SUP)
    model = load_model(spec, device="cpu", precision="fp32")
    x = to_uint8_tensor(apply_transform(img, parse_transform("center"), spec.preprocess))[None]
    with torch.inference_mode():
        logits, _ = model.forward(normalize(x, spec.preprocess))
    return logits[0].numpy()


@pytest.fixture
def reads(monkeypatch):
    """Every file read, in order; ``faults[name]`` = how many more reads of that file fail (-1: all)."""
    log: list[str] = []
    faults: dict[str, int] = {}
    original = Reader._read_loc

    def read(self, loc):
        name = Path(str(loc)).name
        log.append(name)
        left = faults.get(name, 0)
        if left:
            faults[name] = left - 1 if left > 0 else -1
            raise OSError(errno.EIO, "Input/output error", str(self.root / loc))
        return original(self, loc)

    monkeypatch.setattr(Reader, "_read_loc", read)
    return log, faults


# ---------------------------------------------------------------- high bit depth
def test_16bit_grayscale_png_is_scaled_not_clipped_and_the_row_is_valid(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 65536, size=(60, 80), dtype=np.uint16)
    data = png16(a)
    expected = np.repeat((a // 256).astype(np.uint8)[..., None], 3, axis=2)  # the high byte, in numpy
    # what the timm / torchvision ImageFolder loaders do (PIL convert): nearly everything clipped to white
    assert (np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) == 255).mean() > 0.99

    decoded = decode(data)
    np.testing.assert_array_equal(np.asarray(decoded.image), expected)
    assert decoded.warnings == []

    store, root = tmp_path / "s.zarr", make_imagenet_val(tmp_path / "data", 12, bad={3: data})
    res = runner.run(opts(store, root))
    got = arrays(store)
    assert got[L.VALID].all() and res.invalid == [] and res.warned == []
    np.testing.assert_allclose(got[L.LOGITS][2], direct_logits(Image.fromarray(expected)), rtol=1e-4, atol=1e-4)


def tiff_rgb16(a: np.ndarray) -> bytes:
    """An uncompressed 16-bit RGB TIFF, little-endian, written by hand."""
    h, w, _ = a.shape
    body = a.astype("<u2").tobytes()
    n_tags, bps_at = 10, 8 + 2 + 12 * 10 + 4
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, bps_at), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, bps_at + 6), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(body)), (284, 3, 1, 1)]
    out = b"II*\x00" + struct.pack("<IH", 8, n_tags)
    for tag, kind, count, value in tags:
        out += struct.pack("<HHIHH", tag, kind, count, value, 0) if kind == 3 and count == 1 else \
            struct.pack("<HHII", tag, kind, count, value)
    return out + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + body


def _saved(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")
@pytest.mark.parametrize("kind", ["png-gray16", "png-rgb16", "tiff-rgb16", "tiff-gray16-big-endian",
                                  "pgm-16", "tiff-int32", "tiff-float"])
def test_high_bit_depth_images_match_torchvision_scaling(kind):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 65536, size=(10, 12), dtype=np.uint16)
    rgb = rng.integers(0, 65536, size=(10, 12, 3), dtype=np.uint16)
    as_rgb = lambda g: np.repeat(g[..., None], 3, axis=2)  # noqa: E731
    if kind == "png-gray16":
        data, expected = png16(gray), as_rgb(gray >> 8)
    elif kind == "png-rgb16":
        data, expected = png16(rgb), rgb >> 8
    elif kind == "tiff-rgb16":
        data, expected = tiff_rgb16(rgb), rgb >> 8
    elif kind == "tiff-gray16-big-endian":
        data = _saved(Image.frombytes("I;16B", (12, 10), gray.astype(">u2").tobytes()), "TIFF")
        expected = as_rgb(gray >> 8)
    elif kind == "pgm-16":
        data, expected = b"P5\n12 10\n65535\n" + gray.astype(">u2").tobytes(), as_rgb(gray >> 8)
    elif kind == "tiff-int32":
        data, expected = _saved(Image.fromarray(gray.astype(np.int32)), "TIFF"), as_rgb(gray >> 8)
    else:
        f = rng.random((10, 12)).astype(np.float32)
        f[0, 0], f[0, 1] = 0.0, 1.0
        data, expected = _saved(Image.fromarray(f), "TIFF"), as_rgb(np.floor(f * (256 - 1e-3)))
    got = np.asarray(decode(data).image)
    np.testing.assert_array_equal(got, expected.astype(np.uint8))
    if kind.startswith("png"):  # torchvision's own decoder, then its documented 16 -> 8 bit conversion
        import torch
        from torchvision.io import ImageReadMode, decode_image
        from torchvision.transforms.v2.functional import to_dtype

        t = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        np.testing.assert_array_equal(got, to_dtype(t, torch.uint8, scale=True).permute(1, 2, 0).numpy())


@pytest.mark.parametrize("values, needle", [(np.array([[0, 70000]], np.int32), "0..70000 outside 0..65535"),
                                            (np.array([[-5, 10]], np.int32), "-5..10 outside 0..65535"),
                                            (np.array([[0.0, 7.5]], np.float32), "0..7.5, expected 0..1")])
def test_pixel_values_without_a_known_scale_are_an_invalid_image(values, needle):
    with pytest.raises(ImageDecodeError, match="no known scale") as e:
        decode(_saved(Image.fromarray(values), "TIFF"), "x.tif")
    assert needle in str(e.value) and "x.tif" in str(e.value)


def test_decompression_bomb_warning_is_returned(monkeypatch):
    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 40 x 40 = 1600: over the limit, under twice it
    decoded = decode(_saved(Image.new("RGB", (40, 40), (10, 20, 30)), "PNG"))
    assert decoded.image.size == (40, 40)
    assert len(decoded.warnings) == 1 and decoded.warnings[0].startswith("DecompressionBombWarning: Image size (1600")


# ---------------------------------------------------------------- damaged JPEG data
def test_jpeg_damage_agrees_with_libjpeg(tmp_path):
    """libjpeg (through torchvision, in a subprocess: it prints its warnings on stderr) is the oracle."""
    pytest.importorskip("torchvision.io", reason="torchvision's JPEG decoder is the oracle").decode_jpeg
    clean = [jpeg(s, size=(40 + 13 * s, 30 + 7 * s), quality=60 + 5 * s) for s in range(6)]
    damaged = [zero_middle(d) for d in clean]
    for d in clean:
        assert jpeg_damage(d) is None
    findings = [jpeg_damage(d) for d in damaged]
    files = []
    for i, d in enumerate(damaged):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(d)
    script = ("import sys, os, torch, warnings\nwarnings.simplefilter('ignore')\n"
              "from torchvision.io import decode_jpeg\n"
              "for f in sys.argv[1:]:\n"
              "    print('FILE', f, file=sys.stderr, flush=True)\n"
              "    decode_jpeg(torch.frombuffer(bytearray(open(f, 'rb').read()), dtype=torch.uint8))\n"
              "    sys.stderr.flush()\n")
    out = subprocess.run([sys.executable, "-c", script, *map(str, files)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    warned = {}
    for part in out.stderr.split("FILE ")[1:]:
        name, _, rest = part.partition("\n")
        warned[name.strip()] = "Corrupt JPEG data" in rest
    for f, finding in zip(files, findings):
        if warned[str(f)]:
            assert finding and finding.startswith("damaged JPEG data"), (f, finding)
    assert sum(warned.values()) >= 4  # zeroed bytes mid-scan: libjpeg warns about (nearly) all of them


def test_jpeg_damage_never_raises_on_garbage():
    rng = np.random.default_rng(3)
    base = jpeg(7, size=(64, 48))
    for _ in range(300):
        d = bytearray(base)
        for _ in range(int(rng.integers(1, 6))):  # overwrite a few spans, headers included, with random bytes
            at = int(rng.integers(2, len(d)))
            span = min(int(rng.integers(1, 40)), len(d) - at)
            d[at: at + span] = rng.integers(0, 256, size=span, dtype=np.uint8).tobytes()
        cut = bytes(d[: int(rng.integers(4, len(d) + 1))])
        for sample in (bytes(d), cut):
            result = jpeg_damage(sample)
            assert result is None or result.startswith("damaged JPEG data")


def test_zeroed_jpeg_bytes_are_a_named_warning_in_the_result_and_the_log(tmp_path, capsys):
    good = jpeg(5)
    bad = zero_middle(good)
    with pytest.raises(AssertionError):  # the damage is real: the pixels differ from the original's
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(bad)).convert("RGB")),
                                      np.asarray(Image.open(io.BytesIO(good)).convert("RGB")))
    store, root = tmp_path / "s.zarr", make_imagenet_val(tmp_path / "data", 12, bad={5: bad})
    rc, out, err = cli(capsys, *run_args(store, root, "--json", tmp_path / "r.json"))
    assert rc == 0, err
    name = sample_name(5)
    assert f"decoder warning for {name} (row stored valid): damaged JPEG data in scan 1" in err
    assert "1 decoder warnings" in out and f"warning: imagenet-val/center: {name}: damaged JPEG data" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert [(w["sample_id"], w["warning"].split(":")[0]) for w in result["warnings"]] == [
        (name, "damaged JPEG data in scan 1")]
    assert arrays(store)[L.VALID].all()  # a warning, not an invalid row


# ---------------------------------------------------------------- reads that fail
def test_a_read_that_fails_twice_is_retried_and_the_row_is_valid(tmp_path, reads):
    log, faults = reads
    root = make_imagenet_val(tmp_path / "data", 12)
    ref = tmp_path / "ref.zarr"
    runner.run(opts(ref, root))
    faults[sample_name(6)] = 2
    store = tmp_path / "s.zarr"
    res = runner.run(opts(store, root))
    assert log.count(sample_name(6)) == 1 + 3  # once for the reference, then two failures and a success
    assert res.invalid == []
    got, want = arrays(store), arrays(ref)
    assert got[L.VALID].all()
    assert_rows_equal(got, want, slice(None))


def test_a_read_that_always_fails_stops_the_run_and_a_rerun_after_the_fix_resumes(tmp_path, reads, capsys):
    log, faults = reads
    root = make_imagenet_val(tmp_path / "data", N)
    ref = tmp_path / "ref.zarr"
    runner.run(opts(ref, root))
    store = tmp_path / "s.zarr"
    faults[sample_name(11)] = -1  # row 10: block 1
    log.clear()
    rc, out, err = cli(capsys, *run_args(store, root))
    assert rc == 1
    line = one_error_line(err)
    assert str(root / "imagenet-val" / sample_name(11)) in line
    assert f"{1 + pipeline.READ_RETRIES} reads" in line and "Input/output error" in line
    assert "block 1 was not flagged done" in line and "rerun" in line
    assert log.count(sample_name(11)) == 1 + pipeline.READ_RETRIES
    stopped = arrays(store)
    assert stopped[L.BLOCK_DONE].tolist() == [True, False, False]
    assert not stopped[L.VALID][8:].any()  # no row of the stopped block was stored, valid or invalid
    assert store_status(store)[0].invalid == []

    del faults[sample_name(11)]  # the file server is back
    log.clear()
    rc, out, err = cli(capsys, *run_args(store, root))
    assert rc == 0, err
    assert sorted(log) == sorted(sample_name(i) for i in range(9, N + 1))  # block 0 was not read again
    got, want = arrays(store), arrays(ref)
    assert got[L.BLOCK_DONE].all()
    assert_rows_equal(got, want, slice(None))
    np.testing.assert_array_equal(got[L.BLOCK_SECONDS][0], stopped[L.BLOCK_SECONDS][0])  # block 0 not rewritten


def test_a_bug_in_the_transform_code_stops_the_run_naming_the_file(tmp_path, monkeypatch, capsys):
    import extract.imaging

    root = make_imagenet_val(tmp_path / "data", N)
    original = extract.imaging.apply_transform
    target = np.asarray(Image.open(root / "imagenet-val" / sample_name(11)).convert("RGB"))

    def buggy(img, t, pre):  # fails on one image (row 10, block 1), whenever it comes
        if np.asarray(img).shape == target.shape and np.array_equal(np.asarray(img), target):
            raise ValueError("boom: a bug in the transform code")
        return original(img, t, pre)

    monkeypatch.setattr(extract.imaging, "apply_transform", buggy)
    store = tmp_path / "s.zarr"
    with pytest.raises(runner.SampleError) as e:
        runner.run(opts(store, root))
    msg = str(e.value)
    assert str(root / "imagenet-val" / sample_name(11)) in msg
    assert "unexpected ValueError: boom: a bug in the transform code" in msg and "in buggy" in msg
    assert "no row was stored invalid" in msg and "block 1 was not flagged done" in msg
    assert arrays(store)[L.BLOCK_DONE].tolist() == [True, False, False]

    rc, _, err = cli(capsys, *run_args(store, root))  # the same bug, through the command line
    assert rc == 1 and "unexpected ValueError: boom" in one_error_line(err)
    assert arrays(store)[L.BLOCK_DONE].tolist() == [True, False, False]

    monkeypatch.setattr(extract.imaging, "apply_transform", original)
    runner.run(opts(store, root))
    ref = tmp_path / "ref.zarr"
    runner.run(opts(ref, root))
    got = arrays(store)
    assert got[L.BLOCK_DONE].all() and got[L.VALID].all()
    assert_rows_equal(got, arrays(ref), slice(None))


# ---------------------------------------------------------------- broken symbolic link
def test_a_broken_symlink_in_a_class_folder_is_refused_at_listing_time(tmp_path, capsys):
    """Refused, not an invalid row: a missing target is no fault of an image's bytes (a mount or a copy is
    missing), skipping it would silently shrink the dataset, and listing it would stop the run hours in;
    so the run fails in seconds, before the store exists, naming the link."""
    folder = tmp_path / "data" / "imagenet-val"
    for synset, k in (("n01440764", 3), ("n01443537", 3)):
        (folder / synset).mkdir(parents=True)
        for i in range(k):
            (folder / synset / f"{synset}_{i}.JPEG").write_bytes(jpeg(i + 10 * k))
    link = folder / "n01443537" / "gone.JPEG"
    os.symlink(tmp_path / "elsewhere" / "gone.JPEG", link)
    store = tmp_path / "s.zarr"
    rc, _, err = cli(capsys, *run_args(store, tmp_path / "data"))
    assert rc == 2
    line = one_error_line(err)
    assert f"{link}: a broken symbolic link" in line and str(tmp_path / "elsewhere" / "gone.JPEG") in line
    assert "remove the links" in line
    assert not store.exists()

    link.unlink()
    rc, _, err = cli(capsys, *run_args(store, tmp_path / "data"))
    assert rc == 0, err
    ids = zarr.open_group(str(store), mode="r")["imagenet-val"][L.SAMPLE_ID][...].tolist()
    assert ids == sorted(f"{s}_{i}.JPEG" for s in ("n01440764", "n01443537") for i in range(3))


# ---------------------------------------------------------------- reasons and --retry-invalid
TRUNCATED = jpeg(1)[:300]


def test_status_lists_invalid_rows_with_their_reasons(tmp_path, capsys):
    root = make_imagenet_val(tmp_path / "data", N, bad={3: TRUNCATED, 12: b""})
    store = tmp_path / "s.zarr"
    runner.run(opts(store, root))
    stored = zarr.open_group(str(store), mode="r")[RUN][L.INVALID_REASON][...].tolist()
    assert [i for i, r in enumerate(stored) if r] == [2, 11]
    assert "truncated" in stored[2].lower() and "empty image data" in stored[11]

    rc, out, _ = cli(capsys, "status", store)
    assert rc == 0
    lines = [x.strip() for x in out.splitlines() if x.strip().startswith("invalid:")]
    assert lines == [f"invalid: {sample_name(3)}: {stored[2]}", f"invalid: {sample_name(12)}: {stored[11]}"]
    rc, out, _ = cli(capsys, "status", store, "--json")
    assert json.loads(out)[0]["invalid_reasons"] == {sample_name(3): stored[2], sample_name(12): stored[11]}

    # a store written before reasons were recorded: no invalid_reason array
    del zarr.open_group(str(store), mode="r+")[RUN][L.INVALID_REASON]
    rc, out, _ = cli(capsys, "status", store)
    assert f"invalid: {sample_name(3)}: reason not recorded" in out
    assert f"invalid: {sample_name(12)}: reason not recorded" in out


def test_retry_invalid_redoes_only_the_blocks_with_invalid_rows(tmp_path, reads, capsys):
    log, _ = reads
    root = make_imagenet_val(tmp_path / "data", N, bad={11: TRUNCATED, 12: b"not an image at all"})
    store = tmp_path / "s.zarr"
    runner.run(opts(store, root))
    before = arrays(store)
    assert np.flatnonzero(~before[L.VALID]).tolist() == [10, 11]

    fixed = jpeg(42)
    (root / "imagenet-val" / sample_name(11)).write_bytes(fixed)  # one file replaced; the other still bad
    log.clear()
    rc, out, err = cli(capsys, *run_args(store, root, "--retry-invalid"))
    assert rc == 0, err
    assert "--retry-invalid: 2 rows stored invalid were retried, 1 are still invalid" in out
    assert sorted(log) == sorted(sample_name(i) for i in range(9, 17))  # block 1 only
    after = arrays(store)
    assert np.flatnonzero(~after[L.VALID]).tolist() == [11]
    for rows in (slice(0, 8), slice(16, N)):  # blocks 0 and 2: untouched
        assert_rows_equal(after, before, rows)
    np.testing.assert_array_equal(after[L.BLOCK_SECONDS][[0, 2]], before[L.BLOCK_SECONDS][[0, 2]])
    keep = [r for r in range(8, 16) if r not in (10, 11)]
    assert_rows_equal(after, before, keep)  # the other rows of block 1: recomputed, the same
    np.testing.assert_allclose(after[L.LOGITS][10], direct_logits(Image.open(io.BytesIO(fixed)).convert("RGB")),
                               rtol=1e-4, atol=1e-4)
    reasons = zarr.open_group(str(store), mode="r")[RUN][L.INVALID_REASON][...].tolist()
    assert reasons[10] == "" and "not an image" in reasons[11]

    log.clear()
    rc, out, _ = cli(capsys, *run_args(store, root))  # without the option, a done store is left alone
    assert rc == 0 and log == [] and "retry" not in out
