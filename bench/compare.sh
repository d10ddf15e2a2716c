#!/usr/bin/env bash
# Paired comparison for docs/PERFORMANCE.md: `va bench` (full job vs encode floor, medians of
# RUNS paired runs) and the replaced tool's ffmpeg pipeline (bench/seed_pipeline.sh) on the
# same generated inputs (60 s speech-like audio, 854x480 start and end images).
#   bench/compare.sh [RUNS]        (default 5; needs the ffmpeg CLI for the seed side only)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
VA=${VA:-./target/release/va}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

"$VA" bench --runs "$RUNS" --dir "$DIR" --json > "$DIR/va.json"
seed=()
for _ in $(seq "$RUNS"); do
    t=$(PRE=0.5 POST=1.0 FPS=25 W=854 H=480 JSON=1 bench/seed_pipeline.sh "$DIR/speech.wav" "$DIR/start.png" "$DIR/end.png" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["total_seconds"])')
    seed+=("$t")
done
python3 - "$DIR/va.json" "${seed[@]}" <<'PY'
import json, statistics, sys
va = json.load(open(sys.argv[1]))
seed = [float(x) for x in sys.argv[2:]]
full, floor = va["full_median_seconds"], va["floor_median_seconds"]
print(json.dumps({
    "runs": len(seed),
    "full_job_median_s": round(full, 3),
    "floor_median_s": round(floor, 3),
    "full_over_floor_median": round(va["full_over_floor_median"], 3),
    "seed_pipeline_median_s": round(statistics.median(seed), 3),
    "seed_over_full": round(statistics.median(seed) / full, 2),
    "peak_rss_mb_median": va["peak_rss_mb_median"],
    "full_seconds": va["full_seconds"], "floor_seconds": va["floor_seconds"], "seed_seconds": seed,
    "stages_last_full_run": va["stages_last_full_run"],
}, indent=2))
PY
