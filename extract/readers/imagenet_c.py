"""The imagenet-c layout: <path>/<corruption>/<severity>/<synset>/<image>.

No torch at import.
"""
from __future__ import annotations

from .base import Reader, Scan, list_dirs, list_images, short
from .labels import synset_index


class ImageNetCReader(Reader):
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
                f"{short(missing)} ({self.field('corruptions')} / {self.field('severities')}; expected "
                f"<path>/<corruption>/<severity>/<synset>/<image>); obtain it from: {self.entry.get('source', '?')}")

    def _scan(self) -> Scan:
        index = synset_index()
        ids: list[str] = []
        labels: list[int] = []
        cor_col: list[str] = []
        sev_col: list[int] = []
        for c, s in self._cells():
            base = self.root / c / str(s)
            for syn in list_dirs(base):
                if syn not in index:
                    raise ValueError(f"dataset {self.dataset_id!r}: {base / syn} is not an ImageNet synset folder")
                lab = index[syn]
                for f in list_images(base / syn, self.exts):
                    ids.append(f"{c}/{s}/{syn}/{f}")
                    labels.append(lab)
                    cor_col.append(c)
                    sev_col.append(s)
        return ids, labels, {"corruption": cor_col, "severity": sev_col}, ids
