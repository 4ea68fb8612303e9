"""``extract run --decode gpu`` on the CPU: Pillow's resize reproduced from integer taps, JPEG headers, and whole
runs that must equal the Pillow path bit for bit (torchvision's CPU decoder is libjpeg-turbo, as Pillow's).

Every reference here is Pillow itself (``extract.imaging.apply_transform``, i.e. PIL's resize and crop) or a
``--decode pil`` run: the code under test never checks itself.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import zarr  # noqa: E402

from extract import runner  # noqa: E402
from extract.errors import ExtractError  # noqa: E402
from extract.imaging import apply_transform  # noqa: E402
from extract.options import RunOptions  # noqa: E402
from extract.readers.jpeg_header import jpeg_header  # noqa: E402
from extract.resample import resample_reference, transform_taps  # noqa: E402
from extract.spec.models import Preprocess  # noqa: E402
from imagenet_val import make_imagenet_val  # noqa: E402


def _decoder_missing() -> str | None:
    """Why this torchvision cannot decode JPEGs on the CPU (some builds lack libjpeg), or None."""
    from torchvision.io import decode_jpeg

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    try:
        decode_jpeg(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    except (RuntimeError, ImportError) as e:
        return f"torchvision.io.decode_jpeg cannot decode on the CPU in this build: {e}"
    return None


needs_decoder = pytest.mark.skipif(bool(_decoder_missing()), reason=str(_decoder_missing()))

FILTERS = ["bilinear", "bicubic", "lanczos", "box", "hamming"]
TRANSFORMS = ["center", "scale-1.5", "scale-0.5", "shift-0", "shift-7.3", "shift-100", "res-40", "res-96"]
# landscape, portrait, tiny, odd, smaller than the crop, and tall ones whose height shrinks more than twice
# as much as their width (Pillow 13 then runs the vertical pass first)
SIZES = [(120, 90), (90, 120), (17, 11), (61, 97), (40, 30), (70, 400), (120, 700)]
SMALL = [Preprocess(64, 56, f, (0.5,) * 3, (0.5,) * 3) for f in FILTERS] + [
    Preprocess(56, 56, "bicubic", (0.5,) * 3, (0.5,) * 3)]


def picture(w: int, h: int, seed: int) -> np.ndarray:
    """Noise on a ramp: every tap weight matters, and bright/dark edges exercise the clipping."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, w)[None, :, None] + np.linspace(0, 55, h)[:, None, None]
    return np.clip(ramp + rng.integers(-60, 60, (h, w, 3)), 0, 255).astype(np.uint8)


def jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- Pillow's resize from taps
@pytest.mark.parametrize("pre", SMALL, ids=lambda p: f"{p.interpolation}-{p.resize}")
def test_taps_reproduce_pillow_bit_for_bit(pre):
    for t in TRANSFORMS:
        for i, (w, h) in enumerate(SIZES):
            a = picture(w, h, i)
            ref = np.asarray(apply_transform(Image.fromarray(a), t, pre))
            got = resample_reference(a, transform_taps(w, h, t, pre))
            assert got.shape == ref.shape and np.array_equal(got, ref), (t, w, h)


def test_the_tall_cases_depend_on_the_pass_order():
    """The tall sizes above would fail with the other order: the test sees the order."""
    from dataclasses import replace

    pre, (w, h) = SMALL[1], (120, 700)
    taps = transform_taps(w, h, "center", pre)
    a = picture(w, h, 0)
    ref = np.asarray(apply_transform(Image.fromarray(a), "center", pre))
    import PIL

    if int(PIL.__version__.split(".")[0]) >= 13:
        assert taps.vertical_first
    flipped = resample_reference(a, replace(taps, vertical_first=not taps.vertical_first))
    assert not np.array_equal(flipped, ref) and np.array_equal(resample_reference(a, taps), ref)


