"""Image decoding: encoded bytes to an RGB PIL image and what the decoder warned about, or an
ImageDecodeError that says what is wrong with the image.

No torch at import; PIL is imported inside ``decode``.

Pixels are what torchvision and timm give, with one fix:

- 8-bit images: ``PIL.Image.convert("RGB")``, as torchvision's ImageFolder loader and timm's loader.
  EXIF orientation is ignored, as they do (and as ``torchvision.io.decode_image`` does by default).
- 16-bit grayscale (PIL modes ``I;16``, ``I;16B``, ``I;16L``; 16-bit PNG, TIFF, PGM) and 32-bit integer
  images whose values lie in 0..65535 (mode ``I``) are scaled to 8 bits as ``v >> 8``. PIL's own
  ``convert("RGB")``, which the timm and torchvision loaders call, clips them at 255 instead (a 16-bit
  photograph comes out nearly white). ``v >> 8`` is what ``torchvision.io.decode_image`` followed by
  ``to_dtype(torch.uint8, scale=True)`` gives, and what PIL itself does with 16-bit RGB PNG and TIFF
  (it keeps the high byte), so a 16-bit image gives the same pixels in gray and in colour.
- 32-bit float images (mode ``F``) with values in [0, 1] are scaled as torchvision's
  ``to_dtype(torch.uint8, scale=True)`` does: ``floor(v * (256 - 1e-3))``.
- Any other range (negative or above 65535, float outside [0, 1] or not finite) has no known scale:
  ImageDecodeError (an invalid row naming the range).

Warnings are part of the result: PIL's Python warnings (decompression-bomb size, truncated or corrupt
EXIF/TIFF metadata, "Truncated File Read", malformed MPO) and damage in a JPEG's coded data, which PIL
decodes silently (``jpeg_scan.jpeg_damage``). The image is still usable; the run counts and names them.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
# torchvision's to_dtype(float -> uint8, scale=True) multiplies by 255 + 1 - eps and truncates.
_FLOAT_SCALE = 256.0 - 1e-3


class ImageDecodeError(ValueError):
    """The bytes of a sample are not a readable image (empty, truncated, corrupt, not an image)."""


@dataclass
class DecodedImage:
    """An RGB image, fully loaded, and what the decoder warned about while reading it."""

    image: Image.Image
    warnings: list[str] = field(default_factory=list)


def decode(data: bytes, name: str | None = None) -> DecodedImage:
    """Decode encoded image bytes to an RGB PIL image (see the module docstring for the pixels).

    Raises ImageDecodeError naming the problem for empty, truncated or corrupt data, data that is not an
    image, a decompression bomb and pixel values with no known 8-bit scale. Truncated images are never
    padded silently (LOAD_TRUNCATED_IMAGES off). Decoder warnings come back in ``warnings``.
    """
    import warnings

    from PIL import Image, ImageFile, UnidentifiedImageError

    what = f" {name}" if name else ""
    if data is None or len(data) == 0:
        raise ImageDecodeError(f"empty image data{what}: 0 bytes")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    fmt = "?"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "?"
            img.load()
        except UnidentifiedImageError:
            raise ImageDecodeError(
                f"not an image{what}: {len(data)} bytes that no image decoder recognises (starting {bytes(data[:12])!r})"
            ) from None
        except Image.DecompressionBombError as e:
            raise ImageDecodeError(f"image{what} refused as a decompression bomb: {e}") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
            msg = str(e)
            kind = "truncated" if "truncat" in msg.lower() else "corrupt"
            raise ImageDecodeError(f"{kind} image{what} ({fmt}, {len(data)} bytes): {msg}") from None
        img = _to_8bit(img, f"image{what} ({fmt}, mode {img.mode})")
        if img.mode != "RGB":
            try:
                img = img.convert("RGB")
            except (OSError, ValueError) as e:
                raise ImageDecodeError(f"image{what} ({fmt}, mode {img.mode}) cannot be converted to RGB: {e}") from None
    notes = []
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)):  # about code, not the image
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        else:
            notes.append(f"{w.category.__name__}: {w.message}")
    if fmt in ("JPEG", "MPO"):
        from .jpeg_scan import jpeg_damage

        damage = jpeg_damage(bytes(data))
        if damage:
            notes.append(damage)
    return DecodedImage(img, notes)


def decode_image(data: bytes, name: str | None = None) -> Image.Image:
    """``decode(data, name).image``: the RGB image alone, for callers that only probe a file."""
    return decode(data, name).image


def _to_8bit(img: Image.Image, what: str) -> Image.Image:
    """High-bit-depth gray (``I;16*``, ``I``, ``F``) scaled to 8-bit ``L``; other modes as they are."""
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img)
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ImageDecodeError(f"{what}: pixel values {lo}..{hi} outside 0..65535, no known scale to 8 bits")
        return Image.fromarray((a.astype(np.uint32) >> 8).astype(np.uint8), mode="L")
    if mode == "F":
        a = np.asarray(img, dtype=np.float32)
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            lo, hi = np.nanmin(a), np.nanmax(a)
            raise ImageDecodeError(f"{what}: float pixel values {lo:g}..{hi:g}"
                                   f"{' (some not finite)' if not np.isfinite(a).all() else ''}, expected 0..1; "
                                   "no known scale to 8 bits")
        return Image.fromarray((a * _FLOAT_SCALE).astype(np.uint8), mode="L")
    return img


__all__ = ["IMAGE_EXTENSIONS", "DecodedImage", "ImageDecodeError", "decode", "decode_image"]
