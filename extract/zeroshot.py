"""Zero-shot classification heads for CLIP models (DESIGN.md, "Extraction").

head[k] = normalise(mean over templates t of normalise(encode_text(t.format(class_k)))), in fp32.
Logits are then 100 x cosine(image embedding, head) (extract.models.LoadedModel).
A store keeps each model's head at ``_heads/<model>/weights`` with what it was built from
(``head_attrs``), so that reruns and other processes read it instead of building it again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn



def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names used for the CLIP prompts (open_clip's list), in class order."""
    from schemas.manifest import imagenet_class_names as bundled, label_file

    names = list(bundled())
    if len(names) != 1000:
        raise ValueError(f"{label_file('imagenet_classnames.txt')}: expected 1000 non-empty class names, found {len(names)}")
    return names


def openai_templates() -> list[str]:
    """The 80 OpenAI ImageNet prompt templates, as strings with a "{}" placeholder (from open_clip)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [t("{}") if callable(t) else str(t) for t in OPENAI_IMAGENET_TEMPLATES]


def _token_cache_path(key: str) -> Path:
    import os

    root = Path(os.environ.get("BEYOND_CACHE", Path.home() / ".cache" / "beyond-imagenet")) / "tokens"
    return root / f"{key}.pt"


def tokenize_prompts(tokenizer: Callable, prompts: list[str], batch_size: int = 1000) -> torch.Tensor:
    """Token ids of every prompt, computed once per tokenizer and prompt list.

    open_clip's tokenizer cleans every prompt in Python (tens of seconds for 80,000 ImageNet prompts), while
    the ids depend only on the tokenizer and the text: they are kept in memory and in the user's cache
    folder, so further CLIP models and further runs reuse them.
    """
    ident = f"{type(tokenizer).__module__}.{type(tokenizer).__name__}:{getattr(tokenizer, 'context_length', '')}"
    probe = tokenizer(["a photo of a {}."])  # guards against two tokenizers of one class with other vocabularies
    key = hashlib.sha256("\n".join([ident, probe.numpy().tobytes().hex(), *prompts]).encode()).hexdigest()[:24]
    if key in _TOKENS:
        return _TOKENS[key]
    path = _token_cache_path(key)
    tokens = None
    if path.exists():
        try:
            tokens = torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt
            tokens = None
    if tokens is None or len(tokens) != len(prompts):
        tokens = torch.cat([tokenizer(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(tokens, tmp)
            tmp.replace(path)
        except OSError:
            pass  # a read-only home only costs the recomputation
    _TOKENS[key] = tokens
    return tokens


_TOKENS: dict[str, torch.Tensor] = {}


def _can_truncate(model: nn.Module) -> bool:
    """True for open_clip's CLIP text tower: causal mask and EOT (argmax) pooling.

    With a causal mask, the embedding at the EOT token depends only on the tokens before it, so the
    padding after the longest prompt of a batch can be dropped without changing the result.
    """
    return (
        type(model).__name__ == "CLIP"
        and getattr(model, "text_pool_type", None) == "argmax"
        and isinstance(getattr(model, "attn_mask", None), torch.Tensor)
        and isinstance(getattr(model, "positional_embedding", None), torch.Tensor)
        and hasattr(model, "token_embedding")
        and hasattr(model, "ln_final")
    )


def _encode_text_truncated(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip CLIP.encode_text on tokens cut after the batch's last EOT (exact for causal towers)."""
    from open_clip.transformer import text_global_pool

    length = int(tokens.argmax(dim=-1).max().item()) + 1
    text = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return x


