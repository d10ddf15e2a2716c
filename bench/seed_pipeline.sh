#!/usr/bin/env bash
# Reproduces the ffmpeg pipeline of the Node.js tool that vidax replaces (the "seed"), for the
# encode-throughput comparison with `va run` / `va bench`.
#
# The seed shelled out to the ffmpeg/ffprobe CLIs and encoded the picture three times:
#   1. pad the speech audio with pre/post silence into a WAV (adelay + apad), measure it (ffprobe)
#   2. main clip: the start image through the linear, clamped zoompan filter, libx264
#   3. end-hold clip: the end image looped over the post buffer, libx264
#   4. re-encoding concat of main + hold (scale/fps/yuv420p), libx264
#   5. final mux with the padded audio: libx264 again, AAC, capped at the audio duration
# Steps 3 and 4 only run with an end image and POST > 0 (as in the seed); without them the main
# clip covers the whole padded duration.
#
# Usage:
#   bench/seed_pipeline.sh AUDIO START_IMAGE [END_IMAGE]
# or with AUDIO, START_IMAGE, END_IMAGE in the environment. Other settings (environment):
#   PRE=0.5 POST=1.0 FPS=25 W=854 H=480 PRESET=veryfast CRF=20 AUDIO_BITRATE=192k
#   ZOOM=0.1      zoom strength of the zoompan clip (1 -> 1+ZOOM over the main segment)
#   FFMPEG=ffmpeg FFPROBE=ffprobe
#   KEEP=1        keep the temp dir (its path is printed); default: removed on exit
#   OUT=file.mp4  copy the final file there
#   JSON=1        print one JSON object with the timings instead of the table
#
# Prints the wall time of every step and the total (date +%s.%N). Exits non-zero when any
# step fails or an input is missing.

set -euo pipefail
export LC_ALL=C

die() {
    echo "seed_pipeline: $*" >&2
    exit 1
}

AUDIO=${1:-${AUDIO:-}}
START_IMAGE=${2:-${START_IMAGE:-}}
END_IMAGE=${3:-${END_IMAGE:-}}
PRE=${PRE:-0.5}
POST=${POST:-1.0}
FPS=${FPS:-25}
W=${W:-854}
H=${H:-480}
PRESET=${PRESET:-veryfast}
CRF=${CRF:-20}
AUDIO_BITRATE=${AUDIO_BITRATE:-192k}
ZOOM=${ZOOM:-0.1}
FFMPEG=${FFMPEG:-ffmpeg}
FFPROBE=${FFPROBE:-ffprobe}
KEEP=${KEEP:-0}
JSON=${JSON:-0}
OUT=${OUT:-}

[[ -n $AUDIO && -n $START_IMAGE ]] || die "usage: $0 AUDIO START_IMAGE [END_IMAGE] (or set AUDIO, START_IMAGE, END_IMAGE)"
for f in "$AUDIO" "$START_IMAGE" ${END_IMAGE:+"$END_IMAGE"}; do
    [[ -f $f && -s $f ]] || die "input not found or empty: $f"
done
command -v "$FFMPEG" >/dev/null || die "$FFMPEG not found on PATH"
command -v "$FFPROBE" >/dev/null || die "$FFPROBE not found on PATH"
num='^[0-9]+([.][0-9]+)?$'
for v in PRE POST FPS ZOOM; do
    [[ ${!v} =~ $num ]] || die "$v must be a non-negative number, got '${!v}'"
done
for v in W H CRF; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
(( W % 2 == 0 && H % 2 == 0 && W > 0 && H > 0 )) || die "W and H must be positive and even (yuv420p), got ${W}x${H}"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/seed_pipeline.XXXXXX")
cleanup() {
    if [[ $KEEP == 1 ]]; then
        echo "seed_pipeline: kept $TMP" >&2
    else
        rm -rf -- "$TMP"
    fi
}
trap cleanup EXIT

# Every ffmpeg call: quiet, no stdin (so it cannot eat the script's input), overwrite.
ff() { "$FFMPEG" -nostdin -hide_banner -loglevel error -y "$@"; }
# Float arithmetic without bc.
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
roundi() { awk "BEGIN { printf \"%d\", int($1 + 0.5) }"; }
now() { date +%s.%N; }

STEP_NAMES=()
STEP_SECONDS=()
T_ALL=$(now)
step() {
    # step NAME CMD...: runs CMD, records its wall time; a failure ends the script.
    local name=$1
    shift
    local t0 t1
    t0=$(now)
    if ! "$@"; then
        die "step $name failed"
    fi
    t1=$(now)
    STEP_NAMES+=("$name")
    STEP_SECONDS+=("$(calc "$t1 - $t0")")
}

# Fit the picture into WxH keeping its aspect, padded (the seed's scale/pad).
FIT="scale=${W}:${H}:force_original_aspect_ratio=decrease,pad=${W}:${H}:(ow-iw)/2:(oh-ih)/2,setsar=1"
X264=(-c:v libx264 -preset "$PRESET" -crf "$CRF" -pix_fmt yuv420p)

# 1. Pad the audio with digital silence, then measure the padded length.
PRE_MS=$(calc "$PRE * 1000")
pad_audio() {
    ff -i "$AUDIO" -af "adelay=delays=${PRE_MS}:all=1,apad=pad_dur=${POST}" -c:a pcm_s16le "$TMP/audio_padded.wav" || return 1
    AUDIO_DUR=$("$FFPROBE" -v error -show_entries format=duration -of default=nw=1:nk=1 "$TMP/audio_padded.wav") || return 1
    [[ $AUDIO_DUR =~ $num ]] || { echo "ffprobe gave no duration: '$AUDIO_DUR'" >&2; return 1; }
}
step pad_audio pad_audio

