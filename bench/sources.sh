#!/usr/bin/env bash
# Paired A/B benchmarks of issue 14 (docs/PERFORMANCE.md, "Visual sources"): medians of RUNS
# alternating runs of each pair, on the same generated inputs (speech-like audio, 854x480):
#   frames   : full job from a frames folder (ComfyUI-like PNGs)  vs  full job from a still image
#   patches  : full job from the default still lip-sync's output (VIDAX_SavePatches: the box
#              that changed, laid over the still, zoomed)  vs  the same job from the still alone
#   video    : full job from a 1080p30 start video -> 854x480@25  vs  ffmpeg -vf scale,fps
#              -c:v libx264 -preset veryfast -crf 20 + AAC 192k (same padded audio)
#   still    : full job from a still image  vs  the ffmpeg CLI floor: the same frames (raw
#              yuv420p, rendered before the clock) through x264 and the same WAV through AAC,
#              two processes in parallel (A||V), at SECONDS and at LONG seconds
#   memory   : peak RSS of the full job at 1, 10 and 30 min (va bench --memory-scan)
#
#   bench/sources.sh [RUNS] [SECONDS] [LONG]     (defaults 5, 60, 600; needs the ffmpeg CLI)
#   ONLY="frames video" bench/sources.sh ...     (a subset of: frames patches video still long memory)
#
# Prints the load average before and after each pair: the figures mean something only on a
# quiet machine (load average well under 1 before the runs).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
SECONDS_=${2:-60}
LONG=${3:-600}
ONLY=${ONLY:-"frames patches video still long memory"}
VA=${VA:-$PWD/target/release/va}
DIR=${DIR:-$(mktemp -d)}
mkdir -p "$DIR"
KEEP=${KEEP:-0}
[[ $KEEP == 1 ]] || trap 'rm -rf "$DIR"' EXIT
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
now() { date +%s.%N; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
want() { [[ " $ONLY " == *" $1 "* ]]; }
results="$DIR/results.txt"
: > "$results"
record() { echo "$1 $2" >> "$results"; }  # pair side, wall seconds, CPU seconds
child() { "$VA" __bench-child full --job "$1" --workdir "$DIR/wd" "${@:2}" >/dev/null; }
# CPU seconds (user + system) of this shell's finished children, into CPU: `times` runs in
# this shell (in a command substitution it would run in a subshell and report nothing).
child_cpu() {
    times > "$DIR/.times"
    CPU=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.3f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$DIR/.times")
}
# Runs a command; prints its wall seconds and CPU seconds (all its processes and threads).
timed() {
    local t0 c0
    t0=$(now)
    child_cpu
    c0=$CPU
    "$@"
    child_cpu
    awk "BEGIN{printf \"%.3f %.3f\", $(now) - $t0, $CPU - $c0}"
}

# Inputs (generated once; va bench with one run also checks that each source works).
for src in image frames patches video; do
    want "$src" || [[ $src == image ]] || continue
    mkdir -p "$DIR/$src"
    "$VA" bench --source "$src" --seconds "$SECONDS_" --runs 1 --dir "$DIR/$src" --json > "$DIR/$src/bench.json"
done

if want frames; then
    echo "frames vs still image, load before: $(load)"
    for _ in $(seq "$RUNS"); do
        record frames_full "$(timed child "$DIR/frames/bench_job.json" --frames "$DIR/frames/frames")"
        record image_full "$(timed child "$DIR/image/bench_job.json")"
    done
    echo "  load after: $(load)"
fi

if want patches; then
    echo "patches vs still image, load before: $(load)"
    for _ in $(seq "$RUNS"); do
        record patches_full "$(timed child "$DIR/patches/bench_job.json" --frames "$DIR/patches/patches" --base "$DIR/patches/start.png")"
        record patches_still "$(timed child "$DIR/patches/bench_job.json")"
    done
    echo "  load after: $(load)"
fi

if want video; then
    echo "start video vs ffmpeg CLI, load before: $(load)"
    child "$DIR/video/bench_job.json"
    cp "$DIR/wd/prepare/audio_padded.wav" "$DIR/video/padded.wav"
    clip=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["start_video"])' "$DIR/video/bench_job.json")
    for _ in $(seq "$RUNS"); do
        record video_full "$(timed child "$DIR/video/bench_job.json")"
        record video_ffmpeg "$(timed ff -i "$clip" -i "$DIR/video/padded.wav" -map 0:v:0 -map 1:a:0 \
            -vf scale=854:480,fps=25 -c:v libx264 -preset veryfast -crf 20 -pix_fmt yuv420p \
            -c:a aac -b:a 192k -shortest "$DIR/ff.mp4")"
    done
    echo "  load after: $(load)"
