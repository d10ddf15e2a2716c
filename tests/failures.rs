//! Failures (SPEC §9): the right exit code, one clear line, no panic, and nothing lost.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

fn base_job(sb: &Sandbox) -> Value {
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let start = sb.join("face.png");
    write_face_png(&start, 160, 120);
    json!({
        "audio": audio, "start_image": start,
        "determinism": { "fps": 25, "seed": 9 },
        "render": { "max_width": 160, "max_height": 120 },
        "comfyui": { "enable": false },
    })
}

fn run(sb: &Sandbox, job: &Path, workdir: &Path, extra: &[&str]) -> std::process::Output {
    sb.va()
        .arg("run")
        .arg(job)
        .arg("--workdir")
        .arg(workdir)
        .args(extra)
        .output()
        .unwrap()
}

/// stderr has exactly one `error:` line, it carries `code`, and nothing panicked.
fn assert_one_error_line(out: &std::process::Output, code: &str) -> String {
    let err = stderr_of(out);
    assert!(!err.contains("panicked"), "panic on stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line, stderr was:\n{err}"
    );
    assert!(
        lines[0].contains(code),
        "error line lacks {code}: {}",
        lines[0]
    );
    lines[0].to_string()
}

#[test]
fn missing_audio_exits_11_and_leaves_the_earlier_final_and_registry_untouched() {
    let sb = Sandbox::new();
    let job = base_job(&sb);
    let good = sb.write_job("job.json", &job);
    let wd = sb.join("wd");
    let (final_path, _) = sb.run_ok(&good, &wd);
    let final_before = std::fs::read(&final_path).unwrap();
    let manifest_before = std::fs::read(wd.join("manifest.json")).unwrap();
    let runs_before = std::fs::read(sb.runs_json()).unwrap();

    // Same workdir, another final name (so OUTPUT_EXISTS does not stop it first), missing audio.
    let missing = sb.join("no-such-voice.wav");
    let mut bad = job.clone();
    bad["audio"] = json!(missing);
    bad["output"] = json!({ "final_name": "other.mp4" });
    let bad_job = sb.write_job("bad.json", &bad);
    let out = run(&sb, &bad_job, &wd, &[]);
    assert_eq!(
        out.status.code(),
        Some(11),
        "INPUT_NOT_FOUND exit code; stderr: {}",
        stderr_of(&out)
    );
    let err = stderr_of(&out);
    assert_eq!(err.lines().count(), 1, "one stderr line, got:\n{err}");
    assert!(err.contains("INPUT_NOT_FOUND"), "{err}");
    assert!(
        err.contains("no-such-voice.wav"),
        "the line names the missing file: {err}"
    );

    assert_eq!(
        std::fs::read(&final_path).unwrap(),
        final_before,
        "earlier final changed"
    );
    assert_eq!(
        std::fs::read(wd.join("manifest.json")).unwrap(),
        manifest_before,
        "earlier manifest changed"
    );
    assert_eq!(
        std::fs::read(sb.runs_json()).unwrap(),
        runs_before,
        "runs.json changed"
    );
    assert!(!wd.join("other.mp4").exists());

    // And in a fresh workdir: same code, no final, registry still unchanged.
    let wd2 = sb.join("wd2");
    let out = run(&sb, &bad_job, &wd2, &[]);
    assert_eq!(out.status.code(), Some(11));
    assert!(!wd2.join("other.mp4").exists() && !wd2.join("manifest.json").exists());
    assert_eq!(
        std::fs::read(sb.runs_json()).unwrap(),
        runs_before,
        "runs.json changed"
    );
}

#[test]
fn existing_final_gives_output_exists_12_and_is_kept() {
    let sb = Sandbox::new();
    let job = sb.write_job("job.json", &base_job(&sb));
    let wd = sb.join("wd");
    let (final_path, _) = sb.run_ok(&job, &wd);
    let before = std::fs::read(&final_path).unwrap();
    let out = run(&sb, &job, &wd, &[]);
    assert_eq!(out.status.code(), Some(12), "stderr: {}", stderr_of(&out));
    let line = assert_one_error_line(&out, "OUTPUT_EXISTS");
    assert!(line.contains("final.mp4"), "{line}");
    assert_eq!(std::fs::read(&final_path).unwrap(), before);
}

#[test]
fn resume_without_manifest_gives_resume_invalid_13() {
    let sb = Sandbox::new();
    let job = sb.write_job("job.json", &base_job(&sb));
    let wd = sb.join("empty-wd");
    std::fs::create_dir_all(&wd).unwrap();
    let out = run(&sb, &job, &wd, &["--resume"]);
    assert_eq!(out.status.code(), Some(13), "stderr: {}", stderr_of(&out));
    assert_one_error_line(&out, "RESUME_INVALID");
    assert!(!wd.join("final.mp4").exists());
}

#[test]
fn validate_reports_all_three_problems_with_paths_and_exits_10() {
    let sb = Sandbox::new();
    let mut job = base_job(&sb);
    job["buffer"] = json!({ "pre_seconds": -1, "post_seconds": 0.5 });
    job["determinism"]["fps"] = json!("abc");
    job["motion"] = json!({ "mode": "zoom_in", "strength": 0.9 });
    let p = sb.write_job("three.json", &job);
    let out = sb.va().arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(10), "stderr: {}", stderr_of(&out));
    let text = format!("{}{}", stdout_of(&out), stderr_of(&out));
    for path in ["buffer.pre_seconds", "determinism.fps", "motion.strength"] {
        assert!(text.contains(path), "{path} not reported:\n{text}");
    }
    assert!(!text.contains("panicked"));
}

