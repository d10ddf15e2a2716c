//! Start videos (SPEC §4): rotation, VFR → CFR frame choice, extension past the clip's end,
//! cutting a longer clip, and colour levels from full-range and 10-bit 4:4:4 sources.
//!
//! The input clips are tiny files in `fixtures/video/`, named by a hash of how they are made:
//! the recipe (ffmpeg CLI arguments and the raw frames fed to it) is here in the test, and
//! `VIDAX_MAKE_FIXTURES=1 cargo test --release --test start_video` remakes any that is missing
//! with the ffmpeg CLI. A normal test run copies the shipped files and runs no ffmpeg to make
//! inputs (ffprobe/ffmpeg still serve as oracles). Each frame of a clip carries its index as a colour code; the test decodes the final file
//! with the engine's own decoder, reads the code of every output frame and compares it with
//! its own computation of which source frame that output frame must show.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};
use vidax::media::decode::for_each_video_frame;
use vidax::media::picture::Yuv420;

/// The colour that encodes frame index `k` (64 codes): four levels per channel, far enough
/// apart to survive two lossy encodes and 4:2:0 chroma.
fn code_rgb(k: usize) -> [u8; 3] {
    const L: [u8; 4] = [60, 120, 180, 240];
    [L[k % 4], L[(k / 4) % 4], L[(k / 16) % 4]]
}

/// BT.709 limited-range Y'CbCr of an 8-bit R'G'B' colour.
fn yuv709(rgb: [u8; 3]) -> [f64; 3] {
    let [r, g, b] = rgb.map(|c| f64::from(c) / 255.0);
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    [
        16.0 + 219.0 * y,
        128.0 + 224.0 * (b - y) / 1.8556,
        128.0 + 224.0 * (r - y) / 1.5748,
    ]
}

/// Mean Y, Cb, Cr of the `2r×2r` block centred on `(x, y)` (chroma at half resolution).
fn mean_yuv(f: &Yuv420, x: u32, y: u32, r: u32) -> [f64; 3] {
    let w = f.width as usize;
    let (mut s, mut n) = ([0.0; 3], 0.0);
    for yy in (y - r)..(y + r) {
        for xx in (x - r)..(x + r) {
            s[0] += f64::from(f.y[yy as usize * w + xx as usize]);
            let ci = (yy / 2) as usize * (w / 2) + (xx / 2) as usize;
            s[1] += f64::from(f.u[ci]);
            s[2] += f64::from(f.v[ci]);
            n += 1.0;
        }
    }
    s.map(|v| v / n)
}

/// The code index nearest to a measured colour, checked to be unambiguous.
fn read_code(yuv: [f64; 3], codes: usize) -> usize {
    let mut d: Vec<(f64, usize)> = (0..codes)
        .map(|k| {
            let c = yuv709(code_rgb(k));
            let dist = (0..3).map(|i| (c[i] - yuv[i]).powi(2)).sum::<f64>().sqrt();
            (dist, k)
        })
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        d[0].0 < 12.0 && d[1].0 > 2.0 * d[0].0,
        "ambiguous colour code {yuv:?}: nearest {:?}, then {:?}",
        d[0],
        d[1]
    );
    d[0].1
}

