#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install the project into it.
# Sourced by demo.sh and test.sh; installs from the project's own files only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BEYOND_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e "$root[extract,test]"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
