//! Issue 3, bad input: every case of the list gets its SPEC §9 code and one line naming the
//! file, never a panic, never a final file, and the registry stays byte-identical.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};
use vidax::media::synth::{tone, write_audio, AudioSpec};

fn base_job(sb: &Sandbox) -> Value {
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 8_000);
    let start = sb.join("face.png");
    write_face_png(&start, 64, 48);
    json!({
        "audio": audio, "start_image": start,
        "determinism": { "fps": 25, "seed": 9 },
        "render": { "max_width": 64, "max_height": 48 },
        "comfyui": { "enable": false },
    })
}

/// Pseudo-random bytes (xorshift), so the case is the same on every run.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A 16 kHz mono WAV of `n` samples, cut to `keep` bytes.
fn truncated_wav(p: &Path, n: u64, keep: usize) {
    write_wav(p, 16_000, 1, n);
    let b = std::fs::read(p).unwrap();
    std::fs::write(p, &b[..keep]).unwrap();
}

/// A WAV header declaring 0 samples.
fn zero_sample_wav(p: &Path) {
    write_wav(p, 16_000, 1, 0);
}

/// An M4A (AAC, 48 kHz stereo, ~2 s) with the payload of every `every`-th packet overwritten
/// by noise; returns the number of packets it has.
fn corrupt_m4a(sb: &Sandbox, name: &str, every: usize) -> PathBuf {
    let p = sb.join(name);
    let spec = AudioSpec {
        muxer_options: &[("movie_timescale", "48000")],
        ..AudioSpec::new("aac", 48_000, 2)
    };
    write_audio(&p, &spec, &tone(96_000, 2, 48_000)).unwrap();
    let v = ffprobe_json(&p, &["-show_entries", "packet=pos,size"]);
    let packets = v["packets"].as_array().unwrap().clone();
    let mut bytes = std::fs::read(&p).unwrap();
    for (i, pk) in packets.iter().enumerate().skip(3) {
        if i % every != 0 {
            continue;
        }
        let num = |k: &str| -> usize { pk[k].as_str().and_then(|v| v.parse().ok()).unwrap() };
        let (pos, size) = (num("pos"), num("size"));
        let junk = noise(size, i as u64);
        bytes[pos..pos + size].copy_from_slice(&junk);
    }
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Inputs that pass admission (their headers are fine) and fail when decoded, inside a
/// phase: such a run got an id and stays on record as `failed` (docs/ERRORS.md). (A truncated
/// picture is not among them: admission decodes start and end pictures whole; nor is a
/// truncated start video: admission reads its packets for the timestamps.)
const FOUND_IN_A_PHASE: &[&str] = &["zero samples", "mostly corrupt"];

struct Case {
    what: &'static str,
    field: &'static str,
    path: PathBuf,
    code: &'static str,
    exit: i32,
}

/// `va run JOB --workdir WD` in the sandbox.
fn va_run(sb: &Sandbox, job: &Path, wd: &Path) -> std::process::Output {
    sb.va()
        .arg("run")
        .arg(job)
        .arg("--workdir")
        .arg(wd)
        .output()
        .unwrap()
}

/// Runs `job` with `field` set to the case's path in a fresh workdir and checks the outcome;
/// returns the error line.
fn check(sb: &Sandbox, job: &Value, c: &Case) -> String {
    let mut j = job.clone();
    j[c.field] = json!(c.path);
    if c.field == "start_video" {
        j["start_image"] = Value::Null;
    }
    let name = c.what.replace(' ', "_");
    let p = sb.write_job(&format!("{name}.json"), &j);
    let wd = sb.join(&format!("wd-{name}"));
    let before = std::fs::read(sb.runs_json()).unwrap();
    let out = va_run(sb, &p, &wd);
    let err = stderr_of(&out);
    assert!(!err.contains("panicked"), "{}: panic: {err}", c.what);
    assert_eq!(out.status.code(), Some(c.exit), "{}: {err}", c.what);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{}: one error line: {err}", c.what);
    assert!(lines[0].contains(c.code), "{}: {}", c.what, lines[0]);
    let file = c.path.file_name().unwrap().to_string_lossy();
    assert!(
        lines[0].contains(&*file),
        "{}: names the file: {}",
        c.what,
        lines[0]
    );
    assert!(!wd.join("final.mp4").exists(), "{}: no final", c.what);
    if !FOUND_IN_A_PHASE.contains(&c.what) {
        // Refused before the run got an id: nothing written anywhere.
        assert_eq!(
            std::fs::read(sb.runs_json()).unwrap(),
            before,
            "{}: registry untouched",
            c.what
        );
        assert!(
            !wd.join("manifest.json").exists(),
            "{}: no manifest",
            c.what
        );
        return lines[0].to_string();
    }
    // Found by decoding, inside a phase: the run is on record as failed with its code.
    let m = read_json(&wd.join("manifest.json"));
    assert_eq!(m["run_status"], "failed", "{}", c.what);
    let runs = read_json(&sb.runs_json())["runs"]
        .as_array()
        .unwrap()
        .clone();
    let old: Value = serde_json::from_slice(&before).unwrap();
    assert_eq!(
        runs[..runs.len() - 1],
        old["runs"].as_array().unwrap()[..],
        "{}: earlier entries kept",
        c.what
    );
    let entry = runs.last().unwrap();
    assert_eq!(entry["id"], m["run_id"], "{}", c.what);
    assert_eq!(entry["status"], "failed", "{}", c.what);
    assert_eq!(entry["exit_status"], c.exit, "{}", c.what);
    assert_eq!(entry["error"]["code"], c.code, "{}", c.what);
    lines[0].to_string()
}

/// A sandbox with one completed run (so `runs.json` exists) and the base job.
fn sandbox_with_a_run() -> (Sandbox, Value) {
    let sb = Sandbox::new();
    let job = base_job(&sb);
    let p = sb.write_job("good.json", &job);
    sb.run_ok(&p, &sb.join("good"));
    (sb, job)
}

#[test]
fn every_bad_audio_input_gets_its_code_and_names_the_file() {
    let (sb, job) = sandbox_with_a_run();
    let dir = sb.join("a directory.wav");
    std::fs::create_dir(&dir).unwrap();
    let sock = sb.join("socket.wav");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = sb.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let png = sb.join("picture.png");
    write_face_png(&png, 32, 32);
    let trunc = sb.join("truncated.wav");
    truncated_wav(&trunc, 32_000, 44 + 20_000);
    let zero = sb.join("zero.wav");
    zero_sample_wav(&zero);
    let header_only = sb.join("header_only.wav");
    truncated_wav(&header_only, 16_000, 44);
    let cases = [
        ("missing", sb.join("nope.wav"), "INPUT_NOT_FOUND", 11),
        ("directory", dir, "INPUT_NOT_FOUND", 11),
        ("unreadable socket", sock, "INPUT_NOT_FOUND", 11),
        ("empty", write("empty.wav", b""), "UNSUPPORTED_FORMAT", 20),
        ("truncated wav", trunc, "UNSUPPORTED_FORMAT", 20),
        ("header only wav", header_only, "UNSUPPORTED_FORMAT", 20),
        ("zero samples", zero, "UNSUPPORTED_FORMAT", 20),
        (
            "random bytes",
            write("noise.wav", &noise(50_000, 7)),
            "UNSUPPORTED_FORMAT",
            20,
        ),
        (
            "text",
            write("text.mp3", &b"ID3 no, just text\n".repeat(50)),
            "UNSUPPORTED_FORMAT",
            20,
        ),
        ("image as audio", png, "UNSUPPORTED_FORMAT", 20),
        (
            "mostly corrupt",
            corrupt_m4a(&sb, "corrupt.m4a", 2),
            "UNSUPPORTED_FORMAT",
            20,
        ),
    ];
    for (what, path, code, exit) in cases {
        check(
            &sb,
            &job,
            &Case {
                what,
                field: "audio",
                path,
                code,
                exit,
            },
        );
    }
}

#[test]
fn every_bad_picture_input_gets_its_code_and_names_the_file() {
    let (sb, job) = sandbox_with_a_run();
    let write = |name: &str, bytes: &[u8]| {
        let p = sb.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let png = sb.join("whole.png");
    write_face_png(&png, 64, 48);
    let png_bytes = std::fs::read(&png).unwrap();
    let m4a = sb.join("voice.m4a");
    write_audio(
        &m4a,
        &AudioSpec::new("aac", 48_000, 1),
        &tone(9_600, 1, 48_000),
    )
    .unwrap();
    // A real MP4 (the first run's final), cut in half.
    let good_final = std::fs::read(sb.join("good/final.mp4")).unwrap();
    let cases = [
        (
            "missing image",
            "start_image",
            sb.join("nope.png"),
            "INPUT_NOT_FOUND",
            11,
        ),
        (
            "empty image",
            "start_image",
            write("empty.png", b""),
            "UNSUPPORTED_FORMAT",
            20,
        ),
        (
            "noise image",
            "start_image",
            write("noise.png", &noise(4_000, 3)),
            "UNSUPPORTED_FORMAT",
            20,
        ),
        (
            "truncated png",
            "start_image",
            write("cut.png", &png_bytes[..png_bytes.len() / 2]),
            "UNSUPPORTED_FORMAT",
            20,
        ),
        (
            "audio as image",
            "start_image",
            sb.join("voice.wav"),
            "UNSUPPORTED_FORMAT",
            20,
        ),
        (
            "end image noise",
            "end_image",
            write("end.jpg", &noise(3_000, 5)),
            "UNSUPPORTED_FORMAT",
            20,
        ),
        (
            "noise video",
            "start_video",
            write("noise.mp4", &noise(60_000, 11)),
            "UNSUPPORTED_FORMAT",
            20,
        ),
        (
            "audio as video",
            "start_video",
            m4a,
            "UNSUPPORTED_FORMAT",
            20,
        ),
        (
            "truncated mp4",
            "start_video",
            write("cut.mp4", &good_final[..good_final.len() / 2]),
            "UNSUPPORTED_FORMAT",
            20,
        ),
        (
            "text video",
            "start_video",
            write("text.mp4", &b"not a video\n".repeat(100)),
            "UNSUPPORTED_FORMAT",
            20,
        ),
    ];
    for (what, field, path, code, exit) in cases {
        check(
            &sb,
            &job,
            &Case {
                what,
                field,
                path,
                code,
                exit,
            },
        );
    }
}

#[test]
fn special_files_and_broken_images_say_what_they_are() {
    let (sb, job) = sandbox_with_a_run();
    let fifo = |name: &str| {
        let p = sb.join(name);
        let ok = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(ok.success());
        p
    };
    let (loop_a, loop_b) = (sb.join("loop_a.png"), sb.join("loop_b.png"));
    std::os::unix::fs::symlink(&loop_b, &loop_a).unwrap();
    std::os::unix::fs::symlink(&loop_a, &loop_b).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = sb.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut bad_png = b"\x89PNG\r\n\x1a\n".to_vec();
    bad_png.extend_from_slice(&noise(200, 13));
    let mut bad_webp = b"RIFF\x40\x00\x00\x00WEBPVP8 ".to_vec();
    bad_webp.extend_from_slice(&noise(60, 17));
    let mut qoi = b"qoif\x00\x00\x00\x10\x00\x00\x00\x10\x03\x00".to_vec();
    qoi.extend_from_slice(&noise(100, 19));
    // A FIFO is never opened (it would block the run until something writes to it).
    let cases = [
        (
            "fifo audio",
            "audio",
            fifo("voice fifo.wav"),
            11,
            "is a FIFO",
        ),
        (
            "fifo image",
            "start_image",
            fifo("face.fifo"),
            11,
            "is a FIFO",
        ),
        (
            "symlink loop",
            "start_image",
            loop_a,
            11,
            "is a symlink loop",
        ),
        ("device", "end_image", "/dev/null".into(), 11, "is a device"),
        (
            "bad png header",
            "start_image",
            write("header.png", &bad_png),
            20,
            "unreadable image header",
        ),
        (
            "broken webp",
            "start_image",
            write("broken.webp", &bad_webp),
            20,
            "unreadable image header",
        ),
        (
            "unread format",
            "start_image",
            write("picture.qoi", &qoi),
            20,
            "is a Qoi image; vidax reads PNG, JPEG, WebP, BMP, TIFF",
        ),
    ];
    for (what, field, path, exit, says) in cases {
        let code = if exit == 11 {
            "INPUT_NOT_FOUND"
        } else {
            "UNSUPPORTED_FORMAT"
        };
        let c = Case {
            what,
            field,
            path,
            code,
            exit,
        };
        let line = check(&sb, &job, &c);
        assert!(line.contains(says), "{what}: {line}");
        assert!(!line.contains("video"), "{what}: called a video: {line}");
        if exit == 11 {
            assert!(
                line.starts_with(&format!("error: {code}: {field}: ")),
                "{line}"
            );
        }
    }
}

#[test]
fn a_few_corrupt_packets_are_decoded_past_and_counted() {
    // One packet in 40 damaged (under the 5 % threshold): the run completes, the manifest
    // counts them and the log warns.
    let sb = Sandbox::new();
    let mut job = base_job(&sb);
    let m4a = corrupt_m4a(&sb, "some corrupt.m4a", 40);
    job["audio"] = json!(m4a);
    let p = sb.write_job("job.json", &job);
    let (_, m) = sb.run_ok(&p, &sb.join("wd"));
    let n = m["phases"]["prepare"]["corrupt_packets"].as_u64().unwrap();
    assert!(n >= 1, "counted: {}", m["phases"]["prepare"]);
    let warnings = m["warnings"].to_string();
    assert!(warnings.contains("corrupt"), "{warnings}");
}

#[test]
fn paths_with_spaces_and_unicode_work() {
    let sb = Sandbox::new();
    let mut job = base_job(&sb);
    let dir = sb.join("Stimme und Bild – ü ß 字");
    std::fs::create_dir(&dir).unwrap();
    let audio = dir.join("meine Stimme ö.wav");
    write_wav(&audio, 16_000, 1, 8_000);
    let img = dir.join("Gesicht é.png");
    write_face_png(&img, 64, 48);
    job["audio"] = json!(audio);
    job["start_image"] = json!(img);
    let p = sb.write_job("job ü.json", &job);
    let (final_mp4, m) = sb.run_ok(&p, &dir.join("Ausgabe ä"));
    assert_eq!(m["run_status"], "completed");
    assert_eq!(
        count_video_frames(&final_mp4),
        13,
        "0.5 s at 25 fps, rounded"
    );
}

#[test]
fn non_utf8_paths_work_through_produce() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let dir = sb
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9 latin1"));
    std::fs::create_dir(&dir).unwrap();
    let audio = dir.join(std::ffi::OsStr::from_bytes(b"voix \xe9t\xe9.wav"));
    write_wav(&audio, 16_000, 1, 8_000);
    let img = dir.join(std::ffi::OsStr::from_bytes(b"visage\xff.png"));
    write_face_png(&img, 64, 48);
    let out = sb
        .va()
        .args(["produce", "--no-comfyui", "--fps", "25"])
        .arg("--audio")
        .arg(&audio)
        .arg("--start")
        .arg(&img)
        .arg("--workdir")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{err}");
    assert_eq!(count_video_frames(&dir.join("out/fertig.mp4")), 13);
}

#[test]
fn wrong_types_and_out_of_range_values_are_validation_failures_naming_the_field() {
    let (sb, job) = sandbox_with_a_run();
    let cases = [
        ("audio", json!(5)),
        ("buffer", json!({ "pre_seconds": "half a second" })),
        ("render", json!({ "max_width": true })),
        ("determinism", json!({ "fps": [25], "seed": 1 })),
        ("limits", json!({ "max_image_pixels": 0 })),
        ("background", json!("#12345")),
    ];
    for (field, value) in cases {
        let mut j = job.clone();
        j[field] = value.clone();
        let p = sb.write_job(&format!("bad_{field}.json"), &j);
        let before = std::fs::read(sb.runs_json()).unwrap();
        let out = va_run(&sb, &p, &sb.join(&format!("wd-{field}")));
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(10), "{field}={value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains("VALIDATION_FAILED") && err.contains(field),
            "{field}: {err}"
        );
        assert_eq!(std::fs::read(sb.runs_json()).unwrap(), before);
        assert!(!sb.join(&format!("wd-{field}")).exists(), "nothing written");
    }
}

