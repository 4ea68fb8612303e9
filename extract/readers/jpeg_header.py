"""A JPEG's frame header, read from its markers without decoding: its size and whether a device decoder
(``torchvision.io.decode_jpeg``, nvJPEG on CUDA) gives the pixels Pillow gives.

Pillow (libjpeg) and the device decoders agree on 8-bit baseline, extended and progressive Huffman JPEGs
with one (gray) or three (YCbCr) components. Everything else goes to Pillow: other formats, CMYK and
YCCK, files carrying an Adobe APP14 marker (it sets the colour transform), components named R, G, B
(libjpeg reads those as RGB), multi-picture files (MPO), 12-bit, lossless, arithmetic-coded and
hierarchical JPEGs, and a height given later by a DNL marker. No numpy, PIL or torch.
"""
from __future__ import annotations

from dataclasses import dataclass

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_DEVICE_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive (Huffman)
_RGB_IDS = (82, 71, 66)           # component ids "R", "G", "B"


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    components: int
    precision: int        # bits per sample
    sof: int              # the SOF marker (0xC0 baseline, 0xC2 progressive, ...)
    component_ids: tuple[int, ...]
    adobe: bool           # an APP14 "Adobe" segment (colour transform of CMYK, YCCK or RGB files)
    mpf: bool             # an APP2 "MPF" segment (a multi-picture file: Pillow opens it as MPO)

    @property
    def device_decodable(self) -> bool:
        """The device decoders give Pillow's pixels for this file (see the module docstring)."""
        return (self.sof in _DEVICE_SOF and self.precision == 8 and self.components in (1, 3)
                and not self.adobe and not self.mpf and self.component_ids != _RGB_IDS
                and self.width > 0 and self.height > 0)


def jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame header of a JPEG (the markers up to its first scan), or None for anything else."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    pos, n = 2, len(data)
    adobe = mpf = False
    frame = None
    while pos + 3 < n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: the header is over
            break
        length = data[pos + 2] << 8 | data[pos + 3]
        seg = data[pos + 4: pos + 2 + length]
        if length < 2 or len(seg) != length - 2:
            return None  # cut short: Pillow decides what the file is
        if marker == 0xEE and seg[:5] == b"Adobe":
            adobe = True
        elif marker == 0xE2 and seg[:4] == b"MPF\x00":
            mpf = True
        elif marker in _SOF and frame is None:
            if len(seg) < 6:
                return None
            nc = seg[5]
            ids = tuple(seg[6 + 3 * i] for i in range(nc) if 6 + 3 * i < len(seg))
            frame = (seg[3] << 8 | seg[4], seg[1] << 8 | seg[2], nc, seg[0], marker, ids)
        pos += 2 + length
    if frame is None:
        return None
    width, height, nc, precision, sof, ids = frame
    return JpegHeader(width, height, nc, precision, sof, ids, adobe, mpf)


__all__ = ["JpegHeader", "jpeg_header"]
