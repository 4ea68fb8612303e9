#!/usr/bin/env bash
# The test suite: unit tests on fixture stores plus end-to-end extraction on CPU with tiny models.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
bash scripts/browser.sh  # headless Chromium for the report.html test, when missing
exec python -m pytest "$@"
