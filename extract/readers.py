"""Dataset readers: list a dataset's samples in a stable order and hand out encoded image bytes.

One reader per file layout of data_manifest.yaml (`layout.kind`):

    class-folders  <path>/<class>/<image>               class_order: synsets | numeric | sorted | names
    flat-folder    <path>/<image> + labels file          ImageNet val (class folders accepted too)
    file-list      CSV / Parquet / whitespace txt lists  image paths or embedded bytes; label lists
    webdataset     uncompressed tar shards               <key>.<img ext> + <key>.cls / <key>.json
    imagenet-c     <path>/<corruption>/<severity>/<synset>/<image>
    cue-conflict   <path>/<shape>/<shape><i>-<texture><j>.png
    pug-imagenet   <path>/<Factor>/<Class>/<image> (+ optional factor CSV)

Every reader lists samples sorted by sample_id (a path relative to the dataset folder; see the
manifest header) and reads the encoded bytes of sample `index` in that order. Readers are
picklable and reopen files lazily in each process, so DataLoader workers can use them.
Decoding is separate (`decode_image`) so a bad file becomes a clear ImageDecodeError.

No torch here; PIL is imported only by `decode_image`, pyarrow only for Parquet lists.
"""
from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from schemas import manifest as M

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
_SYNSET = re.compile(r"^n\d{8}$")

__all__ = [
    "IMAGE_EXTENSIONS", "ImageDecodeError", "SampleTable", "DatasetReader", "decode_image", "open_reader",
    "READERS",
]


# ---------------------------------------------------------------- decoding
class ImageDecodeError(ValueError):
    """The bytes of a sample are not a readable image (empty, truncated, corrupt, not an image)."""


def decode_image(data: bytes, name: str | None = None):
    """Decode encoded image bytes to an RGB PIL image, fully loaded.

    Raises ImageDecodeError naming the problem for empty, truncated or corrupt data and for data
    that is not an image. Truncated images are never padded silently (LOAD_TRUNCATED_IMAGES off).
    """
    from PIL import Image, ImageFile, UnidentifiedImageError

    what = f" {name}" if name else ""
    if data is None or len(data) == 0:
        raise ImageDecodeError(f"empty image data{what}: 0 bytes")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    fmt = "?"
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format or "?"
        img.load()
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"not an image{what}: {len(data)} bytes that no image decoder recognises (starting {bytes(data[:12])!r})"
        ) from None
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"image{what} refused as a decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        msg = str(e)
        kind = "truncated" if "truncat" in msg.lower() else "corrupt"
        raise ImageDecodeError(f"{kind} image{what} ({fmt}, {len(data)} bytes): {msg}") from None
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except (OSError, ValueError) as e:
            raise ImageDecodeError(f"image{what} ({fmt}, mode {img.mode}) cannot be converted to RGB: {e}") from None
    return img


# ---------------------------------------------------------------- the sample table
@dataclass
class SampleTable:
    """The sample list of a dataset, in the dataset's stable order (sorted by sample_id).

    sample_id: object array of str; label: int32 (-1 = none); columns: name -> array of the
    dtype the manifest declares (str columns as object arrays; label lists as [n, K] int arrays
    padded with -1).
    """

    sample_id: np.ndarray
    label: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = np.asarray(self.sample_id)
        if ids.dtype != object:
            ids = ids.astype(str).astype(object)
        self.sample_id = ids
        self.label = np.asarray(self.label, dtype=np.int32)
        n = len(self.sample_id)
        if self.label.shape != (n,):
            raise ValueError(f"label has shape {self.label.shape}, expected ({n},)")
        for name, values in self.columns.items():
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.sample_id)

    def digest(self) -> str:
        """sha256 (32 hex) over the ordered sample ids, labels and columns: schemas.store.sample_digest."""
        from schemas.store import sample_digest

        return sample_digest(self.sample_id, self.label, self.columns)

    def index(self, sample_id: str) -> int:
        """Position of a sample id (binary search: the table is sorted)."""
        i = int(np.searchsorted(self.sample_id, sample_id))
        if i >= len(self) or self.sample_id[i] != sample_id:
            raise KeyError(sample_id)
        return i


@runtime_checkable
class DatasetReader(Protocol):
    dataset_id: str
    entry: dict

    def samples(self) -> SampleTable: ...

    def read_bytes(self, index: int) -> bytes: ...


# ---------------------------------------------------------------- helpers
def _is_image(name: str, exts: tuple[str, ...]) -> bool:
    return not name.startswith(".") and name.lower().endswith(exts)


def _list_images(directory: Path, exts: tuple[str, ...]) -> list[str]:
    with os.scandir(directory) as it:
        return sorted(e.name for e in it if _is_image(e.name, exts) and e.is_file())


def _list_dirs(directory: Path) -> list[str]:
    with os.scandir(directory) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


def _short(items, k: int = 5) -> str:
    items = list(items)
    s = ", ".join(repr(x) for x in items[:k])
    return s + (f", ... ({len(items)} in all)" if len(items) > k else "")


def _parse_int(text: str) -> int | None:
    try:
        return int(str(text).strip())
    except ValueError:
        try:
            f = float(str(text).strip())
        except ValueError:
            return None
        return int(f) if f.is_integer() else None