def test_device_resample_of_a_padded_batch_equals_pillow():
    from extract.device_resample import buckets, pad_stack, resample
    from extract.gpu_decode import collate_encoded, Encoded

    pre = Preprocess(64, 56, "bicubic", (0.5,) * 3, (0.5,) * 3)
    sizes = [(120, 90), (90, 120), (61, 97), (40, 30), (120, 700), (700, 120), (119, 91)]
    arrays = [picture(w, h, i) for i, (w, h) in enumerate(sizes)]
    for t in ("center", "shift-30", "res-96"):
        items = [(i, "ok", None, [], Encoded(torch.zeros(1, dtype=torch.uint8), h, w,
                                             {"g": transform_taps(w, h, t, pre)}))
                 for i, (w, h) in enumerate(sizes)]
        taps = collate_encoded(items)["encoded"]["taps"]["g"]
        groups = buckets([(h, w) for w, h in sizes], max_pixels=400 * 400)
        assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
        assert len(groups) > 1  # the tall pair does not pad the small ones to 700 x 700
        for group in groups:
            x = pad_stack([torch.from_numpy(arrays[i]).permute(2, 0, 1) for i in group])
            for vf in (False, True):
                rows = [i for i in group if bool(taps["vertical_first"][i]) == vf]
                if not rows:
                    continue
                sel = [group.index(i) for i in rows]
                idx = torch.as_tensor(rows)
                out = resample(x[sel], taps["x_start"][idx], taps["x_q"][idx], taps["y_start"][idx],
                               taps["y_q"][idx], vertical_first=vf)
                for j, i in enumerate(rows):
                    ref = np.asarray(apply_transform(Image.fromarray(arrays[i]), t, pre))
                    assert np.array_equal(out[j].permute(1, 2, 0).numpy(), ref), (t, sizes[i])


# ---------------------------------------------------------------- JPEG headers
def test_jpeg_header_says_what_the_device_decodes():
    rgb = picture(70, 50, 0)
    base = jpeg_header(jpeg(rgb))
    assert (base.width, base.height, base.components, base.sof) == (70, 50, 3, 0xC0) and base.device_decodable
    prog = jpeg_header(jpeg(rgb, progressive=True))
    assert prog.sof == 0xC2 and prog.device_decodable
    gray = jpeg_header(jpeg(rgb[..., 0]))
    assert gray.components == 1 and gray.device_decodable
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    cmyk = jpeg_header(buf.getvalue())
    assert cmyk.components == 4 and cmyk.adobe and not cmyk.device_decodable
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    assert jpeg_header(png.getvalue()) is None
    assert jpeg_header(jpeg(rgb)[:20]) is None  # cut inside its first segment
    assert jpeg_header(b"") is None


# ---------------------------------------------------------------- whole runs
# Two geometries: Resize(256, bilinear) -> 224 and timm's Resize(168, bicubic) -> 160 (no zero-shot head to build).
SUP, BICUBIC = "demo-convnext-sup", "timm:test_convnext.r160_in1k"


def odd_files() -> dict[int, bytes]:
    """Image number -> bytes: what the device path must hand to Pillow, or decode itself."""
    rng = np.random.default_rng(3)
    png, cmyk = io.BytesIO(), io.BytesIO()
    Image.fromarray(picture(70, 50, 1)).save(png, format="PNG")
    Image.fromarray(picture(70, 50, 2)).convert("CMYK").save(cmyk, format="JPEG")
    return {2: png.getvalue(),                                    # Pillow
            3: cmyk.getvalue(),                                   # Pillow (Adobe, 4 components)
            4: jpeg(picture(90, 300, 4)[..., 0]),                 # device: gray, tall
            5: jpeg(picture(260, 90, 5), progressive=True),       # device: progressive
            6: b"garbage",                                        # invalid row
            7: jpeg(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))[:300]}  # truncated: invalid row


ON_DEVICE = 12 - 4  # 12 images, minus the PNG, the CMYK JPEG, the garbage and the truncated JPEG


def run_store(store: Path, data: Path, **kw):
    base = dict(store=str(store), models=[SUP, BICUBIC], datasets=["imagenet-val"], transforms=["center", "shift-30"],
                data_root=str(data), device="cpu", batch_size=5, workers=0, progress=False, allow_partial=True,
                pretrained=False)
    return runner.run(RunOptions(**{**base, **kw}))


