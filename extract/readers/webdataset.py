"""The webdataset layout: uncompressed tar shards of <key>.<image ext> with <key>.cls or <key>.json labels.

No torch at import.
"""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any

from .base import Reader, Scan, short
from .labels import LabelResolver
from .tarindex import index_members, read_member


def split_from_path(rel: str) -> str:
    """The split of a shard: its first folder, else its name before a -NNN / _NNN / .NNN suffix."""
    parts = rel.split("/")
    if len(parts) > 1:
        return parts[0]
    stem = parts[0][: -len(".tar")] if parts[0].endswith(".tar") else parts[0]
    m = re.match(r"^(.+?)(?:[-_.]\d+)?$", stem)
    return m.group(1) if m else stem


class WebDatasetReader(Reader):
    """Uncompressed tar shards (``shards`` glob, default **/*.tar): members <key>.<image ext> plus
    <key>.cls (integer label) or <key>.json (``label_field``). Column split from the shard path
    (first folder, or the shard name before a -NNN suffix) or a json field (``split_field``)."""

    kind = "webdataset"

    def _shards(self) -> list[Path]:
        pattern = self.layout.get("shards", "**/*.tar")
        return sorted(p for p in self.root.glob(pattern) if p.is_file())

    def _probe(self) -> None:
        shards = self._shards()
        if not shards:
            packed = [p.name for p in self.root.glob("**/*.tar.gz")] + [p.name for p in self.root.glob("**/*.tgz")]
            hint = (f" (found compressed {short(packed, 2)}: decompress them, random access needs plain tar)"
                    if packed else "")
            raise self._missing(self.root, "shards", "has no tar shards matching" + hint)

    def _json_field(self, meta: dict | None, name: str, default: str, shard: Path, key: str) -> Any:
        """Field (layout option ``name``, else ``default``) of a sample's json, or an error naming both."""
        fld = self.layout.get(name, default)
        if meta is None or fld not in meta:
            raise ValueError(f"dataset {self.dataset_id!r}: {shard}: sample {key!r} has no json field "
                             f"{fld!r} ({self.field(name)})")
        return meta[fld]

    def _scan(self) -> Scan:
        lay = self.layout
        split_from = lay.get("split_from", "path") if "split" in (self.entry.get("columns") or {}) else "none"
        label_from = lay.get("label_from", "cls")
        res = LabelResolver(self.entry, self.field("label_from"))
        ids: list[str] = []
        labels: list[int] = []
        locs: list = []
        splits: list[str] = []
        self._shard_files: list[str] = []
        img_exts = [e.lstrip(".") for e in self.exts]
        for si, shard in enumerate(self._shards()):
            rel = shard.relative_to(self.root).as_posix()
            self._shard_files.append(str(shard))
            with open(shard, "rb") as fh:
                try:
                    groups = index_members(fh)
                except tarfile.ReadError as e:
                    raise ValueError(f"dataset {self.dataset_id!r}: {shard} is not a readable uncompressed tar: "
                                     f"{e}") from None
                for key, g in groups.items():
                    img = next((e for e in img_exts if e in g), None)
                    if img is None:
                        continue
                    meta = None
                    if "json" in g and (label_from == "json" or split_from == "json"):
                        meta = json.loads(read_member(fh, g["json"]).decode("utf-8"))
                    if label_from == "cls":
                        if "cls" not in g:
                            raise ValueError(f"dataset {self.dataset_id!r}: {shard}: sample {key!r} has no .cls label "
                                             f"({self.field('label_from')} = 'cls')")
                        token = read_member(fh, g["cls"]).decode("utf-8").strip()
                    else:
                        token = self._json_field(meta, "label_field", "label", shard, key)
                    labels.append(res(token))
                    ids.append(f"{rel}/{key}")
                    locs.append((si, *g[img]))
                    if split_from == "path":
                        splits.append(split_from_path(rel))
                    elif split_from == "json":
                        splits.append(str(self._json_field(meta, "split_field", "split", shard, key)))
        cols: dict[str, list] = {}
        if split_from != "none":
            allowed = lay.get("splits")
            if allowed:
                bad = sorted(set(splits) - set(allowed))
                if bad:
                    raise ValueError(f"dataset {self.dataset_id!r}: splits {bad} under {self.root} are not among "
                                     f"{allowed} ({self.field('splits')}; split taken from the "
                                     f"{'shard path' if split_from == 'path' else 'json field'})")
            cols["split"] = splits
        return ids, labels, cols, locs

    def _read_loc(self, loc: Any) -> bytes:
        si, offset, size = loc
        return read_member(self._handles.file(si, self._shard_files[si]), (offset, size))

    def class_names(self) -> list[str] | None:
        if self.entry["label_space"] == "own":
            p = self.root / self.layout.get("classnames_file", "classnames.txt")
            return [x.strip() for x in p.read_text().splitlines() if x.strip()] if p.is_file() else None
        return super().class_names()
