"""Zero-shot classification heads for CLIP models (docs/design.md, "Extraction").

head[k] = normalise(mean over templates t of normalise(encode_text(t.format(class_k)))), in fp32.
Logits are then 100 x cosine(image embedding, head) (extract.models.LoadedModel).
Keeping heads in the store is ``extract.heads_store``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


log = logging.getLogger(__name__)



def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names used for the CLIP prompts (open_clip's list), in class order."""
    from schemas.label_spaces import imagenet_class_names as bundled, label_file

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
        except Exception as e:  # noqa: BLE001 - a damaged cache file is rebuilt
            log.warning("%s: unreadable token cache (%s: %s); recomputing it", path, type(e).__name__, e)
            tokens = None
    if tokens is None or len(tokens) != len(prompts):
        tokens = torch.cat([tokenizer(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(tokens, tmp)
            tmp.replace(path)
        except OSError as e:  # a read-only home only costs the recomputation next time
            log.info("%s: token cache not written (%s)", path, e)
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
            except Exception as e:  # noqa: BLE001 - any doubt: the library's own encode_text
                log.info("%s: truncated text encoder not used (%s: %s); using encode_text",
                         type(model).__name__, type(e).__name__, e)
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
