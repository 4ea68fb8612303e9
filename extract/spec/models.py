"""Model specs: what a model is and how it sees an image, as plain data. "Add a model" lives here.

To add a model to the registry, add one line to ``_REGISTRY_ENTRIES`` below (a timm classifier with
``_timm(...)``, an open_clip zero-shot model with ``_clip(...)``). Any other model works without
editing this file as ``timm:<name>[.<tag>]`` or ``open_clip:<arch>/<tag>``: ``resolve_model`` hands
those to ``extract.hub``, which derives the preprocessing from the library's own configuration
(no download).

Each ``ModelSpec`` carries its evaluation preprocessing (``Preprocess``, like timm's pretrained_cfg);
nothing else hard-codes it. The registry ids follow the paper's protocol (docs/design.md,
"Extraction"): supervised Resize(256, bilinear) -> CenterCrop(224) with ImageNet mean/std (the paper's
code, main.py of kirill-vish/Beyond-INet); CLIP Resize(224, bicubic) -> CenterCrop(224) with the CLIP
mean/std (open_clip's eval transform). Loading weights is ``extract.models``.

Stdlib only: no numpy, PIL or torch at import.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from schemas.paper import PAPER_MODELS
from schemas.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # timm.data.IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)    # timm.data.IMAGENET_DEFAULT_STD
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # open_clip.constants.OPENAI_DATASET_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)   # open_clip.constants.OPENAI_DATASET_STD
INCEPTION_MEAN = (0.5, 0.5, 0.5)        # open_clip.constants.INCEPTION_MEAN
INCEPTION_STD = (0.5, 0.5, 0.5)         # open_clip.constants.INCEPTION_STD
CLIP_LOGIT_SCALE = 100.0                # logits = 100 x cosine(image embedding, zero-shot head)


@dataclass(frozen=True)
class Preprocess:
    """Evaluation preprocessing of a model: Resize(resize) (shorter side) -> CenterCrop(crop)."""

    resize: int                              # shorter-side resize of the standard eval (256 sup, 224 CLIP)
    crop: int                                # centre crop side (224)
    interpolation: str                       # "bilinear" (supervised) | "bicubic" (CLIP)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", int(self.resize))
        object.__setattr__(self, "crop", int(self.crop))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values")

    def geometry_key(self) -> tuple:
        """Models with equal keys see identical decoded + resized + cropped pixels for any transform."""
        return (self.resize, self.crop, self.interpolation)

    def to_dict(self) -> dict:
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }


SUPERVISED_PREPROCESS = Preprocess(256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD)


def clip_preprocess(size: int = 224, mean=CLIP_MEAN, std=CLIP_STD, interpolation: str = "bicubic") -> Preprocess:
    """CLIP eval: Resize(size, bicubic) -> CenterCrop(size)."""
    return Preprocess(size, size, interpolation, mean, std)


CLIP_PREPROCESS = clip_preprocess(224)


@dataclass(frozen=True)
class ModelSpec:
    id: str                  # registry id ("convnext-sup") or "timm:<name>.<tag>" / "open_clip:<arch>/<tag>"
    family: str              # "timm" | "open_clip"
    arch: str                # timm model name without tag, or open_clip architecture
    tag: str | None          # timm pretrained tag / open_clip pretrained tag (None: no hub weights)
    kind: str                # "classifier" (timm) | "zero-shot" (open_clip)
    preprocess: Preprocess
    is_vit: bool             # absolute position embeddings: resampled for other input resolutions
    paper_top1: float | None = None   # ImageNet top-1 of the paper's Table 3 (documentation only)
    demo: bool = False       # tiny random-init model for tests and the offline demo
    description: str = ""    # one line for `extract ls models` (documentation only)

    @property
    def hub_name(self) -> str:
        """timm: "<arch>.<tag>"; open_clip: "<arch>/<tag>"."""
        if self.family == "timm":
            return f"{self.arch}.{self.tag}" if self.tag else self.arch
        return f"{self.arch}/{self.tag}" if self.tag else self.arch

    def weights_id(self, weights: str | Path | None = None, pretrained: bool | None = None) -> str:
        """Identity of the weights a load with these arguments uses.

        "timm/<arch>.<tag>", "open_clip/<arch>/<tag>", "file:<sha256 of the file>" when ``weights``
        is given, "random-init:seed=<n>" when ``pretrained`` is False (demo models by default).
        """
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"weights file {path}: no such file")
            return f"file:{file_sha256(path)}"
        if pretrained is None:
            pretrained = not self.demo
        if not pretrained:
            return f"random-init:seed={random_init_seed(self)}"
        if self.tag is None:
            raise ValueError(f"model {self.id!r} has no pretrained tag; pass weights= or pretrained=False")
        return f"{self.family}/{self.hub_name}"

    def to_dict(self) -> dict:
        """JSON-able identity of the model (store attrs, fingerprint).

        paper_top1 and description are documentation and deliberately left out, so that editing
        them never changes a fingerprint; see ``info()``.
        """
        return {
            "id": self.id,
            "family": self.family,
            "arch": self.arch,
            "tag": self.tag,
            "kind": self.kind,
            "preprocess": self.preprocess.to_dict(),
            "is_vit": self.is_vit,
            "demo": self.demo,
        }

    def info(self) -> dict:
        """to_dict() plus the documentation fields (for listings)."""
        return {**self.to_dict(), "paper_top1": self.paper_top1, "description": self.description}


def _timm(id: str, arch: str, tag: str | None, *, is_vit: bool, description: str,
          paper_top1: float | None = None, demo: bool = False) -> ModelSpec:
    return ModelSpec(id, "timm", arch, tag, "classifier", SUPERVISED_PREPROCESS, is_vit,
                     paper_top1=paper_top1, demo=demo, description=description)


def _clip(id: str, arch: str, tag: str | None, *, is_vit: bool, description: str, size: int = 224,
          mean: tuple[float, float, float] = CLIP_MEAN, std: tuple[float, float, float] = CLIP_STD,
          paper_top1: float | None = None, demo: bool = False) -> ModelSpec:
    return ModelSpec(id, "open_clip", arch, tag, "zero-shot", clip_preprocess(size, mean, std), is_vit,
                     paper_top1=paper_top1, demo=demo, description=description)


# Tiny open_clip architectures for the tests and the offline demo (random init, build in well under
# a second on CPU). Registered with open_clip on first use by register_demo_configs().
_DEMO_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
DEMO_OPEN_CLIP_CONFIGS: dict[str, dict] = {
    "demo-tiny-ViT-16": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": dict(_DEMO_TEXT_CFG),
    },
    "demo-tiny-convnext": {
        "embed_dim": 64,
        "vision_cfg": {"timm_model_name": "test_convnext", "timm_model_pretrained": False,
                       "timm_pool": "", "timm_proj": "linear", "image_size": 224},
        "text_cfg": dict(_DEMO_TEXT_CFG),
    },
}

# paper_top1: the paper's ImageNet-1k top-1 (%), Table 1 for the four Base models and Table 3 for the
# other sizes (the paper's "Huge" rows are ConvNeXt-XL supervised and ConvNeXt-XXL CLIP).
_SUP = "supervised IN-21k -> IN-1k"
_REGISTRY_ENTRIES: list[ModelSpec] = [
    # The paper's four.
    _timm("convnext-sup", "convnext_base", "fb_in22k_ft_in1k", is_vit=False,
          paper_top1=85.5, description=f"ConvNeXt-B, {_SUP} (paper)"),
    _timm("vit-sup", "deit3_base_patch16_224", "fb_in22k_ft_in1k", is_vit=True,
          paper_top1=85.5, description=f"DeiT3 ViT-B/16, {_SUP} (paper)"),
    _clip("convnext-clip", "convnext_base", "laion400m_s13b_b51k", is_vit=False,
          paper_top1=66.3, description="ConvNeXt-B CLIP, LAION-400M, zero-shot (paper)"),
    _clip("vit-clip", "ViT-B-16", "laion400m_e31", is_vit=True,
          paper_top1=67.0, description="ViT-B/16 CLIP, LAION-400M, zero-shot (paper)"),
    # Appendix sizes: supervised.
    _timm("convnext-sup-tiny", "convnext_tiny", "fb_in22k_ft_in1k", is_vit=False,
          paper_top1=82.9, description=f"ConvNeXt-T, {_SUP}"),
    _timm("convnext-sup-small", "convnext_small", "fb_in22k_ft_in1k", is_vit=False,
          paper_top1=84.6, description=f"ConvNeXt-S, {_SUP}"),
    _timm("convnext-sup-large", "convnext_large", "fb_in22k_ft_in1k", is_vit=False,
          paper_top1=86.6, description=f"ConvNeXt-L, {_SUP}"),
    _timm("convnext-sup-xlarge", "convnext_xlarge", "fb_in22k_ft_in1k", is_vit=False,
          paper_top1=87.0, description=f"ConvNeXt-XL, {_SUP}"),
    _timm("vit-sup-small", "deit3_small_patch16_224", "fb_in22k_ft_in1k", is_vit=True,
          paper_top1=83.1, description=f"DeiT3 ViT-S/16, {_SUP}"),
    _timm("vit-sup-large", "deit3_large_patch16_224", "fb_in22k_ft_in1k", is_vit=True,
          paper_top1=87.0, description=f"DeiT3 ViT-L/16, {_SUP}"),
    _timm("vit-sup-huge", "deit3_huge_patch14_224", "fb_in22k_ft_in1k", is_vit=True,
          paper_top1=87.2, description=f"DeiT3 ViT-H/14, {_SUP}"),
    # Appendix sizes: CLIP on LAION-2B. The ConvNeXt-L/XXL CLIP models were trained at 256 px, so their
    # standard eval is Resize(256, bicubic) -> CenterCrop(256) (the open_clip config's image size).
    _clip("convnext-clip-large", "convnext_large_d", "laion2b_s26b_b102k_augreg", is_vit=False, size=256,
          paper_top1=75.2, description="ConvNeXt-L (D) CLIP, LAION-2B, zero-shot, 256 px"),
    _clip("convnext-clip-xxlarge", "convnext_xxlarge", "laion2b_s34b_b82k_augreg", is_vit=False, size=256,
          paper_top1=78.6, description="ConvNeXt-XXL CLIP, LAION-2B, zero-shot, 256 px"),
    # open_clip's pretrained cfg of laion2b_s32b_b82k normalises with the Inception mean/std (0.5).
    _clip("vit-clip-large", "ViT-L-14", "laion2b_s32b_b82k", is_vit=True,
          mean=INCEPTION_MEAN, std=INCEPTION_STD, paper_top1=74.8, description="ViT-L/14 CLIP, LAION-2B, zero-shot"),
    _clip("vit-clip-huge", "ViT-H-14", "laion2b_s32b_b79k", is_vit=True,
          paper_top1=77.3, description="ViT-H/14 CLIP, LAION-2B, zero-shot"),
    # Tiny random-init models for tests and the offline demo (pretrained=False).
    _timm("demo-convnext-sup", "test_convnext", "r160_in1k", is_vit=False, demo=True,
          description="tiny timm test_convnext, random init (demo)"),
    _timm("demo-vit-sup", "test_vit", "r160_in1k", is_vit=True, demo=True,
          description="tiny timm test_vit at 224, random init (demo)"),
    _clip("demo-convnext-clip", "demo-tiny-convnext", None, is_vit=False, demo=True,
          description="tiny open_clip ConvNeXt (timm test_convnext tower), random init (demo)"),
    _clip("demo-vit-clip", "demo-tiny-ViT-16", None, is_vit=True, demo=True,
          description="tiny open_clip ViT/16, random init (demo)"),
]

REGISTRY: Registry[ModelSpec] = Registry("model", extra="or timm:<name>[.<tag>], open_clip:<arch>/<tag>")
for _spec in _REGISTRY_ENTRIES:
    REGISTRY.register(_spec.id, _spec)
DEMO_MODELS: list[str] = [s.id for s in _REGISTRY_ENTRIES if s.demo]


def list_models(include_demo: bool = True) -> list[ModelSpec]:
    """Registry specs: the paper's four, the appendix sizes, then (``demo=True``) the demo models."""
    return [s for s in _REGISTRY_ENTRIES if include_demo or not s.demo]


