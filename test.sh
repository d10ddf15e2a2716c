#!/usr/bin/env bash
# Runs every test: formatting and lints, the Rust unit and integration tests (release mode:
# the media tests encode real video), and the Python node tests once comfy_nodes has them.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --deps-only

export VA_STATE_DIR="${VA_STATE_DIR:-$(mktemp -d)}"
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
log=$(mktemp)
cargo test --release --lib --bins --tests 2>&1 | tee "$log"
passed=$(grep -o "test result: [a-z]*\. [0-9]* passed; [0-9]* failed" "$log" | awk '{p+=$4; f+=$6} END {print p+0}')
failed=$(grep -o "test result: [a-z]*\. [0-9]* passed; [0-9]* failed" "$log" | awk '{p+=$4; f+=$6} END {print f+0}')

# The ComfyUI nodes' numpy core, in a venv of its own (no torch needed).
if compgen -G "comfy_nodes/*/tests/test_*.py" >/dev/null; then
  [ -x .venv-test/bin/python ] || python3 -m venv .venv-test
  .venv-test/bin/python -m pip install -q --disable-pip-version-check -r comfy_nodes/requirements-test.txt
  .venv-test/bin/python -m pytest -q comfy_nodes
fi
echo "rust: ${passed} passed, ${failed} failed"
