"""The models of a run, loaded once per input size, and their zero-shot heads (built once, kept in the store).

torch is imported when a model is loaded, not at import.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

import schemas
from schemas import layout as L

from extract.errors import ExtractError
from extract.heads_store import head_attrs, read_head, write_head
from extract.inventory import spec_pretrained, weights_id
from extract.options import RunOptions, is_cuda, parse_weights

log = logging.getLogger("extract")

# Zero-shot heads built or read in this process, by (model, fingerprint of head_attrs): several runs in one
# process (tests, benchmarks) build each head once.
_HEAD_MEMO: dict[tuple[str, str], np.ndarray] = {}


class ModelCache:
    """Loaded models keyed by (model, input size); zero-shot heads built once per model and kept in the store."""

    def __init__(self, opts: RunOptions, device: str, precision: str, root=None):
        self.opts = opts
        self.device = device
        self.precision = precision
        self.root = root
        self.loaded: dict[tuple[str, int], Any] = {}
        self.heads: dict[str, np.ndarray] = {}
        self.weights = parse_weights(opts.weights)
        self._wid: dict[str, str] = {}
        self.sources: dict[str, dict] = {}  # model -> where its hub weights came from (repo, file, revision)

    def weights_id(self, spec) -> str:
        if spec.id not in self._wid:
            self._wid[spec.id] = weights_id(spec, self.weights.get(spec.id), self.opts.pretrained)
        return self._wid[spec.id]

    def fetch_hub_weights(self, spec) -> None:
        """Hub weights into the local Hugging Face cache before anything is written; a model without them
        (no network, no cache) is one ExtractError naming the model, the hub id and --weights."""
        if spec.demo or self.weights.get(spec.id) or not self.opts.pretrained:
            return
        from extract.hub import HubWeightsError, fetch_hub_weights

        try:
            source = fetch_hub_weights(spec)
        except HubWeightsError as e:
            raise ExtractError(str(e)) from None
        if source is not None:
            self.sources[spec.id] = source

    def get(self, spec, size: int):
        key = (spec.id, int(size))
        if key not in self.loaded:
            # Keep only the models of one input size at a time (a res-* transform reloads at its size).
            for k in [k for k in self.loaded if k[1] != size]:
                del self.loaded[k]
            self.loaded[key] = self._load(spec, int(size))
        return self.loaded[key]

    def _load(self, spec, size: int):
        from extract.models import load_model

        self.weights_id(spec)  # a missing --weights file fails here, before any work
        kwargs: dict[str, Any] = {
            "device": self.device, "precision": self.precision, "image_size": size,
            "weights": self.weights.get(spec.id), "pretrained": spec_pretrained(spec, self.opts.pretrained),
            "channels_last": is_cuda(self.device),  # cuDNN's fast layout; on the CPU NCHW is as fast
        }
        if spec.kind == "zero-shot":
            kwargs.update(self._head_kwargs(spec))
        t0 = time.perf_counter()
        try:
            model = load_model(spec, **kwargs)
        except (FileNotFoundError, ValueError) as e:
            raise ExtractError(f"{spec.id}: {e}") from None
        if spec.kind == "zero-shot" and spec.id not in self.heads:
            self._store_head(spec, model)
        if self.opts.compile:
            import torch

            model.forward = torch.compile(model.forward)
        log.info("loaded %s at %dpx on %s (%s) in %.1fs", spec.id, size, self.device, model.precision,
                 time.perf_counter() - t0)
        return model

    def _head_inputs(self, spec):
        from extract.zeroshot import imagenet_class_names, openai_templates

        names, templates = list(imagenet_class_names()), list(openai_templates())
        return names, templates, head_attrs(spec, self.weights_id(spec), names, templates, "imagenet-1k")

    def _head_kwargs(self, spec) -> dict:
        names, templates, attrs = self._head_inputs(spec)
        head = self.heads.get(spec.id)
        memo_key = (spec.id, schemas.fingerprint(attrs))
        if head is None and memo_key in _HEAD_MEMO:
            head = self.heads[spec.id] = _HEAD_MEMO[memo_key]
            if self.root is not None and read_head(self.root, spec.id, attrs) is None:
                write_head(self.root, spec.id, head, attrs)
        if head is None and self.root is not None:
            stored = read_head(self.root, spec.id, attrs)
            if stored is not None:
                log.info("%s: zero-shot head read from %s/%s", spec.id, L.HEADS_GROUP, spec.id)
                head = self.heads[spec.id] = stored
        if head is not None:
            _HEAD_MEMO[memo_key] = head
        return {"class_names": names, "templates": templates, "head": head}

    def _store_head(self, spec, model) -> None:
        head = model.zero_shot_head
        if head is None:
            return
        self.heads[spec.id] = np.asarray(head, dtype=np.float32)
        _, _, attrs = self._head_inputs(spec)
        _HEAD_MEMO[(spec.id, schemas.fingerprint(attrs))] = self.heads[spec.id]
        if self.root is not None:
            write_head(self.root, spec.id, self.heads[spec.id], attrs)
            log.info("%s: zero-shot head built and stored at %s/%s", spec.id, L.HEADS_GROUP, spec.id)


__all__ = ["ModelCache"]
