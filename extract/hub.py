"""Specs of models named by a library (``timm:<name>[.<tag>]``, ``open_clip:<arch>/<tag>``), their sizes, and
where their hub weights live.

Reads each library's own configuration (timm builds the model on the meta device; open_clip's
config and pretrained tables), so nothing is downloaded and no weights are allocated, except by
``fetch_hub_weights``, which puts a model's hub weights in the Hugging Face cache (or finds them there).
Imports torch; reached lazily from ``extract.spec.models.resolve_model``.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import threading
from pathlib import Path

import torch
from torch import nn

from schemas.registry import close_names, unknown_name

from extract.spec.models import CLIP_MEAN, CLIP_STD, DEMO_OPEN_CLIP_CONFIGS, ModelSpec, Preprocess, clip_preprocess

log = logging.getLogger(__name__)

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


def meta_timm_model(name: str) -> nn.Module:
    """Build a timm model on the meta device: architecture and pretrained cfg, no memory, no download."""
    import timm

    with torch.device("meta"):
        return timm.create_model(name, pretrained=False)


def output_dims(spec: ModelSpec) -> tuple[int, int | None] | None:
    """(classes, feature dim) of ``spec`` without loading weights (timm on the meta device, open_clip's config);
    None, with a log line saying why, when the library cannot say."""
    try:
        if spec.family == "timm":
            m = meta_timm_model(spec.hub_name)
            return int(m.num_classes), int(m.head_hidden_size if hasattr(m, "head_hidden_size") else m.num_features)
        if spec.family == "open_clip":
            import open_clip

            register_demo_configs()
            return 1000, int(open_clip.get_model_config(spec.arch)["embed_dim"])
    except Exception as e:  # noqa: BLE001 - sizes are an estimate for `extract plan`; the run reads them off the model
        log.warning("%s: output sizes unknown before loading (%s: %s)", spec.id, type(e).__name__, e)
    return None


def has_pos_embed(model: nn.Module) -> bool:
    return isinstance(getattr(model, "pos_embed", None), torch.Tensor)


def resolve_timm(name: str) -> ModelSpec:
    import timm
    from timm.data import resolve_data_config

    arch, _, tag = name.partition(".")
    if not arch or arch not in timm.list_models():
        raise unknown_name("timm model", name, [], suggestions=close_names(arch, timm.list_models()),
                           extra="see timm.list_models() / timm.list_pretrained()")
    tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
    if tag and tag not in tags:
        raise unknown_name(f"timm pretrained tag for {arch!r}", tag, tags or ["(none)"])
    if not tag:
        cfg = timm.models.get_pretrained_cfg(arch)
        tag = getattr(cfg, "tag", None) or (tags[0] if tags else None)
    full = f"{arch}.{tag}" if tag else arch
    meta = meta_timm_model(full)
    data_cfg = resolve_data_config({}, model=meta)
    crop = int(data_cfg["input_size"][-1])
    crop_pct = float(data_cfg.get("crop_pct") or 1.0)
    pre = Preprocess(int(math.floor(crop / crop_pct)), crop, str(data_cfg.get("interpolation", "bicubic")),
                     data_cfg["mean"], data_cfg["std"])
    return ModelSpec(f"timm:{full}", "timm", arch, tag or None, "classifier", pre, has_pos_embed(meta),
                     description=f"timm {full} (timm's own eval preprocessing)")


def _open_clip_is_vit(vision_cfg: dict) -> bool:
    timm_name = vision_cfg.get("timm_model_name")
    if timm_name:
        try:
            return has_pos_embed(meta_timm_model(timm_name))
        except Exception as e:  # noqa: BLE001 - unknown to this timm: treat as a convnet
            log.warning("open_clip tower %s: not buildable by this timm (%s); treated as having no position "
                        "embedding", timm_name, e)
            return False
    layers = vision_cfg.get("layers", 12)
    return not isinstance(layers, (list, tuple))  # a list of stage depths is the ModifiedResNet


def resolve_open_clip(rest: str) -> ModelSpec:
    import open_clip

    register_demo_configs()
    arch, sep, tag = rest.rpartition("/")
    if not sep:
        arch, tag = rest, ""
    models = open_clip.list_models()
    if arch not in models:
        raise unknown_name("open_clip architecture", arch, [], suggestions=close_names(arch, models),
                           extra="see open_clip.list_models()")
    tags = list(open_clip.list_pretrained_tags_by_model(arch))
    if tag and tag not in tags:
        raise unknown_name(f"open_clip pretrained tag for {arch!r}", tag, tags or ["(none)"])
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


def hub_weight_files(spec: ModelSpec) -> tuple[str, list[str]] | None:
    """(Hugging Face repo, file names in the order the library tries them) of ``spec``'s pretrained weights;
    None when the library takes them from a URL instead (or has none)."""
    if spec.tag is None:
        return None
    if spec.family == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(spec.hub_name)
        if cfg is None or not cfg.hf_hub_id:
            return None
        # timm.models._hub.load_state_dict_from_hf: a named file, else model.safetensors before pytorch_model.bin
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        return cfg.hf_hub_id, names
    import open_clip

    hub = (open_clip.get_pretrained_cfg(spec.arch, spec.tag) or {}).get("hf_hub", "")
    if not hub:
        return None
    repo, name = hub.rstrip("/"), "open_clip_pytorch_model.bin"  # "org/model/" names no file: the default
    if not hub.endswith("/"):
        repo, _, name = hub.rpartition("/")
    # open_clip.pretrained.download_pretrained_from_hf: the .safetensors twin first
    twin = ("open_clip_model.safetensors" if name == "open_clip_pytorch_model.bin"
            else name[:-4] + ".safetensors" if name.endswith((".bin", ".pth")) else None)
    return repo, [n for n in (twin, name) if n]


class HubWeightsError(ValueError):
    """A model's hub weights are neither in the local Hugging Face cache nor downloadable."""


def fetch_hub_weights(spec: ModelSpec) -> dict | None:
    """Make sure ``spec``'s hub weights are in the Hugging Face cache (downloading them if the network allows)
    and say which: {"repo", "file", "revision"}; None when the library fetches them from a URL itself.

    Raises HubWeightsError naming the model, the hub id and ``--weights`` when they cannot be had.
    """
    where = hub_weight_files(spec)
    if where is None:
        return None
    from huggingface_hub import constants, hf_hub_download

    repo, names = where
    last: Exception | None = None
    for name in names:
        try:
            path = Path(hf_hub_download(repo_id=repo, filename=name))
        except Exception as e:  # noqa: BLE001 - not cached, no network, no such file: the next name, then one message
            last = e
            continue
        revision = path.parent.name if path.parent.parent.name == "snapshots" else None
        return {"repo": repo, "file": name, "revision": revision}
    reason = f"{type(last).__name__}: {str(last).strip().splitlines()[0] if str(last).strip() else ''}"
    offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
    raise HubWeightsError(
        f"{spec.id}: its hub weights {repo} ({' or '.join(names)}) are not in the Hugging Face cache "
        f"{constants.HF_HUB_CACHE} and cannot be downloaded here{offline} ({reason}); download them once where there "
        f"is network (into the same HF_HOME), or give a local checkpoint with --weights {spec.id}=FILE")


__all__ = ["register_demo_configs", "meta_timm_model", "output_dims", "has_pos_embed", "resolve_timm",
           "resolve_open_clip", "hub_weight_files", "fetch_hub_weights", "HubWeightsError"]
