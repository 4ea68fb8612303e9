"""Dataset readers: list a dataset's samples in a stable order and hand out encoded image bytes.

One reader per file layout of data_manifest.yaml (``layout.kind``), one module each:

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
Decoding is separate (`decode`: the image and the decoder's warnings) so a bad file becomes a clear
ImageDecodeError.

No torch at import; PIL is imported only by `decode`, numba only when a JPEG is checked, pyarrow only for
Parquet lists.
"""
from __future__ import annotations

from pathlib import Path

from schemas.registry import Registry, unknown_name

from .base import DatasetReader, Reader, SampleTable
from .class_folders import ClassFoldersReader
from .cue_conflict import CueConflictReader
from .decode import IMAGE_EXTENSIONS, DecodedImage, ImageDecodeError, decode, decode_image
from .file_list import FileListReader
from .flat_folder import FlatFolderReader
from .imagenet_c import ImageNetCReader
from .pug_imagenet import PugImageNetReader
from .webdataset import WebDatasetReader

__all__ = [
    "IMAGE_EXTENSIONS", "DecodedImage", "ImageDecodeError", "SampleTable", "DatasetReader", "Reader", "decode",
    "decode_image", "open_reader",
    "READERS", "ClassFoldersReader", "FlatFolderReader", "FileListReader", "WebDatasetReader", "ImageNetCReader",
    "CueConflictReader", "PugImageNetReader",
]

READERS: Registry[type[Reader]] = Registry("layout kind")
for _cls in (ClassFoldersReader, FlatFolderReader, FileListReader, WebDatasetReader, ImageNetCReader,
             CueConflictReader, PugImageNetReader):
    READERS.register(_cls.kind, _cls)
del _cls


def open_reader(dataset_id: str, entry: dict, data_root: str | Path, *,
                manifest_path: str | Path | None = None) -> Reader:
    """The reader for a resolved manifest entry: its layout, else the first of its ``alternatives``
    found under ``data_root``. FileNotFoundError names every path tried and the manifest field."""
    layout = entry["layout"]
    tries = [("layout", {k: v for k, v in layout.items() if k != "alternatives"})]
    tries += [(f"layout.alternatives[{i}]", alt) for i, alt in enumerate(layout.get("alternatives") or [])]
    errors: list[str] = []
    for where, lay in tries:
        kind = lay.get("kind")
        if kind not in READERS:
            raise unknown_name("layout kind", kind, READERS.names(),
                               where=f"{manifest_path or 'data_manifest.yaml'}: datasets.{dataset_id}.{where}.kind")
        try:
            return READERS.get(kind)(dataset_id, entry, lay, data_root, where=where, manifest_path=manifest_path)
        except FileNotFoundError as e:
            errors.append(str(e))
    if len(errors) == 1:
        raise FileNotFoundError(errors[0])
    raise FileNotFoundError(f"dataset {dataset_id!r}: none of its {len(errors)} layouts was found:\n  - "
                            + "\n  - ".join(errors))
