//! Issue 15, delivery audio: every final at 48 kHz with the declared sample count the formula
//! gives, and `encode.loudness` / `va produce --loudness` measured after decode with FFmpeg's
//! `ebur128` filter (the oracle; the engine itself never runs ffmpeg).

mod common;

use std::path::Path;

use common::*;
use serde_json::json;

/// Speech-like audio: syllables of a voiced buzz (a glottal-ish pulse train through its
/// harmonics, pitch gliding 110–210 Hz) under a raised-cosine envelope, with pauses between
/// words; high crest factor like speech. `rate` Hz mono, `seconds` long, peak about `peak`.
fn speech(rate: u32, seconds: f64, peak: f32) -> Vec<f32> {
    let n = (f64::from(rate) * seconds) as usize;
    let mut out = vec![0.0f32; n];
    let mut phase = 0.0f64;
    let mut t0 = 0.15; // first syllable starts here
    let mut k = 0u32;
    while t0 < seconds - 0.3 {
        let len = 0.12 + 0.05 * f64::from(k % 4);
        let pitch = 110.0 + 25.0 * f64::from(k % 5);
        let amp = 0.4 + 0.6 * f64::from((k * 7) % 5) / 4.0;
        let (a, b) = (
            (t0 * f64::from(rate)) as usize,
            ((t0 + len) * f64::from(rate)) as usize,
        );
        for (i, o) in out.iter_mut().enumerate().take(b.min(n)).skip(a) {
            let t = (i - a) as f64 / f64::from(rate);
            let f = pitch * (1.0 + 0.3 * t / len);
            phase += std::f64::consts::TAU * f / f64::from(rate);
            let env = 0.5 - 0.5 * (std::f64::consts::TAU * t / len).cos();
            let mut v = 0.0;
            for h in 1..=12 {
                let hf = f * f64::from(h);
                if hf < f64::from(rate) / 2.0 - 500.0 {
                    // Formant-ish emphasis around 500 Hz and 1500 Hz.
                    let w = 1.0 / f64::from(h)
                        * (1.0
                            + 2.0 * (-((hf - 500.0) / 300.0).powi(2)).exp()
                            + (-((hf - 1500.0) / 400.0).powi(2)).exp());
                    v += w * (phase * f64::from(h)).sin();
                }
            }
            *o += (amp * env * v) as f32;
        }
        // A pause after every third syllable: words.
        t0 += len + if k % 3 == 2 { 0.25 } else { 0.03 };
        k += 1;
    }
    let max = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    out.iter().map(|s| s * peak / max).collect()
}