def _parse_label_list(value: Any) -> list:
    """A label list from parquet (list), JSON text '[1, 2]' or '1;2' / '1|2' / '1 2' text."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            return list(json.loads(text))
        except json.JSONDecodeError:
            text = text.strip("[]")
    return [t for t in re.split(r"[;|,\s]+", text) if t]


class _Resolver:
    """Maps a label token (int index, synset, class name) to an index of the entry's label space."""

    def __init__(self, entry: dict, where: str):
        self.space = entry["label_space"]
        self.n = int(entry["num_labels"])
        self.where = where
        self._names: dict[str, int] | None = None

    def _lookup(self) -> dict[str, int]:
        if self._names is None:
            names: dict[str, int] = {}
            if self.space == "imagenet-1k":
                names.update({s: i for i, s in enumerate(M.imagenet_synsets())})
            listed = M.label_space_names(self.space) or []
            for i, s in enumerate(listed):
                names.setdefault(s, i)
                names.setdefault(s.lower(), i)
            self._names = names
        return self._names

    def __call__(self, token: Any) -> int:
        if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
            v = int(token)
        else:
            v = _parse_int(token)
        if v is None:
            names = self._lookup()
            key = str(token).strip()
            v = names.get(key, names.get(key.lower()))
            if v is None:
                raise ValueError(f"{self.where}: label {token!r} is neither an index nor a class of label space "
                                 f"{self.space}")
        if not 0 <= v < self.n:
            raise ValueError(f"{self.where}: label {v} outside label space {self.space} (0..{self.n - 1})")
        return v


# ---------------------------------------------------------------- the readers
class _Reader:
    """Shared machinery: root checks, sorting, column coercion, lazy per-process file handles."""

    kind = ""

    def __init__(self, dataset_id: str, entry: dict, layout: dict, data_root: str | Path, *,
                 where: str = "layout", manifest_path: str | Path | None = None):
        self.dataset_id = dataset_id
        self.entry = entry
        self.layout = dict(layout)
        self.data_root = Path(data_root).expanduser()
        self.where = where  # "layout" or "layout.alternatives[i]"
        self.manifest_path = str(manifest_path or "data_manifest.yaml")
        p = Path(str(self.layout["path"])).expanduser()
        self.root = Path(os.path.abspath(p if p.is_absolute() else self.data_root / p))
        self.exts = tuple(e.lower() if e.startswith(".") else "." + e.lower()
                          for e in self.layout.get("extensions", IMAGE_EXTENSIONS))
        self.notes: list[str] = []
        self._table: SampleTable | None = None
        self._locs: list | None = None
        self._handles: dict = {}
        self._handles_pid: int | None = None
        if not self.root.is_dir():
            raise self._missing(self.root, "path",
                                "does not exist" if not self.root.exists() else "is not a directory")
        self._probe()

    # -- messages
    def field(self, name: str) -> str:
        return f"{self.manifest_path}: datasets.{self.dataset_id}.{self.where}.{name}"

    def _missing(self, path: Path, fld: str, what: str = "does not exist") -> FileNotFoundError:
        val = self.layout.get(fld)
        rel = f" relative to --data-root {self.data_root}" if fld == "path" else f" under {self.root}"
        return FileNotFoundError(
            f"dataset {self.dataset_id!r}: {path} {what} ({self.field(fld)} = {val!r}{rel}); "
            f"obtain it from: {self.entry.get('source', '?')}"
        )

    # -- subclass hooks
    def _probe(self) -> None:
        """Cheap check that the layout is there (FileNotFoundError otherwise)."""

    def _scan(self) -> tuple[list[str], list[int], dict[str, list], list]:
        raise NotImplementedError

    def _read_loc(self, loc) -> bytes:
        with open(self.root / loc, "rb") as f:
            return f.read()

    def class_names(self) -> list[str] | None:
        """Names of the label space's classes in label order (None if unknown)."""
        return M.label_space_names(self.entry["label_space"])

    # -- public
    def samples(self) -> SampleTable:
        """The sample list sorted by sample_id (scanned once, then cached)."""
        if self._table is None:
            ids, labels, cols, locs = self._scan()
            n = len(ids)
            if n == 0:
                raise FileNotFoundError(f"dataset {self.dataset_id!r}: no samples found under {self.root} "
                                        f"({self.field('kind')} = {self.kind!r})")
            order = sorted(range(n), key=ids.__getitem__)
            sid = np.empty(n, dtype=object)
            sid[:] = [ids[i] for i in order]
            dup = [sid[i] for i in range(1, n) if sid[i] == sid[i - 1]]
            if dup:
                raise ValueError(f"dataset {self.dataset_id!r}: sample ids must be unique, found duplicates "
                                 f"{_short(dup)} under {self.root}")
            label = np.asarray(labels, dtype=np.int64)[order].astype(np.int32)
            columns = self._coerce_columns({k: [v[i] for i in order] for k, v in cols.items()}, n)
            self._locs = [locs[i] for i in order]
            self._table = SampleTable(sid, label, columns)
        return self._table

    def __len__(self) -> int:
        return len(self.samples())

    def read_bytes(self, index: int) -> bytes:
        """Encoded bytes of sample ``index`` (in samples() order)."""
        if self._locs is None:
            self.samples()
        return self._read_loc(self._locs[index])

    def describe(self) -> dict:
        """Where and how the data was read (for logs; not part of the store's identity)."""
        return {"dataset": self.dataset_id, "root": str(self.root), "layout": self.layout, "notes": list(self.notes)}

    # -- column coercion
    def _coerce_columns(self, cols: dict[str, list], n: int) -> dict[str, np.ndarray]:
        declared = self.entry.get("columns") or {}
        extra = set(cols) - set(declared)
        if extra:
            raise ValueError(f"dataset {self.dataset_id!r}: the {self.kind} reader produces columns {sorted(extra)} "
                             f"that {self.manifest_path}: datasets.{self.dataset_id}.columns does not declare")
        out: dict[str, np.ndarray] = {}
        for name, dtype in declared.items():
            where = f"{self.manifest_path}: datasets.{self.dataset_id}.columns.{name}"
            if name not in cols:
                raise ValueError(f"{where}: declared, but the {self.kind} reader with this layout does not produce it")
            base, width = M.parse_column_dtype(str(dtype))
            values = cols[name]
            if width is not None:
                lists = [list(v) for v in values]
                k = max((len(v) for v in lists), default=0) if width == 0 else width
                k = max(k, 1)
                arr = np.full((n, k), -1, dtype=base)
                for i, v in enumerate(lists):
                    if len(v) > k:
                        raise ValueError(f"{where}: sample {i} has {len(v)} entries, more than the {k} of {dtype!r}")
                    if v:
                        arr[i, : len(v)] = v
                out[name] = arr
            elif base == "str":
                arr = np.empty(n, dtype=object)
                arr[:] = ["" if v is None else str(v) for v in values]
                out[name] = arr
            else:
                try:
                    out[name] = np.asarray(values, dtype=base)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{where}: values cannot be read as {dtype} ({e}); "
                                     "fix the data or declare the column as str") from None
        return out

    # -- per-process handles
    def _handle_cache(self) -> dict:
        pid = os.getpid()
        if self._handles_pid != pid:  # a forked worker must not share its parent's file offsets
            self._handles = {}
            self._handles_pid = pid
        return self._handles

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}
        state["_handles_pid"] = None
        return state

    def close(self) -> None:
        for h in list(self._handles.values()):
            close = getattr(h, "close", None)
            if close:
                close()
        self._handles = {}


