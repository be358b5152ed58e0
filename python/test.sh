#!/usr/bin/env bash
# The Python package's tests: a fresh venv, the wheel built by maturin into the workspace's
# target directory (after `cargo test --workspace --release` only pyo3 and the binding crate
# compile), installed, then pytest. The tests compare with the `tquant` binary of the same
# target directory; under CI=true a missing tool fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
pyvenv="${TMPDIR:-/tmp}/tquant-py-venv"
wheels="${TMPDIR:-/tmp}/tquant-py-wheels"
rm -rf "$pyvenv" "$wheels"
python3 -m venv "$pyvenv"
"$pyvenv/bin/python" -m pip install -q --disable-pip-version-check 'maturin>=1.5,<2' pytest numpy ml_dtypes gguf
"$pyvenv/bin/maturin" build --release --strip -m python/Cargo.toml -o "$wheels"
"$pyvenv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$wheels"/tquant-*.whl
"$pyvenv/bin/python" -m pytest -q python/tests