# Frame plan as the seed made it: target frames from the padded duration; with an end image the
# hold covers the post buffer and the zoompan clip the rest.
TARGET_FRAMES=$(roundi "$AUDIO_DUR * $FPS")
HOLD_FRAMES=0
if [[ -n $END_IMAGE ]] && awk "BEGIN { exit !($POST > 0) }"; then
    HOLD_FRAMES=$(roundi "$POST * $FPS")
fi
MAIN_FRAMES=$((TARGET_FRAMES - HOLD_FRAMES))
(( TARGET_FRAMES >= 2 && MAIN_FRAMES >= 1 )) || die "too few frames: target $TARGET_FRAMES, main $MAIN_FRAMES"
DEN=$((MAIN_FRAMES > 1 ? MAIN_FRAMES - 1 : 1))
ZMAX=$(calc "1 + $ZOOM")

# 2. Main clip: the seed's linear, clamped zoompan over the main segment (one input frame ->
#    d output frames), centred.
zoom_clip() {
    ff -i "$START_IMAGE" \
        -vf "${FIT},zoompan=z='min(1+${ZOOM}*on/${DEN},${ZMAX})':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=${MAIN_FRAMES}:s=${W}x${H}:fps=${FPS},format=yuv420p" \
        -frames:v "$MAIN_FRAMES" "${X264[@]}" -an "$TMP/main.mp4"
}
step zoompan_clip zoom_clip

VIDEO="$TMP/main.mp4"
if (( HOLD_FRAMES > 0 )); then
    # 3. End-hold clip: the end image looped over the post buffer.
    hold_clip() {
        ff -loop 1 -framerate "$FPS" -t "$POST" -i "$END_IMAGE" \
            -vf "${FIT},format=yuv420p" -r "$FPS" "${X264[@]}" -an "$TMP/hold.mp4"
    }
    step end_hold_clip hold_clip

    # 4. Re-encoding concat (scale/fps/yuv420p on both inputs), a second full video encode.
    concat_clips() {
        ff -i "$TMP/main.mp4" -i "$TMP/hold.mp4" -filter_complex \
            "[0:v]scale=${W}:${H},setsar=1,fps=${FPS},format=yuv420p[a];[1:v]scale=${W}:${H},setsar=1,fps=${FPS},format=yuv420p[b];[a][b]concat=n=2:v=1:a=0[v]" \
            -map "[v]" "${X264[@]}" -an "$TMP/concat.mp4"
    }
    step concat concat_clips
    VIDEO="$TMP/concat.mp4"
fi

# 5. Final mux: the video re-encoded once more (CFR at FPS), AAC, capped at the audio duration.
mux() {
    ff -i "$VIDEO" -i "$TMP/audio_padded.wav" -map 0:v:0 -map 1:a:0 \
        -vf "fps=${FPS},format=yuv420p" "${X264[@]}" -c:a aac -b:a "$AUDIO_BITRATE" \
        -t "$AUDIO_DUR" -shortest -movflags +faststart "$TMP/final.mp4"
}
step final_mux mux

T_END=$(now)
TOTAL=$(calc "$T_END - $T_ALL")

# Not timed: what came out (container counts, no decode).
OUT_FRAMES=$("$FFPROBE" -v error -select_streams v:0 -show_entries stream=nb_frames -of default=nw=1:nk=1 "$TMP/final.mp4" || echo "?")
OUT_DUR=$("$FFPROBE" -v error -show_entries format=duration -of default=nw=1:nk=1 "$TMP/final.mp4" || echo "?")
if [[ -n $OUT ]]; then
    cp -- "$TMP/final.mp4" "$OUT"
fi

if [[ $JSON == 1 ]]; then
    steps=""
    for i in "${!STEP_NAMES[@]}"; do
        steps+="${steps:+, }\"${STEP_NAMES[$i]}\": ${STEP_SECONDS[$i]}"
    done
    printf '{"pipeline": "seed", "width": %s, "height": %s, "fps": "%s", "preset": "%s", "crf": %s, "audio_duration_seconds": %s, "target_frames": %s, "hold_frames": %s, "video_encodes": %s, "steps": {%s}, "total_seconds": %s, "output_frames": "%s", "output_duration_seconds": "%s"}\n' \
        "$W" "$H" "$FPS" "$PRESET" "$CRF" "$AUDIO_DUR" "$TARGET_FRAMES" "$HOLD_FRAMES" \
        "$(( HOLD_FRAMES > 0 ? 3 : 2 ))" "$steps" "$TOTAL" "$OUT_FRAMES" "$OUT_DUR"
else
    printf 'seed pipeline: %sx%s @ %s fps, %s/crf %s, audio %s s padded, %s frames (%s main + %s hold)\n' \
        "$W" "$H" "$FPS" "$PRESET" "$CRF" "$AUDIO_DUR" "$TARGET_FRAMES" "$MAIN_FRAMES" "$HOLD_FRAMES"
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %-14s %8.3f s\n' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}"
    done
    printf '  %-14s %8.3f s\n' total "$TOTAL"
    printf 'output: %s frames, %s s%s\n' "$OUT_FRAMES" "$OUT_DUR" "${OUT:+ -> $OUT}"
fi