def _make_encoder(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """encode_text, or its exact truncated fast path once it has been checked against encode_text."""
    state: dict[str, Any] = {"fast": _can_truncate(model), "checked": False}

    def encode(tokens: torch.Tensor) -> torch.Tensor:
        if state["fast"]:
            try:
                out = _encode_text_truncated(model, tokens)
                if not state["checked"]:
                    ref = model.encode_text(tokens[:4]).float()
                    ok = torch.allclose(out[:4].float(), ref, rtol=1e-4, atol=1e-5 * max(1.0, ref.abs().max().item()))
                    state["checked"] = True
                    if not ok:
                        raise RuntimeError("fast path differs")
                return out
            except Exception:  # noqa: BLE001 - any doubt: the library's own encode_text
                state["fast"] = False
        return model.encode_text(tokens)

    return encode


def build_zeroshot_head(model: nn.Module, tokenizer: Callable, class_names: list[str], templates: list[str],
                        device: str | torch.device, batch_size: int = 1000) -> np.ndarray:
    """Zero-shot head float32 [num_classes, embed_dim] of an open_clip model, computed in fp32.

    Each prompt ``template.replace("{}", class_name)`` is embedded and L2-normalised; the embeddings
    of a class are averaged over the templates and the mean renormalised.
    """
    names = [str(c) for c in class_names]
    temps = [str(t) for t in templates]
    if not names or not temps:
        raise ValueError("need at least one class name and one template")
    bad = [t for t in temps if "{}" not in t]
    if bad:
        raise ValueError(f"templates need a '{{}}' placeholder: {bad[:3]}")
    dev = torch.device(device)
    prompts = [t.replace("{}", c) for c in names for t in temps]  # class-major
    was_training = model.training
    model.eval()
    encode = _make_encoder(model)
    all_tokens = tokenize_prompts(tokenizer, prompts, batch_size)
    chunks = []
    with torch.no_grad(), torch.autocast(device_type=dev.type, enabled=False):
        for start in range(0, len(prompts), batch_size):
            tokens = all_tokens[start:start + batch_size].to(dev)
            emb = encode(tokens).float()
            chunks.append(F.normalize(emb, dim=-1))
        emb = torch.cat(chunks).view(len(names), len(temps), -1)
        head = F.normalize(emb.mean(dim=1), dim=-1)
    model.train(was_training)
    return head.cpu().numpy().astype(np.float32)


def class_names_sha256(class_names: Sequence[str]) -> str:
    """Identity of a list of class names (the prompts' order)."""
    return hashlib.sha256("\n".join(class_names).encode()).hexdigest()


# ---------------------------------------------------------------- heads in the store
HEAD_ARRAY = "weights"


def head_attrs(spec, wid: str, class_names: Sequence[str], templates: Sequence[str], source: str) -> dict:
    """What a zero-shot head was built from; a stored head is reused only when these match."""
    from extract.inventory import jsonable
    from extract.models import CLIP_LOGIT_SCALE

    return jsonable({
        "model": spec.to_dict(),
        "weights_id": wid,
        "class_names": {"source": source, "n": len(class_names), "sha256": class_names_sha256(class_names)[:16]},
        "templates": list(templates),
        "logit_scale": CLIP_LOGIT_SCALE,
        "normalisation": "each prompt embedding L2-normalised, averaged over templates, renormalised",
    })


def read_head(root, model: str, attrs: Mapping[str, Any]) -> np.ndarray | None:
    """The head stored at ``_heads/<model>`` when it was built from ``attrs``; else None."""
    from schemas import layout as L

    heads = root.get(L.HEADS_GROUP)
    if heads is None or model not in heads:
        return None
    group = heads[model]
    stored = dict(group.attrs)
    if not stored.get("complete") or {k: stored.get(k) for k in attrs} != dict(attrs):
        return None
    if HEAD_ARRAY not in group:
        return None
    return np.asarray(group[HEAD_ARRAY][...], dtype=np.float32)


def write_head(root, model: str, weights: np.ndarray, attrs: Mapping[str, Any]) -> None:
    """Store a zero-shot head at ``_heads/<model>/weights`` [class, embed] float32 (replacing another one).

    Processes that write the same head at once write the same bytes; "complete" goes last, in the same
    metadata write as the other attributes.
    """
    from zarr.codecs import ZstdCodec
    from zarr.errors import ContainsArrayError

    from schemas import layout as L

    weights = np.asarray(weights, dtype=np.float32)
    heads = _child_group(root, L.HEADS_GROUP)
    if model in heads:
        old = dict(heads[model].attrs)
        if old.get("complete"):
            if {k: old.get(k) for k in attrs} == dict(attrs):
                return
            del heads[model]  # a head from other inputs (other weights or templates): replace it
        # else another process is writing the same head right now: write the same bytes alongside it
    group = _child_group(heads, model)
    try:
        arr = group.create_array(HEAD_ARRAY, shape=weights.shape, dtype="float32", chunks=weights.shape,
                                 compressors=ZstdCodec(level=L.ZSTD_LEVEL), dimension_names=("class", "embed"))
    except ContainsArrayError:  # created meanwhile by another process: the same metadata
        arr = group[HEAD_ARRAY]
    arr[...] = weights
    group.update_attributes({**attrs, "shape": list(weights.shape), "complete": True})


def _child_group(parent, name: str):
    from zarr.errors import ContainsArrayError, ContainsGroupError

    try:
        return parent.create_group(name)
    except (ContainsGroupError, ContainsArrayError):
        return parent[name]
