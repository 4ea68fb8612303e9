"""Pillow's resampling as integer taps, so that the same arithmetic can run on another device.

``extract.imaging.apply_transform`` resizes with Pillow. Pillow's 8-bit resize (``Resample.c``) is two
separable passes, each rounding to uint8. For an output pixel ``j`` of one pass over input samples ``p``:

    center_j = in0 + (j + 0.5) * scale,          scale = (in1 - in0) / out   (in0, in1: float32 box edges)
    fs = max(scale, 1),  support = filter_support * fs,  K = 2 * ceil(support) + 1
    xmin_j = max(int(center_j - support + 0.5), 0),  xmax_j = min(int(center_j + support + 0.5), in)
    w_jt = f((xmin_j + t - center_j + 0.5) / fs)  for t < xmax_j - xmin_j,   k_jt = w_jt / sum_t w_jt
    q_jt = int(k_jt * 2^22 +- 0.5)                (rounded away from zero, truncated to an int)
    out_j = clip(floor((2^21 + sum_t q_jt * p[xmin_j + t]) / 2^22), 0, 255)

A pass that keeps its axis (same size, whole box) is skipped. The order of the passes: horizontal first
in older Pillow; in Pillow 13 (at least) vertical first when the height shrinks by more than twice what
the width does, ``(H - h) > 0 and (H - h) > 2 (W - w)`` for a ``W x H -> w x h`` resize. ``pillow_pass_order``
finds out which rule the installed Pillow follows, from one small resize.

``transform_taps`` gives, for one image and one transform geometry (``plan_geometry``), the ``(xmin, q)``
of every output column and row of the final crop, i.e. the resize and the crop (zero padding included) in
one table per axis, plus the order of the passes. ``extract.device_resample`` applies them with int32
arithmetic, which is Pillow's, so the result equals ``apply_transform`` bit for bit for every transform
and every filter but nearest.

numpy only: the DataLoader workers compute the taps of each image. No torch at import; PIL only inside
``pillow_pass_order``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from extract.spec.models import Preprocess
from extract.spec.transforms import TransformSpec, plan_geometry

PRECISION_BITS = 22  # Resample.c: 32 - 8 - 2 (8 bits of result, 2 for the filters' negative lobes)
ONE = 1 << PRECISION_BITS
# Pillow's filters and their support (Resample.c); "nearest" takes another path in Pillow (an affine map).
SUPPORT = {"box": 0.5, "bilinear": 1.0, "hamming": 1.0, "bicubic": 2.0, "lanczos": 3.0}


def _filter(name: str, x: np.ndarray) -> np.ndarray:
    """Resample.c's filter functions, in the same double-precision operations."""
    ax = np.abs(x)
    if name == "bilinear":
        return np.where(ax < 1.0, 1.0 - ax, 0.0)
    if name == "bicubic":  # a = -0.5
        near = ((-0.5 + 2.0) * ax - (-0.5 + 3.0)) * ax * ax + 1
        far = (((ax - 5) * ax + 8) * ax - 4) * -0.5
        return np.where(ax < 1.0, near, np.where(ax < 2.0, far, 0.0))
    if name == "box":
        return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "hamming":  # sin(x)/x * (0.54f + 0.46f cos(x)), the constants float32 as in C
            xp = ax * math.pi
            v = np.sin(xp) / xp * (float(np.float32(0.54)) + float(np.float32(0.46)) * np.cos(xp))
            return np.where(ax == 0.0, 1.0, np.where(ax >= 1.0, 0.0, v))
        if name == "lanczos":
            def sinc(v):
                vp = v * math.pi
                return np.where(v == 0.0, 1.0, np.sin(vp) / vp)
            return np.where((x >= -3.0) & (x < 3.0), sinc(x) * sinc(x / 3), 0.0)
    raise ValueError(f"no Pillow-exact taps for interpolation {name!r}; known: {sorted(SUPPORT)}")


