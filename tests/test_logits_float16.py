"""float16 logits end to end: a manifest entry with ``logits_dtype: float16`` -> ``extract run`` writes float16,
the store validates, and ``analyze report``'s top-1 matches the float32 run's within float16 rounding."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("timm")

import zarr  # noqa: E402

from analyze.cli import main as analyze_main  # noqa: E402
from extract.cli import main as extract_main  # noqa: E402
from schemas import layout as L  # noqa: E402
from schemas.label_spaces import imagenet_synsets  # noqa: E402
from schemas.manifest import MANIFEST_PATH  # noqa: E402
from test_runner import make_imagenet_val  # noqa: E402

MODEL = "demo-convnext-sup"
N = 24


def extract(store, data, manifest) -> np.ndarray:
    """``extract run`` on CPU; the stored logits as written."""
    args = ["run", "--store", str(store), "--models", MODEL, "--datasets", "imagenet-val", "--data-root", str(data),
            "--manifest", str(manifest), "--device", "cpu", "--batch-size", "8", "--workers", "0", "--no-progress",
            "--allow-partial"]
    assert extract_main(args) == 0
    return zarr.open_group(str(store), mode="r")[f"imagenet-val/center/{MODEL}/{L.LOGITS}"][...]


def relabel(data, labels: np.ndarray) -> None:
    """Rewrite the dataset's LOC_val_solution.csv with these class indices."""
    synsets = imagenet_synsets()
    rows = ["ImageId,PredictionString"] + [f"ILSVRC2012_val_{i + 1:08d},{synsets[c]} 0 0 1 1" for i, c in enumerate(labels)]
    (data / "imagenet-val" / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")


def test_float16_logits_end_to_end(tmp_path, capsys):
    data = make_imagenet_val(tmp_path / "data", N)
    raw = yaml.safe_load(MANIFEST_PATH.read_text())
    assert "logits_dtype" not in raw["datasets"]["imagenet-val"]
    f32 = tmp_path / "float32.yaml"
    f32.write_text(yaml.safe_dump(raw, sort_keys=False))
    raw["datasets"]["imagenet-val"]["logits_dtype"] = "float16"
    f16 = tmp_path / "float16.yaml"
    f16.write_text(yaml.safe_dump(raw, sort_keys=False))

    # float32 first, to plant labels: every other image labelled with the float32 prediction, so top-1 is 1/2.
    logits32 = extract(tmp_path / "f32.zarr", data, f32)
    assert logits32.dtype == np.float32
    pred32 = logits32.argmax(axis=1)
    labels = np.where(np.arange(N) % 2 == 0, pred32, (pred32 + 1) % 1000)
    relabel(data, labels)
    top1_32 = float(np.mean(pred32 == labels))
    assert top1_32 == 0.5

    store = tmp_path / "f16.zarr"
    logits16 = extract(store, data, f16)
    assert logits16.dtype == np.float16
    assert zarr.open_group(str(store), mode="r")["imagenet-val"].attrs["manifest"]["logits_dtype"] == "float16"
    # The same model on the same images: the float32 logits rounded to the nearest float16.
    np.testing.assert_array_equal(logits16, logits32.astype(np.float16))

    assert analyze_main(["validate", str(store)]) == 0
    assert "0 errors, 0 warnings" in capsys.readouterr().out
    assert analyze_main(["report", str(store), "--out", str(tmp_path / "out"), "--studies", "robustness",
                         "--n-boot", "0", "--quiet"]) == 0
    import polars as pl

    results = pl.read_csv(tmp_path / "out" / "results.csv")
    top1_16 = results.filter((pl.col("dataset") == "imagenet-val") & (pl.col("metric") == "top1"))["value"].item()
    # Rounding moves each logit by at most half a float16 step: only rows whose two largest float32 logits lie
    # within one step of each other can change their argmax.
    top2 = np.sort(logits32.astype(np.float64), axis=1)[:, -2:]
    step = np.spacing(np.abs(logits32.max(axis=1)).astype(np.float16)).astype(np.float64)
    may_flip = int(np.sum(top2[:, 1] - top2[:, 0] <= step))
    assert abs(top1_16 - top1_32) <= may_flip / N
    # And exactly the top-1 of the stored float16 logits (numpy's argmax, first of ties).
    assert top1_16 == pytest.approx(float(np.mean(logits16.astype(np.float64).argmax(axis=1) == labels)), abs=1e-12)