/// Makes the clip `args` describe (its output path is the last argument): copies the shipped
/// fixture with the recipe's hash, or with `VIDAX_MAKE_FIXTURES=1` makes it with the ffmpeg CLI
/// first.
fn ffmpeg(args: &[&str], stdin: Option<Vec<u8>>) {
    use sha2::{Digest, Sha256};
    let (out, recipe) = args.split_last().expect("an output path");
    let out = Path::new(out);
    // The recipe without the sandbox's temp paths: inputs by file name.
    let mut h = Sha256::new();
    for a in recipe {
        let p = Path::new(a);
        let a = if p.is_absolute() {
            p.file_name().unwrap().to_string_lossy().to_string()
        } else {
            a.to_string()
        };
        h.update(a.as_bytes());
        h.update([0]);
    }
    h.update(stdin.as_deref().unwrap_or_default());
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let ext = out.extension().unwrap().to_string_lossy();
    let fixture = root().join("fixtures/video").join(format!("{hex}.{ext}"));
    if !fixture.exists() {
        assert!(
            std::env::var_os("VIDAX_MAKE_FIXTURES").is_some(),
            "fixture {} missing: run VIDAX_MAKE_FIXTURES=1 cargo test --release --test start_video",
            fixture.display()
        );
        run_ffmpeg(&[recipe, &[fixture.to_str().unwrap()]].concat(), stdin);
    }
    std::fs::copy(&fixture, out).unwrap();
}

/// Runs the ffmpeg CLI with `args`, feeding `stdin` (raw frames) when given.
fn run_ffmpeg(args: &[&str], stdin: Option<Vec<u8>>) {
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg (used by the tests to make input clips) must be installed");
    let feeder = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sorted packet pts of the first video stream and its time base `(num, den)`.
fn packet_pts(file: &Path) -> (Vec<i64>, (i64, i64)) {
    let v = ffprobe_json(
        file,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts:stream=time_base",
        ],
    );
    let mut pts: Vec<i64> = v["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pts"].as_i64().expect("packet pts"))
        .collect();
    pts.sort_unstable();
    let tb = v["streams"][0]["time_base"].as_str().unwrap();
    let (n, d) = tb.split_once('/').unwrap();
    (pts, (n.parse().unwrap(), d.parse().unwrap()))
}

/// A CFR clip of `frames` solid code colours, `w×h`, at `fps`, H.264 in MP4.
fn cfr_clip(path: &Path, frames: usize, w: u32, h: u32, fps: u32) {
    let mut raw = Vec::with_capacity(frames * (w * h * 3) as usize);
    for k in 0..frames {
        let c = code_rgb(k);
        for _ in 0..w * h {
            raw.extend_from_slice(&c);
        }
    }
    let (size, rate) = (format!("{w}x{h}"), fps.to_string());
    ffmpeg(
        &[
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            &size,
            "-r",
            &rate,
            "-i",
            "-",
            "-c:v",
            "libx264",
            "-crf",
            "12",
            "-pix_fmt",
            "yuv420p",
            path.to_str().unwrap(),
        ],
        Some(raw),
    );
}

/// Decodes the final file and returns its size and the colour code of every frame (read at
/// `(x, y)`).
fn frame_codes(file: &Path, x: u32, y: u32, codes: usize) -> ((u32, u32), Vec<usize>) {
    let mut size = (0, 0);
    let mut out = Vec::new();
    for_each_video_frame(file, |_, _, f| {
        size = (f.width, f.height);
        out.push(read_code(mean_yuv(f, x, y, 4), codes));
        Ok(true)
    })
    .unwrap();
    (size, out)
}

fn job_doc(audio: &Path, clip: &Path, fps: u32, extend: &str) -> Value {
    json!({
        "audio": audio, "start_video": clip,
        "determinism": { "fps": fps, "seed": 1 },
        "video": { "extend": extend },
        "comfyui": { "enable": false },
        "encode": { "crf": 12 },
    })
}

// Phone-style clip: coded landscape 320x180, shown portrait 180x320 after a 90° clockwise
// display rotation. The upright picture has black marks (a bar along the top, a block at the
// left) so that any other orientation is told apart; the rest is the frame's colour code.
const CODED_W: u32 = 320;
const CODED_H: u32 = 180;
const UP_W: u32 = CODED_H;
const UP_H: u32 = CODED_W;

fn upright_pixel(k: usize, x: u32, y: u32) -> [u8; 3] {
    let bar = y < UP_H / 8;
    let block = x < UP_W / 4 && y < UP_H / 2;
    if bar || block {
        [0, 0, 0]
    } else {
        code_rgb(k)
    }
}

