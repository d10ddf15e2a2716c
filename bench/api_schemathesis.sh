#!/usr/bin/env bash
# Runs schemathesis (from PyPI, in a venv of its own) against a `va serve` on a loopback port
# with a sandbox config: the demo inputs as the root, a fake ComfyUI (started through the API
# first, so the ComfyUI routes answer), every check but positive_data_acceptance (random paths
# name no real files, so schema-valid jobs are refused with 400 by design).
# Usage: bench/api_schemathesis.sh [extra schemathesis args]   (needs target/release/va)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SCHEMATHESIS_VENV:-/tmp/va-schemathesis-venv}"
[ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis; }
dir="$(mktemp -d)"
mkdir -p "$dir/in" "$dir/comfy"
cp "$repo"/fixtures/demo/{voice.wav,face.png,end.png} "$dir/in/"
cp "$repo/fixtures/api/fake_comfyui.py" "$dir/comfy/main.py"
echo '{"assets": []}' > "$dir/assets.json"
comfy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key="schemathesis-$(date +%s%N)"
cat > "$dir/vidax.json" <<JSON
{"api_key": "$key", "port": 0, "roots": ["in"], "runs_root": "runs", "state_dir": "va-state",
 "workers": 1, "queue_limit": 4,
 "comfyui": {"url": "http://127.0.0.1:$comfy_port", "cwd": "comfy", "command": "python3",
             "args": ["main.py", "--port", "$comfy_port"]}}
JSON
cd "$dir"
VIDAX_ASSETS_CONFIG="$dir/assets.json" "$repo/target/release/va" serve --config vidax.json > serve.out 2> serve.err &
server=$!
comfy_pid=""
cleanup() {
  kill "$server" 2>/dev/null || true
  [ -n "$comfy_pid" ] && kill "$comfy_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening serve.out && break; sleep 0.1; done
base=$(sed -n 's/^va serve: listening on //p' serve.out)
comfy_pid=$(curl -s -X POST -H "X-API-Key: $key" "$base/comfyui/start" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("pid") or "")')
"$venv/bin/schemathesis" run "$base/openapi.json" -H "X-API-Key: $key" \
  --checks all --exclude-checks positive_data_acceptance -w 1 --request-timeout 30 --no-color "$@"