# Prefixes of model names resolved by a library (lazily: listing or resolving registry ids never imports it).
_LIBRARY_RESOLVERS = {"timm": "extract.hub:resolve_timm", "open_clip": "extract.hub:resolve_open_clip",
                      "openclip": "extract.hub:resolve_open_clip"}


def resolve_model(name: str | ModelSpec) -> ModelSpec:
    """Registry id, ``timm:<name>[.<tag>]`` or ``open_clip:<arch>/<tag>`` -> ModelSpec.

    Unknown names raise ``schemas.registry.UnknownName`` (a ValueError) with a did-you-mean hint.
    """
    if isinstance(name, ModelSpec):
        return name
    key = str(name).strip()
    for candidate in (key, key.lower()):
        if candidate in REGISTRY:
            return REGISTRY.get(candidate)
    prefix, sep, rest = key.partition(":")
    target = _LIBRARY_RESOLVERS.get(prefix.lower().replace("-", "_")) if sep else None
    if target is not None:
        module, _, fn = target.partition(":")
        return getattr(importlib.import_module(module), fn)(rest.strip())
    return REGISTRY.get(key)


def random_init_seed(spec: ModelSpec) -> int:
    """Seed of the deterministic random init of ``spec`` (pretrained=False)."""
    return int.from_bytes(hashlib.sha256(spec.id.encode()).digest()[:4], "big") & 0x7FFFFFFF


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in a process."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return _sha256_cached(str(p), st.st_size, st.st_mtime_ns)


__all__ = [
    "Preprocess", "ModelSpec", "REGISTRY", "PAPER_MODELS", "DEMO_MODELS", "SUPERVISED_PREPROCESS",
    "CLIP_PREPROCESS", "IMAGENET_MEAN", "IMAGENET_STD", "CLIP_MEAN", "CLIP_STD", "INCEPTION_MEAN",
    "INCEPTION_STD", "CLIP_LOGIT_SCALE",
    "DEMO_OPEN_CLIP_CONFIGS", "clip_preprocess", "resolve_model", "list_models", "random_init_seed",
    "file_sha256",
]