fn write_f32_wav(path: &Path, rate: u32, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// FFmpeg's `ebur128` filter on the first audio stream of `file`: (integrated LUFS, true peak
/// dBTP), from the metadata it attaches to the last frame (three decimals).
fn ffmpeg_ebur128(file: &Path) -> (f64, f64) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostats", "-nostdin", "-i"])
        .arg(file)
        .args([
            "-map",
            "0:a:0",
            "-af",
            "ebur128=metadata=1:peak=true,ametadata=print:file=-",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg (the test oracle) must be installed");
    assert!(out.status.success(), "ffmpeg ebur128: {}", stderr_of(&out));
    let text = stdout_of(&out);
    let last = |key: &str| -> f64 {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .next_back()
            .unwrap_or_else(|| panic!("no {key} in ffmpeg's output"))
            .trim()
            .parse()
            .unwrap()
    };
    let peak = last("lavfi.r128.true_peak");
    (last("lavfi.r128.I"), 20.0 * peak.log10())
}

/// `va produce` with `args`, returning the final and the manifest.
fn produce(
    sb: &Sandbox,
    audio: &Path,
    wd: &str,
    args: &[&str],
) -> (std::path::PathBuf, serde_json::Value) {
    let img = sb.join("face.png");
    if !img.exists() {
        write_face_png(&img, 64, 48);
    }
    let out = sb
        .va()
        .args(["produce", "--no-comfyui", "--fps", "25", "--audio"])
        .arg(audio)
        .arg("--start")
        .arg(&img)
        .arg("--workdir")
        .arg(sb.join(wd))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "va produce: {}", stderr_of(&out));
    let fin = sb.join(wd).join("fertig.mp4");
    (fin, read_json(&sb.join(wd).join("manifest.json")))
}

#[test]
fn the_meter_agrees_with_ffmpegs_ebur128_within_a_tenth_of_a_lu() {
    let sb = Sandbox::new();
    for (rate, peak) in [(48_000u32, 0.5f32), (16_000, 0.05), (44_100, 0.9)] {
        let p = sb.join(&format!("speech{rate}.wav"));
        write_f32_wav(&p, rate, &speech(rate, 8.0, peak));
        let ours = vidax::media::loudness::measure_wav(&p).unwrap();
        let (i, tp) = ffmpeg_ebur128(&p);
        let mine = ours.integrated_lufs.unwrap();
        assert!(
            (mine - i).abs() <= 0.1,
            "{rate} Hz: ebur128 crate {mine:.3} LUFS, FFmpeg {i:.3} LUFS"
        );
        let mine_tp = ours.true_peak_db.unwrap();
        assert!(
            (mine_tp - tp).abs() <= 0.3,
            "{rate} Hz: true peak {mine_tp:.2} vs FFmpeg {tp:.2} dBTP"
        );
    }
}

#[test]
fn quiet_speech_is_delivered_at_the_target_under_the_ceiling_with_exact_samples() {
    let sb = Sandbox::new();
    // −30 LUFS speech at 16 kHz: scaled with FFmpeg's own reading.
    let raw = speech(16_000, 12.0, 0.1);
    let probe = sb.join("probe.wav");
    write_f32_wav(&probe, 16_000, &raw);
    let (i, _) = ffmpeg_ebur128(&probe);
    let g = 10f32.powf(((-30.0 - i) / 20.0) as f32);
    let quiet: Vec<f32> = raw.iter().map(|s| s * g).collect();
    let audio = sb.join("quiet.wav");
    write_f32_wav(&audio, 16_000, &quiet);
    let (i_in, _) = ffmpeg_ebur128(&audio);
    assert!((i_in + 30.0).abs() < 0.05, "input is {i_in} LUFS");

    let (fin, m) = produce(
        &sb,
        &audio,
        "wd",
        &["--loudness", "-16", "--pre", "0.5", "--post", "1"],
    );
    let (i_out, tp_out) = ffmpeg_ebur128(&fin);
    eprintln!(
        "delivered: {i_out:.3} LUFS, true peak {tp_out:.3} dBTP; manifest {}",
        m["loudness"]
    );
    assert!(
        (i_out + 16.0).abs() <= 0.5,
        "delivered {i_out:.3} LUFS, target -16 ± 0.5"
    );
    assert!(
        tp_out < -1.5,
        "true peak {tp_out:.3} dBTP over the -1.5 ceiling"
    );
    // The limiter had work to do (the gain alone would have crossed the ceiling).
    assert!(
        m["loudness"]["limited_frames"].as_u64().unwrap() > 0,
        "{}",
        m["loudness"]
    );
    assert!((m["loudness"]["input"]["integrated_lufs"].as_f64().unwrap() + 30.0).abs() < 0.15);
    assert!((m["loudness"]["output"]["integrated_lufs"].as_f64().unwrap() + 16.0).abs() < 0.15);
    // Declared samples: round(N·48000/16000) + the buffers at 48 kHz, exactly.
    let n = quiet.len() as u64 * 3 + 24_000 + 48_000;
    let v = va_verify(&sb, &fin);
    assert_eq!(v["audio"]["rate"], 48_000);
    assert_eq!(v["audio"]["declared_samples"].as_u64(), Some(n));
    assert_eq!(v["ok"], true, "{}", v["failures"]);
    assert_eq!(m["audio"]["total_samples"].as_u64(), Some(n));
}

#[test]
fn loudness_is_off_by_default_and_the_level_is_kept() {
    let sb = Sandbox::new();
    let audio = sb.join("s.wav");
    write_f32_wav(&audio, 48_000, &speech(48_000, 6.0, 0.3));
    let (i_in, _) = ffmpeg_ebur128(&audio);
    let (fin, m) = produce(&sb, &audio, "wd", &[]);
    assert_eq!(m["loudness"], json!(null));
    let (i_out, _) = ffmpeg_ebur128(&fin);
    assert!((i_out - i_in).abs() < 0.3, "{i_in} in, {i_out} out");
}

#[test]
fn rates_16k_and_44k1_give_48k_finals_with_the_formulas_sample_count() {
    let sb = Sandbox::new();
    for (rate, n_in) in [(16_000u32, 27_211u64), (44_100, 101_431)] {
        let audio = sb.join(&format!("in{rate}.wav"));
        write_wav(&audio, rate, 1, n_in);
        let wd = format!("wd{rate}");
        let (fin, m) = produce(&sb, &audio, &wd, &["--pre", "0.25", "--post", "0.5"]);
        // N_out = round(N·48000/R) + the buffers at 48 kHz.
        let n = round_half_up(u128::from(n_in) * 48_000, u128::from(rate)) as u64 + 12_000 + 24_000;
        let a = stream(&fin, "audio");
        assert_eq!(a["sample_rate"], "48000", "{rate} Hz input");
        assert_eq!(a["duration_ts"].as_u64(), Some(n), "{rate} Hz input");
        assert_eq!(m["audio"]["rate"], rate);
        assert_eq!(m["audio"]["output_rate"], 48_000);
        // The frame count is the source rate's.
        let src_n = u128::from(n_in) + u128::from(rate) / 4 + u128::from(rate) / 2;
        let frames = round_half_up(src_n * 25, u128::from(rate)) as u64;
        assert_eq!(m["target_frames"].as_u64(), Some(frames), "{rate} Hz input");
        assert_eq!(count_video_frames(&fin), frames);
    }
}

#[test]
fn audio_rate_source_keeps_the_inputs_rate() {
    let sb = Sandbox::new();
    let audio = sb.join("a.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let img = sb.join("f.png");
    write_face_png(&img, 64, 48);
    let job = sb.write_job(
        "job.json",
        &json!({"audio": audio, "start_image": img, "determinism": {"seed": 1},
                "comfyui": {"enable": false}, "encode": {"audio_rate": "source"}}),
    );
    let (fin, _) = sb.run_ok(&job, &sb.join("wd"));
    let a = stream(&fin, "audio");
    assert_eq!(a["sample_rate"], "16000");
    assert_eq!(a["duration_ts"].as_u64(), Some(16_000));
}
