#!/usr/bin/env bash
# Peak RSS of `va produce --no-comfyui` with a big start image (issue 12: under 500 MB for
# 8000x8000). Makes an 8000x8000 PNG (and the same as JPEG) with the ffmpeg CLI, runs the
# release binary under /usr/bin/time -v and prints "<file> <peak RSS MB> <wall s>"; exits 1
# when a peak is at or over the bound.
# Usage: bench/big_image_rss.sh [size=8000] [bound_mb=500]   (needs target/release/va)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
size="${1:-8000}"
bound="${2:-500}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
ffmpeg -v error -f lavfi -i "testsrc2=size=${size}x${size}" -frames:v 1 "$dir/big.png"
ffmpeg -v error -i "$dir/big.png" -q:v 3 "$dir/big.jpg"
ffmpeg -v error -f lavfi -i "sine=f=300:d=1" -ar 16000 -ac 1 "$dir/voice.wav"
status=0
for img in big.png big.jpg; do
  VA_STATE_DIR="$dir/state" /usr/bin/time -v "$repo/target/release/va" produce --no-comfyui \
    --audio "$dir/voice.wav" --start "$dir/$img" --workdir "$dir/wd-$img" \
    > /dev/null 2> "$dir/time-$img.txt" || { cat "$dir/time-$img.txt"; exit 1; }
  kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$dir/time-$img.txt")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$dir/time-$img.txt")
  mb=$((kb / 1024))
  echo "${size}x${size} $img peak RSS ${mb} MB wall ${wall}"
  [ "$mb" -lt "$bound" ] || status=1
done
exit $status
