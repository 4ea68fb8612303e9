"""Helpers the studies share: model order and the standard transform."""
from __future__ import annotations

from schemas.paper import PAPER_MODELS

CENTER = "center"


def order_models(models: list[str]) -> list[str]:
    """The paper's four first (ConvNeXt beside ViT), then the rest alphabetically."""
    first = [m for m in PAPER_MODELS if m in models]
    return first + sorted(m for m in models if m not in first)


def comparison_pairs(models: list[str]) -> list[tuple[str, str]]:
    """ConvNeXt vs ViT with the same training and size: ``...convnext-<x>`` against ``...vit-<x>``."""
    return [(m, m.replace("convnext", "vit", 1)) for m in models
            if "convnext" in m and m.replace("convnext", "vit", 1) in models]
