#!/usr/bin/env bash
# Builds the Rust slice from Debian's crate packages and runs compare.py against the
# compiled build of pitlane (scripts/test.sh's .venv must exist). Needs root for
# apt-get, and cargo (rustup's, or Debian's `cargo` package).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librust-pyo3-dev librust-serde-dev \
  librust-serde-derive-dev librust-serde-json-dev librust-chrono-dev \
  librust-blake2b-simd-dev librust-base64-dev >/dev/null
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
(cd "$here" && PYO3_PYTHON="$root/.venv/bin/python" CARGO_TARGET_DIR="$out/target" \
  cargo build --release --quiet)
cp "$out/target/release/libnative_slice.so" "$out/native_slice.so"
site="$("$root/scripts/compiled.sh")"
PYTHONPATH="$site:$out" "$root/.venv/bin/python" "$here/compare.py" "$@"
