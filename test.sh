#!/usr/bin/env bash
# The test suite: unit tests on fixture stores plus end-to-end extraction on CPU with tiny models.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
exec python -m pytest "$@"