fi

cli_floor() { # JOB: dump the frames once, then time x264 || AAC on the CLI
    local job=$1 tag=$2
    "$VA" __bench-child dump --job "$job" --workdir "$DIR/dump" > "$DIR/dump.json"
    read -r yuv wav size fps < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["stages"]; print(s["yuv"], s["wav"], "%dx%d" % (s["width"], s["height"]), s["fps"])' "$DIR/dump.json")
    for _ in $(seq "$RUNS"); do
        record "${tag}_full" "$(timed child "$job")"
        record "${tag}_cli_floor" "$(timed bash -c "
            ffmpeg -nostdin -hide_banner -loglevel error -y -f rawvideo -pix_fmt yuv420p -s $size -r $fps -i $yuv \
                -c:v libx264 -preset veryfast -crf 20 -an $DIR/v.mp4 &
            ffmpeg -nostdin -hide_banner -loglevel error -y -i $wav -c:a aac -b:a 192k $DIR/a.m4a &
            wait")"
    done
    rm -rf "$DIR/dump"
}

if want still; then
    echo "still image ${SECONDS_} s vs CLI floor, load before: $(load)"
    cli_floor "$DIR/image/bench_job.json" still
    echo "  load after: $(load)"
fi

if want long; then
    echo "still image ${LONG} s vs CLI floor, load before: $(load)"
    mkdir -p "$DIR/long"
    "$VA" bench --source image --seconds "$LONG" --runs 1 --dir "$DIR/long" --json > "$DIR/long/bench.json"
    cli_floor "$DIR/long/bench_job.json" long
    echo "  load after: $(load)"
fi

if want memory; then
    echo "memory scan, load before: $(load)"
    "$VA" bench --source image --memory-scan --runs 1 --dir "$DIR/mem" --json |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("  peak RSS MB:", {k: round(v["peak_rss_mb"],1) for k,v in d["memory_scan"].items()})'
fi

python3 - "$results" "$DIR" <<'PY'
import json, statistics, sys, collections, os, re
runs = collections.defaultdict(list)
cpu = collections.defaultdict(list)
for line in open(sys.argv[1]):
    k, v, *c = line.split()
    runs[k].append(float(v))
    if c:
        cpu[k].append(float(c[0]))
def med(k): return statistics.median(runs[k])
pairs = [("frames_full", "image_full"), ("patches_full", "patches_still"), ("video_full", "video_ffmpeg"),
         ("still_full", "still_cli_floor"), ("long_full", "long_cli_floor")]
out = {}
for a, b in pairs:
    if runs[a] and runs[b]:
        ratios = [x / y for x, y in zip(runs[a], runs[b])]
        out[f"{a} / {b}"] = {"a_median_s": round(med(a), 3), "b_median_s": round(med(b), 3),
                             "ratio_of_medians": round(med(a) / med(b), 3),
                             "median_of_pair_ratios": round(statistics.median(ratios), 3),
                             "a_s": runs[a], "b_s": runs[b]}
        # CPU time (all processes and threads) of the same runs: less sensitive than wall
        # time to the other tenants of a shared VM, but not what the targets are stated in.
        if len(cpu[a]) == len(runs[a]) and len(cpu[b]) == len(runs[b]):
            cr = [x / y for x, y in zip(cpu[a], cpu[b]) if y > 0]
            out[f"{a} / {b}"].update({"a_cpu_s": cpu[a], "b_cpu_s": cpu[b],
                                      "median_of_cpu_ratios": round(statistics.median(cr), 3)})
for src in ("image", "frames", "patches", "video"):
    p = os.path.join(sys.argv[2], src, "bench.json")
    if os.path.exists(p):
        d = json.load(open(p))
        th = d["stages_last_full_run"].get("encode.threads", [])
        by_name = collections.defaultdict(float)
        for t in th:
            by_name[re.sub(r"-[0-9]+$", "", t["name"])] += t["cpu_seconds"]
        out[f"threads_{src}_full_cpu_s"] = {k: round(v, 2) for k, v in by_name.items()}
print(json.dumps(out, indent=2))
PY
