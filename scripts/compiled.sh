#!/usr/bin/env bash
# Builds pitlane with its hot path compiled by mypyc (setup.py) into DIR (default
# build/compiled), a directory to put first on PYTHONPATH, checks that pitlane then
# imports its compiled modules, and prints DIR. Needs .venv with the `compile` extra,
# which scripts/test.sh installs:
#   PYTHONPATH="$(scripts/compiled.sh)" .venv/bin/pitlane bench
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$(realpath -m "${1:-build/compiled}")"
rm -rf "$dir"
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
PITLANE_COMPILE=1 .venv/bin/python -m pip wheel -q --no-build-isolation --no-deps \
  -w "$wheels" . >&2
.venv/bin/python -m zipfile -e "$wheels"/pitlane-*.whl "$dir"
PYTHONPATH="$dir" .venv/bin/python -c \
  'from pitlane.compiled import build; assert build() == "compiled", build()'
echo "$dir"
