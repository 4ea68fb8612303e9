"""Image transforms as plain data: center, scale, shift and resolution (docs/design.md, "Extraction").

Every transform is defined relative to a model's evaluation preprocessing ``pre`` (an
``extract.spec.models.Preprocess``: ``resize`` S, ``crop`` C, ``interpolation``, ``mean``, ``std``):

- ``center``   Resize(S) -> CenterCrop(C). The standard eval crop (supervised S=256, CLIP S=224; C=224).
- ``scale-s``  Resize(floor(s*S)) -> CenterCrop(C).
- ``shift-p``  The standard eval crop window, expressed in ORIGINAL pixels, moved p original pixels along
               the longer side, cropped from the original and resized to C x C.
               The window is the centred square of side ``shorter_side * C / S`` (what Resize(S) ->
               CenterCrop(C) sees, up to the integer rounding of the resize). Positive p moves it right
               (landscape) or down (portrait and square images, as in the paper's code).
               Clamp: the window never leaves the image; if ``centre + p`` would push it past the border
               it stops at the border (``Geometry.clamped`` is then True and ``Geometry.shift_applied``
               says how far it actually moved). The crop box is fractional (sub-pixel); PIL resamples
               exactly that box, so ``shift-0`` equals ``center`` up to resampling.
- ``res-r``    Resize(floor(r*S/C)) -> CenterCrop(r) (supervised: Resize(r*256/224); CLIP: Resize(r)).
               The model itself runs at r x r (ViT position embeddings are resampled by extract.models).

"Resize(n)" resizes the shorter side to n and the longer side to ``int(n * long / short)``, and
"CenterCrop(c)" cuts at ``round((dim - c) / 2)``, exactly as torchvision does on PIL images (a crop
larger than the image is zero-padded, as torchvision does). This module computes that geometry;
``extract.imaging.apply_transform`` resamples the pixels with PIL.

Stdlib only: no numpy, PIL or torch at import.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from schemas.registry import close_names, unknown_name

from .models import ModelSpec, Preprocess

KINDS: tuple[str, ...] = ("center", "scale", "shift", "res")

PAPER_TRANSFORMS: list[str] = [
    "center",
    "scale-1", "scale-1.25", "scale-1.5", "scale-2", "scale-3",
    "shift-0", "shift-5", "shift-30", "shift-75", "shift-100",
    "res-112", "res-224", "res-336", "res-512", "res-640",
]

_SYNTAX = "center, scale-<s> (s > 0), shift-<px>, res-<px> (integer >= 16)"


@dataclass(frozen=True)
class TransformSpec:
    id: str                      # canonical id: "center", "scale-1.5", "shift-30", "res-336"
    kind: str                    # "center" | "scale" | "shift" | "res"
    value: float | int | None    # scale factor, shift in original pixels, resolution in pixels

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class Geometry:
    """The exact geometry of one transform applied to one image size.

    space == "resized": resize the whole image to ``resize`` (w, h), then crop ``crop``
    (left, top, right, bottom; integers, in resized coordinates; may extend past the image,
    which pads with zeros). space == "original" (shift): ``resize`` is None and ``crop`` is a
    fractional box in original pixels that is resampled to ``output`` x ``output``.
    """

    space: str                                  # "resized" | "original"
    resize: tuple[int, int] | None              # (w, h) of the resized image; None for shift
    crop: tuple[float, float, float, float]     # (left, top, right, bottom)
    output: int                                 # side of the square output image
    clamped: bool = False                       # shift only: the window hit the image border
    shift_applied: float | None = None          # shift only: how far the window actually moved

    def to_dict(self) -> dict:
        return {
            "space": self.space,
            "resize": list(self.resize) if self.resize is not None else None,
            "crop": list(self.crop),
            "output": self.output,
            "clamped": self.clamped,
            "shift_applied": self.shift_applied,
        }


def _fmt(value: float) -> str:
    """Shortest text for a number: 1.0 -> '1', 1.25 -> '1.25', 30.0 -> '30'."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return repr(value)


def list_transforms() -> list[str]:
    """The paper's transforms, in order. Any other value of these kinds parses too."""
    return list(PAPER_TRANSFORMS)


def _unknown(name: str, raw: str) -> ValueError:
    """An unknown transform: suggestions by kind ("scael-1.5" -> "scale-1.5") and among the paper's ids."""
    kind, _, rest = raw.partition("-")
    suggestions = [k if k == "center" else f"{k}-{rest or '<value>'}" for k in close_names(kind, KINDS, n=2)]
    suggestions += [s for s in close_names(raw, PAPER_TRANSFORMS, cutoff=0.6) if s not in suggestions]
    return unknown_name("transform", name, [], suggestions=suggestions,
                        extra=f"available: {_SYNTAX}; the paper's: {', '.join(PAPER_TRANSFORMS)}")


