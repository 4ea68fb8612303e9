"""``extract run --decode gpu``: JPEGs decoded and resized on the run's device, everything else by Pillow.

The DataLoader workers read each image's bytes. A JPEG that a device decoder reads as Pillow does
(``jpeg_header``: 8-bit baseline or progressive, gray or YCbCr, no Adobe or MPF marker), with clean coded
data (``jpeg_scan.jpeg_damage``: damaged data goes to Pillow, which names the damage as a warning) and
within Pillow's decompression-bomb limit, leaves the worker as its bytes plus, per preprocessing geometry,
the integer taps of its resize and crop (``extract.resample``). Every other image takes the Pillow path
in the worker, exactly as ``--decode pil`` does (PNG, CMYK, corrupt bytes -> an invalid row, ...).

In the main process ``DeviceDecoder`` decodes a batch's JPEGs with one ``torchvision.io.decode_jpeg``
call on a list of tensors (nvJPEG's batched decode on CUDA), pads them into size buckets and applies the
taps (``extract.device_resample``): Pillow's resize and crop in Pillow's arithmetic. A JPEG the device
fails to decode falls back to Pillow, image by image, in the main process; if Pillow fails too, the row
is invalid, as on the Pillow path.

On the CPU ``decode_jpeg`` is libjpeg-turbo, as in Pillow, and the pixels equal ``--decode pil`` bit for
bit; nvJPEG's IDCT and chroma upsampling differ from libjpeg's by a few levels (docs/benchmarks.md).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from extract.device_resample import buckets, pad_stack, resample
from extract.errors import ExtractError
from extract.options import device_type
from extract.pipeline import INVALID, OK, STOP, BlockImages, collate, unexpected
from extract.resample import SUPPORT, Taps, pillow_pass_order, transform_taps

# torchvision 0.29 warns at every call that its image codecs are deprecated for torchcodec; they still work.
_DEPRECATED = r".*image decoding and encoding capabilities of TorchVision are deprecated.*"


@dataclass
class Encoded:
    """A JPEG for the device: its bytes, its size and its taps per geometry."""

    data: torch.Tensor          # uint8 [n_bytes]
    height: int
    width: int
    taps: dict[Any, Taps]


def device_decodable(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG the device decodes as Pillow does, else None (Pillow decodes it)."""
    from PIL import Image

    from extract.readers.jpeg_header import jpeg_header
    from extract.readers.jpeg_scan import jpeg_damage

    header = jpeg_header(data)
    if header is None or not header.device_decodable:
        return None
    if Image.MAX_IMAGE_PIXELS and header.width * header.height > Image.MAX_IMAGE_PIXELS:
        return None  # Pillow warns or refuses: its path says which
    if jpeg_damage(bytes(data)) is not None:
        return None
    return header.height, header.width


class EncodedImages(BlockImages):
    """torch Dataset: index -> (index, status, message, warnings, Encoded or {geometry: uint8 [3,S,S]})."""

    def prepare(self, data: bytes):
        try:
            size = device_decodable(data)
            if size is not None:
                h, w = size
                taps = {k: transform_taps(w, h, self.transform, pre) for k, pre in self.geometries.items()}
                return OK, None, [], Encoded(torch.frombuffer(bytearray(data), dtype=torch.uint8), h, w, taps)
        except Exception as e:  # noqa: BLE001 - a bug in the header or taps code: the run stops and names it
            return STOP, unexpected(e), [], self.zeros()
        return self.pixels(data)


def _pad_taps(rows: list[np.ndarray], k: int) -> torch.Tensor:
    out = np.zeros((len(rows), rows[0].shape[0], k), dtype=np.int32)
    for i, q in enumerate(rows):
        out[i, :, : q.shape[1]] = q
    return torch.from_numpy(out)


