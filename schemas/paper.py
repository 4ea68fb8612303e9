"""The paper's own model ids, shared by both stages (Vishniakov, Shen, Liu, ICML 2024, Table 1).

Stdlib only.
"""
from __future__ import annotations

# ConvNeXt-B and ViT-B/16, supervised (IN-21k -> IN-1k) and CLIP (LAION-400M): the registry ids of
# extract.spec.models and the runs the report pairs as "ConvNeXt minus ViT".
PAPER_MODELS: tuple[str, ...] = ("convnext-sup", "vit-sup", "convnext-clip", "vit-clip")

__all__ = ["PAPER_MODELS"]
