"""What ``extract run`` is asked to do: its options, shards, devices and weights files. Stdlib only."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from extract.errors import ExtractError
from schemas.host import usable_cores


@dataclass
class RunOptions:
    """Everything ``extract run`` takes (the CLI fills it from its arguments)."""

    store: str | Path
    models: Sequence[str] = ()
    datasets: Sequence[str] = ()
    transforms: Sequence[str] = ()
    suite: str | None = None
    data_root: str | Path | None = None
    device: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    shard: tuple[int, int] | None = None
    strict: bool = False
    overwrite: bool = False
    repair: bool = False          # re-extract the done blocks found missing or damaged (``extract verify``)
    retry_invalid: bool = False   # redo the done blocks that hold rows stored invalid
    precision: str | None = None
    weights: Mapping[str, str] = field(default_factory=dict)
    pretrained: bool = True
    manifest: Any = None          # a path, a schemas.manifest.Manifest, or None (the default manifest)
    progress: bool | None = None  # None: a bar when stderr is a terminal
    seed: int = 0
    compile: bool = False
    decode: str = "pil"           # "pil": Pillow in the workers (the reference); "gpu": JPEGs on the device
    allow_partial: bool = False   # extract a dataset holding fewer samples than its expected_samples
    # fsspec options for a store URL (endpoint_url, key, secret, config_kwargs, ...; schemas.remote)
    storage_options: Mapping[str, Any] = field(default_factory=dict)


def parse_shard(text: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        i, n = (int(v) for v in text)
    else:
        try:
            a, b = text.split("/")
            i, n = int(a), int(b)
        except ValueError:
            raise ExtractError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ExtractError(f"--shard {i}/{n}: expected 0 <= i < n")
    return i, n


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """torchrun's RANK / WORLD_SIZE, when set."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return parse_shard(f"{env['RANK']}/{env['WORLD_SIZE']}")
    return None


def shard_blocks(n_blocks: int, shard: tuple[int, int] | None) -> list[int]:
    """The blocks of one shard: block b goes to shard b % n."""
    if shard is None:
        return list(range(n_blocks))
    i, n = shard
    return [b for b in range(n_blocks) if b % n == i]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - the extract extra is missing
        return False
    return bool(torch.cuda.is_available())


def default_device(env: Mapping[str, str] | None = None) -> str:
    """cuda (cuda:LOCAL_RANK under torchrun) when a GPU is there, else cpu."""
    env = os.environ if env is None else env
    if cuda_available():
        return f"cuda:{env['LOCAL_RANK']}" if "LOCAL_RANK" in env else "cuda"
    return "cpu"


_DEVICE = re.compile(r"(cpu|mps|cuda(:\d+)?)")


def parse_device(text: str) -> str:
    """``--device``: cpu, cuda, cuda:N or mps; anything else is refused before a store is touched."""
    device = str(text).strip().lower()
    if not _DEVICE.fullmatch(device):
        raise ExtractError(f"--device {text!r}: not a device this extractor runs on; expected cpu, cuda, "
                           f"cuda:N (a GPU index) or mps")
    return device


def check_store_target(store: str | Path) -> None:
    """A local ``--store`` must be a folder (or nothing yet): an existing file is refused before any write."""
    text = str(store)
    if "://" in text and not text.startswith("file://"):
        from schemas import StoreError
        from schemas.remote import require_backend

        try:  # a missing s3fs is said before any data is read, naming the extra that installs it
            require_backend(text)
        except StoreError as e:
            raise ExtractError(str(e)) from None
        return  # a remote store: its backend reports its own problems
    path = Path(text.removeprefix("file://")).expanduser()
    if path.exists() and not path.is_dir():
        raise ExtractError(f"--store {text}: is a file, not a store folder; give a new folder path "
                           f"(it is created) or an existing store")


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def device_type(device: str) -> str:
    """"cuda:1" -> "cuda", "cpu" -> "cpu"."""
    return str(device).split(":")[0]


def default_batch_size(device: str) -> int:
    return 256 if is_cuda(device) else 32


def default_precision(device: str) -> str:
    return "bf16" if is_cuda(device) else "fp32"


def default_workers(device: str) -> int:
    return max(1, min(usable_cores() - 1, 16)) if is_cuda(device) else 0


DECODE_PATHS = ("pil", "gpu")


def decode_fingerprint(decode: str, device: str) -> str | None:
    """What the fingerprint records of the decode path: None for Pillow (the reference, and every run made
    before there was a choice); "gpu:cuda" or "gpu:cpu" (the decoders differ, so the device type counts)."""
    if decode not in DECODE_PATHS:
        raise ExtractError(f"--decode {decode!r}: expected one of {', '.join(DECODE_PATHS)}")
    return None if decode == "pil" else f"gpu:{device_type(device)}"


def parse_weights(items: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["vit-sup=/ckpt/vit.safetensors", ...]`` -> ``{"vit-sup": "/ckpt/vit.safetensors"}``."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out: dict[str, str] = {}
    for item in items:
        model, sep, path = str(item).partition("=")
        if not sep or not model or not path:
            raise ExtractError(f"--weights {item!r}: expected MODEL=FILE")
        out[model.strip()] = path.strip()
    return out


__all__ = ["RunOptions", "DECODE_PATHS", "decode_fingerprint", "parse_shard", "parse_device", "check_store_target", "shard_from_env", "shard_blocks", "cuda_available", "default_device",
           "is_cuda", "device_type", "default_batch_size", "default_precision", "default_workers", "parse_weights"]
