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

if compgen -G "comfy_nodes/*/tests/test_*.py" >/dev/null; then
  python3 -m pytest -q comfy_nodes
fi
echo "rust: ${passed} passed, ${failed} failed"
