#!/usr/bin/env bash
# Render a pfsync reconciliation report in headless Chromium as an auditor's browser shows it: a PNG next to
# it, and the page's text as Chromium parsed it (<report>.dom.html, from --dump-dom). Installs Debian's
# chromium when missing. The flags are what root needs on a machine with no network (no sandbox, nothing that
# calls home), with one CSS pixel per screen pixel, as tests/it/report_browser.rs runs it.
# Usage: scripts/screenshot-report.sh report.html
set -euo pipefail
report="$(realpath "${1:?usage: $0 report.html}")"
if ! command -v chromium >/dev/null; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
out="${report%.html}.png"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
  --disable-component-update --disable-sync --hide-scrollbars --force-device-scale-factor=1
  --user-data-dir="$profile")
chromium "${flags[@]}" --window-size=1100,1600 --screenshot="$out" "file://$report" 2>/dev/null
chromium "${flags[@]}" --dump-dom "file://$report" 2>/dev/null >"${report%.html}.dom.html"
echo "$out"