/// Where the marks are: (x, y, black?) sample points of the upright picture.
const MARKS: [(u32, u32, bool); 6] = [
    (20, 16, true),    // top-left
    (160, 16, true),   // top-right: the bar
    (20, 120, true),   // left, middle: the block
    (160, 120, false), // right, middle
    (20, 300, false),  // bottom-left
    (160, 300, false), // bottom-right
];

/// Makes the phone clip: `frames` frames with VFR timestamps (gaps of 20 and 47 ms in turn,
/// ~30 fps on average) and a display matrix asking for a 90° clockwise turn.
fn phone_clip(sb: &Sandbox, frames: usize) -> PathBuf {
    let mut raw = Vec::with_capacity(frames * (CODED_W * CODED_H * 3) as usize);
    for k in 0..frames {
        for sy in 0..CODED_H {
            for sx in 0..CODED_W {
                // Coded (sx, sy) is shown at upright (CODED_H − 1 − sy, sx) after the turn.
                raw.extend_from_slice(&upright_pixel(k, CODED_H - 1 - sy, sx));
            }
        }
    }
    let plain = sb.join("phone_plain.mp4");
    let size = format!("{CODED_W}x{CODED_H}");
    ffmpeg(
        &[
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            &size,
            "-r",
            "30",
            "-i",
            "-",
            "-vf",
            "settb=1/1000,setpts='floor(N/2)*67+mod(N,2)*20'",
            "-fps_mode",
            "passthrough",
            "-enc_time_base",
            "1/1000",
            "-c:v",
            "libx264",
            "-crf",
            "12",
            "-pix_fmt",
            "yuv420p",
            "-video_track_timescale",
            "1000",
            plain.to_str().unwrap(),
        ],
        Some(raw),
    );
    // FFmpeg 5.1 writes a display matrix only when stream-copying, from the `rotate` tag read
    // as av_display_rotation_set's counter-clockwise angle: −90 is a phone's portrait matrix
    // (ffprobe: rotation −90, players turn the picture 90° clockwise).
    let clip = sb.join("phone.mp4");
    ffmpeg(
        &[
            "-i",
            plain.to_str().unwrap(),
            "-c",
            "copy",
            "-metadata:s:v:0",
            "rotate=-90",
            clip.to_str().unwrap(),
        ],
        None,
    );
    clip
}

