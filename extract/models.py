"""Model registry and model loading for the extractor. "Add a model" lives here.

To add a model to the registry, add one line to ``_REGISTRY_ENTRIES`` below (a timm classifier with
``_timm(...)``, an open_clip zero-shot model with ``_clip(...)``). Any other model works without
editing this file as ``timm:<name>[.<tag>]`` or ``open_clip:<arch>/<tag>``; their preprocessing is
derived from the library's own configuration (no download).

Each ``ModelSpec`` carries its evaluation preprocessing (``Preprocess``, like timm's pretrained_cfg);
nothing else hard-codes it. The registry ids follow the paper's protocol (DESIGN.md "Extraction"):
supervised Resize(256, bilinear) -> CenterCrop(224) with ImageNet mean/std; CLIP Resize(224, bicubic)
-> CenterCrop(224) with the CLIP mean/std.

``load_model`` returns a ``LoadedModel`` (a torch.nn.Module) whose forward maps normalised images to
``(logits float32 [B, K], features float32 [B, D])``. The backbone may run in bf16 autocast on CUDA;
the timm classifier head and the CLIP logit product (100 x cosine with the zero-shot head) always run
in fp32. Weights come from the hub (``pretrained=True``), from a local file (``weights=``:
``.safetensors`` or a ``torch.load(weights_only=True)`` state dict; arbitrary pickles are never
loaded) or are a deterministic random init (``pretrained=False``; used by the tests and the demo).

timm and open_clip are imported lazily (only when a model is resolved from them or loaded).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import platform
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # timm.data.IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)    # timm.data.IMAGENET_DEFAULT_STD
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # open_clip.constants.OPENAI_DATASET_MEAN
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)   # open_clip.constants.OPENAI_DATASET_STD
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

# --------------------------------------------------------------------------------------------------
# Model specs and the registry
# --------------------------------------------------------------------------------------------------


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
          paper_top1: float | None = None, demo: bool = False) -> ModelSpec:
    return ModelSpec(id, "open_clip", arch, tag, "zero-shot", clip_preprocess(size), is_vit,
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

# paper_top1 is left None everywhere: the values of the paper's Table 3 could not be checked here,
# and this field must not carry invented numbers. Fill it in from the paper when at hand.
_SUP = "supervised IN-21k -> IN-1k"
_REGISTRY_ENTRIES: list[ModelSpec] = [
    # The paper's four.
    _timm("convnext-sup", "convnext_base", "fb_in22k_ft_in1k", is_vit=False,
          description=f"ConvNeXt-B, {_SUP} (paper)"),
    _timm("vit-sup", "deit3_base_patch16_224", "fb_in22k_ft_in1k", is_vit=True,
          description=f"DeiT3 ViT-B/16, {_SUP} (paper)"),
    _clip("convnext-clip", "convnext_base", "laion400m_s13b_b51k", is_vit=False,
          description="ConvNeXt-B CLIP, LAION-400M, zero-shot (paper)"),
    _clip("vit-clip", "ViT-B-16", "laion400m_e31", is_vit=True,
          description="ViT-B/16 CLIP, LAION-400M, zero-shot (paper)"),
    # Appendix sizes: supervised.
    _timm("convnext-sup-tiny", "convnext_tiny", "fb_in22k_ft_in1k", is_vit=False,
          description=f"ConvNeXt-T, {_SUP}"),
    _timm("convnext-sup-small", "convnext_small", "fb_in22k_ft_in1k", is_vit=False,
          description=f"ConvNeXt-S, {_SUP}"),
    _timm("convnext-sup-large", "convnext_large", "fb_in22k_ft_in1k", is_vit=False,
          description=f"ConvNeXt-L, {_SUP}"),
    _timm("convnext-sup-xlarge", "convnext_xlarge", "fb_in22k_ft_in1k", is_vit=False,
          description=f"ConvNeXt-XL, {_SUP}"),
    _timm("vit-sup-small", "deit3_small_patch16_224", "fb_in22k_ft_in1k", is_vit=True,
          description=f"DeiT3 ViT-S/16, {_SUP}"),
    _timm("vit-sup-large", "deit3_large_patch16_224", "fb_in22k_ft_in1k", is_vit=True,
          description=f"DeiT3 ViT-L/16, {_SUP}"),
    _timm("vit-sup-huge", "deit3_huge_patch14_224", "fb_in22k_ft_in1k", is_vit=True,
          description=f"DeiT3 ViT-H/14, {_SUP}"),
    # Appendix sizes: CLIP on LAION-2B. The ConvNeXt-L/XXL CLIP models were trained at 256 px, so their
    # standard eval is Resize(256, bicubic) -> CenterCrop(256) (the open_clip config's image size).
    _clip("convnext-clip-large", "convnext_large_d", "laion2b_s26b_b102k_augreg", is_vit=False, size=256,
          description="ConvNeXt-L (D) CLIP, LAION-2B, zero-shot, 256 px"),
    _clip("convnext-clip-xxlarge", "convnext_xxlarge", "laion2b_s34b_b82k_augreg", is_vit=False, size=256,
          description="ConvNeXt-XXL CLIP, LAION-2B, zero-shot, 256 px"),
    _clip("vit-clip-large", "ViT-L-14", "laion2b_s32b_b82k", is_vit=True,
          description="ViT-L/14 CLIP, LAION-2B, zero-shot"),
    _clip("vit-clip-huge", "ViT-H-14", "laion2b_s32b_b79k", is_vit=True,
          description="ViT-H/14 CLIP, LAION-2B, zero-shot"),
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

REGISTRY: dict[str, ModelSpec] = {spec.id: spec for spec in _REGISTRY_ENTRIES}
PAPER_MODELS: list[str] = ["convnext-sup", "vit-sup", "convnext-clip", "vit-clip"]
DEMO_MODELS: list[str] = [s.id for s in _REGISTRY_ENTRIES if s.demo]


def list_models(include_demo: bool = True) -> list[ModelSpec]:
    """Registry specs: the paper's four, the appendix sizes, then (``demo=True``) the demo models."""
    return [s for s in _REGISTRY_ENTRIES if include_demo or not s.demo]


