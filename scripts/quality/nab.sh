#!/usr/bin/env bash
# Detector quality: `vitals backtest --nab` on the NAB folder in ../shared/data/nab (NAB v1.1
# rules, three profiles), and NAB's windowedGaussian reference through the same scorer. Prints
# the scores and exits 1 when the standard profile is below Twitter ADVec's 45.8 (the issue's
# minimum); exits 0 with "skipped" when the data is absent.
#
#   scripts/quality/nab.sh [NAB_DIR] [--param NAME=VALUE]...
#
# VITALS_BIN picks a vitals binary instead of building target/release/vitals.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))

data="$root/../shared/data/nab"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
  data=$1
  shift
fi
if [ ! -d "$data/data" ] || [ ! -f "$data/labels/combined_windows.json" ]; then
  echo "nab: skipped: no ../shared/data (no NAB folder at $data)"
  exit 0
fi

if [ -n "${VITALS_BIN:-}" ]; then
  bin=$VITALS_BIN
else
  (cd "$root" && cargo build --release --locked -q) >&2
  bin="$root/target/release/vitals"
fi

echo "nab: windowedGaussian reference (published: 37.1 / 18.8 / 45.4):"
"$bin" backtest --nab "$data" --detector windowed-gaussian | sed 's/^/  /'
echo "nab: vitals detector:"
out=$("$bin" backtest --nab "$data" "$@")
echo "$out" | sed 's/^/  /'
standard=$(echo "$out" | awk '$1 == "standard" { print $3 }')
if awk -v s="$standard" 'BEGIN { exit !(s + 0 < 45.8) }'; then
  echo "nab: FAIL: standard score $standard is below Twitter ADVec (45.8)"
  exit 1
fi
echo "nab: OK: standard score $standard (minimum 45.8, target 61.1)"