class ClassFoldersReader(_Reader):
    """<path>/<class>/<image>; class -> label by ``class_order``:
    synsets (index in the label space's synset list), numeric (the folder name is the index,
    compared as a number), sorted (position in the sorted folder names: torchvision ImageFolder),
    names (the label space's class names)."""

    kind = "class-folders"

    def _probe(self) -> None:
        if not _list_dirs(self.root):
            raise self._missing(self.root, "path", "has no class folders (expected <path>/<class>/<image>)")

    def _class_map(self, classes: list[str], order: str) -> dict[str, int]:
        res = _Resolver(self.entry, self.field("class_order"))
        if order == "synsets":
            if self.entry["label_space"] != "imagenet-1k":
                raise ValueError(f"{self.field('class_order')}: 'synsets' needs label_space imagenet-1k")
            index = {s: i for i, s in enumerate(M.imagenet_synsets())}
            bad = [c for c in classes if c not in index]
            if bad:
                raise ValueError(f"dataset {self.dataset_id!r}: class folders {_short(bad)} under {self.root} are "
                                 f"not ImageNet synsets ({self.field('class_order')} = 'synsets')")
            return {c: index[c] for c in classes}
        if order == "numeric":
            bad = [c for c in classes if _parse_int(c) is None or not c.strip().lstrip("-").isdigit()]
            if bad:
                raise ValueError(f"dataset {self.dataset_id!r}: class folders {_short(bad)} under {self.root} are "
                                 f"not numbers ({self.field('class_order')} = 'numeric')")
            return {c: res(int(c)) for c in classes}
        if order == "sorted":
            if len(classes) > int(self.entry["num_labels"]):
                raise ValueError(f"dataset {self.dataset_id!r}: {len(classes)} class folders under {self.root}, "
                                 f"more than num_labels = {self.entry['num_labels']}")
            return {c: i for i, c in enumerate(sorted(classes))}
        if order == "names":
            return {c: res(c) for c in classes}
        raise ValueError(f"{self.field('class_order')}: unknown class order {order!r}")

    def _scan(self):
        return _scan_class_folders(self, self.root, self.layout["class_order"],
                                   basename_ids=self.layout.get("sample_id", "relative") == "basename")

    def class_names(self) -> list[str] | None:
        if self.entry["label_space"] == "own" and self.layout["class_order"] == "sorted":
            return _list_dirs(self.root)
        return super().class_names()


def _scan_class_folders(reader: _Reader, root: Path, order: str, basename_ids: bool):
    classes = _list_dirs(root)
    mapping = ClassFoldersReader._class_map(reader, classes, order)  # type: ignore[arg-type]
    ids: list[str] = []
    labels: list[int] = []
    locs: list[str] = []
    for c in classes:
        lab = mapping[c]
        for f in _list_images(root / c, reader.exts):
            rel = f"{c}/{f}"
            ids.append(f if basename_ids else rel)
            labels.append(lab)
            locs.append(rel)
    return ids, labels, {}, locs


