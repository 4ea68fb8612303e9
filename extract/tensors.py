"""Images as torch tensors: PIL image -> uint8 [3, H, W], and normalisation on the device."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from extract.spec.models import Preprocess


def to_uint8_tensor(img: Any) -> torch.Tensor:
    """PIL image (or HxWx3 uint8 array) -> torch uint8 tensor [3, H, W]."""
    if isinstance(img, Image.Image) and img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got array of shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def normalize(batch_uint8: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 [B,3,H,W] (or [3,H,W]) -> float32 ``(x/255 - mean) / std`` on the tensor's device.

    The mean and std tensors are made once per (mean, std, device) and kept: a batch on a GPU then costs
    no host-to-device copy (and no stream synchronisation) for them.
    """
    x = batch_uint8.to(torch.float32) / 255.0
    mean, std = _mean_std(tuple(pre.mean), tuple(pre.std), x.device)
    return (x - mean) / std


_MEAN_STD: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_std(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    key = (mean, std, str(device))
    if key not in _MEAN_STD:
        _MEAN_STD[key] = tuple(torch.tensor(v, dtype=torch.float32, device=device).view(-1, 1, 1)
                               for v in (mean, std))
    return _MEAN_STD[key]


__all__ = ["to_uint8_tensor", "normalize"]