_DEMO_LOCK = threading.Lock()


def register_demo_configs() -> None:
    """Make the tiny demo architectures known to open_clip (idempotent)."""
    import open_clip

    with _DEMO_LOCK:
        known = set(open_clip.list_models())
        if all(name in known for name in DEMO_OPEN_CLIP_CONFIGS):
            return
        tmp = Path(tempfile.mkdtemp(prefix="extract-open-clip-configs-"))
        try:
            for name, cfg in DEMO_OPEN_CLIP_CONFIGS.items():
                (tmp / f"{name}.json").write_text(json.dumps(cfg))
            open_clip.add_model_config(tmp)  # reads the files now; the registry keeps them in memory
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _did_you_mean(name: str, candidates: list[str], n: int = 3) -> str:
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    return f"did you mean {' / '.join(repr(c) for c in close)}? " if close else ""


def resolve_model(name: str | ModelSpec) -> ModelSpec:
    """Registry id, ``timm:<name>[.<tag>]`` or ``open_clip:<arch>/<tag>`` -> ModelSpec.

    Unknown names raise ValueError with a did-you-mean hint and the available ids.
    """
    if isinstance(name, ModelSpec):
        return name
    key = str(name).strip()
    if key in REGISTRY:
        return REGISTRY[key]
    if key.lower() in REGISTRY:
        return REGISTRY[key.lower()]
    prefix, sep, rest = key.partition(":")
    if sep and prefix.lower() == "timm":
        return _resolve_timm(rest.strip())
    if sep and prefix.lower().replace("-", "_") in ("open_clip", "openclip"):
        return _resolve_open_clip(rest.strip())
    raise ValueError(
        f"unknown model {name!r}; {_did_you_mean(key, list(REGISTRY))}"
        f"available: {', '.join(REGISTRY)}; or timm:<name>[.<tag>], open_clip:<arch>/<tag>"
    )


