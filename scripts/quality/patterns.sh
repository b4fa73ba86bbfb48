#!/usr/bin/env bash
# Log pattern quality: grouping accuracy of `vitals logs fingerprint --parser raw` and of drain3
# (PyPI drain3, default TemplateMiner config) on the loghub 2k files, against their EventId
# ground truth. Both get the same input: the Content column of X_2k.log_structured.csv (the
# message without its header). Prints a table and exits 1 when vitals is less accurate than
# drain3 on any system, so CI can call it; exits 0 with "skipped" when the data is absent.
#
#   scripts/quality/patterns.sh [LOGHUB_DIR] [--system NAME]... [--markdown FILE]
#
# LOGHUB_DIR defaults to ../shared/data/loghub beside the repository. VITALS_BIN picks a
# vitals binary instead of building target/release/vitals. drain3 is used from python3 when
# importable, else installed into a venv under target/quality-venv (or with pip --user).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/../.." && pwd))

data="$root/../shared/data/loghub"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
  data=$1
  shift
fi
if [ ! -d "$data" ]; then
  echo "patterns: skipped: no ../shared/data (no loghub folder at $data)"
  exit 0
fi

DRAIN3_VERSION=0.9.11
py=python3
if ! python3 -c 'import drain3' 2>/dev/null; then
  venv="$root/target/quality-venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import drain3' 2>/dev/null; then
    echo "patterns: installing drain3==$DRAIN3_VERSION into $venv" >&2
    if python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q "drain3==$DRAIN3_VERSION" >&2; then
      :
    else
      echo "patterns: venv failed; trying pip install --user" >&2
      python3 -m pip install -q --user "drain3==$DRAIN3_VERSION" >&2
      venv=""
    fi
  fi
  if [ -n "$venv" ]; then
    py="$venv/bin/python"
  fi
fi

if [ -n "${VITALS_BIN:-}" ]; then
  bin=$VITALS_BIN
else
  (cd "$root" && cargo build --release --locked -q) >&2
  bin="$root/target/release/vitals"
fi

echo "patterns: $("$bin" --version 2>/dev/null | head -1); drain3 $("$py" -c 'import importlib.metadata as m; print(m.version("drain3"))'); data $data" >&2
exec "$py" "$here/patterns_eval.py" --vitals "$bin" --data "$data" "$@"
