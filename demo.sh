#!/usr/bin/env bash
# The whole product offline on a CPU, in two parts:
# 1. random weights: extract the demo suite (tiny random-weight models over real cue-conflict images and
#    synthetic ImageNet-val-like images), then analyse that store -> out/report (its numbers mean nothing);
# 2. real models: import published per-image predictions (ImageNet-X's ResNet-50 and ViT-B/16 on ImageNet val,
#    ten human observers on cue-conflict; bundled in analyze/published with their licenses), then analyse
#    them -> out/report-published (real numbers; no GPU and no images needed).
# Two stores: the demo's ImageNet val is 64 synthetic images, the published predictions cover the real 50,000.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
out="${1:-out}"
extract run --suite demo --store "$out/demo.zarr"
extract verify "$out/demo.zarr"
analyze report "$out/demo.zarr" --out "$out/report"
published="$(python -c 'import analyze, pathlib; print(pathlib.Path(analyze.__file__).parent / "published")')"
analyze import "$out/published.zarr" "$published"/imagenet-x/*.csv.gz "$published"/model-vs-human/*.csv.gz
analyze report "$out/published.zarr" --out "$out/report-published" --pairs ResNet50:ViT
echo "Random-weight models (the report shows its form; its numbers say nothing about real models): $out/report/report.md"
echo "Real models (published predictions of ResNet-50, ViT-B/16 and ten human observers): $out/report-published/report.md"