class FlatFolderReader(_Reader):
    """ImageNet val: <path>/<image> + a labels file (LOC_val_solution.csv, "<file> <label>" lines, or
    one label per line in file-name order); with ``class_folders_fallback``, also <path>/<synset>/<image>.
    sample_id = the file name in both layouts."""

    kind = "flat-folder"

    def _probe(self) -> None:
        self._flat = bool(_list_images(self.root, self.exts))
        if self._flat:
            self._labels_path = self._find_labels_file()
        elif self.layout.get("class_folders_fallback") and _list_dirs(self.root):
            self._labels_path = None
            self.notes.append("read as class folders (<synset>/<image>); sample_id = file name")
        else:
            raise self._missing(self.root, "path", "holds no images" + (
                " and no class folders" if self.layout.get("class_folders_fallback") else ""))

    def _find_labels_file(self) -> Path:
        cands = self.layout["labels_file"]
        cands = [cands] if isinstance(cands, str) else list(cands)
        for c in cands:
            p = Path(c).expanduser()
            p = p if p.is_absolute() else self.root / p
            if p.is_file():
                return p.resolve()
        tried = ", ".join(str((self.root / c).resolve()) for c in cands)
        raise FileNotFoundError(
            f"dataset {self.dataset_id!r}: no labels file for the images in {self.root}; tried {tried} "
            f"({self.field('labels_file')}, relative to the dataset folder)")

    def _scan(self):
        if not self._flat:
            return _scan_class_folders(self, self.root, "synsets", basename_ids=True)
        files = _list_images(self.root, self.exts)
        by_name = self._read_labels(self._labels_path, files)
        labels: list[int] = []
        missing: list[str] = []
        for f in files:
            stem = f.rsplit(".", 1)[0]
            lab = by_name.get(f, by_name.get(stem))
            if lab is None:
                missing.append(f)
                lab = -1
            labels.append(lab)
        if missing:
            raise ValueError(f"dataset {self.dataset_id!r}: {self._labels_path} has no label for {len(missing)} of "
                             f"{len(files)} images, e.g. {_short(missing, 3)}")
        return list(files), labels, {}, list(files)

    def _read_labels(self, path: Path, files: list[str]) -> dict[str, int]:
        res = _Resolver(self.entry, f"{path}")
        text = path.read_text(encoding="utf-8-sig")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        fmt = self.layout.get("labels_format", "auto")
        head = lines[0].lower() if lines else ""
        if fmt == "loc-csv" or (fmt == "auto" and "imageid" in head and "predictionstring" in head):
            out: dict[str, int] = {}
            for row in csv.DictReader(io.StringIO(text)):
                keys = {k.lower(): v for k, v in row.items() if k}
                img, pred = keys.get("imageid"), keys.get("predictionstring")
                if not img or not pred:
                    continue
                out[img.strip()] = res(pred.split()[0])
            return out
        rows = [re.split(r"[\s,]+", ln) for ln in lines]
        if rows and len(rows[0]) >= 2 and _parse_int(rows[0][-1]) is None and not _SYNSET.match(rows[0][-1]):
            rows = rows[1:]  # a header line
        if rows and all(len(r) >= 2 for r in rows):
            pairs = [(posixpath.basename(r[0]), r[-1]) for r in rows]
            self._refuse_devkit([t for _, t in pairs], path)
            return {name: res(tok) for name, tok in pairs}
        if rows and all(len(r) == 1 for r in rows):
            toks = [r[0] for r in rows]
            self._refuse_devkit(toks, path)
            numbered = [re.search(r"_(\d{8})\.", f) for f in files]
            if all(numbered):  # ILSVRC2012_val_%08d: line k belongs to image k
                out = {}
                for f, m in zip(files, numbered):
                    k = int(m.group(1))
                    if not 1 <= k <= len(toks):
                        raise ValueError(f"dataset {self.dataset_id!r}: {path} has {len(toks)} labels, none for {f}")
                    out[f] = res(toks[k - 1])
                return out
            if len(toks) != len(files):
                raise ValueError(f"dataset {self.dataset_id!r}: {path} lists {len(toks)} labels for {len(files)} "
                                 "images (one label per line must match the sorted file names)")
            return {f: res(t) for f, t in zip(files, toks)}
        raise ValueError(f"dataset {self.dataset_id!r}: cannot read {path}: expected LOC_val_solution.csv, "
                         "'<file> <label>' lines or one label per line")

    def _refuse_devkit(self, tokens: list[str], path: Path) -> None:
        ints = [_parse_int(t) for t in tokens]
        if ints and all(v is not None for v in ints) and max(ints) == int(self.entry["num_labels"]) and min(ints) >= 1:
            raise ValueError(
                f"dataset {self.dataset_id!r}: {path} looks like the devkit's ILSVRC2012_validation_ground_truth.txt "
                "(ILSVRC2012 ids 1..1000, not indices of the sorted synsets); use LOC_val_solution.csv, a txt of "
                "0-based sorted-synset indices or synset ids, or the class-folder layout")


class ImageNetCReader(_Reader):
    """<path>/<corruption>/<severity>/<synset>/<image>; columns corruption (str), severity (int8)."""

    kind = "imagenet-c"
    DEFAULT_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                           "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                           "elastic_transform", "pixelate", "jpeg_compression")

    def _cells(self) -> list[tuple[str, int]]:
        cor = self.layout.get("corruptions") or list(self.DEFAULT_CORRUPTIONS)
        sev = self.layout.get("severities") or [1, 2, 3, 4, 5]
        return [(c, int(s)) for c in cor for s in sev]

    def _probe(self) -> None:
        missing = [f"{c}/{s}" for c, s in self._cells() if not (self.root / c / str(s)).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"dataset {self.dataset_id!r}: {len(missing)} corruption/severity folders missing under {self.root}: "
                f"{_short(missing)} ({self.field('corruptions')} / {self.field('severities')}; expected "
                f"<path>/<corruption>/<severity>/<synset>/<image>); obtain it from: {self.entry.get('source', '?')}")

    def _scan(self):
        index = {s: i for i, s in enumerate(M.imagenet_synsets())}
        ids: list[str] = []
        labels: list[int] = []
        cor_col: list[str] = []
        sev_col: list[int] = []
        for c, s in self._cells():
            base = self.root / c / str(s)
            for syn in _list_dirs(base):
                if syn not in index:
                    raise ValueError(f"dataset {self.dataset_id!r}: {base / syn} is not an ImageNet synset folder")
                lab = index[syn]
                for f in _list_images(base / syn, self.exts):
                    ids.append(f"{c}/{s}/{syn}/{f}")
                    labels.append(lab)
                    cor_col.append(c)
                    sev_col.append(s)
        return ids, labels, {"corruption": cor_col, "severity": sev_col}, ids