def _meta_timm_model(name: str) -> nn.Module:
    """Build a timm model on the meta device: architecture and pretrained cfg, no memory, no download."""
    import timm

    with torch.device("meta"):
        return timm.create_model(name, pretrained=False)


def output_dims(spec: ModelSpec) -> tuple[int, int | None]:
    """(classes, feature dim) of ``spec`` without loading weights (timm on the meta device, open_clip's config);
    (1000, None) when the library cannot say."""
    try:
        if spec.family == "timm":
            m = _meta_timm_model(spec.hub_name)
            return int(m.num_classes), int(m.head_hidden_size if hasattr(m, "head_hidden_size") else m.num_features)
        if spec.family == "open_clip":
            import open_clip

            register_demo_configs()
            return 1000, int(open_clip.get_model_config(spec.arch)["embed_dim"])
    except Exception:  # noqa: BLE001 - an estimate only
        pass
    return 1000, None


def _has_pos_embed(model: nn.Module) -> bool:
    return isinstance(getattr(model, "pos_embed", None), torch.Tensor)


def _resolve_timm(name: str) -> ModelSpec:
    import timm
    from timm.data import resolve_data_config

    arch, _, tag = name.partition(".")
    if not arch or arch not in timm.list_models():
        raise ValueError(f"unknown timm model {name!r}; {_did_you_mean(arch, timm.list_models())}"
                         f"see timm.list_models() / timm.list_pretrained()")
    tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
    if tag and tag not in tags:
        raise ValueError(f"unknown timm pretrained tag {tag!r} for {arch!r}; {_did_you_mean(tag, tags)}"
                         f"available: {', '.join(tags) or '(none)'}")
    if not tag:
        cfg = timm.models.get_pretrained_cfg(arch)
        tag = getattr(cfg, "tag", None) or (tags[0] if tags else None)
    full = f"{arch}.{tag}" if tag else arch
    meta = _meta_timm_model(full)
    data_cfg = resolve_data_config({}, model=meta)
    crop = int(data_cfg["input_size"][-1])
    crop_pct = float(data_cfg.get("crop_pct") or 1.0)
    pre = Preprocess(int(math.floor(crop / crop_pct)), crop, str(data_cfg.get("interpolation", "bicubic")),
                     data_cfg["mean"], data_cfg["std"])
    return ModelSpec(f"timm:{full}", "timm", arch, tag or None, "classifier", pre, _has_pos_embed(meta),
                     description=f"timm {full} (timm's own eval preprocessing)")


def _open_clip_is_vit(vision_cfg: dict) -> bool:
    timm_name = vision_cfg.get("timm_model_name")
    if timm_name:
        try:
            return _has_pos_embed(_meta_timm_model(timm_name))
        except Exception:  # noqa: BLE001 - unknown to this timm: treat as a convnet
            return False
    layers = vision_cfg.get("layers", 12)
    return not isinstance(layers, (list, tuple))  # a list of stage depths is the ModifiedResNet


