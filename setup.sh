#!/usr/bin/env bash
# vidax set-up: installs whatever is missing (Debian packages; idempotent), builds `va`,
# and renders the demo job from fixtures/demo without ComfyUI.
#   ./setup.sh              install + build + render the demo
#   ./setup.sh --deps-only  only install the system packages
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev
  ffmpeg            # ffprobe/ffmpeg CLIs: test oracle and bench/seed_pipeline.sh only
  python3 python3-venv
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: system packages present"
fi
[ "${1:-}" = "--deps-only" ] && exit 0

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install the Rust toolchain (https://rustup.rs) and re-run" >&2
  exit 1
fi
cargo build --release

export VA_STATE_DIR="${VA_STATE_DIR:-$PWD/.va}"
rm -rf workdir/demo
./target/release/va run fixtures/demo/job.json --workdir workdir/demo
./target/release/va verify workdir/demo/final.mp4
echo "setup: demo rendered to workdir/demo/final.mp4"