def collate_encoded(items: list) -> dict:
    """``pipeline.collate`` plus ``encoded``: the batch positions, bytes, sizes and padded taps of its JPEGs
    for the device (their rows of ``images`` are zeros until ``DeviceDecoder`` fills them)."""
    pos = [j for j, it in enumerate(items) if isinstance(it[4], Encoded)]
    if not pos:
        return {**collate(items), "encoded": None}
    zeros = None
    plain = []
    for it in items:
        if isinstance(it[4], Encoded):
            if zeros is None:
                zeros = {k: torch.zeros(3, len(t.x_start), len(t.x_start), dtype=torch.uint8)
                         for k, t in it[4].taps.items()}
            it = (*it[:4], zeros)
        plain.append(it)
    batch = collate(plain)
    enc = [items[j][4] for j in pos]
    taps = {}
    for key in enc[0].taps:
        per = [e.taps[key] for e in enc]
        kx = np.array([t.x_q.shape[1] for t in per])
        ky = np.array([t.y_q.shape[1] for t in per])
        taps[key] = {
            "x_start": torch.from_numpy(np.stack([t.x_start for t in per])),
            "x_q": _pad_taps([t.x_q for t in per], int(kx.max())),
            "y_start": torch.from_numpy(np.stack([t.y_start for t in per])),
            "y_q": _pad_taps([t.y_q for t in per], int(ky.max())),
            "kx": kx, "ky": ky, "vertical_first": np.array([t.vertical_first for t in per]),
        }
    batch["encoded"] = {"pos": np.asarray(pos, dtype=np.int64), "data": [e.data for e in enc],
                        "size": np.array([(e.height, e.width) for e in enc], dtype=np.int64), "taps": taps}
    return batch


def decode_jpegs(data: Sequence[torch.Tensor], device: str) -> list[torch.Tensor | None]:
    """uint8 [3, H, W] RGB images on ``device``, one ``decode_jpeg`` call for the lot; None where that
    image alone fails (found by decoding one by one only when the batch call fails).

    On CUDA the decoder's outputs are allocated on a stream of their own. torchvision's nvJPEG decoder
    allocates them on the caller's stream but writes them from its private stream without waiting for
    the caller's: a block the caching allocator recycles while the caller's queued kernels still read it
    (the previous batch's pixels or activations) is overwritten under them. Allocated on a stream that
    queues no kernels, recycled only once the caller's stream is done with them (``record_stream``), and
    the caller's stream waits for the decode. The encoded bytes (pinned by the DataLoader, so copied
    asynchronously) are held until the decode that reads them is known to be done.
    """
    if device_type(device) != "cuda":
        return _decode_jpegs(data, device)
    caller = torch.cuda.current_stream(device)
    side = _SIDE_STREAMS.get(caller.device)
    if side is None:
        side = _SIDE_STREAMS[caller.device] = torch.cuda.Stream(device=caller.device)
    with torch.cuda.stream(side):
        out = _decode_jpegs(data, device)
        done = torch.cuda.Event()
        done.record(side)
    caller.wait_stream(side)
    for img in out:
        if img is not None:
            img.record_stream(caller)
    previous = _HELD.get(caller.device)
    if previous is not None:
        previous[0].synchronize()  # done long ago in practice: its bytes may be freed now
    _HELD[caller.device] = (done, list(data))
    return out


_SIDE_STREAMS: dict[torch.device, "torch.cuda.Stream"] = {}  # the decoder's allocation stream, per device
_HELD: dict[torch.device, tuple["torch.cuda.Event", list]] = {}  # the last decode's end and its encoded bytes


