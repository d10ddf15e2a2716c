//! The job file (SPEC §3): its schema, defaults and validation, and the effective job.
//!
//! This module owns what a job may say and what it means when it says nothing: reading the
//! JSON file, reporting every problem at once with its JSON path, resolving input paths
//! against the job file's folder, and writing the effective job back out. It does not probe or
//! open the media files it names ([`Job::check_inputs`] only checks they exist); the schema
//! is documented field by field in `docs/JOB_SCHEMA.md`, which a test keeps in step with the
//! code.

pub mod draft;
pub mod schema;
pub mod validate;

use std::path::Path;

pub use draft::JobDraft;
pub use schema::{
    AudioRate, Buffer, Choice, Comfyui, Determinism, Encode, EndImageFit, Job, Limits, Lipsync,
    Loudness, Motion, OnNoFace, Output, Preset, Render, Retry, Rgb, Seconds, SeedPolicy, StartKind,
    VideoOptions, Wav2lip, Wav2lipMode,
};
pub use validate::{from_value, Problem};

use crate::error::{Error, ErrorKind, Result};

/// Reads, parses and validates the job file at `path`; relative input paths resolve against
/// the file's folder.
///
/// A missing or unreadable file is `INPUT_NOT_FOUND`; a JSON syntax error is
/// `VALIDATION_FAILED` as `path:line:column: message`; schema problems are
/// `VALIDATION_FAILED` listing all of them (see [`problems_error`]).
pub fn load(path: &Path) -> Result<Job> {
    let v = read_json(path)?;
    let base = job_folder(path);
    from_value(v, &base).map_err(|problems| problems_error(path, &problems))
}

/// The largest job file (and job request body) accepted: 16 MiB. A real job is a few KiB;
/// the bound keeps a hostile file from costing gigabytes of parsed JSON (a 25-million-element
/// array took 1.8 GB before it was refused by the schema).
pub const MAX_JOB_BYTES: u64 = 16 << 20;

/// Reads the job file as JSON without validating it (for `va validate`, which prints the
/// problems one per line through [`from_value`]). A file over [`MAX_JOB_BYTES`] is refused
/// before it is read.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    use std::io::Read;
    if path.is_dir() {
        return Err(Error::at_path(
            ErrorKind::InputNotFound,
            path,
            "is a folder, not a job file",
        ));
    }
    let not_read = |e: std::io::Error| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "job file not found".to_string(),
            _ => format!("cannot read job file: {e}"),
        };
        Error::at_path(ErrorKind::InputNotFound, path, reason)
    };
    let file = std::fs::File::open(path).map_err(not_read)?;
    let size = file.metadata().map_err(not_read)?.len();
    let too_big = |size: String| {
        Error::at_path(
            ErrorKind::ValidationFailed,
            path,
            format!("job file is {size} bytes, over the {MAX_JOB_BYTES} a job file may have; not parsed"),
        )
    };
    if size > MAX_JOB_BYTES {
        return Err(too_big(size.to_string()));
    }
    // Bounded again while reading: a pipe or a growing file has no size up front.
    let mut bytes = Vec::new();
    file.take(MAX_JOB_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(not_read)?;
    if bytes.len() as u64 > MAX_JOB_BYTES {
        return Err(too_big("more than that".to_string()));
    }
    parse_json(&bytes, path)
}

/// Parses job-file bytes (read from `path`, named in errors) as JSON: a syntax error becomes
/// `VALIDATION_FAILED` with line and column.
pub fn parse_json(bytes: &[u8], path: &Path) -> Result<serde_json::Value> {
    // Editors on Windows like to start UTF-8 files with a byte-order mark; JSON forbids it.
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    serde_json::from_slice(text).map_err(|e| {
        Error::new(
            ErrorKind::ValidationFailed,
            format!(
                "{}:{}:{}: {}",
                path.display(),
                e.line(),
                e.column(),
                syntax_message(&e)
            ),
        )
    })
}

/// The folder relative input paths of the job file at `path` resolve against, absolute.
pub fn job_folder(path: &Path) -> std::path::PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    abs.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// serde_json's message without its trailing ` at line L column C` (we put the position first).
fn syntax_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).unwrap_or(&full).to_string()
}

