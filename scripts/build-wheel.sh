#!/usr/bin/env bash
# Build the pfsync wheel: the release binary for Linux x86_64 against glibc 2.28 (manylinux_2_28), so it
# runs on Databricks Runtime 15.4 LTS (Ubuntu 22.04, glibc 2.35) and serverless whatever glibc this machine
# has, packed with the Python entry point in python/pfsync/. maturin builds it with zig as the linker
# (ziglang from PyPI), so no other toolchain is needed. Fails if the binary needs a GLIBC_ symbol version
# above 2.31.
#
#   scripts/build-wheel.sh                 # -> dist/pfsync-<version>-py3-none-manylinux_2_28_x86_64.whl
#   scripts/build-wheel.sh --out jobs/dist # where the Databricks bundle's artifact looks (jobs/databricks.yml)
#
# Environment: PFSYNC_BUILD_VENV (default ~/.cache/pfsync-build-venv), where maturin and zig are installed;
# CARGO_TARGET_DIR as for cargo. Prints the wheel's path last, alone on its line.
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    *) echo "usage: $0 [--out DIR]" >&2; exit 2 ;;
  esac
done

# Pinned: zig 0.16 broke `zig ar` for new archives (ring and aws-lc-sys build static libraries with it).
maturin_version=1.16.0
zig_version=0.15.2
max_glibc=2.31
compatibility=manylinux_2_28

venv="${PFSYNC_BUILD_VENV:-${HOME:-/root}/.cache/pfsync-build-venv}"
if ! "$venv/bin/maturin" --version 2>/dev/null | grep -qx "maturin $maturin_version" \
  || ! "$venv/bin/python" -m ziglang version 2>/dev/null | grep -qx "$zig_version"; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin==$maturin_version" "ziglang==$zig_version"
fi
export PATH="$venv/bin:$PATH"
command -v objdump >/dev/null || { echo "objdump (binutils) is needed for the GLIBC check" >&2; exit 1; }

mkdir -p "$out"
rm -f "$out"/pfsync-*.whl
start=$(date +%s)
# --zig links with `zig cc` against glibc 2.28's symbols; --compatibility tags the wheel accordingly.
# Features and stripping come from pyproject.toml ([tool.maturin]).
maturin build --locked --release --zig --compatibility "$compatibility" --out "$out" >&2
seconds=$(( $(date +%s) - start ))

wheels=("$out"/pfsync-*.whl)
[ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || { echo "expected one wheel in $out, found: ${wheels[*]}" >&2; exit 1; }
wheel="${wheels[0]}"

# The check that matters: the highest GLIBC_ version the binary itself asks the dynamic linker for.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 -m zipfile -e "$wheel" "$scratch"
binary="$(find "$scratch" -path '*.data/scripts/pfsync' -type f)"
[ -n "$binary" ] || { echo "no pfsync binary in the wheel's scripts" >&2; exit 1; }
highest="$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)"
[ -n "$highest" ] || { echo "no GLIBC_ symbol versions found in $binary" >&2; exit 1; }
if [ "$(printf '%s\n%s\n' "$highest" "$max_glibc" | sort -V | tail -n1)" != "$max_glibc" ]; then
  echo "FAIL: the binary needs GLIBC_$highest, above the GLIBC_$max_glibc allowed (Databricks runtimes)" >&2
  objdump -T "$binary" | grep "GLIBC_$highest" >&2
  exit 1
fi

size=$(stat -c %s "$wheel")
echo "built $wheel in ${seconds}s: $((size / 1024 / 1024)) MiB ($size bytes), binary $(stat -c %s "$binary") bytes," \
  "highest GLIBC_$highest (at most GLIBC_$max_glibc: ok)" >&2
echo "$wheel"