def arrays(store: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")
    return {f"{t}/{m}/{k}": np.asarray(g[f"imagenet-val/{t}/{m}/{k}"][...])
            for t in ("center", "shift-30") for m in (SUP, BICUBIC) for k in ("logits", "features", "valid",
                                                                             "invalid_reason")}


@pytest.fixture(scope="module")
def pil_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("decode")
    data = make_imagenet_val(tmp / "data", 12, bad=odd_files(), size=(80, 60))
    result = run_store(tmp / "pil.zarr", data)
    return data, tmp / "pil.zarr", result


@needs_decoder
@pytest.mark.parametrize("workers", [0, 2])
def test_decode_gpu_on_the_cpu_equals_the_pillow_path(pil_run, tmp_path, workers):
    data, pil_store, pil_result = pil_run
    result = run_store(tmp_path / "gpu.zarr", data, decode="gpu", workers=workers)
    ref, got = arrays(pil_store), arrays(tmp_path / "gpu.zarr")
    for k in ref:
        assert np.array_equal(got[k], ref[k], equal_nan=ref[k].dtype.kind == "f"), k
    assert sorted(result.invalid) == sorted(pil_result.invalid) and len(result.invalid) == 4
    assert [u.decoded_on_device for u in result.units] == [ON_DEVICE, ON_DEVICE]
    assert f"{2 * ON_DEVICE} of 24 images decoded and resized on the device" in result.summary()
    attrs = zarr.open_group(str(tmp_path / "gpu.zarr"), mode="r")[f"imagenet-val/center/{BICUBIC}"].attrs
    assert attrs["decode"]["path"] == "gpu" and attrs["fingerprint_inputs"]["decode"] == "gpu:cpu"
    pil_attrs = zarr.open_group(str(pil_store), mode="r")[f"imagenet-val/center/{BICUBIC}"].attrs
    assert pil_attrs["decode"]["path"] == "pil" and "decode" not in pil_attrs["fingerprint_inputs"]


@needs_decoder
def test_the_decode_path_is_in_the_fingerprint(pil_run, tmp_path):
    data, _, _ = pil_run
    store = tmp_path / "s.zarr"
    run_store(store, data, models=[SUP], transforms=["center"])
    with pytest.raises(ExtractError, match="decode"):
        run_store(store, data, models=[SUP], transforms=["center"], decode="gpu")


@needs_decoder
def test_what_the_device_fails_to_decode_goes_to_pillow_then_to_an_invalid_row(pil_run, tmp_path, monkeypatch):
    """The device decoder refuses one good JPEG (Pillow decodes it in the main process: same pixels) and is
    handed the truncated one (Pillow fails too: the same invalid row and reason as the Pillow path)."""
    import torchvision.io

    from extract import gpu_decode

    data, pil_store, pil_result = pil_run
    good = (data / "imagenet-val" / "ILSVRC2012_val_00000001.JPEG").read_bytes()
    truncated = (data / "imagenet-val" / "ILSVRC2012_val_00000007.JPEG").read_bytes()
    real_decode, real_check = torchvision.io.decode_jpeg, gpu_decode.device_decodable

    def flaky(inputs, **kw):
        items = inputs if isinstance(inputs, list) else [inputs]
        if any(bytes(x.numpy()) == good for x in items):
            raise RuntimeError("nvJPEG: unsupported")
        return real_decode(inputs, **kw)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", flaky)
    monkeypatch.setattr(gpu_decode, "device_decodable",
                        lambda b: (60, 80) if bytes(b) == truncated else real_check(b))
    result = run_store(tmp_path / "gpu.zarr", data, decode="gpu")
    ref, got = arrays(pil_store), arrays(tmp_path / "gpu.zarr")
    for k in ref:
        assert np.array_equal(got[k], ref[k], equal_nan=ref[k].dtype.kind == "f"), k
    assert sorted(result.invalid) == sorted(pil_result.invalid)
    assert [u.decoded_on_device for u in result.units] == [ON_DEVICE - 1, ON_DEVICE - 1]


def test_decode_gpu_is_refused_where_it_cannot_run():
    from extract.gpu_decode import check_device_decode

    pre = Preprocess(256, 224, "bilinear", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ExtractError, match="--decode gpu: .*mps.*--decode pil"):
        check_device_decode("mps", [pre])
    with pytest.raises(ExtractError, match="--decode gpu: .*nearest.*--decode pil"):
        check_device_decode("cpu", [pre, Preprocess(256, 224, "nearest", (0.5,) * 3, (0.5,) * 3)])
    with pytest.raises(ExtractError, match="--decode 'nvjpeg': expected one of pil, gpu"):
        runner.run(RunOptions(store="unused.zarr", models=[SUP], datasets=["imagenet-val"], device="cpu",
                              decode="nvjpeg"))
