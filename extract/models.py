"""Model loading for the extractor: weights, input-size changes and the logits/features forward.

What a model is (``ModelSpec``, ``Preprocess``, the registry) is plain data in ``extract.spec.models``;
this module builds and loads it. ``load_model`` returns a ``LoadedModel`` (a torch.nn.Module) whose
forward maps normalised images to ``(logits float32 [B, K], features float32 [B, D])``. The backbone
may run in bf16 autocast on CUDA; the timm classifier head and the CLIP logit product (100 x cosine
with the zero-shot head) always run in fp32. Weights come from the hub (``pretrained=True``), from a
local file (``weights=``: ``.safetensors`` or a ``torch.load(weights_only=True)`` state dict;
arbitrary pickles are never loaded) or are a deterministic random init (``pretrained=False``; used by
the tests and the demo).

timm and open_clip are imported lazily (only when a model is loaded).
"""

from __future__ import annotations

import platform
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extract import zeroshot
from extract.errors import ExtractError
from extract.heads_store import class_names_sha256
from extract.hub import has_pos_embed, register_demo_configs
from extract.spec.models import CLIP_LOGIT_SCALE, ModelSpec, random_init_seed, resolve_model

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
        elif has_pos_embed(trunk):
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
        if has_pos_embed(m):
            return m.pos_embed
        pos = getattr(m, "positional_embedding", None)
        if isinstance(pos, torch.Tensor) and hasattr(m, "grid_size"):
            return pos
    return None


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
        self.channels_last = False  # convolutions in NHWC (set by load_model; faster under cuDNN)

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
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
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
            "memory_format": "channels_last" if self.channels_last else "contiguous",
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
               templates: list[str] | None = None, head: np.ndarray | None = None,
               channels_last: bool = False) -> LoadedModel:
    """Build ``spec`` on ``device`` in eval mode, ready for ``forward``.

    - ``precision``: "bf16" (backbone under bf16 autocast; only on a CUDA device that supports it, else
      fp32 is used and reported in ``.precision``) or "fp32".
    - ``image_size``: input side (default: ``spec.preprocess.crop``); ViT position embeddings are
      resampled bicubic + antialias when it differs from the native size.
    - ``weights``: local checkpoint (overrides the hub). ``pretrained``: hub weights (True) or a
      deterministic random init (False); default True, except for demo models (random init only).
    - zero-shot models: ``head`` [K, D] if already computed, else it is built from ``class_names``
      (default: the 1000 ImageNet names) and ``templates`` (default: the 80 OpenAI templates).
    - ``channels_last``: weights and inputs in NHWC memory order (cuDNN's fast layout; the same numbers
      up to the order of floating-point sums).
    """
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
                              "class_names_sha256": class_names_sha256(names)}
        else:
            zero_shot_info = {"templates": len(templates) if templates is not None else None,
                              "head_source": "given",
                              "class_names_sha256": (class_names_sha256(class_names)
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
        try:
            set_image_size(backbone, size)
        except NotImplementedError as e:
            raise ExtractError(f"{spec.id}: cannot run at {size}x{size} px ({e}); res-* transforms need a model "
                               f"whose input size can change: run this model with center, scale-* or shift-*") from None

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
    if channels_last:
        loaded.to(memory_format=torch.channels_last)
        loaded.channels_last = True
    return loaded


__all__ = ["LoadedModel", "load_model", "set_image_size", "get_pos_embed", "read_state_dict",
           "software_versions"]
