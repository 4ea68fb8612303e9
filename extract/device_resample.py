"""Pillow's resize and crop on a torch device: ``extract.resample.Taps`` applied to a batch of images.

Each pass is Pillow's integer arithmetic, ``clip(floor((2^21 + sum_t q_t * p[start + t]) / 2^22), 0, 255)``
in int32 (Pillow's own type, so the sums are the same numbers), one tap at a time: a gather of the input
samples, a product and a sum. The result equals ``extract.imaging.apply_transform`` bit for bit on the
same decoded pixels (tests/test_gpu_decode.py), on any device.

Images of different sizes are zero-padded to a common size per bucket (``buckets``): padding is never read
with a non-zero weight, so it changes nothing.
"""
from __future__ import annotations

from typing import Sequence

import torch

from extract.resample import PRECISION_BITS

_HALF = 1 << (PRECISION_BITS - 1)


def _pass(a: torch.Tensor, dim: int, start: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """One pass along ``dim`` (2: rows, 3: columns) of int32 [n, 3, H, W]; start [n, S] int64, q [n, S, K] int32."""
    n, s, k_max = q.shape
    shape = list(a.shape)
    shape[dim] = s
    view = [n, 1, 1, 1]
    view[dim] = s
    last = a.shape[dim] - 1
    acc = torch.full(shape, _HALF, dtype=torch.int32, device=a.device)
    for k in range(k_max):
        index = (start + k).clamp_(max=last).view(view).expand(shape)  # taps past an input's end weigh 0
        acc += torch.gather(a, dim, index) * q[:, :, k].reshape(view)
    return (acc >> PRECISION_BITS).clamp_(0, 255)


def resample(images: torch.Tensor, x_start: torch.Tensor, x_q: torch.Tensor, y_start: torch.Tensor,
             y_q: torch.Tensor, *, vertical_first: bool = False) -> torch.Tensor:
    """uint8 [n, 3, H, W] (zero-padded) -> uint8 [n, 3, S, S] by the images' taps (all in one pass order)."""
    a = images.to(torch.int32)
    if vertical_first:
        out = _pass(_pass(a, 2, y_start, y_q), 3, x_start, x_q)
    else:
        out = _pass(_pass(a, 3, x_start, x_q), 2, y_start, y_q)
    return out.to(torch.uint8)


def buckets(sizes: Sequence[tuple[int, int]], *, max_pixels: int = 1 << 25, max_waste: float = 1.5) -> list[list[int]]:
    """Group images (heights, widths) for padding: sorted by size, a bucket closes when padding it to its
    largest height and width would exceed ``max_pixels`` or ``max_waste`` times its images' own pixels."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i][0], sizes[i][1]))
    out: list[list[int]] = []
    cur: list[int] = []
    h_max = w_max = area = 0
    for i in order:
        h, w = sizes[i]
        h2, w2 = max(h_max, h), max(w_max, w)
        padded = (len(cur) + 1) * h2 * w2
        if cur and (padded > max_pixels or padded > max_waste * (area + h * w)):
            out.append(cur)
            cur, h2, w2, area = [], h, w, 0
        cur.append(i)
        h_max, w_max, area = h2, w2, area + h * w
    if cur:
        out.append(cur)
    return out


def pad_stack(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """uint8 [3, H_i, W_i] images -> uint8 [n, 3, max H, max W], zero-padded at the bottom and right."""
    h = max(int(x.shape[1]) for x in images)
    w = max(int(x.shape[2]) for x in images)
    if all(x.shape[1] == h and x.shape[2] == w for x in images):
        return torch.stack(list(images))
    out = torch.zeros((len(images), 3, h, w), dtype=torch.uint8, device=images[0].device)
    for i, x in enumerate(images):
        out[i, :, : x.shape[1], : x.shape[2]] = x
    return out


__all__ = ["resample", "buckets", "pad_stack"]