class CueConflictReader(_Reader):
    """<path>/<shape>/<shape><i>-<texture><j>.png: label = shape index, texture_label = texture index,
    both in the 16 categories of cue_conflict_16.json (alphabetical)."""

    kind = "cue-conflict"
    NAME = re.compile(r"^([a-z]+)(\d+)-([a-z]+)(\d+)\.png$", re.IGNORECASE)

    def _categories(self) -> list[str]:
        name = self.layout.get("categories_file", "cue_conflict_16.json")
        if name == "cue_conflict_16.json":
            return list(M.cue_conflict_categories())
        return list(json.loads(M.label_file(name).read_text()))

    def _probe(self) -> None:
        if not _list_dirs(self.root):
            raise self._missing(self.root, "path", "has no shape folders (expected <path>/<shape>/<file>.png)")

    def _scan(self):
        cats = {c: i for i, c in enumerate(self._categories())}
        ids: list[str] = []
        labels: list[int] = []
        tex: list[int] = []
        for shape in _list_dirs(self.root):
            if shape not in cats:
                raise ValueError(f"dataset {self.dataset_id!r}: folder {self.root / shape} is not one of the 16 "
                                 f"categories ({', '.join(cats)})")
            for f in _list_images(self.root / shape, self.exts):
                m = self.NAME.match(f)
                if not m:
                    raise ValueError(f"dataset {self.dataset_id!r}: {self.root / shape / f}: file name is not "
                                     "<shape><i>-<texture><j>.png")
                s, t = m.group(1).lower(), m.group(3).lower()
                if s != shape or t not in cats:
                    raise ValueError(f"dataset {self.dataset_id!r}: {self.root / shape / f}: shape {s!r} / texture "
                                     f"{t!r} do not match the folder {shape!r} and the 16 categories")
                ids.append(f"{shape}/{f}")
                labels.append(cats[shape])
                tex.append(cats[t])
        return ids, labels, {"texture_label": tex}, ids


class PugImageNetReader(_Reader):
    """PUG: ImageNet: <path>/<Factor>/<Class>/<image>; label = index of Class in the sorted PUG classes;
    column factor = the factor folder; other factor columns from the optional metadata CSV."""

    kind = "pug-imagenet"
    DEFAULT_FACTORS = ("Worlds", "Camera_Pitch", "Camera_Yaw", "Camera_Roll", "Object_Pitch", "Object_Yaw",
                       "Object_Roll", "Object_Scale", "Object_Texture", "Scene_Light")

    def _factors(self) -> list[str]:
        return list(self.layout.get("factors") or self.DEFAULT_FACTORS)

    def _probe(self) -> None:
        missing = [f for f in self._factors() if not (self.root / f).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"dataset {self.dataset_id!r}: factor folders {_short(missing)} missing under {self.root} "
                f"({self.field('factors')}; expected <path>/<Factor>/<Class>/<image>); obtain it from: "
                f"{self.entry.get('source', '?')}")

    def _class_index(self) -> dict[str, int]:
        classes = M.pug_imagenet_classes()
        index: dict[str, int] = {}
        for i, c in enumerate(classes):
            index[c] = i
        for i, c in enumerate(classes):
            index.setdefault(c.lower(), i)
            index.setdefault(re.sub(r"[\s_\-]", "", c.lower()), i)
        return index

    def _scan(self):
        index = self._class_index()
        declared = self.entry.get("columns") or {}
        meta_cols: dict[str, str] = dict(self.layout.get("metadata_columns") or {})
        meta = self._read_metadata(meta_cols)
        ids: list[str] = []
        labels: list[int] = []
        cols: dict[str, list] = {"factor": []}
        for out in meta_cols:
            cols[out] = []
        unmatched = 0
        for factor in self._factors():
            for cls in _list_dirs(self.root / factor):
                lab = index.get(cls, index.get(cls.lower(), index.get(re.sub(r"[\s_\-]", "", cls.lower()))))
                if lab is None:
                    raise ValueError(f"dataset {self.dataset_id!r}: class folder {self.root / factor / cls} is not a "
                                     "PUG-ImageNet class (keys of pug_imagenet_class_to_imagenet_idx.json)")
                for f in _list_images(self.root / factor / cls, self.exts):
                    rel = f"{factor}/{cls}/{f}"
                    ids.append(rel)
                    labels.append(lab)
                    cols["factor"].append(factor)
                    row = None
                    if meta is not None:
                        row = meta.get(rel) or meta.get(f"{cls}/{f}") or meta.get(f)
                        unmatched += row is None
                    for out, src in meta_cols.items():
                        cols[out].append(self._value(row, src, out, declared.get(out, "str")))
        if meta is not None and unmatched:
            self.notes.append(f"{unmatched} images have no row in the metadata CSV; their factor values are empty")
            warnings.warn(f"pug-imagenet: {unmatched} of {len(ids)} images have no row in "
                          f"{self.root / self.layout.get('metadata_file', '')}", stacklevel=2)
        return ids, labels, {k: v for k, v in cols.items()}, ids

    def _read_metadata(self, meta_cols: dict[str, str]) -> dict[str, dict] | None:
        name = self.layout.get("metadata_file")
        if not name:
            return None
        p = self.root / name
        if not p.is_file():
            if meta_cols:
                self.notes.append(f"no metadata CSV {p}: factor value columns left empty")
                warnings.warn(f"pug-imagenet: {p} not found; columns {', '.join(meta_cols)} are left empty "
                              f"({self.field('metadata_file')})", stacklevel=3)
            return None
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            return {}
        keycol = next((k for k in rows[0] if k and k.strip().lower() in ("filename", "file_name", "file", "path")),
                      None)
        if keycol is None:
            raise ValueError(f"dataset {self.dataset_id!r}: {p} has no filename column (columns: {list(rows[0])})")
        out: dict[str, dict] = {}
        seen_base: dict[str, int] = {}
        for r in rows:
            key = str(r[keycol]).strip().replace("\\", "/").lstrip("./")
            out[key] = r
            base = posixpath.basename(key)
            seen_base[base] = seen_base.get(base, 0) + 1
            parts = key.split("/")
            if len(parts) >= 2:
                out.setdefault("/".join(parts[-2:]), r)
        # file-name keys only where the name is unique in the CSV
        for r in rows:
            key = str(r[keycol]).strip().replace("\\", "/").lstrip("./")
            base = posixpath.basename(key)
            if seen_base[base] == 1:
                out.setdefault(base, r)
        missing = [src for src in meta_cols.values() if src not in rows[0]]
        if missing:
            raise ValueError(f"dataset {self.dataset_id!r}: {p} lacks columns {missing} named in "
                             f"{self.field('metadata_columns')} (it has {list(rows[0])})")
        return out

    def _value(self, row: dict | None, src: str, out: str, dtype: str):
        raw = None if row is None else row.get(src)
        if str(dtype).startswith("float"):
            if raw is None or str(raw).strip() == "":
                return float("nan")
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{self.manifest_path}: datasets.{self.dataset_id}.columns.{out}: CSV value {raw!r} "
                                 f"of {src!r} is not a number; declare the column as str") from None
        return "" if raw is None else str(raw)


