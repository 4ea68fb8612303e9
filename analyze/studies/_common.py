"""Helpers the studies share: model order and the standard transform."""
from __future__ import annotations

PAPER_MODELS = ("convnext-sup", "vit-sup", "convnext-clip", "vit-clip")
CENTER = "center"


def order_models(models: list[str]) -> list[str]:
    """The paper's four first (ConvNeXt beside ViT), then the rest alphabetically."""
    first = [m for m in PAPER_MODELS if m in models]
    return first + sorted(m for m in models if m not in first)


def comparison_pairs(models: list[str]) -> list[tuple[str, str]]:
    """ConvNeXt vs ViT with the same training: ``convnext-<x>`` against ``vit-<x>`` when both exist."""
    return [(m, "vit" + m[len("convnext"):]) for m in models
            if m.startswith("convnext") and "vit" + m[len("convnext"):] in models]