def parse_transform(name: str) -> TransformSpec:
    """Parse a transform id. Accepts any value of the known kinds ("scale-1.75", "shift-12").

    Unknown kinds raise ``schemas.registry.UnknownName`` (a ValueError) with a did-you-mean hint.
    """
    if isinstance(name, TransformSpec):
        return name
    raw = str(name).strip().lower()
    if raw == "center":
        return TransformSpec("center", "center", None)
    m = re.fullmatch(r"(scale|shift|res)-(.+)", raw)
    if m is None:
        raise _unknown(name, raw)
    kind, text = m.group(1), m.group(2)
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"transform {name!r}: {text!r} is not a number; available: {_SYNTAX}") from None
    if not math.isfinite(number):
        raise ValueError(f"transform {name!r}: value must be finite")
    if kind == "scale":
        if number <= 0:
            raise ValueError(f"transform {name!r}: scale must be > 0")
        return TransformSpec(f"scale-{_fmt(number)}", "scale", float(number))
    if kind == "shift":
        value: float | int = int(number) if number.is_integer() else float(number)
        return TransformSpec(f"shift-{_fmt(number)}", "shift", value)
    # res
    if not number.is_integer() or number < 16:
        raise ValueError(f"transform {name!r}: resolution must be an integer >= 16")
    return TransformSpec(f"res-{int(number)}", "res", int(number))


def output_size(t: TransformSpec | str, pre: Preprocess) -> int:
    """Side of the square image the model sees: ``pre.crop`` (224), except res-r -> r."""
    t = parse_transform(t)
    return int(t.value) if t.kind == "res" else int(pre.crop)


def _short_side_resize(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision Resize(size) output (w, h): shorter side -> size, longer -> int(size*long/short)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = int(size), int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _center_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """torchvision CenterCrop(crop) box (left, top, right, bottom), zero padding included."""
    def start(dim: int) -> int:
        if crop > dim:  # torchvision pads (crop - dim) // 2 before, the rest after
            return -((crop - dim) // 2)
        return int(round((dim - crop) / 2.0))

    left, top = start(width), start(height)
    return (left, top, left + crop, top + crop)


def plan_geometry(width: int, height: int, t: TransformSpec | str, pre: Preprocess) -> Geometry:
    """The exact resize target and crop box of transform ``t`` for an image of ``width`` x ``height``."""
    t = parse_transform(t)
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    S, C = int(pre.resize), int(pre.crop)

    if t.kind == "shift":
        short, long = min(width, height), max(width, height)
        side = min(float(short), short * C / S)
        horizontal = width > height  # square images shift vertically, as in the paper's code
        off_short = (short - side) / 2.0
        wanted = (long - side) / 2.0 + float(t.value)
        off_long = min(max(wanted, 0.0), long - side)
        clamped = off_long != wanted
        applied = off_long - (long - side) / 2.0
        if horizontal:
            box = (off_long, off_short, off_long + side, off_short + side)
        else:
            box = (off_short, off_long, off_short + side, off_long + side)
        return Geometry("original", None, box, C, clamped=clamped, shift_applied=applied)

    if t.kind == "center":
        size, out = S, C
    elif t.kind == "scale":
        size, out = int(math.floor(float(t.value) * S + 1e-9)), C  # int(s*S), guarded against 0.999..
        if size < 1:
            raise ValueError(f"{t.id}: resize {size} < 1 for this preprocessing")
    elif t.kind == "res":
        size, out = (int(t.value) * S) // C, int(t.value)          # int(r * S / C)
    else:  # pragma: no cover - parse_transform guarantees the kind
        raise ValueError(f"unknown transform kind {t.kind!r}")
    resized = _short_side_resize(width, height, size)
    return Geometry("resized", resized, _center_crop_box(resized[0], resized[1], out), out)


def resolved_preprocess(spec: ModelSpec, t: TransformSpec) -> dict:
    """What the model sees: its eval preprocessing resolved for transform ``t`` (fingerprinted)."""
    pre = spec.preprocess
    return {**pre.to_dict(), "transform": t.id, "input_size": int(output_size(t, pre))}


__all__ = ["KINDS", "PAPER_TRANSFORMS", "TransformSpec", "Geometry", "list_transforms", "parse_transform",
           "output_size", "plan_geometry", "resolved_preprocess"]
