"""Image decoding: encoded bytes to an RGB PIL image, or an ImageDecodeError that says what is wrong.

No torch at import; PIL is imported inside `decode_image`.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


class ImageDecodeError(ValueError):
    """The bytes of a sample are not a readable image (empty, truncated, corrupt, not an image)."""


def decode_image(data: bytes, name: str | None = None) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image, fully loaded.

    Raises ImageDecodeError naming the problem for empty, truncated or corrupt data and for data
    that is not an image. Truncated images are never padded silently (LOAD_TRUNCATED_IMAGES off).
    """
    from PIL import Image, ImageFile, UnidentifiedImageError

    what = f" {name}" if name else ""
    if data is None or len(data) == 0:
        raise ImageDecodeError(f"empty image data{what}: 0 bytes")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    fmt = "?"
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
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except (OSError, ValueError) as e:
            raise ImageDecodeError(f"image{what} ({fmt}, mode {img.mode}) cannot be converted to RGB: {e}") from None
    return img