class FileListReader(_Reader):
    """Lists of samples in CSV, Parquet or whitespace txt files (``files``: a glob, a list of globs, or
    a mapping split -> glob, which fills column ``split``). Images by path (``path_column``, relative
    to ``image_root`` or the list file's folder) or embedded bytes (``image_column``; Parquet only:
    binary or the Hugging Face {bytes, path} struct). ``label_list: true`` reads label lists into
    ``label_set`` (label = the first entry)."""

    kind = "file-list"

    def _file_groups(self) -> list[tuple[str | None, list[Path]]]:
        spec = self.layout["files"]
        items = list(spec.items()) if isinstance(spec, dict) else [(None, g) for g in
                                                                     ([spec] if isinstance(spec, str) else spec)]
        groups = []
        for split, pattern in items:
            found = sorted(p for p in self.root.glob(pattern) if p.is_file())
            groups.append((split, found))
        return groups

    def _probe(self) -> None:
        groups = self._file_groups()
        empty = [str(self.root / str(self.layout["files"][s] if isinstance(self.layout["files"], dict) else
                                     self.layout["files"])) for s, fs in groups if not fs]
        if isinstance(self.layout["files"], dict) and empty:
            raise self._missing(self.root, "files", f"lacks list files {_short(empty)}")
        if not any(fs for _, fs in groups):
            raise self._missing(self.root, "files", "has no list files matching")

    @staticmethod
    def _format(p: Path, fmt: str) -> str:
        if fmt != "auto":
            return fmt
        suf = p.suffix.lower()
        if suf in (".parquet", ".pq"):
            return "parquet"
        if suf in (".csv", ".tsv"):
            return "csv"
        return "txt"

    def _scan(self):
        lay = self.layout
        res = _Resolver(self.entry, self.field("label_column"))
        embedded = "image_column" in lay
        label_list = bool(lay.get("label_list"))
        set_col = lay.get("label_set_column", "label_set")
        extra: dict[str, str] = dict(lay.get("extra_columns") or {})
        groups = self._file_groups()
        has_split = isinstance(lay["files"], dict)
        ids: list[str] = []
        labels: list[int] = []
        locs: list = []
        cols: dict[str, list] = {k: [] for k in extra}
        if label_list:
            cols[set_col] = []
        if has_split:
            cols["split"] = []
        self._parquet_files: list[str] = []
        for split, files in groups:
            for p in files:
                fmt = self._format(p, lay.get("format", "auto"))
                rel_file = p.relative_to(self.root).as_posix()
                if fmt == "parquet":
                    rows = self._parquet_rows(p, embedded, extra, label_list)
                elif fmt == "csv":
                    rows = self._csv_rows(p, extra, label_list)
                else:
                    rows = self._txt_rows(p)
                if embedded and fmt != "parquet":
                    raise ValueError(f"{self.field('image_column')}: embedded image bytes are read from Parquet only "
                                     f"({p} is {fmt})")
                img_root = self._image_root(p)
                for r in rows:
                    if embedded:
                        ids.append(f"{rel_file}#{r['row']:06d}")
                        locs.append(("pq", len(self._parquet_files), r["rg"], r["rg_row"]))
                    else:
                        path = str(r["path"]).replace("\\", "/")
                        full = Path(os.path.normpath(path if os.path.isabs(path) else img_root / path))
                        rel = os.path.relpath(full, self.root)
                        sid = Path(rel).as_posix() if not rel.startswith("..") else path
                        ids.append(sid)
                        locs.append(str(full))
                    if label_list:
                        lst = [res(t) for t in _parse_label_list(r.get("label"))]
                        cols[set_col].append(lst)
                        labels.append(lst[0] if lst else -1)
                    else:
                        lab = r.get("label")
                        labels.append(-1 if lab is None or str(lab).strip() in ("", "-1") else res(lab))
                    for out in extra:
                        cols[out].append(r["extra"][out])
                    if has_split:
                        cols["split"].append(split)
                if fmt == "parquet":
                    self._parquet_files.append(str(p))
        return ids, labels, cols, locs

    def _image_root(self, list_file: Path) -> Path:
        ir = self.layout.get("image_root")
        if ir is None:
            return list_file.parent
        p = Path(ir).expanduser()
        return p if p.is_absolute() else self.root / p

    def _txt_rows(self, p: Path):
        out = []
        for n, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines()):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            if len(parts) == 2 and _parse_int(parts[1]) is None and not _SYNSET.match(parts[1]):
                parts = [line]  # a path with a space and no label
            out.append({"path": parts[0], "label": parts[1] if len(parts) == 2 else None, "extra": {}})
        return out

    def _csv_rows(self, p: Path, extra: dict[str, str], label_list: bool):
        lay = self.layout
        delim = lay.get("delimiter") or ("\t" if p.suffix.lower() == ".tsv" else ",")
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=delim)
            header = reader.fieldnames or []
            pcol = lay.get("path_column") or next(
                (c for c in ("path", "filename", "file_name", "file", "image_path", "image") if c in header), None)
            lcol = lay.get("label_column", "label")
            if pcol not in header:
                raise ValueError(f"dataset {self.dataset_id!r}: {p} has no path column {pcol!r} "
                                 f"({self.field('path_column')}; columns: {header})")
            missing = [c for c in [*extra.values()] if c not in header]
            if missing:
                raise ValueError(f"dataset {self.dataset_id!r}: {p} lacks columns {missing} "
                                 f"({self.field('extra_columns')}; columns: {header})")
            rows = []
            for r in reader:
                rows.append({"path": r[pcol], "label": r.get(lcol) if lcol in header else None,
                             "extra": {o: r[s] for o, s in extra.items()}})
        return rows

    def _parquet_rows(self, p: Path, embedded: bool, extra: dict[str, str], label_list: bool):
        import pyarrow.parquet as pq

        lay = self.layout
        pf = pq.ParquetFile(p)
        names = pf.schema_arrow.names
        lcol = lay.get("label_column", "label")
        want = [c for c in [lcol, *extra.values()] if c in names]
        if not embedded:
            pcol = lay.get("path_column") or next((c for c in ("path", "filename", "file_name", "file", "image_path")
                                                   if c in names), None)
            if pcol not in names:
                raise ValueError(f"dataset {self.dataset_id!r}: {p} has no path column {pcol!r} "
                                 f"({self.field('path_column')}; columns: {names})")
            want.append(pcol)
        elif lay["image_column"] not in names:
            raise ValueError(f"dataset {self.dataset_id!r}: {p} has no image column {lay['image_column']!r} "
                             f"({self.field('image_column')}; columns: {names})")
        missing = [c for c in extra.values() if c not in names]
        if missing:
            raise ValueError(f"dataset {self.dataset_id!r}: {p} lacks columns {missing} "
                             f"({self.field('extra_columns')}; columns: {names})")
        table = pf.read(columns=sorted(set(want))) if want else None
        data = {c: table.column(c).to_pylist() for c in set(want)} if table is not None else {}
        rows = []
        row = 0
        for rg in range(pf.num_row_groups):
            for j in range(pf.metadata.row_group(rg).num_rows):
                r = {"row": row, "rg": rg, "rg_row": j, "label": data[lcol][row] if lcol in data else None,
                     "extra": {o: data[s][row] for o, s in extra.items()}}
                if not embedded:
                    r["path"] = data[pcol][row]
                rows.append(r)
                row += 1
        return rows

    def _read_loc(self, loc) -> bytes:
        if isinstance(loc, str):
            with open(loc, "rb") as f:
                return f.read()
        _, fi, rg, j = loc
        cache = self._handle_cache()
        key = (fi, rg)
        col = cache.get(("rg", key))
        if col is None:
            import pyarrow.parquet as pq

            pf = cache.get(("pf", fi))
            if pf is None:
                pf = cache[("pf", fi)] = pq.ParquetFile(self._parquet_files[fi])
            for k in [k for k in cache if k[0] == "rg"]:  # keep one row group per file in memory
                if k[1][0] == fi:
                    del cache[k]
            col = pf.read_row_group(rg, columns=[self.layout["image_column"]]).column(0)
            cache[("rg", key)] = col
        v = col[j].as_py()
        if isinstance(v, dict):
            v = v.get("bytes")
        if v is None:
            return b""
        return bytes(v)