/// Issue 12, admit once: a workflow id that is neither built in nor a template is refused at
/// admission, with its code, before the run got an id: no workdir, no manifest, no registry
/// entry (it used to fail inside the run, recorded).
#[test]
fn an_unknown_workflow_id_is_refused_at_admission_leaving_no_record() {
    let (sb, mut job) = sandbox_with_a_run();
    // ComfyUI on, at a port nothing listens on: admission must answer before any request.
    job["comfyui"] = json!({
        "enable": true, "url": "http://127.0.0.1:9", "workflow_ids": ["vidax_faceprobe", "no_such_flow"],
    });
    let p = sb.write_job("unknown_flow.json", &job);
    let wd = sb.join("wd-unknown-flow");
    let before = std::fs::read(sb.runs_json()).unwrap();
    let out = va_run(&sb, &p, &wd);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(
        err.contains("VALIDATION_FAILED")
            && err.contains("comfyui.workflow_ids[1]: no workflow \"no_such_flow\""),
        "{err}"
    );
    assert!(!wd.exists(), "no workdir");
    assert_eq!(
        std::fs::read(sb.runs_json()).unwrap(),
        before,
        "registry untouched"
    );
    // A built-in workflow for the other start kind: refused the same way.
    job["comfyui"]["workflow_ids"] = json!(["vidax_wav2lip_video_audio"]);
    let p = sb.write_job("wrong_kind_flow.json", &job);
    let out = va_run(&sb, &p, &wd);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(
        err.contains("comfyui.workflow_ids[0]: vidax_wav2lip_video_audio needs a start_video"),
        "{err}"
    );
    assert!(!wd.exists(), "no workdir");
    assert_eq!(std::fs::read(sb.runs_json()).unwrap(), before);
}
