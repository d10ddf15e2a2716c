#!/usr/bin/env bash
# Runs every test: formatting and lints, the Rust unit and integration tests (release mode:
# the media tests encode real video), and the Python node tests once comfy_nodes has them.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh --deps-only

export VA_STATE_DIR="${VA_STATE_DIR:-$(mktemp -d)}"
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release 2>&1 | tee /tmp/vidax-cargo-test.log
grep -q "test result: ok" /tmp/vidax-cargo-test.log

if compgen -G "comfy_nodes/*/tests/test_*.py" >/dev/null; then
  python3 -m pytest -q comfy_nodes
fi