#[test]
fn phone_clip_with_rotation_and_vfr_renders_upright_with_every_frame_right() {
    let sb = Sandbox::new();
    let frames = 45;
    let clip = phone_clip(&sb, frames);

    // The clip really is what the test needs: a -90° display matrix and VFR timestamps.
    let s = ffprobe_json(&clip, &["-select_streams", "v:0", "-show_streams"]);
    let rotation = s["streams"][0]["side_data_list"]
        .as_array()
        .and_then(|l| l.iter().find_map(|d| d["rotation"].as_i64()));
    assert_eq!(rotation, Some(-90), "display matrix: {s}");
    let (pts, (tb_num, tb_den)) = packet_pts(&clip);
    assert_eq!(pts.len(), frames);
    let mut gaps: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    gaps.dedup();
    assert!(gaps.len() >= 2, "not VFR: gaps {gaps:?}");
    // And ffmpeg itself shows it upright with the marks where the test put them.
    let (w, h, rgb) = decode_first_frame_autorotated(&clip);
    assert_eq!((w, h), (UP_W, UP_H), "ffmpeg's autorotated size");
    for (x, y, black) in MARKS {
        let p = px(&rgb, w, x, y);
        assert_eq!(
            p.iter().all(|&c| c < 30),
            black,
            "ffmpeg at ({x},{y}): {p:?}"
        );
    }

    // 1.4 s of audio at 30 fps: 42 frames, all inside the clip (its last frame is at 1.474 s).
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 22_400);
    let fps: i64 = 30;
    let target: i64 = 42;
    let job = sb.write_job("job.json", &job_doc(&audio, &clip, fps as u32, "hold"));
    let (fin, m) = sb.run_ok(&job, &sb.join("wd"));

    // Expected: the latest source frame whose time is <= i/fps after the first frame,
    // (pts[k] − pts[0])·tb_num/tb_den <= i/fps, in integers.
    let expected: Vec<usize> = (0..target)
        .map(|i: i64| {
            pts.iter()
                .rposition(|&p| (p - pts[0]) * tb_num * fps <= i * tb_den)
                .unwrap()
        })
        .collect();
    // The 20/47 ms gaps make the 30 fps output skip some source frames and repeat others.
    assert_ne!(expected, (0..target as usize).collect::<Vec<_>>());

    let mut size = (0, 0);
    let mut codes = Vec::new();
    for_each_video_frame(&fin, |i, _, f| {
        size = (f.width, f.height);
        for (x, y, black) in MARKS {
            let yy = mean_yuv(f, x, y, 4)[0];
            assert_eq!(yy < 40.0, black, "frame {i} at ({x},{y}): Y {yy:.1}");
        }
        codes.push(read_code(mean_yuv(f, 110, 220, 6), 64));
        Ok(true)
    })
    .unwrap();
    assert_eq!(size, (UP_W, UP_H), "rendered at the rotated size");
    assert_eq!(codes, expected);

    let sv = &m["phases"]["prepare"]["start_video"];
    assert_eq!(sv["rotation"], 90);
    assert_eq!(sv["mirrored"], false);
    assert_eq!(sv["frames"], frames);
    assert_eq!(sv["vfr"], true);
    assert_eq!(sv["extend"], "hold");
    assert_eq!(sv["extended"], false);
    assert_eq!(m["render"]["width"], UP_W);
    assert_eq!(m["render"]["height"], UP_H);
    assert_eq!(m["video_source_detail"]["start_source"], "start_video");
    assert_eq!(m["target_frames"], target);
    assert_eq!(m["motion_meta"], Value::Null);
}

/// ffmpeg's own view of frame 0 (autorotate on, as by default).
fn decode_first_frame_autorotated(file: &Path) -> (u32, u32, Vec<u8>) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(file)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg: {}", stderr_of(&out));
    // Upright: UP_W×UP_H.
    assert_eq!(out.stdout.len(), (UP_W * UP_H * 3) as usize, "not turned");
    (UP_W, UP_H, out.stdout)
}

#[test]
fn shorter_clip_is_extended_by_loop_pingpong_and_hold() {
    let sb = Sandbox::new();
    // 12 frames at 10 fps (1.2 s); 3 s of audio at 10 fps = 30 frames.
    let n = 12;
    let clip = sb.join("short.mp4");
    cfr_clip(&clip, n, 64, 48, 10);
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 48_000);
    let target = 30;
    for (extend, want) in [
        ("loop", (0..target).map(|i| i % n).collect::<Vec<_>>()),
        (
            "pingpong",
            (0..target)
                .map(|i| {
                    let u = i % (2 * n - 2);
                    if u < n {
                        u
                    } else {
                        2 * n - 2 - u
                    }
                })
                .collect(),
        ),
        ("hold", (0..target).map(|i| i.min(n - 1)).collect()),
    ] {
        let job = sb.write_job(
            &format!("{extend}.json"),
            &job_doc(&audio, &clip, 10, extend),
        );
        let (fin, m) = sb.run_ok(&job, &sb.join(&format!("wd_{extend}")));
        let (size, codes) = frame_codes(&fin, 32, 24, 64);
        assert_eq!(size, (64, 48));
        assert_eq!(codes.len(), target, "{extend}: exactly target_frames");
        assert_eq!(codes, want, "{extend}");
        let sv = &m["phases"]["prepare"]["start_video"];
        assert_eq!(sv["extend"], extend);
        assert_eq!(sv["extended"], true);
        assert_eq!(sv["cached_frames"], extend == "pingpong");
        assert_eq!(sv["vfr"], false);
        assert_eq!(sv["rotation"], 0);
    }
}

