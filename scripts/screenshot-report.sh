#!/usr/bin/env bash
# Render a pfsync reconciliation report in headless Chromium and save a PNG next to it, to check what an
# auditor sees. Installs Debian's chromium when missing. Usage: scripts/screenshot-report.sh report.html
set -euo pipefail
report="$(realpath "${1:?usage: $0 report.html}")"
if ! command -v chromium >/dev/null; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
out="${report%.html}.png"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --window-size=1100,1400 --screenshot="$out" "file://$report" 2>/dev/null
echo "$out"
