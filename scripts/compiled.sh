#!/usr/bin/env bash
# Builds pitlane with its hot path compiled by mypyc (setup.py) into DIR (default
# build/compiled), a directory to put first on PYTHONPATH, checks that pitlane then
# imports its compiled modules, and prints DIR:
#   PYTHONPATH="$(scripts/compiled.sh)" .venv/bin/pitlane bench
# The build runs in a virtualenv of its own, .venv-compile, holding what the
# Dockerfile's build stage holds ('.[compile]' within constraints.txt), so that the
# tests, which run this, prove that step of the image too. The check runs in .venv,
# the development install (scripts/test.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$(realpath -m "${1:-build/compiled}")"
rm -rf "$dir"
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
python3 -m venv .venv-compile
.venv-compile/bin/python -m pip install -q -c constraints.txt '.[compile]' >&2
PITLANE_COMPILE=1 .venv-compile/bin/python -m pip wheel -q --no-build-isolation --no-deps \
  -w "$wheels" . >&2
.venv/bin/python -m zipfile -e "$wheels"/pitlane-*.whl "$dir"
PYTHONPATH="$dir" .venv/bin/python -c \
  'from pitlane.compiled import build; assert build() == "compiled", build()'
echo "$dir"