#[test]
fn extension_keeps_the_end_image_hold() {
    let sb = Sandbox::new();
    let n = 12;
    let clip = sb.join("short.mp4");
    cfr_clip(&clip, n, 64, 48, 10);
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 40_000); // 2.5 s + 0.5 s post = 3 s: 30 frames, 5 held
    let end = sb.join("end.png");
    write_solid_png(&end, 64, 48, [0, 0, 0]);
    let mut doc = job_doc(&audio, &clip, 10, "loop");
    doc["end_image"] = json!(end);
    doc["buffer"] = json!({ "post_seconds": 0.5 });
    let job = sb.write_job("job.json", &doc);
    let (fin, m) = sb.run_ok(&job, &sb.join("wd"));
    assert_eq!(m["target_frames"], 30);
    assert_eq!(m["hold_frames"], 5);
    let mut main = Vec::new();
    let count = for_each_video_frame(&fin, |i, _, f| {
        let c = mean_yuv(f, 32, 24, 4);
        if i < 25 {
            main.push(read_code(c, 64));
        } else {
            assert!(c[0] < 25.0, "hold frame {i} is the black end image: {c:?}");
        }
        Ok(true)
    })
    .unwrap();
    assert_eq!(count, 30);
    assert_eq!(main, (0..25).map(|i| i % n).collect::<Vec<_>>());
}

#[test]
fn longer_clip_is_cut() {
    let sb = Sandbox::new();
    let clip = sb.join("long.mp4");
    cfr_clip(&clip, 40, 64, 48, 10);
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 32_000); // 2 s at 10 fps = 20 frames
    let job = sb.write_job("job.json", &job_doc(&audio, &clip, 10, "pingpong"));
    let (fin, m) = sb.run_ok(&job, &sb.join("wd"));
    let (_, codes) = frame_codes(&fin, 32, 24, 64);
    assert_eq!(codes, (0..20).collect::<Vec<_>>());
    let sv = &m["phases"]["prepare"]["start_video"];
    assert_eq!(sv["frames"], 40);
    assert_eq!(sv["extended"], false);
    assert_eq!(sv["cached_frames"], false);
}