#[test]
fn validate_reports_line_and_column_of_a_syntax_error() {
    let sb = Sandbox::new();
    let p = sb.join("syntax.json");
    // Line 3, column 17: the value where a ':' should be.
    std::fs::write(
        &p,
        "{\n  \"audio\": \"a.wav\",\n  \"start_image\" \"face.png\"\n}\n",
    )
    .unwrap();
    let out = sb.va().arg("validate").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(10), "stderr: {}", stderr_of(&out));
    let line = assert_one_error_line(&out, "VALIDATION_FAILED");
    assert!(line.contains("syntax.json"), "{line}");
    assert!(
        line.contains(":3:17") || (line.contains("line 3") && line.contains("column 17")),
        "line 3, column 17 not reported: {line}"
    );
}

#[test]
fn comfyui_enabled_with_nothing_listening_exits_30() {
    let sb = Sandbox::new();
    // A port that was free a moment ago and has nothing listening now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut job = base_job(&sb);
    job["comfyui"] = json!({ "enable": true, "url": format!("http://127.0.0.1:{port}") });
    let p = sb.write_job("job.json", &job);
    let wd = sb.join("wd");
    let t0 = std::time::Instant::now();
    let out = run(&sb, &p, &wd, &[]);
    assert_eq!(out.status.code(), Some(30), "stderr: {}", stderr_of(&out));
    let line = assert_one_error_line(&out, "COMFYUI_UNAVAILABLE");
    assert!(
        line.contains(&port.to_string()),
        "the line names the URL: {line}"
    );
    assert!(
        t0.elapsed().as_secs() < 30,
        "a refused connection should fail fast"
    );
    assert!(!wd.join("final.mp4").exists());
    let m = read_json(&wd.join("manifest.json"));
    assert_eq!(m["run_status"], "failed");
    assert_eq!(m["exit_status"], 30);
}

#[test]
fn text_file_named_voice_wav_exits_20_without_panic() {
    let sb = Sandbox::new();
    let mut job = base_job(&sb);
    let fake = sb.join("fake/voice.wav");
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    std::fs::write(
        &fake,
        "this is not audio, just some text that happens to be named .wav\n".repeat(20),
    )
    .unwrap();
    job["audio"] = json!(fake);
    let p = sb.write_job("job.json", &job);
    let out = run(&sb, &p, &sb.join("wd"), &[]);
    assert_eq!(out.status.code(), Some(20), "stderr: {}", stderr_of(&out));
    let line = assert_one_error_line(&out, "UNSUPPORTED_FORMAT");
    assert!(
        line.contains("voice.wav"),
        "the line names the file: {line}"
    );
}

#[test]
fn empty_and_mislabelled_inputs_fail_cleanly_without_panic() {
    let sb = Sandbox::new();
    let job = base_job(&sb);
    let cases: Vec<(&str, PathBuf, &[u8])> = vec![
        ("audio", sb.join("empty.wav"), b""),
        ("start_image", sb.join("text.png"), b"not a png at all\n"),
    ];
    for (field, path, bytes) in cases {
        std::fs::write(&path, bytes).unwrap();
        let mut j = job.clone();
        j[field] = json!(path);
        let p = sb.write_job(&format!("{field}.json"), &j);
        let wd = sb.join(&format!("wd-{field}"));
        let out = run(&sb, &p, &wd, &[]);
        let err = stderr_of(&out);
        assert_eq!(
            out.status.code(),
            Some(20),
            "{field} = {}: stderr {err}",
            path.display()
        );
        let line = assert_one_error_line(&out, "UNSUPPORTED_FORMAT");
        assert!(
            line.contains(path.file_name().unwrap().to_str().unwrap()),
            "{line}"
        );
        assert!(!wd.join("final.mp4").exists());
    }
}

#[test]
fn audio_too_short_for_two_frames_exits_40_and_writes_no_final() {
    let sb = Sandbox::new();
    let mut job = base_job(&sb);
    let tiny = sb.join("tiny.wav");
    write_wav(&tiny, 16_000, 1, 800); // 0.05 s at 25 fps = 1.25 → 1 frame
    job["audio"] = json!(tiny);
    let p = sb.write_job("job.json", &job);
    let wd = sb.join("wd");
    let out = run(&sb, &p, &wd, &[]);
    assert_eq!(out.status.code(), Some(40), "stderr: {}", stderr_of(&out));
    assert_one_error_line(&out, "FFMPEG_FAILED");
    assert!(!wd.join("final.mp4").exists());
}

/// A PNG whose header claims 1 000 000 000 pixels is refused from its header, before any
/// pixel is decoded and before anything is written (time and memory: docs/ERRORS.md).
#[test]
fn gigapixel_png_header_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("giga.png");
    header_only_png(&png, 40_000, 25_000);
    let wav = dir.path().join("a.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for _ in 0..16_000 {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
    let wd = dir.path().join("wd");
    let out = assert_cmd::Command::cargo_bin("va")
        .unwrap()
        .env("VA_STATE_DIR", dir.path().join("state"))
        .args(["produce", "--no-comfyui", "--audio"])
        .arg(&wav)
        .arg("--start")
        .arg(&png)
        .arg("--workdir")
        .arg(&wd)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(20),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UNSUPPORTED_FORMAT") && err.contains("1000000000 pixels"),
        "{err}"
    );
    assert!(!wd.exists(), "a refused run must leave no workdir");
    assert!(!dir
        .path()
        .join("state")
        .join("state")
        .join("runs.json")
        .exists());
}