/// The crate error for a job with problems: `VALIDATION_FAILED`, message
/// `job.json: 3 problems: a: …; b: …; c: …` (the file as given).
pub fn problems_error(file: &Path, problems: &[Problem]) -> Error {
    let n = problems.len();
    let list: Vec<String> = problems.iter().map(Problem::to_string).collect();
    Error::new(
        ErrorKind::ValidationFailed,
        format!(
            "{}: {n} problem{}: {}",
            file.display(),
            if n == 1 { "" } else { "s" },
            list.join("; ")
        ),
    )
    .with_hint("the job schema is in docs/JOB_SCHEMA.md")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    const DOC: &str = include_str!("../../docs/JOB_SCHEMA.md");

    fn full_job() -> Value {
        json!({
            "audio": "voice.wav",
            "start_image": "face.png",
            "end_image": "end image.png",
            "buffer": {"pre_seconds": 0.5, "post_seconds": 1.25},
            "determinism": {"fps": "30000/1001", "rounding": "floor", "seed": 1234,
                            "seed_policy": "per_retry"},
            "render": {"width": 640, "height": 360, "max_width": 1280, "max_height": 720},
            "motion": {"mode": "zoom_out", "strength": 0.2},
            "video": {"extend": "loop"},
            "end_image_fit": "cover",
            "background": "#102030",
            "comfyui": {"enable": false, "url": "https://gpu:8188", "workflow_ids": ["a", "b"],
                        "chunk_size": 48, "poll_interval_ms": 250, "timeout_seconds": 60,
                        "input_dir": "comfy in", "retry": {"attempts": 5, "backoff_ms": 0},
                        "wav2lip": {"mode": "repetitive", "face_detect_batch": 16,
                                    "on_no_face": "error"}},
            "lipsync": {"enable": true, "provider": "ext", "allow_passthrough": true},
            "prompt": "a calm speaker", "negative": "blur",
            "encode": {"preset": "slow", "crf": 18, "audio_bitrate": 128000, "threads": 4,
                       "audio_rate": "source", "loudness": {"target_lufs": -16, "true_peak_db": -1}},
            "output": {"final_name": "fertig.mp4"},
            "limits": {"max_image_pixels": 1000000}
        })
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_job_file_over_the_bound_is_refused_before_it_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        // 25 million array elements: 50 MB, refused from its size (nothing is parsed).
        let p = dir.path().join("huge.json");
        let mut f = std::fs::File::create(&p).unwrap();
        std::io::Write::write_all(&mut f, b"[").unwrap();
        let chunk = "0,".repeat(1 << 20);
        for _ in 0..24 {
            std::io::Write::write_all(&mut f, chunk.as_bytes()).unwrap();
        }
        std::io::Write::write_all(&mut f, b"0]").unwrap();
        drop(f);
        let e = read_json(&p).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ValidationFailed);
        assert!(
            e.message.contains("huge.json") && e.message.contains("not parsed"),
            "{e}"
        );
        // Just under the bound still parses (as JSON; the schema is another matter).
        let ok = dir.path().join("ok.json");
        let mut text = String::from("{\"audio\": \"a.wav\", \"prompt\": \"");
        text.push_str(&"x".repeat(MAX_JOB_BYTES as usize - 64));
        text.push_str("\"}");
        std::fs::write(&ok, &text).unwrap();
        assert!(read_json(&ok).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_path_that_is_not_utf8_round_trips_through_the_effective_job() {
        use std::os::unix::ffi::OsStringExt;
        let odd = PathBuf::from(std::ffi::OsString::from_vec(
            b"/data/caf\xe9/voice.wav".to_vec(),
        ));
        let mut v = json!({"audio": "/data/voice.wav", "start_image": "/data/face.png",
            "determinism": {"seed": 1}});
        v["audio"] = crate::files::path_json::to_value(&odd);
        assert_eq!(v["audio"], json!({"escaped": "/data/caf%E9/voice.wav"}));
        let j = from_value(v, Path::new("/jobs")).unwrap();
        assert_eq!(j.audio, odd);
        let effective = j.to_effective_json();
        assert_eq!(
            effective["audio"],
            json!({"escaped": "/data/caf%E9/voice.wav"})
        );
        assert_eq!(from_value(effective, Path::new("/elsewhere")).unwrap(), j);
        // A malformed escape is a problem at its field.
        let bad = json!({"audio": {"escaped": "/a%zz"}, "start_image": "/f.png",
            "determinism": {"seed": 1}});
        let problems = from_value(bad, Path::new("/jobs")).unwrap_err();
        assert_eq!(problems[0].path, "audio", "{problems:?}");
    }

    #[test]
    fn effective_job_round_trips() {
        for v in [
            full_job(),
            json!({"audio": "a.wav", "start_video": "v.mp4", "determinism": {"seed": 0}}),
            json!({"audio": "a.wav", "start_image": "i.png",
                   "comfyui": {"url": "http://gpu1:8188,http://gpu2:8188"}}),
        ] {
            let job = from_value(v, Path::new("/jobs")).unwrap();
            let eff = job.to_effective_json();
            // Every path in the effective job is absolute, so any base gives the same job.
            let again = from_value(eff.clone(), Path::new("/elsewhere")).unwrap();
            assert_eq!(again, job);
            assert_eq!(again.to_effective_json(), eff);
        }
    }

    #[test]
    fn effective_job_shape() {
        let job = from_value(full_job(), Path::new("/jobs")).unwrap();
        let eff = job.to_effective_json();
        assert_eq!(eff["audio"], "/jobs/voice.wav");
        assert_eq!(eff["start_image"], "/jobs/face.png");
        assert_eq!(eff["start_video"], Value::Null);
        assert_eq!(eff["end_image"], "/jobs/end image.png");
        assert_eq!(eff["determinism"]["fps"], "30000/1001");
        assert_eq!(eff["buffer"]["post_seconds"], 1.25);
        assert_eq!(eff["comfyui"]["input_dir"], "/jobs/comfy in");
        assert_eq!(eff["background"], "#102030");
        let keys: Vec<&String> = eff.as_object().unwrap().keys().collect();
        assert_eq!(keys.first().map(|k| k.as_str()), Some("audio"));
        let min = from_value(
            json!({"audio": "a.wav", "start_video": "v.mp4",
            "determinism": {"seed": 3}}),
            Path::new("/j"),
        )
        .unwrap();
        let eff = min.to_effective_json();
        assert_eq!(eff["determinism"]["fps"], 25);
        assert_eq!(eff["start_image"], Value::Null);
        assert_eq!(eff["encode"]["preset"], "veryfast");
    }

    #[test]
    fn helpers() {
        let job = from_value(full_job(), Path::new("/jobs")).unwrap();
        assert_eq!((job.fps().num(), job.fps().den()), (30000, 1001));
        assert_eq!((job.pre_seconds().num(), job.pre_seconds().den()), (1, 2));
        assert_eq!((job.post_seconds().num(), job.post_seconds().den()), (5, 4));
        assert_eq!(
            job.start_kind(),
            StartKind::Image(PathBuf::from("/jobs/face.png"))
        );
        let fields: Vec<&str> = job.inputs().iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["audio", "start_image", "end_image"]);
    }

    #[test]
    fn load_resolves_against_the_job_folder() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("my jobs ü");
        std::fs::create_dir(&sub).unwrap();
        let p = write(
            &sub,
            "job.json",
            r#"{"audio": "voice.wav", "start_image": "img/face.png", "determinism": {"seed": 1}}"#,
        );
        let job = load(&p).unwrap();
        assert_eq!(job.audio, sub.join("voice.wav"));
        assert_eq!(job.start.path(), sub.join("img/face.png"));
        let err = job.check_inputs().unwrap_err();
        assert_eq!(err.kind, ErrorKind::InputNotFound);
        assert!(err.message.starts_with("audio: "), "{err}");
        std::fs::write(sub.join("voice.wav"), b"").unwrap();
        std::fs::create_dir_all(sub.join("img/face.png")).unwrap();
        let err = job.check_inputs().unwrap_err();
        assert!(
            err.message.starts_with("start_image: ") && err.message.ends_with("folder, not a file")
        );
    }

    #[test]
    fn load_accepts_a_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "job.json",
            "\u{feff}{\"audio\": \"a.wav\", \"start_image\": \"i.png\", \"determinism\": {\"seed\": 1}}",
        );
        assert!(load(&p).is_ok());
    }

    #[test]
    fn missing_job_file_is_input_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.json");
        let err = load(&p).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InputNotFound);
        assert!(err.message.contains("nope.json"), "{err}");
        assert!(err.message.contains("not found"), "{err}");
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InputNotFound);
        assert!(err.message.contains("folder"), "{err}");
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "job.json",
            "{\n  \"audio\": \"a.wav\",\n  \"start_image\" \"x\"\n}\n",
        );
        let err = load(&p).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ValidationFailed);
        let expected = format!("{}:3:17: expected `:`", p.display());
        assert_eq!(err.message, expected);
        for text in ["", "{", "{\"a\": 1,}", "\u{0}", "[1, 2"] {
            let p = write(dir.path(), "bad.json", text);
            let err = load(&p).unwrap_err();
            assert_eq!(err.kind, ErrorKind::ValidationFailed, "{text:?}");
        }
        std::fs::write(dir.path().join("bin.json"), [0xff, 0xfe, 0x00]).unwrap();
        let err = load(&dir.path().join("bin.json")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ValidationFailed);
    }

    #[test]
    fn problems_become_one_validation_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "job.json",
            r#"{"audio": "a.wav", "start_image": "i.png", "determinism": {"seed": 1},
                "buffer": {"pre_second": 1, "post_seconds": -1}, "encode": {"crf": 60}}"#,
        );
        let err = load(&p).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ValidationFailed);
        assert_eq!(err.exit_code(), 10);
        assert_eq!(
            err.message,
            format!(
                "{}: 3 problems: buffer.post_seconds: must be >= 0 (got -1); \
                 buffer.pre_second: unknown field \"pre_second\", did you mean \"pre_seconds\"?; \
                 encode.crf: must be <= 51 (got 60)",
                p.display()
            )
        );
        let one = problems_error(
            Path::new("job.json"),
            &[Problem {
                path: "audio".into(),
                message: "is required".into(),
            }],
        );
        assert_eq!(one.message, "job.json: 1 problem: audio: is required");
    }

    #[test]
    fn doc_example_is_the_default_job() {
        let block = DOC
            .rsplit("```json")
            .next()
            .and_then(|rest| rest.split("```").next())
            .unwrap();
        let v: Value = serde_json::from_str(block).unwrap();
        let documented = from_value(v, Path::new("/jobs")).unwrap();
        let minimal = from_value(
            json!({"audio": "voice.wav", "start_image": "face.png", "determinism": {"seed": 1234}}),
            Path::new("/jobs"),
        )
        .unwrap();
        assert_eq!(documented, minimal);
    }

    /// Every object and field path of the effective job, e.g. `buffer`, `buffer.pre_seconds`.
    fn field_paths(prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
        if let Value::Object(m) = v {
            for (k, child) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                field_paths(&path, child, out);
                out.insert(path);
            }
        }
    }

    /// The paths the doc documents: the first cell of each table row, written `` `a.b` ``.
    fn documented_paths(doc: &str) -> BTreeSet<String> {
        doc.lines()
            .filter_map(|l| l.trim().strip_prefix("| `"))
            .filter_map(|rest| rest.split_once('`').map(|(path, _)| path.to_string()))
            .collect()
    }

    #[test]
    fn schema_doc_matches_the_code() {
        let job = from_value(full_job(), Path::new("/jobs")).unwrap();
        let mut code = BTreeSet::new();
        field_paths("", &job.to_effective_json(), &mut code);
        let doc = documented_paths(DOC);
        let undocumented: Vec<_> = code.difference(&doc).collect();
        let unknown: Vec<_> = doc.difference(&code).collect();
        assert!(
            undocumented.is_empty(),
            "fields missing from docs/JOB_SCHEMA.md: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "docs/JOB_SCHEMA.md documents fields the code lacks: {unknown:?}"
        );
    }

    #[test]
    fn schema_doc_names_every_choice() {
        fn names<T: Choice>() -> Vec<&'static str> {
            T::NAMES.iter().map(|(n, _)| *n).collect()
        }
        use crate::timeline::{Extend, MotionMode, Rounding};
        let all = [
            names::<Rounding>(),
            names::<MotionMode>(),
            names::<Extend>(),
            names::<SeedPolicy>(),
            names::<EndImageFit>(),
            names::<Wav2lipMode>(),
            names::<OnNoFace>(),
            names::<Preset>(),
        ];
        for name in all.iter().flatten() {
            assert!(
                DOC.contains(&format!("`{name}`")),
                "docs/JOB_SCHEMA.md lacks `{name}`"
            );
        }
    }
}