def _decode_jpegs(data: Sequence[torch.Tensor], device: str) -> list[torch.Tensor | None]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED)
        try:
            return list(decode_jpeg(list(data), mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        out: list[torch.Tensor | None] = []
        for d in data:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


class DeviceDecoder:
    """The main-process half of ``--decode gpu``: a collated batch -> {geometry: uint8 [B,3,S,S] on device}.

    Also updates the batch: a JPEG the device could not decode is decoded by Pillow here, and when Pillow
    fails too its row becomes invalid (``ok``, ``errors``) or stops the run (``stop``), as in a worker.
    ``on_device`` counts the images decoded on the device.
    """

    def __init__(self, data: BlockImages, device: str):
        self.data = data
        self.device = device
        self.on_device = 0

    def __call__(self, batch: dict) -> dict:
        images = {k: v.to(self.device, non_blocking=True) for k, v in batch["images"].items()}
        enc = batch.get("encoded")
        if not enc:
            return images
        pos = enc["pos"]
        decoded = decode_jpegs(enc["data"], self.device)
        for i, img in enumerate(decoded):
            if img is None or tuple(img.shape[1:]) != tuple(int(v) for v in enc["size"][i]):
                decoded[i] = None
                self._pillow(batch, images, int(pos[i]), bytes(enc["data"][i].numpy()))
        good = [i for i, img in enumerate(decoded) if img is not None]
        self.on_device += len(good)
        for bucket in buckets([tuple(enc["size"][i]) for i in good]):
            members = [good[b] for b in bucket]
            stacked = pad_stack([decoded[i] for i in members])
            for key, taps in enc["taps"].items():
                for vertical_first in (False, True):
                    sub = [j for j, i in enumerate(members) if bool(taps["vertical_first"][i]) == vertical_first]
                    if not sub:
                        continue
                    rows = [members[j] for j in sub]
                    x = stacked if len(sub) == len(members) else stacked[sub]
                    out = _resample(x, taps, rows, self.device, vertical_first)
                    # a pageable copy without non_blocking would wait for every kernel queued so far
                    index = torch.as_tensor(pos[rows]).to(self.device, non_blocking=True)
                    images[key][index] = out
        return images

    def _pillow(self, batch: dict, images: dict, j: int, data: bytes) -> None:
        status, message, notes, out = self.data.pixels(data)
        batch["warnings"][j] = list(batch["warnings"][j]) + list(notes)
        if status == OK:
            for k, v in out.items():
                images[k][j] = v.to(self.device)
        elif status == INVALID:
            batch["ok"][j] = False
            batch["errors"][j] = message
        else:
            batch["stop"].append((int(batch["index"][j]), message))


def _resample(x: torch.Tensor, taps: dict, rows: list[int], device: str, vertical_first: bool) -> torch.Tensor:
    """The images ``x`` (batch rows ``rows`` of the encoded list) through their taps, trimmed to their widest."""
    kx, ky = int(taps["kx"][rows].max()), int(taps["ky"][rows].max())
    index = torch.as_tensor(rows)

    def take(name: str, k: int | None = None) -> torch.Tensor:
        t = taps[name].index_select(0, index)
        return (t if k is None else t[..., :k]).to(device, non_blocking=True)

    return resample(x, take("x_start"), take("x_q", kx), take("y_start"), take("y_q", ky),
                    vertical_first=vertical_first)


def check_device_decode(device: str, preprocesses: Sequence[Any]) -> None:
    """``--decode gpu`` can run here: a decoder on ``device``, Pillow-exact taps for every model's
    interpolation and a known Pillow pass order; else one ExtractError saying why and to use --decode pil."""
    import io

    from PIL import Image

    if device_type(device) not in ("cpu", "cuda"):
        raise ExtractError(f"--decode gpu: torchvision decodes JPEGs on cpu or cuda, not on {device}; "
                           f"use --decode pil")
    odd = sorted({p.interpolation for p in preprocesses} - set(SUPPORT))
    if odd:
        raise ExtractError(f"--decode gpu: no device resize reproduces Pillow's {', '.join(odd)} interpolation "
                           f"(known: {', '.join(sorted(SUPPORT))}); use --decode pil")
    try:
        pillow_pass_order()
    except RuntimeError as e:
        raise ExtractError(f"--decode gpu: {e}; use --decode pil") from None
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 30, 90)).save(buf, format="JPEG")
    probe = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    try:
        out = decode_jpegs([probe], device)[0]
        if out is None:
            from torchvision.io import decode_jpeg

            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_DEPRECATED)
                decode_jpeg(probe, device=device)  # raises the decoder's own reason
            raise RuntimeError("the probe image did not decode")
    except (RuntimeError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExtractError(f"--decode gpu: torchvision.io.decode_jpeg cannot decode on {device} here ({first}); "
                           f"use --decode pil") from None


__all__ = ["Encoded", "EncodedImages", "DeviceDecoder", "collate_encoded", "decode_jpegs", "device_decodable",
           "check_device_decode"]
