#!/usr/bin/env bash
# Headless Chromium for tests/test_report_html.py (report.html in a browser): Debian's `chromium` package,
# installed when missing on a Debian-like machine run as root (CI's clean machine). Bounded and quiet: when
# it cannot be had, the browser tests skip and say why. CHROMIUM=<binary> uses another browser;
# BEYOND_NO_BROWSER_INSTALL=1 skips the attempt.
set -uo pipefail
if [ -n "${CHROMIUM:-}" ] || [ -n "${BEYOND_NO_BROWSER_INSTALL:-}" ] || command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
install_chromium() { timeout 600 apt-get install -y -qq chromium >/dev/null 2>&1; }
# The package lists of a fresh image may be empty or stale: refresh them only when the install fails.
if ! install_chromium && ! { timeout 180 apt-get update -qq >/dev/null 2>&1 && install_chromium; }; then
  echo "note: could not install chromium (apt-get); the report.html browser tests will skip" >&2
fi
exit 0
