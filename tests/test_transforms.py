"""Transforms: boxes checked numerically against the definitions of docs/design.md ("Extraction"), pixels against torchvision."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract.imaging import apply_transform
from extract.spec.models import Preprocess
from extract.spec.transforms import (
    PAPER_TRANSFORMS,
    Geometry,
    TransformSpec,
    list_transforms,
    output_size,
    parse_transform,
    plan_geometry,
)

SUP = Preprocess(256, 224, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = Preprocess(224, 224, "bicubic", (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
SIZES = [(500, 375), (375, 500)]


# ---- an independent statement of the definitions ------------------------------------------------

def expected_geometry(w: int, h: int, name: str, S: int, C: int = 224):
    """Straight from docs/design.md ("Extraction"): returns (resize_wh, box, out) or for shift (None, box_in_original, out)."""
    kind, _, val = name.partition("-")
    if kind == "shift":
        p = float(val)
        short, long = min(w, h), max(w, h)
        side = short * C / S                      # what Resize(S) -> CenterCrop(C) sees, in original px
        lo, hi = 0.0, long - side
        start = min(max((long - side) / 2 + p, lo), hi)
        across = (short - side) / 2
        if w > h:   # landscape: along x
            return None, (start, across, start + side, across + side), C
        return None, (across, start, across + side, start + side), C
    if kind == "center":
        resize, out = S, C
    elif kind == "scale":
        resize, out = int(float(val) * S), C
    else:  # res
        r = int(val)
        resize, out = int(r * S / 224), r
    # torchvision Resize(resize): shorter side -> resize, longer -> int(resize * long / short)
    if w <= h:
        rw, rh = resize, int(resize * h / w)
    else:
        rw, rh = int(resize * w / h), resize
    left, top = int(round((rw - out) / 2.0)), int(round((rh - out) / 2.0))
    return (rw, rh), (left, top, left + out, top + out), out


@pytest.mark.parametrize("pre", [SUP, CLIP], ids=["sup", "clip"])
@pytest.mark.parametrize("wh", SIZES, ids=["500x375", "375x500"])
@pytest.mark.parametrize("name", PAPER_TRANSFORMS)
def test_geometry_matches_definition(name, wh, pre):
    w, h = wh
    g = plan_geometry(w, h, parse_transform(name), pre)
    resize, box, out = expected_geometry(w, h, name, pre.resize)
    assert isinstance(g, Geometry)
    assert g.output == out == output_size(parse_transform(name), pre)
    if resize is None:
        assert g.space == "original" and g.resize is None
        assert g.crop == pytest.approx(box, abs=1e-9)
        assert g.crop[2] - g.crop[0] == pytest.approx(g.crop[3] - g.crop[1])
        assert 0 <= g.crop[0] and 0 <= g.crop[1] and g.crop[2] <= w + 1e-9 and g.crop[3] <= h + 1e-9
    else:
        assert g.space == "resized"
        assert g.resize == resize
        assert g.crop == box


def test_hand_computed_boxes():
    # supervised, 500x375: Resize(256) -> 341x256; CenterCrop(224) at round(58.5)=58, 16
    g = plan_geometry(500, 375, parse_transform("center"), SUP)
    assert g.resize == (341, 256) and g.crop == (58, 16, 282, 240)
    # scale-1.25: Resize(320) -> 426x320, crop at (101, 48)
    g = plan_geometry(500, 375, parse_transform("scale-1.25"), SUP)
    assert g.resize == (426, 320) and g.crop == (101, 48, 325, 272)
    # res-336: Resize(384) -> 512x384, CenterCrop(336) at (88, 24)
    g = plan_geometry(500, 375, parse_transform("res-336"), SUP)
    assert g.resize == (512, 384) and g.crop == (88, 24, 424, 360) and g.output == 336
    # res-640 CLIP: Resize(640) -> 853x640 portrait-swapped for 375x500
    g = plan_geometry(375, 500, parse_transform("res-640"), CLIP)
    assert g.resize == (640, 853) and g.crop == (0, 106, 640, 746)
    # shift-30 supervised: window side 375*224/256 = 328.125, centre offset 85.9375 (+30)
    g = plan_geometry(500, 375, parse_transform("shift-30"), SUP)
    assert g.crop == pytest.approx((115.9375, 23.4375, 444.0625, 351.5625))
    assert not g.clamped and g.shift_applied == pytest.approx(30)
    # portrait: same window moved down
    g = plan_geometry(375, 500, parse_transform("shift-30"), SUP)
    assert g.crop == pytest.approx((23.4375, 115.9375, 351.5625, 444.0625))


@pytest.mark.parametrize("pre,name,limit", [
    (SUP, "shift-100", (500 - 328.125) / 2),   # room 85.9375 px: 100 is clamped
    (CLIP, "shift-75", (500 - 375) / 2),       # CLIP window is the full 375 square: room 62.5 px
    (CLIP, "shift-100", (500 - 375) / 2),
])
def test_shift_clamps_at_border(pre, name, limit):
    for w, h in SIZES:
        g = plan_geometry(w, h, parse_transform(name), pre)
        assert g.clamped
        assert g.shift_applied == pytest.approx(limit)
        end = g.crop[2] if w > h else g.crop[3]
        assert end == pytest.approx(max(w, h))        # window sits on the far border


def test_shift_clamp_both_directions_and_no_clamp_when_room():
    g = plan_geometry(500, 375, parse_transform("shift-5"), SUP)
    assert not g.clamped and g.shift_applied == pytest.approx(5)
    g = plan_geometry(500, 375, parse_transform("shift-1000"), SUP)
    assert g.clamped and g.crop[2] == pytest.approx(500)
    g = plan_geometry(500, 375, parse_transform("shift--1000"), SUP)
    assert g.clamped and g.crop[0] == pytest.approx(0) and g.shift_applied == pytest.approx(-85.9375)
    # square images shift vertically (as the paper's code does)
    g = plan_geometry(400, 400, parse_transform("shift-10"), SUP)
    assert g.crop[0] == pytest.approx(g.crop[1] - 10)


def _test_image(w: int, h: int, smooth: bool = False, seed: int = 0) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if smooth:
        arr = np.stack([
            127 + 100 * np.sin(xx / 37.0) * np.cos(yy / 53.0),
            127 + 100 * np.cos(xx / 41.0 + yy / 67.0),
            (xx + yy) / (w + h) * 255,
        ], axis=-1)
    else:
        rng = np.random.default_rng(seed)
        arr = rng.integers(0, 256, size=(h, w, 3)).astype(np.float64)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@pytest.mark.parametrize("pre", [SUP, CLIP], ids=["sup", "clip"])
@pytest.mark.parametrize("wh", SIZES, ids=["500x375", "375x500"])
def test_pixels_equal_torchvision(wh, pre):
    tv = pytest.importorskip("torchvision.transforms")
    from torchvision.transforms import InterpolationMode

    mode = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[pre.interpolation]
    img = _test_image(*wh)
    cases = {"center": (pre.resize, 224)}
    for s in (1, 1.25, 1.5, 2, 3):
        cases[f"scale-{s}"] = (int(s * pre.resize), 224)
    for r in (112, 224, 336, 512, 640):
        cases[f"res-{r}"] = (int(r * pre.resize / 224), r)
    for name, (resize, crop) in cases.items():
        ref = tv.Compose([tv.Resize(resize, interpolation=mode), tv.CenterCrop(crop)])(img)
        out = apply_transform(img, parse_transform(name), pre)
        assert out.size == (crop, crop) and out.mode == "RGB"
        assert np.array_equal(np.asarray(out), np.asarray(ref)), name


@pytest.mark.parametrize("pre", [SUP, CLIP], ids=["sup", "clip"])
def test_shift_pixels_are_the_window_resampled(pre):
    img = _test_image(500, 375, smooth=True)
    for name in ("shift-0", "shift-30", "shift-100"):
        g = plan_geometry(500, 375, parse_transform(name), pre)
        ref = img.resize((224, 224), Image.Resampling.BILINEAR if pre.interpolation == "bilinear"
                         else Image.Resampling.BICUBIC, box=g.crop)
        out = apply_transform(img, parse_transform(name), pre)
        assert np.array_equal(np.asarray(out), np.asarray(ref))


@pytest.mark.parametrize("pre", [SUP, CLIP], ids=["sup", "clip"])
@pytest.mark.parametrize("wh", SIZES + [(320, 320), (1024, 683)], ids=["500x375", "375x500", "sq", "big"])
def test_shift0_equals_center_up_to_resampling(wh, pre):
    img = _test_image(*wh, smooth=True)
    a = np.asarray(apply_transform(img, parse_transform("center"), pre)).astype(float)
    b = np.asarray(apply_transform(img, parse_transform("shift-0"), pre)).astype(float)
    assert a.shape == b.shape == (224, 224, 3)
    assert np.abs(a - b).mean() < 1.5
    # and a real shift is visibly different (unless the window has no room: CLIP on a square image)
    if plan_geometry(*wh, parse_transform("shift-30"), pre).shift_applied > 0:
        c = np.asarray(apply_transform(img, parse_transform("shift-30"), pre)).astype(float)
        assert np.abs(a - c).mean() > 3 * np.abs(a - b).mean() + 1


def test_shift_moves_content_by_p_pixels():
    # a vertical bar at x = 260 in the original moves left by p * 224/328.125 px in the output
    arr = np.zeros((375, 500, 3), np.uint8)
    arr[:, 258:262] = 255
    img = Image.fromarray(arr)
    def bar_x(name):
        out = np.asarray(apply_transform(img, parse_transform(name), SUP)).astype(float)[..., 0].mean(0)
        return (out * np.arange(224)).sum() / out.sum()
    scale = 224 / 328.125
    assert bar_x("shift-0") - bar_x("shift-30") == pytest.approx(30 * scale, abs=0.3)
    assert bar_x("shift-0") - bar_x("shift-75") == pytest.approx(75 * scale, abs=0.3)


@pytest.mark.parametrize("name", PAPER_TRANSFORMS)
def test_output_sizes_and_modes(name):
    t = parse_transform(name)
    for mode in ("RGB", "L", "RGBA", "P", "CMYK"):
        img = _test_image(500, 375).convert(mode)
        for pre in (SUP, CLIP):
            out = apply_transform(img, t, pre)
            n = output_size(t, pre)
            assert out.size == (n, n) and out.mode == "RGB"
            assert n == (int(name.split("-")[1]) if name.startswith("res-") else 224)


def test_small_image_and_downscale_scale_pad_like_torchvision():
    tv = pytest.importorskip("torchvision.transforms")
    img = _test_image(300, 200)
    out = apply_transform(img, parse_transform("scale-0.5"), SUP)  # Resize(128) < 224: zero padded
    ref = tv.Compose([tv.Resize(128), tv.CenterCrop(224)])(img)
    assert out.size == (224, 224)
    assert np.array_equal(np.asarray(out), np.asarray(ref))


def test_parse_canonical_ids_and_values():
    assert parse_transform("center") == TransformSpec("center", "center", None)
    assert parse_transform(" Scale-1.50 ") == TransformSpec("scale-1.5", "scale", 1.5)
    assert parse_transform("scale-1") == TransformSpec("scale-1", "scale", 1.0)
    assert parse_transform("scale-1.75").value == 1.75
    assert parse_transform("shift-030") == TransformSpec("shift-30", "shift", 30)
    assert parse_transform("shift-2.5") == TransformSpec("shift-2.5", "shift", 2.5)
    assert parse_transform("res-336") == TransformSpec("res-336", "res", 336)
    assert parse_transform(parse_transform("res-112")).id == "res-112"
    for name in PAPER_TRANSFORMS:
        t = parse_transform(name)
        assert t.id == name
        assert t.to_dict() == {"id": t.id, "kind": t.kind, "value": t.value}
    assert list_transforms() == PAPER_TRANSFORMS
    assert len(PAPER_TRANSFORMS) == 16


@pytest.mark.parametrize("bad,hint", [
    ("scael-1.5", "scale-1.5"),
    ("centre", "center"),
    ("shfit-30", "shift-30"),
    ("resolution-336", "res-336"),
    ("rez-336", "res-336"),
])
def test_parse_unknown_kind_did_you_mean(bad, hint):
    with pytest.raises(ValueError) as e:
        parse_transform(bad)
    msg = str(e.value)
    assert "did you mean" in msg and repr(hint) in msg
    assert "scale-<s>" in msg  # lists what is available


@pytest.mark.parametrize("bad", ["scale-abc", "scale-0", "scale--1", "res-33.5", "res-8", "shift-nan", "scale-inf", ""])
def test_parse_bad_values(bad):
    with pytest.raises(ValueError):
        parse_transform(bad)


def test_uint8_tensor_and_normalize():
    import torch

    from extract.tensors import normalize, to_uint8_tensor

    img = _test_image(64, 48)
    x = to_uint8_tensor(img)
    assert x.dtype == torch.uint8 and x.shape == (3, 48, 64)
    assert np.array_equal(x.permute(1, 2, 0).numpy(), np.asarray(img))
    batch = torch.stack([x, x.flip(-1)])
    y = normalize(batch, SUP)
    assert y.dtype == torch.float32 and y.shape == (2, 3, 48, 64)
    mean = np.array(SUP.mean).reshape(1, 3, 1, 1)
    std = np.array(SUP.std).reshape(1, 3, 1, 1)
    expect = (batch.numpy() / 255.0 - mean) / std
    assert np.allclose(y.numpy(), expect, atol=1e-5)
    assert batch.dtype == torch.uint8  # input untouched
    tvf = pytest.importorskip("torchvision.transforms.functional")
    ref = tvf.normalize(tvf.to_tensor(img), SUP.mean, SUP.std)
    assert torch.allclose(normalize(x, SUP), ref, atol=1e-6)


def test_geometry_key_and_import_is_light():
    assert SUP.geometry_key() == (256, 224, "bilinear")
    assert CLIP.geometry_key() == (224, 224, "bicubic")
    code = ("import sys, extract.spec.transforms, extract.imaging; "
            "bad = [m for m in ('torch', 'timm', 'open_clip', 'torchvision') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_geometry_rounding_guards():
    # int(s * S) with s*S landing a hair under an integer in floating point
    pre = Preprocess(100, 80, "bilinear", (0, 0, 0), (1, 1, 1))
    g = plan_geometry(200, 100, parse_transform("scale-1.1"), pre)  # 1.1*100 = 110.00000000000001
    assert g.resize == (220, 110)
    g = plan_geometry(200, 100, parse_transform("scale-0.29"), pre)  # 0.29*100 = 28.999999999999996
    assert g.resize[1] == 29
    assert math.floor(0.29 * 100) == 28  # the guard matters