def axis_taps(in_size: int, in0: float, in1: float, out_size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for one axis: (xmin int64 [out], q int32 [out, K]).

    Taps past an output's ``xmax`` have q = 0; ``xmin + t`` stays inside the input for every tap with q != 0.
    """
    a, b = np.float32(in0), np.float32(in1)
    scale = float(np.float32(b - a)) / out_size  # (double)(in1 - in0) / outSize, the difference in float32
    filterscale = max(scale, 1.0)
    support = SUPPORT[interpolation] * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = float(a) + (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    t = np.arange(ksize)
    used = t[None, :] < count[:, None]
    arg = ((t[None, :] + xmin[:, None]) - center[:, None] + 0.5) * (1.0 / filterscale)  # (x + xmin - center + 0.5) * ss
    w = np.where(used, _filter(interpolation, arg), 0.0)
    ww = np.zeros(out_size)
    for k in range(ksize):  # summed in Resample.c's order (numpy's pairwise sum could differ in the last bit)
        ww += w[:, k]
    k = np.where(ww[:, None] != 0.0, w / np.where(ww == 0.0, 1.0, ww)[:, None], w)
    q = np.where(k < 0, np.trunc(-0.5 + k * ONE), np.trunc(0.5 + k * ONE))
    return xmin, np.where(used, q, 0).astype(np.int32)


def _identity(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n, dtype=np.int64), np.full((n, 1), ONE, dtype=np.int32)


def _select(xmin: np.ndarray, q: np.ndarray, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Outputs ``start .. start + n`` of a pass: a crop; outputs past the pass's size are zero (zero padding)."""
    j = np.arange(start, start + n)
    inside = (j >= 0) & (j < len(xmin))
    jj = np.clip(j, 0, len(xmin) - 1)
    return np.where(inside, xmin[jj], 0), np.where(inside[:, None], q[jj], 0).astype(np.int32)


@dataclass(frozen=True)
class Taps:
    """One image under one geometry: the output's columns (x) and rows (y) as Pillow's integer taps.

    ``x_start[j]`` is the first input column of output column j and ``x_q[j, t]`` the weight of input column
    ``x_start[j] + t`` (times 2^22); y likewise for rows. Output side: ``len(x_start)``.
    """

    x_start: np.ndarray   # int64 [S]
    x_q: np.ndarray       # int32 [S, Kx]
    y_start: np.ndarray   # int64 [S]
    y_q: np.ndarray       # int32 [S, Ky]
    vertical_first: bool = False  # the row pass runs first (see the module docstring)


HORIZONTAL_FIRST, SHRINK_RULE = "horizontal first", "vertical first when the height shrinks twice as much"


@functools.lru_cache(maxsize=1)
def pillow_pass_order() -> str:
    """Which order of passes the installed Pillow uses: HORIZONTAL_FIRST or SHRINK_RULE.

    Found from one resize of a 16 x 48 image to 14 x 12, which the two orders round differently.
    Raises RuntimeError when Pillow matches neither (its resampling changed: the taps would be wrong).
    """
    from PIL import Image

    a = np.random.default_rng(0).integers(0, 256, (48, 16, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(a).resize((14, 12), Image.Resampling.BILINEAR))
    x, y = axis_taps(16, 0, 16, 14, "bilinear"), axis_taps(48, 0, 48, 12, "bilinear")
    for order, vertical_first in ((HORIZONTAL_FIRST, False), (SHRINK_RULE, True)):
        if np.array_equal(pil, resample_reference(a, Taps(*x, *y, vertical_first=vertical_first))):
            return order
    import PIL

    raise RuntimeError(f"Pillow {PIL.__version__} resizes in neither known order of passes; the device resize "
                       f"cannot reproduce it (extract/resample.py)")


def _vertical_first(width: int, height: int, out_w: int, out_h: int) -> bool:
    """Pillow's order of the passes for a ``width x height -> out_w x out_h`` resize."""
    if pillow_pass_order() == HORIZONTAL_FIRST:
        return False
    return (height - out_h) > 0 and (height - out_h) > (width - out_w) * 2


def transform_taps(width: int, height: int, t: TransformSpec | str, pre: Preprocess) -> Taps:
    """The taps of ``apply_transform(image of width x height, t, pre)``: resize and crop, as Pillow does them."""
    if pre.interpolation not in SUPPORT:
        raise ValueError(f"no Pillow-exact taps for interpolation {pre.interpolation!r}; known: {sorted(SUPPORT)}")
    g = plan_geometry(width, height, t, pre)
    f = pre.interpolation
    if g.space == "original":  # shift: Image.resize((C, C), box=crop)
        out = g.output
        x0, y0, x1, y1 = (float(np.float32(v)) for v in g.crop)  # Pillow reads the box as float32
        # Resample.c's need_horizontal / need_vertical (a pass that is not needed is the identity)
        x = axis_taps(width, x0, x1, out, f) if (out != width or x0 or x1 != out) else _identity(width)
        y = axis_taps(height, y0, y1, out, f) if (out != height or y0 or y1 != out) else _identity(height)
        return Taps(*_select(*x, 0, out), *_select(*y, 0, out),
                    vertical_first=_vertical_first(width, height, out, out))
    rw, rh = g.resize
    if (rw, rh) == (width, height):  # apply_transform skips the resize
        x, y = _identity(width), _identity(height)
    else:
        x = axis_taps(width, 0, width, rw, f) if rw != width else _identity(width)
        y = axis_taps(height, 0, height, rh, f) if rh != height else _identity(height)
    left, top, right, bottom = (int(v) for v in g.crop)
    return Taps(*_select(*x, left, right - left), *_select(*y, top, bottom - top),
                vertical_first=_vertical_first(width, height, rw, rh))


def resample_reference(pixels: np.ndarray, taps: Taps) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [S, S, 3] by the taps, in numpy (a slow reference for the device code)."""
    def one_pass(a: np.ndarray, start: np.ndarray, q: np.ndarray) -> np.ndarray:  # along axis 0
        acc = np.full((len(start),) + a.shape[1:], ONE >> 1, dtype=np.int64)
        for k in range(q.shape[1]):
            rows = np.clip(start + k, 0, a.shape[0] - 1)
            acc += a[rows].astype(np.int64) * q[:, k].reshape((-1,) + (1,) * (a.ndim - 1))
        return np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)

    def cols(a: np.ndarray) -> np.ndarray:
        return one_pass(a.transpose(1, 0, 2), taps.x_start, taps.x_q).transpose(1, 0, 2)

    if taps.vertical_first:
        return cols(one_pass(pixels, taps.y_start, taps.y_q))
    return one_pass(cols(pixels), taps.y_start, taps.y_q)


__all__ = ["PRECISION_BITS", "SUPPORT", "HORIZONTAL_FIRST", "SHRINK_RULE", "Taps", "axis_taps", "pillow_pass_order",
           "transform_taps", "resample_reference"]
