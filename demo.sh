#!/usr/bin/env bash
# The whole product offline on a CPU: extract the demo suite (tiny random-weight models over real
# cue-conflict images and synthetic ImageNet-val-like images), then analyse the store.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
out="${1:-out}"
extract run --suite demo --store "$out/demo.zarr"
extract verify "$out/demo.zarr"
analyze report "$out/demo.zarr" --out "$out/report"
echo "Open $out/report/report.md or $out/report/report.html"
