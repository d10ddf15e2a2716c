//! The frame-exactness matrix (SPEC §4): fps × audio input × buffers/end image. For every case
//! the test computes `N` and `target_frames` itself from the sample counts, then checks the final
//! file with ffprobe/ffmpeg as an independent oracle and with `va verify`.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::json;

/// The end image's colour: far from anything in the start image.
const END_RGB: [u8; 3] = [230, 30, 200];
/// Render size (the start image is generated at this size, so it fills the frame).
const W: u32 = 320;
const H: u32 = 240;

#[derive(Clone, Copy, Debug)]
enum Audio {
    /// 16 kHz mono WAV, 27211 samples (1.7007 s).
    Wav16kMono,
    /// The committed 44.1 kHz stereo MP3, 101430 samples (2.3 s).
    Mp3_44k1Stereo,
    /// 48 kHz stereo WAV, 100801 samples (2.1000 s).
    Wav48kStereo,
}

impl Audio {
    const ALL: [Audio; 3] = [
        Audio::Wav16kMono,
        Audio::Mp3_44k1Stereo,
        Audio::Wav48kStereo,
    ];

    /// Creates the input in `sb` and returns (path, R, N_in).
    fn make(self, sb: &Sandbox) -> (PathBuf, u32, u64) {
        match self {
            Audio::Wav16kMono => {
                let p = sb.join("voice16k.wav");
                write_wav(&p, 16_000, 1, 27_211);
                (p, 16_000, 27_211)
            }
            Audio::Mp3_44k1Stereo => {
                let p = sb.join("tone.mp3");
                std::fs::copy(mp3_fixture(), &p).unwrap();
                (p, MP3_RATE, MP3_SAMPLES)
            }
            Audio::Wav48kStereo => {
                let p = sb.join("voice48k.wav");
                write_wav(&p, 48_000, 2, 100_801);
                (p, 48_000, 100_801)
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Buffers {
    pre_ms: u64,
    post_ms: u64,
    end_image: bool,
}

const BUFFERS: [Buffers; 3] = [
    Buffers {
        pre_ms: 0,
        post_ms: 0,
        end_image: false,
    },
    Buffers {
        pre_ms: 500,
        post_ms: 1000,
        end_image: false,
    },
    Buffers {
        pre_ms: 500,
        post_ms: 1000,
        end_image: true,
    },
];

/// One fps of the matrix: (JSON value for determinism.fps, num, den).
fn run_fps(fps_json: serde_json::Value, fps_num: u64, fps_den: u64) {
    let mut failures = Vec::new();
    for audio in Audio::ALL {
        for buffers in BUFFERS {
            let label = format!("fps {fps_num}/{fps_den}, {audio:?}, {buffers:?}");
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                case(&fps_json, fps_num, fps_den, audio, buffers)
            }));
            if let Err(e) = r {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("[{label}] {msg}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 9 cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn case(fps_json: &serde_json::Value, fps_num: u64, fps_den: u64, audio: Audio, b: Buffers) {
    let sb = Sandbox::new();
    let (audio_path, rate, n_in) = audio.make(&sb);
    let start = sb.join("face.png");
    write_face_png(&start, W, H);
    let end = sb.join("end.png");
    write_solid_png(&end, W, H, END_RGB);

    let mut job = json!({
        "audio": audio_path,
        "start_image": start,
        "buffer": { "pre_seconds": b.pre_ms as f64 / 1000.0, "post_seconds": b.post_ms as f64 / 1000.0 },
        "determinism": { "fps": fps_json, "rounding": "round", "seed": 7, "seed_policy": "fixed" },
        "render": { "max_width": W, "max_height": H },
        "comfyui": { "enable": false },
    });
    if b.end_image {
        job["end_image"] = json!(end);
    }
    let job_path = sb.write_job("job.json", &job);
    let workdir = sb.join("wd");
    let (final_path, manifest) = sb.run_ok(&job_path, &workdir);

    // The test's own arithmetic (SPEC §4), in integers. The programme is delivered at
    // 48 kHz (encode.audio_rate's default): N_in samples at R Hz become round(N_in·48000/R),
    // and the buffers are counted at 48 kHz.
    let out_rate: u32 = 48_000;
    let r = u128::from(out_rate);
    let n_in_out = round_half_up(u128::from(n_in) * r, u128::from(rate));
    let pre = round_half_up(u128::from(b.pre_ms) * r, 1000);
    let post = round_half_up(u128::from(b.post_ms) * r, 1000);
    let n = pre + n_in_out + post;
    let target = round_half_up(n * u128::from(fps_num), r * u128::from(fps_den));
    // The frame count is the one the source rate gives: resampling does not move it.
    let src = u128::from(rate);
    let n_src = round_half_up(u128::from(b.pre_ms) * src, 1000)
        + u128::from(n_in)
        + round_half_up(u128::from(b.post_ms) * src, 1000);
    assert_eq!(
        target,
        round_half_up(n_src * u128::from(fps_num), src * u128::from(fps_den)),
        "frames at the source rate"
    );
    let hold = if b.end_image && b.post_ms > 0 {
        round_half_up(
            u128::from(b.post_ms) * u128::from(fps_num),
            1000 * u128::from(fps_den),
        )
        .min(target - 1)
    } else {
        0
    };
    let (n, target, hold) = (n as u64, target as u64, hold as u64);

    // The manifest agrees with the test's arithmetic.
    assert_eq!(manifest["audio"]["rate"], rate, "manifest audio.rate");
    assert_eq!(
        manifest["audio"]["output_rate"], out_rate,
        "manifest audio.output_rate"
    );
    assert_eq!(
        manifest["audio"]["input_samples"], n_in_out as u64,
        "manifest audio.input_samples (decoded N_in at 48 kHz)"
    );
    assert_eq!(
        manifest["audio"]["total_samples"], n,
        "manifest audio.total_samples"
    );
    assert_eq!(manifest["target_frames"], target, "manifest target_frames");
    assert_eq!(manifest["hold_frames"], hold, "manifest hold_frames");

    // (a) exactly target_frames frames, (b) every PTS step equal and one frame long.
    let pts = video_frame_pts(&final_path);
    assert_eq!(
        pts.len() as u64,
        target,
        "decoded video frames (ffprobe frame=pts)"
    );
    let v = stream(&final_path, "video");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(u64::from(W)), Some(u64::from(H))),
        "render size"
    );
    let tb = v["time_base"].as_str().unwrap();
    let (tb_num, tb_den) = tb
        .split_once('/')
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()))
        .unwrap();
    assert_eq!(pts[0], 0, "first video PTS");
    let step = pts[1] - pts[0];
    for (i, w) in pts.windows(2).enumerate() {
        assert_eq!(
            w[1] - w[0],
            step,
            "PTS step between frames {i} and {} (time base {tb})",
            i + 1
        );
    }
    // step · tb == 1/fps exactly.
    assert_eq!(
        u128::from(step as u64) * u128::from(tb_num) * u128::from(fps_num),
        u128::from(tb_den) * u128::from(fps_den),
        "PTS step {step} in time base {tb} is not one frame at {fps_num}/{fps_den}"
    );

    // (c) the audio track declares exactly N samples in a 1/R time base.
    let a = stream(&final_path, "audio");
    assert_eq!(
        a["sample_rate"].as_str(),
        Some(out_rate.to_string().as_str()),
        "audio sample rate"
    );
    assert_eq!(
        a["time_base"].as_str(),
        Some(format!("1/{out_rate}").as_str()),
        "audio time base"
    );
    assert_eq!(
        a["duration_ts"].as_u64(),
        Some(n),
        "audio stream duration_ts must equal N"
    );

    // (d) va verify agrees with ffprobe -count_frames.
    let nb_read = count_video_frames(&final_path);
    assert_eq!(nb_read, target, "ffprobe -count_frames nb_read_frames");
    let rep = va_verify(&sb, &final_path);
    assert_eq!(
        rep["video"]["frames"].as_u64(),
        Some(nb_read),
        "va verify frames vs ffprobe"
    );
    assert_eq!(rep["video"]["cfr"], true, "va verify cfr");
    assert_eq!(
        rep["audio"]["declared_samples"].as_u64(),
        Some(n),
        "va verify declared_samples"
    );
    assert_eq!(rep["ok"], true, "va verify ok: {}", rep["failures"]);

    // (e) the hold frames show the end image; the frames before them do not.
    if b.end_image {
        let frames = decode_rgb(&final_path, 8, 6);
        assert_eq!(frames.len() as u64, target);
        let first_hold = target - hold;
        for (i, f) in frames.iter().enumerate() {
            let centre = px(f, 8, 4, 3);
            let corner = px(f, 8, 0, 0);
            if i as u64 >= first_hold {
                assert!(
                    max_diff(centre, END_RGB) <= 24 && max_diff(corner, END_RGB) <= 24,
                    "hold frame {i} (hold starts at {first_hold}) shows {centre:?}/{corner:?}, not the end image {END_RGB:?}"
                );
            } else {
                assert!(
                    max_diff(centre, END_RGB) > 80,
                    "frame {i} before the hold (which starts at {first_hold}) already shows the end image {centre:?}"
                );
            }
        }
    }
}

#[test]
fn frame_exact_ntsc_film_24000_1001() {
    run_fps(json!("24000/1001"), 24000, 1001);
}

#[test]
fn frame_exact_pal_25() {
    run_fps(json!(25), 25, 1);
}

#[test]
fn frame_exact_ntsc_30000_1001() {
    run_fps(json!("30000/1001"), 30000, 1001);
}

#[test]
fn frame_exact_60() {
    run_fps(json!(60), 60, 1);
}

/// Renders `n_in` samples of 16 kHz mono with `extra` job fields; returns (final, manifest).
fn render_16k(
    sb: &Sandbox,
    name: &str,
    n_in: u64,
    extra: serde_json::Value,
) -> (PathBuf, serde_json::Value) {
    let audio = sb.join(&format!("{name}.wav"));
    write_wav(&audio, 16_000, 1, n_in);
    let start = sb.join("face.png");
    if !start.exists() {
        write_face_png(&start, 160, 120);
    }
    let mut job = json!({
        "audio": audio, "start_image": start,
        "determinism": { "fps": 25, "seed": 1 },
        "render": { "max_width": 160, "max_height": 120 },
        "comfyui": { "enable": false },
    });
    for (k, v) in extra.as_object().unwrap() {
        if let (Some(dst), Some(src)) = (job[k].as_object_mut(), v.as_object()) {
            dst.extend(src.clone());
        } else {
            job[k] = v.clone();
        }
    }
    let p = sb.write_job(&format!("{name}.json"), &job);
    sb.run_ok(&p, &sb.join(&format!("wd-{name}")))
}

fn check_rounding(cases: &[(u64, &str, u64)]) {
    let sb = Sandbox::new();
    let mut failures = Vec::new();
    for &(n_in, rounding, want) in cases {
        let name = format!("{rounding}-{n_in}");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (fin, m) = render_16k(
                &sb,
                &name,
                n_in,
                json!({ "determinism": { "rounding": rounding } }),
            );
            assert_eq!(m["target_frames"], want, "{name}: manifest target_frames");
            assert_eq!(count_video_frames(&fin), want, "{name}: decoded frames");
            // Delivered at 48 kHz: round(N_in · 48000 / 16000) = 3·N_in.
            assert_eq!(
                stream(&fin, "audio")["duration_ts"].as_u64(),
                Some(3 * n_in),
                "{name}: audio duration_ts"
            );
        }));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            failures.push(format!(
                "[{name}, want {want} frames] {}",
                msg.unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// At 16 kHz and 25 fps one frame is 640 samples.

#[test]
fn round_is_half_up_at_the_half_frame_boundary() {
    check_rounding(&[
        (640 * 40 + 320, "round", 41), // exactly 40.5 frames: half up
        (640 * 40 + 319, "round", 40),
        (640 * 40 + 384, "round", 41),
    ]);
}

/// floor/ceil are valid job values (SPEC §3/§4); only `round` promises a delta of at most half a
/// frame, so with floor/ceil the picture may be up to one frame shorter/longer than the sound.
#[test]
fn floor_and_ceil_rounding_render_the_frame_counts_they_ask_for() {
    check_rounding(&[
        (640 * 40 + 320, "floor", 40),
        (640 * 40 + 320, "ceil", 41),
        (640 * 40 + 384, "floor", 40), // 40.6 frames
        (640 * 40 + 1, "ceil", 41),    // 40.0016 frames
        (640 * 40 + 639, "floor", 40), // 40.998 frames
    ]);
}

#[test]
fn hold_is_capped_one_below_the_target() {
    let sb = Sandbox::new();
    let end = sb.join("end.png");
    write_solid_png(&end, 160, 120, END_RGB);
    // 16 + 1600 samples = 0.101 s → 2.525 → 3 frames; hold round(0.1 · 25) = 3, capped to 2.
    let (fin, m) = render_16k(
        &sb,
        "cap",
        16,
        json!({ "end_image": end, "buffer": { "post_seconds": 0.1 } }),
    );
    assert_eq!(m["target_frames"], 3);
    assert_eq!(m["hold_frames"], 2);
    let frames = decode_rgb(&fin, 8, 6);
    assert_eq!(frames.len(), 3);
    assert!(
        max_diff(px(&frames[0], 8, 4, 3), END_RGB) > 80,
        "frame 0 must be the start image"
    );
    for (i, f) in frames.iter().enumerate().skip(1) {
        assert!(
            max_diff(px(f, 8, 4, 3), END_RGB) <= 24,
            "frame {i} must be the end image: {:?}",
            px(f, 8, 4, 3)
        );
    }
}

#[test]
fn decimal_ntsc_fps_mean_the_exact_rationals() {
    let sb = Sandbox::new();
    for (fps, num, den) in [
        (23.976, 24000u64, 1001u64),
        (29.97, 30000, 1001),
        (59.94, 60000, 1001),
    ] {
        let name = format!("fps{fps}");
        let (fin, m) = render_16k(&sb, &name, 32_000, json!({ "determinism": { "fps": fps } }));
        assert_eq!(m["fps"], format!("{num}/{den}"), "{name}");
        let v = stream(&fin, "video");
        assert_eq!(
            v["r_frame_rate"],
            format!("{num}/{den}"),
            "{name}: r_frame_rate"
        );
        assert_eq!(
            v["avg_frame_rate"],
            format!("{num}/{den}"),
            "{name}: avg_frame_rate"
        );
        // 2 s of audio.
        let want = round_half_up(2 * u128::from(num), u128::from(den)) as u64;
        assert_eq!(count_video_frames(&fin), want, "{name}");
    }
}

/// Every keyframe starts a closed GOP, as the ffmpeg CLI writes H.264: no frame after a
/// keyframe in decode order is shown before it, so a player that starts (or seeks) at any
/// keyframe shows every frame from there. ffprobe's packet list is the oracle; x264's own
/// record of its options (the SEI in the stream) must agree.
#[test]
fn every_keyframe_starts_a_closed_gop() {
    let sb = Sandbox::new();
    // A start video of a smoothly moving pattern (what x264 codes with B-frames), 12 s at
    // 25 fps: 300 frames, more than x264's 250-frame keyframe interval. With open GOPs x264
    // put this pattern's second keyframe before a B-frame that is shown ahead of it.
    let (w, h) = (160u32, 120u32);
    let clip = sb.join("moving.mov");
    let mut writer = vidax::media::clip::LosslessClip::create(&clip, w, h, 25, 1).unwrap();
    for k in 0..300u32 {
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                let u = ((x + k) % 64) * 4;
                let v = ((y + 2 * k) % 48) * 5;
                [u as u8, v as u8, ((u + v) / 2) as u8]
            })
            .collect();
        writer.push_rgb(&rgb).unwrap();
    }
    writer.finish().unwrap();
    let audio = sb.join("gop.wav");
    write_wav(&audio, 16_000, 1, 16_000 * 12);
    let job = sb.write_job(
        "gop.json",
        &json!({
            "audio": audio, "start_video": clip,
            "determinism": { "fps": 25, "seed": 1 },
            "render": { "width": w, "height": h },
            "comfyui": { "enable": false },
        }),
    );
    let (fin, _) = sb.run_ok(&job, &sb.join("wd-gop"));
    let v = ffprobe_json(
        &fin,
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts,flags",
        ],
    );
    let packets: Vec<(i64, bool)> = v["packets"]
        .as_array()
        .expect("ffprobe lists the packets")
        .iter()
        .map(|p| {
            let pts = p["pts"].as_i64().expect("every packet has a pts");
            let key = p["flags"].as_str().unwrap_or("").starts_with('K');
            (pts, key)
        })
        .collect();
    assert_eq!(packets.len(), 300);
    let reordered = (1..packets.len())
        .filter(|&i| packets[i].0 < packets[i - 1].0)
        .count();
    assert!(
        reordered > 10,
        "the pattern is coded with B-frames ({reordered} shown before the packet before them)"
    );
    let keys: Vec<usize> = (0..packets.len()).filter(|&i| packets[i].1).collect();
    assert!(
        keys.len() >= 2,
        "expected two GOPs or more, keyframes at {keys:?}"
    );
    for &k in &keys {
        let shown_before: Vec<usize> = (k + 1..packets.len())
            .filter(|&j| packets[j].0 < packets[k].0)
            .collect();
        assert!(
            shown_before.is_empty(),
            "packets {shown_before:?} follow keyframe {k} in decode order but are shown before it (an open GOP)"
        );
    }
    let bytes = std::fs::read(&fin).unwrap();
    let says = |s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
    assert!(says(b"x264 - core"), "the stream carries x264's options");
    assert!(says(b"open_gop=0"), "x264 says it wrote open GOPs");
}
