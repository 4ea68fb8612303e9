"""Pixels of a transform: PIL resampling of the geometry that ``extract.spec.transforms`` defines.

Resampling uses PIL with ``pre.interpolation``; PIL filters are antialiased when downscaling.
No torch at import.
"""
from __future__ import annotations

from PIL import Image

from extract.spec.models import Preprocess
from extract.spec.transforms import TransformSpec, parse_transform, plan_geometry

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def _resample(interpolation: str) -> Image.Resampling:
    try:
        return _RESAMPLE[interpolation]
    except KeyError:
        raise ValueError(f"unknown interpolation {interpolation!r}; known: {sorted(_RESAMPLE)}") from None


def apply_transform(img: Image.Image, t: TransformSpec | str, pre: Preprocess) -> Image.Image:
    """Apply ``t`` to a PIL image; returns an RGB image of output_size(t, pre) squared."""
    t = parse_transform(t)
    if img.mode != "RGB":
        img = img.convert("RGB")
    g = plan_geometry(img.width, img.height, t, pre)
    resample = _resample(pre.interpolation)
    if g.space == "original":
        return img.resize((g.output, g.output), resample, box=g.crop)
    if img.size != g.resize:
        img = img.resize(g.resize, resample)
    return img.crop(tuple(int(v) for v in g.crop))


__all__ = ["apply_transform"]