class WebDatasetReader(_Reader):
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
            hint = f" (found compressed {_short(packed, 2)}: decompress them, random access needs plain tar)" if packed else ""
            raise self._missing(self.root, "shards", "has no tar shards matching" + hint)

    def _split_from_path(self, rel: str) -> str:
        parts = rel.split("/")
        if len(parts) > 1:
            return parts[0]
        stem = parts[0][: -len(".tar")] if parts[0].endswith(".tar") else parts[0]
        m = re.match(r"^(.+?)(?:[-_.]\d+)?$", stem)
        return m.group(1) if m else stem

    def _scan(self):
        lay = self.layout
        split_from = lay.get("split_from", "path") if "split" in (self.entry.get("columns") or {}) else "none"
        label_from = lay.get("label_from", "cls")
        res = _Resolver(self.entry, self.field("label_from"))
        ids: list[str] = []
        labels: list[int] = []
        locs: list = []
        splits: list[str] = []
        self._shard_files = []
        img_exts = [e.lstrip(".") for e in self.exts]
        for si, shard in enumerate(self._shards()):
            rel = shard.relative_to(self.root).as_posix()
            self._shard_files.append(str(shard))
            groups: dict[str, dict[str, tuple[int, int]]] = {}
            order: list[str] = []
            with open(shard, "rb") as fh:
                try:
                    members = tarfile.open(fileobj=fh, mode="r:").getmembers()
                except tarfile.ReadError as e:
                    raise ValueError(f"dataset {self.dataset_id!r}: {shard} is not a readable uncompressed tar: {e}") from None
                for m in members:
                    if not m.isfile():
                        continue
                    d, b = posixpath.split(m.name)
                    if b.startswith("."):
                        continue
                    stem, _, ext = b.partition(".")
                    key = f"{d}/{stem}" if d else stem
                    if key not in groups:
                        groups[key] = {}
                        order.append(key)
                    groups[key][ext.lower()] = (m.offset_data, m.size)
                for key in order:
                    g = groups[key]
                    img = next((e for e in img_exts if e in g), None)
                    if img is None:
                        continue
                    meta = None
                    if "json" in g and (label_from == "json" or split_from == "json"):
                        fh.seek(g["json"][0])
                        meta = json.loads(fh.read(g["json"][1]).decode("utf-8"))
                    if label_from == "cls":
                        if "cls" not in g:
                            raise ValueError(f"dataset {self.dataset_id!r}: {shard}: sample {key!r} has no .cls label "
                                             f"({self.field('label_from')} = 'cls')")
                        fh.seek(g["cls"][0])
                        token = fh.read(g["cls"][1]).decode("utf-8").strip()
                    else:
                        fld = lay.get("label_field", "label")
                        if meta is None or fld not in meta:
                            raise ValueError(f"dataset {self.dataset_id!r}: {shard}: sample {key!r} has no json field "
                                             f"{fld!r} ({self.field('label_field')})")
                        token = meta[fld]
                    labels.append(res(token))
                    ids.append(f"{rel}/{key}")
                    locs.append((si, *g[img]))
                    if split_from == "path":
                        splits.append(self._split_from_path(rel))
                    elif split_from == "json":
                        fld = lay.get("split_field", "split")
                        if meta is None or fld not in meta:
                            raise ValueError(f"dataset {self.dataset_id!r}: {shard}: sample {key!r} has no json field "
                                             f"{fld!r} ({self.field('split_field')})")
                        splits.append(str(meta[fld]))
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

    def _read_loc(self, loc) -> bytes:
        si, offset, size = loc
        cache = self._handle_cache()
        fh = cache.get(si)
        if fh is None:
            if len(cache) >= 16:
                old = next(iter(cache))
                cache.pop(old).close()
            fh = cache[si] = open(self._shard_files[si], "rb")
        fh.seek(offset)
        return fh.read(size)

    def class_names(self) -> list[str] | None:
        if self.entry["label_space"] == "own":
            p = self.root / self.layout.get("classnames_file", "classnames.txt")
            return [x.strip() for x in p.read_text().splitlines() if x.strip()] if p.is_file() else None
        return super().class_names()


