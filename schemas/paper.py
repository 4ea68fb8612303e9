"""The paper's own model ids and pairs, shared by both stages (Vishniakov, Shen, Liu, ICML 2024, Table 1).

Stdlib only.
"""
from __future__ import annotations

# ConvNeXt-B and ViT-B/16, supervised (IN-21k -> IN-1k) and CLIP (LAION-400M): the registry ids of
# extract.spec.models and the runs the report pairs as "ConvNeXt minus ViT".
PAPER_MODELS: tuple[str, ...] = ("convnext-sup", "vit-sup", "convnext-clip", "vit-clip")

# The paper's comparisons: ConvNeXt against ViT with the same training.
PAPER_PAIRS: tuple[tuple[str, str], ...] = (("convnext-sup", "vit-sup"), ("convnext-clip", "vit-clip"))

# Other names of the paper's models: those of the paper's code and of the per-image files published with it
# (github.com/kirill-vish/Beyond-INet, inference/modelvshuman/raw-data: cue-conflict_convnext-base-21k_...,
# cue-conflict_deit3-21k_...). Compared after lower-casing and "_" -> "-".
PAPER_NAMES: dict[str, tuple[str, ...]] = {
    "convnext-sup": ("convnext-base-21k",),
    "vit-sup": ("deit3-21k", "deit3-base-21k", "vit-base-21k"),
    "convnext-clip": (),
    "vit-clip": (),
}


def paper_id(name: str) -> str | None:
    """The paper model a run name stands for (its registry id or one of the paper's names), else None."""
    key = name.lower().replace("_", "-")
    for model in PAPER_MODELS:
        if key == model or key in PAPER_NAMES.get(model, ()):
            return model
    return None


__all__ = ["PAPER_MODELS", "PAPER_NAMES", "PAPER_PAIRS", "paper_id"]