def _resolve_open_clip(rest: str) -> ModelSpec:
    import open_clip

    register_demo_configs()
    arch, sep, tag = rest.rpartition("/")
    if not sep:
        arch, tag = rest, ""
    models = open_clip.list_models()
    if arch not in models:
        raise ValueError(f"unknown open_clip architecture {arch!r}; {_did_you_mean(arch, models)}"
                         f"see open_clip.list_models()")
    tags = list(open_clip.list_pretrained_tags_by_model(arch))
    if tag and tag not in tags:
        raise ValueError(f"unknown open_clip pretrained tag {tag!r} for {arch!r}; {_did_you_mean(tag, tags)}"
                         f"available: {', '.join(tags) or '(none)'}")
    if not tag and tags:
        raise ValueError(f"open_clip:{arch} needs a pretrained tag, open_clip:{arch}/<tag>; "
                         f"available: {', '.join(tags)}")
    vision_cfg = open_clip.get_model_config(arch)["vision_cfg"]
    size = vision_cfg.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"open_clip {arch}: non-square image size {size} is not supported")
        size = size[0]
    pcfg = (open_clip.get_pretrained_cfg(arch, tag) if tag else None) or {}
    pre = clip_preprocess(int(size), pcfg.get("mean", CLIP_MEAN), pcfg.get("std", CLIP_STD),
                          str(pcfg.get("interpolation", "bicubic")))
    ident = f"open_clip:{arch}/{tag}" if tag else f"open_clip:{arch}"
    return ModelSpec(ident, "open_clip", arch, tag or None, "zero-shot", pre, _open_clip_is_vit(vision_cfg),
                     description=f"open_clip {arch} {tag or '(no tag)'}")


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------


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
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return _sha256_cached(str(p), st.st_size, st.st_mtime_ns)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, never unpickling arbitrary objects.

    ``.safetensors`` via safetensors; anything else via ``torch.load(weights_only=True)``. A nested
    ``state_dict`` / ``model`` / ``module`` entry is unwrapped and a ``module.`` prefix stripped.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(p), device="cpu")
    else:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "module"):
            if isinstance(sd, dict) and isinstance(sd.get(key), dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{p}: not a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


# --------------------------------------------------------------------------------------------------
# Resolution changes
# --------------------------------------------------------------------------------------------------


def _square(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def set_image_size(module: nn.Module, image_size: int) -> None:
    """Make a ViT backbone run at ``image_size`` x ``image_size``.

    The absolute position embeddings' grid is resampled bicubic with antialias (class/prefix tokens
    kept), and the module's image/grid size updated. Works on timm models with ``set_input_size`` (ViT,
    DeiT3, EVA, Swin, BEiT, ...; timm resamples bicubic + antialias), open_clip VisionTransformer towers
    (resampled here the same way) and open_clip timm towers. ConvNets need nothing.
    """
    size = int(image_size)
    if hasattr(module, "set_input_size") and not hasattr(module, "trunk"):  # timm ViT / Swin / BEiT ...
        module.set_input_size(img_size=(size, size))
        return
    trunk = getattr(module, "trunk", None)                               # open_clip TimmModel tower
    if isinstance(trunk, nn.Module):
        if hasattr(trunk, "set_input_size"):
            trunk.set_input_size(img_size=(size, size))
        elif _has_pos_embed(trunk):
            raise NotImplementedError(f"{type(trunk).__name__}: cannot change the input size")
        module.image_size = (size, size)
        return
    pos = getattr(module, "positional_embedding", None)                 # open_clip VisionTransformer
    if isinstance(pos, torch.Tensor) and hasattr(module, "grid_size"):
        from timm.layers import resample_abs_pos_embed

        patch = _square(module.patch_size)
        old_grid = _square(module.grid_size)
        new_grid = (size // patch[0], size // patch[1])
        if new_grid != old_grid:
            prefix = pos.shape[0] - old_grid[0] * old_grid[1]
            new = resample_abs_pos_embed(pos.data[None], new_size=list(new_grid), old_size=list(old_grid),
                                         num_prefix_tokens=prefix, interpolation="bicubic", antialias=True)[0]
            module.positional_embedding = nn.Parameter(new, requires_grad=pos.requires_grad)
            module.grid_size = new_grid
        module.image_size = (size, size)
        return
    raise NotImplementedError(f"{type(module).__name__}: no known way to change its input size")


def _input_size_matters(backbone: nn.Module, spec: ModelSpec) -> bool:
    """ViTs (absolute position embeddings) and timm models that track their input size (Swin, ...)."""
    trunk = getattr(backbone, "trunk", None)
    return bool(spec.is_vit or hasattr(backbone, "set_input_size")
                or (isinstance(trunk, nn.Module) and hasattr(trunk, "set_input_size")))


def get_pos_embed(module: nn.Module) -> torch.Tensor | None:
    """The absolute position embedding of a ViT backbone (timm or open_clip), else None."""
    for m in (module, getattr(module, "trunk", None)):
        if m is None:
            continue
        if _has_pos_embed(m):
            return m.pos_embed
        pos = getattr(m, "positional_embedding", None)
        if isinstance(pos, torch.Tensor) and hasattr(m, "grid_size"):
            return pos
    return None


# --------------------------------------------------------------------------------------------------
# Loaded models
# --------------------------------------------------------------------------------------------------


# What a run's numbers depend on: key in the store's attrs -> installed distribution.
_SOFTWARE = {"beyond-imagenet": "beyond-imagenet", "torch": "torch", "torchvision": "torchvision", "timm": "timm",
             "open_clip": "open_clip_torch", "pillow": "pillow", "zarr": "zarr", "numpy": "numpy"}


@lru_cache(maxsize=1)
def _software_versions() -> tuple[tuple[str, str], ...]:
    from importlib.metadata import PackageNotFoundError, version

    out = [("python", platform.python_version())]
    for key, dist in _SOFTWARE.items():
        try:
            out.append((key, torch.__version__ if key == "torch" else version(dist)))  # torch's names its CUDA build
        except PackageNotFoundError:
            out.append((key, "source" if key == "beyond-imagenet" else "not installed"))
    return tuple(out)


def software_versions() -> dict[str, str]:
    """Versions of python and of every package that shapes the logits (looked up once per process)."""
    return dict(_software_versions())


class LoadedModel(nn.Module):
    """A backbone plus its logit head: ``forward(images) -> (logits fp32 [B,K], features fp32 [B,D])``.

    ``images`` are float [B,3,H,W], normalised with ``spec.preprocess`` mean/std, on the model's device,
    with H = W = ``image_size``. Features are the pooled pre-logits (timm: ``forward_head(pre_logits=True)``;
    CLIP: the image embedding, unnormalised).
    """

    def __init__(self, spec: ModelSpec, backbone: nn.Module, *, precision: str, image_size: int,
                 weights_id: str, pretrained: bool, head: np.ndarray | None = None,
                 zero_shot: dict | None = None, native_image_size: int | None = None,
                 resized: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.precision = precision
        self.image_size = int(image_size)
        self.native_image_size = int(native_image_size or spec.preprocess.crop)
        self.resized = bool(resized)  # position embeddings / input size changed from the native size
        self.weights_id = weights_id
        self.pretrained = pretrained
        self.kind = spec.kind
        self._zero_shot = dict(zero_shot or {})
        if spec.kind == "zero-shot":
            if head is None:
                raise ValueError("a zero-shot model needs a head")
            self.register_buffer("zs_head", torch.as_tensor(np.asarray(head, dtype=np.float32)))
        self.feature_dim = 0
        self.num_classes = 0

    # -- forward ------------------------------------------------------------------------------------
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        if self.spec.family == "timm":
            return self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)
        return self.backbone(images)

    def _logits(self, feats: torch.Tensor) -> torch.Tensor:
        if self.spec.family == "timm":
            return self.backbone.get_classifier()(feats)
        return CLIP_LOGIT_SCALE * (F.normalize(feats, dim=-1) @ self.zs_head.t())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device_type = images.device.type
        use_bf16 = self.precision == "bf16" and device_type == "cuda"
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=use_bf16):
            feats = self._features(images)
        feats = feats.float()
        with torch.autocast(device_type=device_type, enabled=False):
            logits = self._logits(feats)  # fp32 head / fp32 CLIP logit product
        return logits.float(), feats

    # -- description --------------------------------------------------------------------------------
    @property
    def zero_shot_head(self) -> np.ndarray | None:
        """The zero-shot head float32 [K, D] (rows L2-normalised), None for classifiers."""
        return self.zs_head.detach().cpu().numpy() if self.spec.kind == "zero-shot" else None

    def describe(self) -> dict:
        """Resolved preprocessing, precision, logit kind, weights and software versions (JSON-able)."""
        if self.spec.kind == "zero-shot":
            logit_kind: Any = {"zero-shot": {"templates": self._zero_shot.get("templates"),
                                             "logit_scale": CLIP_LOGIT_SCALE,
                                             "num_classes": self.num_classes,
                                             "class_names_sha256": self._zero_shot.get("class_names_sha256"),
                                             "head_source": self._zero_shot.get("head_source")}}
        else:
            logit_kind = "classifier"
        resampled = self.resized
        return {
            "model": self.spec.to_dict(),
            "weights_id": self.weights_id,
            "pretrained": self.pretrained,
            "preprocess": self.spec.preprocess.to_dict(),
            "image_size": self.image_size,
            "pos_embed": (f"resampled bicubic antialias {self.native_image_size}->{self.image_size}"
                          if resampled else "native"),
            "precision": self.precision,
            "logit_kind": logit_kind,
            "num_classes": self.num_classes,
            "feature_dim": self.feature_dim,
            "software": software_versions(),
        }


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
    if precision == "bf16" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def _build_timm(spec: ModelSpec, *, hub: bool, weights: str | Path | None) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {}
    if spec.is_vit:
        kwargs["img_size"] = spec.preprocess.crop  # native size (timm's test_vit defaults to 160)
    model = timm.create_model(spec.hub_name, pretrained=hub, **kwargs)
    if weights is not None:
        sd = read_state_dict(weights)
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:  # converts original-repo checkpoints (FB ConvNeXt / DeiT3) to timm keys
            sd = filter_fn(sd, model)
        model.load_state_dict(sd, strict=True)
    return model


def _build_open_clip(spec: ModelSpec, *, hub: bool, weights: str | Path | None) -> tuple[nn.Module, Any]:
    import open_clip

    register_demo_configs()
    pcfg = (open_clip.get_pretrained_cfg(spec.arch, spec.tag) if spec.tag else None) or {}
    model = open_clip.create_model(
        spec.arch,
        pretrained=spec.tag if hub else None,
        precision="fp32",
        device="cpu",
        force_quick_gelu=bool(pcfg.get("quick_gelu", False)),
        pretrained_text=hub,
    )
    if weights is not None:
        open_clip.load_checkpoint(model, str(weights), strict=True, weights_only=True)
    return model, open_clip.get_tokenizer(spec.arch)


def _check_timm_split(model: nn.Module, image_size: int, device: torch.device) -> int:
    """Check classifier(forward_head(pre_logits=True)) == model(x) in fp32; return the feature dim."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, image_size, image_size, generator=gen).to(device)
    with torch.no_grad():
        full = model(x).float()
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        split = model.get_classifier()(feats).float()
    if full.shape != split.shape or not torch.allclose(full, split, rtol=1e-3, atol=1e-3):
        raise RuntimeError(f"{type(model).__name__}: get_classifier()(pre-logits) does not reproduce the "
                           f"model's logits; this timm model needs its own head handling in extract/models.py")
    return int(feats.shape[-1])


def load_model(spec: ModelSpec | str, *, device: str | torch.device = "cpu", precision: str = "bf16",
               image_size: int | None = None, weights: str | Path | None = None,
               pretrained: bool | None = None, class_names: list[str] | None = None,
               templates: list[str] | None = None, head: np.ndarray | None = None) -> LoadedModel:
    """Build ``spec`` on ``device`` in eval mode, ready for ``forward``.

    - ``precision``: "bf16" (backbone under bf16 autocast; only on a CUDA device that supports it, else
      fp32 is used and reported in ``.precision``) or "fp32".
    - ``image_size``: input side (default: ``spec.preprocess.crop``); ViT position embeddings are
      resampled bicubic + antialias when it differs from the native size.
    - ``weights``: local checkpoint (overrides the hub). ``pretrained``: hub weights (True) or a
      deterministic random init (False); default True, except for demo models (random init only).
    - zero-shot models: ``head`` [K, D] if already computed, else it is built from ``class_names``
      (default: the 1000 ImageNet names) and ``templates`` (default: the 80 OpenAI templates).
    """
    from extract import zeroshot

    spec = resolve_model(spec)
    dev = torch.device(device)
    used_precision = _resolve_precision(precision, dev)
    if pretrained is None:
        pretrained = not spec.demo and weights is None
    if weights is not None:
        pretrained = False  # the file replaces hub weights
    if pretrained and spec.demo:
        raise ValueError(f"{spec.id} is a demo model with random init only; use pretrained=False")
    if pretrained and spec.tag is None:
        raise ValueError(f"{spec.id} has no pretrained tag; pass weights= or pretrained=False")
    weights_id = spec.weights_id(weights=weights, pretrained=pretrained)
    size = int(image_size or spec.preprocess.crop)
    native = spec.preprocess.crop

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_init_seed(spec))
        if spec.family == "timm":
            backbone = _build_timm(spec, hub=bool(pretrained), weights=weights)
            tokenizer = clip = None
        elif spec.family == "open_clip":
            clip, tokenizer = _build_open_clip(spec, hub=bool(pretrained), weights=weights)
            backbone = clip.visual
        else:
            raise ValueError(f"unknown model family {spec.family!r}")

    zero_shot_info: dict[str, Any] = {}
    if clip is not None:
        clip.eval().requires_grad_(False)
        if head is None:
            names = list(class_names) if class_names is not None else zeroshot.imagenet_class_names()
            temps = list(templates) if templates is not None else zeroshot.openai_templates()
            clip.to(dev)
            head = zeroshot.build_zeroshot_head(clip, tokenizer, names, temps, dev)
            zero_shot_info = {"templates": len(temps), "head_source": "computed",
                              "class_names_sha256": zeroshot.class_names_sha256(names)}
        else:
            zero_shot_info = {"templates": len(templates) if templates is not None else None,
                              "head_source": "given",
                              "class_names_sha256": (zeroshot.class_names_sha256(class_names)
                                                     if class_names is not None else None)}
        head = np.asarray(head, dtype=np.float32)
        if head.ndim != 2:
            raise ValueError(f"zero-shot head must be [num_classes, embed_dim], got shape {head.shape}")
        del clip  # the text tower is no longer needed

    backbone.eval().requires_grad_(False).to(dev)
    feature_dim = None
    if spec.family == "timm":  # checked once at the native size (the head does not depend on it)
        feature_dim = _check_timm_split(backbone, native, dev)
    resized = size != native and _input_size_matters(backbone, spec)
    if resized:
        set_image_size(backbone, size)

    loaded = LoadedModel(spec, backbone, precision=used_precision, image_size=size, weights_id=weights_id,
                         pretrained=bool(pretrained), head=head, zero_shot=zero_shot_info,
                         native_image_size=native, resized=resized)
    loaded.to(dev).eval()
    if spec.family == "timm":
        loaded.feature_dim = int(feature_dim)
        loaded.num_classes = int(backbone.num_classes)
    else:
        with torch.no_grad():
            x = torch.zeros(1, 3, size, size, device=dev)
            emb_dim = int(backbone(x).shape[-1])
        if head.shape[1] != emb_dim:
            raise ValueError(f"zero-shot head dim {head.shape[1]} != image embedding dim {emb_dim}")
        loaded.feature_dim = emb_dim
        loaded.num_classes = int(head.shape[0])
    return loaded


__all__ = [
    "Preprocess", "ModelSpec", "LoadedModel", "REGISTRY", "PAPER_MODELS", "DEMO_MODELS",
    "SUPERVISED_PREPROCESS", "CLIP_PREPROCESS", "IMAGENET_MEAN", "IMAGENET_STD", "CLIP_MEAN", "CLIP_STD",
    "CLIP_LOGIT_SCALE", "DEMO_OPEN_CLIP_CONFIGS", "resolve_model", "list_models", "load_model",
    "register_demo_configs", "set_image_size", "get_pos_embed", "read_state_dict", "file_sha256",
    "random_init_seed", "software_versions", "clip_preprocess", "output_dims",
]
