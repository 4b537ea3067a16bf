#!/usr/bin/env bash
# Installs pitlane with its embedded stack into .venv and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e '.[embedded]'
exec .venv/bin/pitlane demo "$@"