READERS: dict[str, type[_Reader]] = {
    "class-folders": ClassFoldersReader,
    "flat-folder": FlatFolderReader,
    "file-list": FileListReader,
    "webdataset": WebDatasetReader,
    "imagenet-c": ImageNetCReader,
    "cue-conflict": CueConflictReader,
    "pug-imagenet": PugImageNetReader,
}


def open_reader(dataset_id: str, entry: dict, data_root: str | Path, *,
                manifest_path: str | Path | None = None) -> _Reader:
    """The reader for a resolved manifest entry: its layout, else the first of its ``alternatives``
    found under ``data_root``. FileNotFoundError names every path tried and the manifest field."""
    layout = entry["layout"]
    tries = [("layout", {k: v for k, v in layout.items() if k != "alternatives"})]
    tries += [(f"layout.alternatives[{i}]", alt) for i, alt in enumerate(layout.get("alternatives") or [])]
    errors: list[str] = []
    for where, lay in tries:
        cls = READERS.get(lay.get("kind"))
        if cls is None:
            raise ValueError(f"{manifest_path or 'data_manifest.yaml'}: datasets.{dataset_id}.{where}.kind: "
                             f"unknown layout kind {lay.get('kind')!r}; readers exist for {', '.join(READERS)}")
        try:
            return cls(dataset_id, entry, lay, data_root, where=where, manifest_path=manifest_path)
        except FileNotFoundError as e:
            errors.append(str(e))
    if len(errors) == 1:
        raise FileNotFoundError(errors[0])
    raise FileNotFoundError(f"dataset {dataset_id!r}: none of its {len(errors)} layouts was found:\n  - "
                            + "\n  - ".join(errors))
