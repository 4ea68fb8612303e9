"""Stores on object storage (``s3://``, any fsspec URL): storage options, their defaults, and network faults
as one line naming the URL. Stdlib only at import (fsspec and s3fs are imported when a URL is opened).

- ``--storage-option KEY=VALUE`` (both CLIs) and ``storage_options=`` (the Python API) go to fsspec, on top of
  the standard environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ...) and
  fsspec's own configuration. ``a.b=1`` nests: ``{"a": {"b": 1}}``.
- ``s3://``: bounded retries and timeouts unless the caller sets their own (``S3_DEFAULTS``), so an
  unreachable endpoint fails in seconds rather than after s3fs's 5 x botocore's 5 attempts of 15 s.
- A network fault (no connection, a timeout, refused credentials, no such bucket) is a ``StoreUnreachable``
  naming the URL and the likely fix, never a traceback from inside botocore.
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping

log = logging.getLogger("schemas")

# Defaults for s3://, deep-merged under what the caller gives. botocore "standard" retries back off and retry
# connection errors, throttling and 5xx; ``retries`` (not a botocore option) is s3fs's own retry loop around
# each call, set on the file system. Worst case for a dead endpoint: 2 x 3 attempts x the timeouts.
S3_DEFAULTS: dict[str, Any] = {
    "config_kwargs": {"connect_timeout": 5, "read_timeout": 20, "retries": {"max_attempts": 3, "mode": "standard"}},
    "retries": 2,
    # Other processes add chunks while this one reads: a cached listing would hide them (s3fs answers a size
    # or existence from its listings cache, and zarr reads a chunk it is told is absent as fill values).
    "use_listings_cache": False,
}
# The package to install per protocol, and the extra of this project that installs it.
BACKENDS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3")}


class StoreUnreachableError(OSError):
    """Object storage could not be reached or refused the request: the message names the URL and the fix."""


def is_url(store: Any) -> bool:
    """A remote fsspec URL (``s3://...``); plain paths and ``file://`` are local."""
    return isinstance(store, str) and "://" in store and not store.startswith("file://")


def protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


def parse_value(text: str) -> Any:
    """``true``/``false`` -> bool, integers, floats, anything else the string itself."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_pair(text: str) -> tuple[str, Any]:
    """An argparse ``type``: ``KEY=VALUE`` -> ``(KEY, value)``."""
    key, sep, value = str(text).partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. endpoint_url=http://host:9000 or "
                                         f"config_kwargs.read_timeout=60")
    return key, parse_value(value)


parse_pair.__name__ = "KEY=VALUE"  # argparse names the type in some of its messages


def parse_storage_options(items: Iterable[str | tuple[str, Any]] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["endpoint_url=http://h:9000", "config_kwargs.read_timeout=60"]`` -> nested dict (a Mapping is copied)."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return copy.deepcopy(dict(items))
    out: dict[str, Any] = {}
    for item in items:
        key, value = item if isinstance(item, tuple) else parse_pair(item)
        *path, last = key.split(".")
        node = out
        for part in path:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"--storage-option {key}: {part} was already given a value ({child!r})")
            node = child
        node[last] = value
    return out


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    """``--storage-option KEY=VALUE`` (repeatable) on a command that opens a store."""
    parser.add_argument("--storage-option", dest="storage_options", action="append", type=parse_pair, default=[],
                        metavar="KEY=VALUE",
                        help="fsspec option for a store URL (repeatable; a.b=v nests), e.g. endpoint_url=http://"
                             "host:9000, key=..., secret=..., anon=true, config_kwargs.read_timeout=60")


def _merge(base: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in given.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
    return out


def effective_options(url: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options a URL is opened with: the protocol's defaults under what the caller gave."""
    given = dict(given or {})
    return _merge(S3_DEFAULTS, given) if protocol(url) in BACKENDS else given


def require_backend(url: str) -> None:
    """Refuse a URL whose fsspec implementation is not installed, naming the extra that installs it."""
    from .errors import StoreError

    import fsspec

    proto = protocol(url)
    try:
        fsspec.get_filesystem_class(proto)
    except ImportError:
        package, extra = BACKENDS.get(proto, (None, None))
        fix = (f"install beyond-imagenet[{extra}] ({package})" if package
               else f"install the fsspec implementation for {proto}://")
        raise StoreError(f"{url}: cannot open {proto}:// stores: {fix}") from None
    except ValueError:
        raise StoreError(f"{url}: unknown protocol {proto}:// (fsspec knows no such file system)") from None


def zarr_store(url: str, storage_options: Mapping[str, Any] | None, *, read_only: bool):
    """A zarr FsspecStore for a URL, opened with ``effective_options``."""
    from zarr.storage import FsspecStore

    require_backend(url)
    options = effective_options(url, storage_options)
    retries = options.pop("retries", None) if protocol(url) in BACKENDS else None
    try:
        store = FsspecStore.from_url(url, storage_options=options, read_only=read_only)
    except TypeError as e:  # an option the file system does not take
        from .errors import StoreError

        raise StoreError(f"{url}: storage options {sorted(options)} refused ({e})") from None
    if retries is not None:
        store.fs.retries = int(retries)  # s3fs's own retry loop: an attribute, not a constructor argument
    return store


# ---------------------------------------------------------------- network faults
_CONTEXT_TOKEN = "was created in a different Context"  # botocore's ContextVar, reset in a cancelled request


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _module(e: BaseException) -> str:
    return type(e).__module__.split(".")[0]


def network_failure(e: BaseException, url: Any) -> StoreUnreachableError | None:
    """``e`` as a one-line StoreUnreachableError when it is a fault of the object storage under ``url``; else None."""
    if not is_url(url):
        return None
    for err in _chain(e):
        name, text = type(err).__name__, str(err).strip().splitlines()[0] if str(err).strip() else ""
        if isinstance(err, StoreUnreachableError):
            return err
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ProxyConnectionError"):
            return StoreUnreachableError(f"{url}: cannot connect to the object storage endpoint ({text}); check the "
                                         f"endpoint (AWS_ENDPOINT_URL or --storage-option endpoint_url=...) and "
                                         f"the network")
        if name in ("ReadTimeoutError", "TimeoutError", "ReadTimeout") or (
                _module(err) in ("aiohttp", "asyncio") and "Timeout" in name):
            return StoreUnreachableError(f"{url}: the object storage did not answer in time ({name}: {text}); "
                                         f"check the endpoint, or raise --storage-option config_kwargs.read_timeout=S")
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return StoreUnreachableError(f"{url}: no credentials ({text}); set AWS_ACCESS_KEY_ID and "
                                         f"AWS_SECRET_ACCESS_KEY, or --storage-option key=... secret=... "
                                         f"(anon=true for a public bucket)")
        code = getattr(err, "response", {}).get("Error", {}).get("Code") if _module(err) == "botocore" else None
        # s3fs's translated errors carry no errno; a local file's (data, --out) always does and is not ours.
        if isinstance(err, PermissionError) and err.errno is None or code in ("InvalidAccessKeyId", "SignatureDoesNotMatch",
                                                        "AccessDenied", "Forbidden", "403"):
            return StoreUnreachableError(f"{url}: access denied ({text or name}); check the credentials "
                                         f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or --storage-option "
                                         f"key=... secret=...) and the bucket's permissions")
        if isinstance(err, FileNotFoundError) and err.errno is None and "bucket" in text.lower() or code == "NoSuchBucket":
            return StoreUnreachableError(f"{url}: the bucket does not exist ({text}); create it first, or check "
                                         f"the URL and the endpoint")
        if isinstance(err, ValueError) and _CONTEXT_TOKEN in text:
            return StoreUnreachableError(f"{url}: a request to the object storage was cut short (a network fault); "
                                         f"check the endpoint and rerun")
        if _module(err) in ("botocore", "aiobotocore", "aiohttp") or name in ("ConnectionRefusedError",
                                                                             "ConnectionResetError"):
            return StoreUnreachableError(f"{url}: the object storage failed ({name}: {text}); check the endpoint, "
                                         f"the credentials and the network")
    return None


def store_url(store: Any) -> str:
    """The URL (or path) of a zarr store object, for messages: ``s3://bucket/store.zarr``."""
    fs = getattr(store, "fs", None)
    if fs is not None:
        proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        return f"{proto}://{store.path}"
    return str(getattr(store, "root", store))


def check_bucket(store: Any, url: str) -> None:
    """Nothing at ``url``: raise StoreUnreachableError when it is because its bucket does not exist."""
    from zarr.core.sync import sync

    bucket = str(store.path).split("/", 1)[0]
    try:
        exists = sync(store.fs._exists(bucket))
    except Exception as e:  # noqa: BLE001 - a fault while asking is named like any other
        reraise_network(e, url)
        return
    if not exists:
        raise StoreUnreachableError(f"{url}: the bucket {bucket} does not exist; create it first, or check the "
                                    f"URL and the endpoint")


def reraise_network(e: BaseException, store: Any) -> None:
    """Raise ``e``'s network fault (``store``: a URL or a zarr store object) instead of letting a caller count it
    as damage, a missing or an unreadable chunk."""
    failure = network_failure(e, store if isinstance(store, str) else store_url(store))
    if failure is not None:
        raise failure from None


@contextmanager
def network_errors(url: Any) -> Iterator[None]:
    """Network faults of a store at ``url`` as one-line StoreUnreachableErrors; everything else unchanged."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, StoreUnreachableError):
        raise
    except Exception as e:  # noqa: BLE001 - only a fault of the object storage is translated
        failure = network_failure(e, url)
        if failure is None:
            raise
        raise failure from None


def quiet_cancelled_requests() -> None:
    """Keep botocore's "Token ... was created in a different Context" out of the user's terminal: when a request
    fails, zarr drops its sibling requests and their cleanup raises this, printed as "Exception ignored in"
    tracebacks. The failure itself is reported in one line; these are logged at debug level only."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        exc = unraisable.exc_value
        if exc is not None and any(_CONTEXT_TOKEN in str(err) for err in _chain(exc)):
            log.debug("ignored in %r: %s: %s", unraisable.object, type(exc).__name__, exc)
            return
        previous(unraisable)

    if getattr(previous, "__name__", "") != "hook":
        sys.unraisablehook = hook


__all__ = ["BACKENDS", "S3_DEFAULTS", "StoreUnreachableError", "add_storage_option", "effective_options", "is_url",
           "network_errors", "network_failure", "parse_pair", "parse_storage_options", "parse_value",
           "quiet_cancelled_requests", "require_backend", "check_bucket", "reraise_network", "store_url", "zarr_store"]