/// A clip cut out of a longer one without re-encoding starts at a non-key frame: the MP4 edit
/// list starts after the key frame, and the frames before its start are decoded but never
/// shown. vidax must start where ffmpeg (and players) start.
#[test]
fn edit_list_cut_clip_starts_where_players_start() {
    let sb = Sandbox::new();
    let mut raw = Vec::new();
    for k in 0..30 {
        for _ in 0..64 * 48 {
            raw.extend_from_slice(&code_rgb(k));
        }
    }
    let long = sb.join("gop.mp4");
    ffmpeg(
        &[
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            "64x48",
            "-r",
            "10",
            "-i",
            "-",
            "-c:v",
            "libx264",
            "-g",
            "30",
            "-crf",
            "12",
            "-pix_fmt",
            "yuv420p",
            long.to_str().unwrap(),
        ],
        Some(raw),
    );
    let cut = sb.join("cut.mp4");
    ffmpeg(
        &[
            "-ss",
            "0.55",
            "-i",
            long.to_str().unwrap(),
            "-c",
            "copy",
            cut.to_str().unwrap(),
        ],
        None,
    );
    let v = ffprobe_json(
        &cut,
        &["-select_streams", "v:0", "-show_entries", "packet=flags"],
    );
    let discarded = v["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["flags"].as_str().unwrap_or("").contains('D'))
        .count();
    assert!(discarded > 0, "the cut has no discarded packets: {v}");
    // What ffmpeg shows: the code of each decoded frame.
    let shown: Vec<usize> = decode_rgb(&cut, 64, 48)
        .iter()
        .map(|f| {
            let c = px(f, 64, 32, 24);
            let level = |v: u8| {
                [60u8, 120, 180, 240]
                    .iter()
                    .position(|&l| v.abs_diff(l) < 30)
                    .unwrap()
            };
            level(c[0]) + 4 * level(c[1]) + 16 * level(c[2])
        })
        .collect();
    assert!(shown[0] > 0, "ffmpeg starts after the key frame: {shown:?}");
    let audio = sb.join("voice.wav");
    let n = shown.len() as u64;
    write_wav(&audio, 16_000, 1, n * 1600); // one output frame per source frame at 10 fps
    let job = sb.write_job("job.json", &job_doc(&audio, &cut, 10, "hold"));
    let (fin, m) = sb.run_ok(&job, &sb.join("wd"));
    assert_eq!(m["phases"]["prepare"]["start_video"]["frames"], n);
    let (_, codes) = frame_codes(&fin, 32, 24, 64);
    assert_eq!(codes, shown);
}

/// A clip whose top half is one Y'CbCr value and bottom half another, written as raw planar
/// frames (`bytes` per sample, 4:2:0 or 4:4:4), so the source levels are exactly known.
fn two_tone_raw(
    w: usize,
    h: usize,
    frames: usize,
    chroma_444: bool,
    bytes: usize,
    top: [u16; 3],
    bottom: [u16; 3],
) -> Vec<u8> {
    let (cw, ch) = if chroma_444 { (w, h) } else { (w / 2, h / 2) };
    let mut out = Vec::new();
    let mut put = |v: u16| {
        if bytes == 1 {
            out.push(v as u8);
        } else {
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    for _ in 0..frames {
        for (plane, pw, ph) in [(0, w, h), (1, cw, ch), (2, cw, ch)] {
            for y in 0..ph {
                for _ in 0..pw {
                    put(if y < ph / 2 {
                        top[plane]
                    } else {
                        bottom[plane]
                    });
                }
            }
        }
    }
    out
}

/// Runs a 1 s job at 10 fps on `clip` and returns the final's mean Y'CbCr of the top and the
/// bottom half (sampled away from the edge between them), from frame 5.
fn top_and_bottom(sb: &Sandbox, clip: &Path, name: &str) -> ([f64; 3], [f64; 3]) {
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let job = sb.write_job(&format!("{name}.json"), &job_doc(&audio, clip, 10, "hold"));
    let (fin, _) = sb.run_ok(&job, &sb.join(&format!("wd_{name}")));
    let mut got = None;
    for_each_video_frame(&fin, |i, _, f| {
        assert_eq!((f.width, f.height), (64, 64));
        if i == 5 {
            got = Some((mean_yuv(f, 32, 16, 6), mean_yuv(f, 32, 48, 6)));
        }
        Ok(true)
    })
    .unwrap();
    got.expect("frame 5")
}

fn assert_levels(what: &str, got: [f64; 3], want: [f64; 3]) {
    for i in 0..3 {
        assert!(
            (got[i] - want[i]).abs() <= 2.0,
            "{what}: got Y'CbCr {got:.1?}, want {want:.1?} (±2)"
        );
    }
}

#[test]
fn full_range_yuvj420p_source_gets_limited_range_levels() {
    let sb = Sandbox::new();
    // Full range (0–255): mid-grey and a colour, BT.709.
    let grey = [128u16, 128, 128];
    let colour = [150u16, 110, 150];
    let raw = two_tone_raw(64, 64, 10, false, 1, grey, colour);
    let clip = sb.join("full.mp4");
    ffmpeg(
        &[
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuvj420p",
            "-s",
            "64x64",
            "-r",
            "10",
            "-i",
            "-",
            "-c:v",
            "libx264",
            "-qp",
            "0",
            "-pix_fmt",
            "yuvj420p",
            "-colorspace",
            "bt709",
            "-color_range",
            "pc",
            clip.to_str().unwrap(),
        ],
        Some(raw),
    );
    let s = stream_props(&clip);
    assert_eq!(s["pix_fmt"], "yuvj420p", "{s}");
    assert_eq!(s["color_range"], "pc", "{s}");
    let (top, bottom) = top_and_bottom(&sb, &clip, "full");
    // Full → limited: Y 16 + 219·v/255, C 128 + 224·(v − 128)/255 (same matrix).
    let limited = |v: [u16; 3]| {
        [
            16.0 + 219.0 * f64::from(v[0]) / 255.0,
            128.0 + 224.0 * (f64::from(v[1]) - 128.0) / 255.0,
            128.0 + 224.0 * (f64::from(v[2]) - 128.0) / 255.0,
        ]
    };
    assert_levels("full-range grey", top, limited(grey));
    assert_levels("full-range colour", bottom, limited(colour));
}

#[test]
fn ten_bit_444_source_gets_8_bit_420_levels() {
    let sb = Sandbox::new();
    // Limited range 10-bit (64–940): mid-grey and a colour, BT.709, 4:4:4.
    let grey = [512u16, 512, 512];
    let colour = [600u16, 400, 650];
    let raw = two_tone_raw(64, 64, 10, true, 2, grey, colour);
    let clip = sb.join("ten.mkv");
    ffmpeg(
        &[
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv444p10le",
            "-s",
            "64x64",
            "-r",
            "10",
            "-i",
            "-",
            "-c:v",
            "ffv1",
            "-pix_fmt",
            "yuv444p10le",
            "-colorspace",
            "bt709",
            "-color_range",
            "tv",
            clip.to_str().unwrap(),
        ],
        Some(raw),
    );
    let s = stream_props(&clip);
    assert_eq!(s["pix_fmt"], "yuv444p10le", "{s}");
    let (top, bottom) = top_and_bottom(&sb, &clip, "ten");
    let eight = |v: [u16; 3]| v.map(|c| f64::from(c) / 4.0);
    assert_levels("10-bit grey", top, eight(grey));
    assert_levels("10-bit colour", bottom, eight(colour));
}

fn stream_props(file: &Path) -> Value {
    ffprobe_json(
        file,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=pix_fmt,color_range,color_space",
        ],
    )["streams"][0]
        .clone()
}

#[test]
fn pingpong_too_long_for_the_cache_is_refused_naming_the_file() {
    let sb = Sandbox::new();
    // Back and forth over all 40 frames at 4096x2304 (13.5 MiB per rendered frame, 540 MiB
    // in all) is over the 256 MiB pingpong cache.
    let clip = sb.join("wide.mp4");
    cfr_clip(&clip, 40, 128, 72, 10);
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000 * 6); // 6 s at 10 fps: past the 4 s clip
    let mut doc = job_doc(&audio, &clip, 10, "pingpong");
    doc["render"] = json!({ "width": 4096, "height": 2304 });
    let job = sb.write_job("job.json", &doc);
    let out = sb
        .va()
        .arg("run")
        .arg(&job)
        .arg("--workdir")
        .arg(sb.join("wd"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(20), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("UNSUPPORTED_FORMAT"), "{err}");
    assert!(err.contains("wide.mp4"), "names the file: {err}");
    assert!(err.contains("video.extend loop or hold"), "{err}");
    assert!(!sb.join("wd/final.mp4").exists());
    // The same clip with loop is fine.
    doc["video"] = json!({ "extend": "loop" });
    doc["render"] = json!({ "max_width": 128, "max_height": 72 });
    let job = sb.write_job("loop.json", &doc);
    let (fin, _) = sb.run_ok(&job, &sb.join("wd_loop"));
    let (_, codes) = frame_codes(&fin, 64, 36, 64);
    assert_eq!(codes, (0..60).map(|i| i % 40).collect::<Vec<_>>());
}
