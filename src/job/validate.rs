//! Validation: turns a parsed JSON value into a [`Job`] or the complete list of problems.
//!
//! The value is walked by hand rather than through serde, so that one pass reports every
//! unknown field, wrong type, out-of-range value and cross-field conflict, each with its JSON
//! path. This module owns the ranges and rules (docs/JOB_SCHEMA.md describes them); it does not
//! touch the file system beyond making paths absolute.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::schema::{
    AudioRate, Buffer, Choice, Comfyui, Determinism, Encode, EndImageFit, Job, Limits, Lipsync,
    Loudness, Motion, Output, Render, Retry, Rgb, Seconds, SeedPolicy, StartKind, VideoOptions,
    Wav2lip,
};
use crate::files::path_json;
use crate::media::audio::AAC_RATES;
use crate::timeline::{parse_fps, Rational};

/// One thing wrong with a job, at a JSON path such as `buffer.post_seconds` or
/// `comfyui.workflow_ids[1]` (`$` is the document itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every object of the job with its allowed keys, in document order. The walker checks
/// unknown keys against it, and a test checks it against the effective job.
pub const SCHEMA: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "audio",
            "start_image",
            "start_video",
            "end_image",
            "buffer",
            "determinism",
            "render",
            "motion",
            "video",
            "end_image_fit",
            "background",
            "comfyui",
            "lipsync",
            "prompt",
            "negative",
            "encode",
            "output",
            "limits",
        ],
    ),
    ("buffer", &["pre_seconds", "post_seconds"]),
    ("determinism", &["fps", "rounding", "seed", "seed_policy"]),
    ("render", &["width", "height", "max_width", "max_height"]),
    ("motion", &["mode", "strength"]),
    ("video", &["extend"]),
    (
        "comfyui",
        &[
            "enable",
            "url",
            "workflow_ids",
            "chunk_size",
            "poll_interval_ms",
            "timeout_seconds",
            "input_dir",
            "retry",
            "wav2lip",
        ],
    ),
    ("comfyui.retry", &["attempts", "backoff_ms"]),
    (
        "comfyui.wav2lip",
        &["mode", "face_detect_batch", "on_no_face"],
    ),
    ("lipsync", &["enable", "provider", "allow_passthrough"]),
    (
        "encode",
        &[
            "preset",
            "crf",
            "audio_bitrate",
            "threads",
            "audio_rate",
            "loudness",
        ],
    ),
    ("encode.loudness", &["target_lufs", "true_peak_db"]),
    ("output", &["final_name"]),
    (
        "limits",
        &[
            "max_image_pixels",
            "max_comfyui_json_bytes",
            "max_comfyui_file_bytes",
        ],
    ),
];

/// Largest integer a JSON reader using doubles (JavaScript) holds exactly: 2^53.
pub const MAX_SEED: u64 = 1 << 53;
/// Longest buffer, in seconds.
pub const MAX_BUFFER_SECONDS: f64 = 3600.0;
/// Highest frame rate accepted.
pub const MAX_FPS: u64 = 240;
/// The range of `encode.loudness.target_lufs`.
pub const MIN_LUFS: f64 = -50.0;
pub const MAX_LUFS: f64 = -5.0;
/// The lowest `encode.loudness.true_peak_db`.
pub const MIN_TRUE_PEAK_DB: f64 = -9.0;
/// The range of `limits.max_comfyui_json_bytes` and `limits.max_comfyui_file_bytes`:
/// 1 KiB to 1 TiB.
pub const MIN_COMFYUI_BYTES: u64 = 1 << 10;
pub const MAX_COMFYUI_BYTES: u64 = 1 << 40;

/// Validates `v` and builds the job; relative input paths are resolved against `base_dir`
/// (made absolute first). On failure, every problem found, sorted by path.
pub fn from_value(v: Value, base_dir: &Path) -> Result<Job, Vec<Problem>> {
    let base = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    let mut w = Walk::default();
    let job = w.job(&v, &base);
    let mut problems = w.problems;
    match job {
        Some(job) if problems.is_empty() => Ok(job),
        _ => {
            if problems.is_empty() {
                // Unreachable by construction: a missing part always records why.
                problems.push(Problem {
                    path: "$".into(),
                    message: "incomplete job".into(),
                });
            }
            problems.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| a.message.cmp(&b.message)));
            problems.dedup();
            Err(problems)
        }
    }
}

/// A JSON object being read: its path and, when present and an object, its members.
struct Obj<'a> {
    path: String,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Obj<'a> {
    /// The member `key`; `None` when absent (or when the object itself is absent or broken).
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key))
    }

    /// The member `key` unless it is absent or `null`.
    fn given(&self, key: &str) -> Option<&'a Value> {
        self.get(key).filter(|v| !v.is_null())
    }

    fn child(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Collects problems while reading. Each reader records what is wrong and returns the default
/// (or `None`), so the walk always reaches the end; a job with problems is discarded.
#[derive(Default)]
struct Walk {
    problems: Vec<Problem>,
}

impl Walk {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn job(&mut self, v: &Value, base: &Path) -> Option<Job> {
        let root = match v {
            Value::Object(m) => {
                self.unknown_keys("", m);
                Obj {
                    path: String::new(),
                    map: Some(m),
                }
            }
            other => {
                self.push("$", format!("must be a JSON object (got {})", kind(other)));
                return None;
            }
        };

        let audio = self.path(&root, "audio", base);
        if root.given("audio").is_none() {
            self.push("audio", "is required (the speech audio file)");
        }
        let start_image = self.path(&root, "start_image", base);
        let start_video = self.path(&root, "start_video", base);
        let start = match (root.given("start_image"), root.given("start_video")) {
            (Some(_), Some(_)) => {
                self.push(
                    "start_image",
                    "give only one of start_image and start_video, not both",
                );
                None
            }
            (None, None) => {
                self.push(
                    "start_image",
                    "one of start_image or start_video is required",
                );
                None
            }
            _ => match (start_image, start_video) {
                (Some(p), None) => Some(StartKind::Image(p)),
                (None, Some(p)) => Some(StartKind::Video(p)),
                _ => None,
            },
        };
        let end_image = self.path(&root, "end_image", base);

        let buffer = self.buffer(&root);
        let determinism = self.determinism(&root);
        let render = self.render(&root);
        let motion = self.motion(&root);
        let video = {
            let o = self.object(&root, "video");
            VideoOptions {
                extend: self.choice(&o, "extend", VideoOptions::default().extend),
            }
        };
        let end_image_fit = self.choice(&root, "end_image_fit", EndImageFit::default());
        let background = match root.get("background") {
            None => Rgb::default(),
            Some(Value::String(s)) => Rgb::parse(s).unwrap_or_else(|m| {
                self.push(
                    "background",
                    format!("{m} (got {})", shown(&Value::from(s.as_str()))),
                );
                Rgb::default()
            }),
            Some(other) => {
                self.push(
                    "background",
                    format!("must be a string like \"#000000\" (got {})", kind(other)),
                );
                Rgb::default()
            }
        };
        let comfyui = self.comfyui(&root, base);
        let lipsync = self.lipsync(&root, &comfyui);
        let prompt = self.opt_string(&root, "prompt");
        let negative = self.opt_string(&root, "negative");
        let encode = self.encode(&root);
        // A fixed delivery rate is known now: a frame rate the MP4 cannot time exactly with it
        // is refused here (with "source" the check waits for the input's rate, at admission).
        if let (Some(d), crate::job::AudioRate::Hz(rate)) = (&determinism, encode.audio_rate) {
            if let Some(why) = crate::timeline::timescale_problem(rate, d.fps) {
                self.push("determinism.fps", why);
            }
        }
        let output = self.output(&root);
        let limits = {
            let o = self.object(&root, "limits");
            let d = Limits::default();
            Limits {
                max_image_pixels: self.int(
                    &o,
                    "max_image_pixels",
                    d.max_image_pixels,
                    4,
                    1_000_000_000,
                ),
                max_comfyui_json_bytes: self.int(
                    &o,
                    "max_comfyui_json_bytes",
                    d.max_comfyui_json_bytes,
                    MIN_COMFYUI_BYTES,
                    MAX_COMFYUI_BYTES,
                ),
                max_comfyui_file_bytes: self.int(
                    &o,
                    "max_comfyui_file_bytes",
                    d.max_comfyui_file_bytes,
                    MIN_COMFYUI_BYTES,
                    MAX_COMFYUI_BYTES,
                ),
            }
        };

        Some(Job {
            audio: audio?,
            start: start?,
            end_image,
            buffer: buffer?,
            determinism: determinism?,
            render,
            motion,
            video,
            end_image_fit,
            background,
            comfyui,
            lipsync,
            prompt,
            negative,
            encode,
            output,
            limits,
        })
    }

    fn buffer(&mut self, root: &Obj) -> Option<Buffer> {
        let o = self.object(root, "buffer");
        let pre = self.seconds(&o, "pre_seconds");
        let post = self.seconds(&o, "post_seconds");
        Some(Buffer {
            pre_seconds: pre?,
            post_seconds: post?,
        })
    }

    fn seconds(&mut self, o: &Obj, key: &str) -> Option<Seconds> {
        let x = self.number(o, key, 0.0, 0.0, MAX_BUFFER_SECONDS);
        Seconds::new(x).map_err(|m| self.push(o.child(key), m)).ok()
    }

    fn determinism(&mut self, root: &Obj) -> Option<Determinism> {
        let o = self.object(root, "determinism");
        let fps = self.fps(&o);
        let rounding = self.choice(&o, "rounding", crate::timeline::Rounding::Round);
        let seed = self.opt_int(&o, "seed", 0, MAX_SEED);
        // The policy follows the seed unless it is given: `fixed` with a seed, `random`
        // (drawn per run and recorded) without one.
        let default_policy = if o.given("seed").is_some() {
            SeedPolicy::Fixed
        } else {
            SeedPolicy::Random
        };
        let seed_policy = self.choice(&o, "seed_policy", default_policy);
        // Only an explicit `fixed` needs a seed; a broken seed is its own problem.
        if o.get("seed_policy").is_some_and(|v| v == "fixed") && o.given("seed").is_none() {
            self.push(
                o.child("seed"),
                "is required when determinism.seed_policy is \"fixed\" \
                 (give a seed, or leave seed_policy out to draw one per run)",
            );
        }
        Some(Determinism {
            fps: fps?,
            rounding,
            seed,
            seed_policy,
        })
    }

    fn fps(&mut self, o: &Obj) -> Option<Rational> {
        let path = o.child("fps");
        let text = match o.get("fps") {
            None => "25".to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.trim().to_string(),
            Some(other) => {
                self.push(
                    path,
                    format!(
                        "must be a number or a string like \"30000/1001\" (got {})",
                        kind(other)
                    ),
                );
                return None;
            }
        };
        let r = match parse_fps(&text) {
            Ok(r) => r,
            Err(m) => {
                self.push(path, format!("not a frame rate: {m}"));
                return None;
            }
        };
        // num/den <= MAX_FPS, compared without division (u128: no overflow).
        let too_high = u128::from(r.num()) > u128::from(MAX_FPS) * u128::from(r.den());
        if r.num() == 0 || r.den() == 0 {
            self.push(path, "must be > 0");
            None
        } else if too_high {
            self.push(path, format!("must be <= {MAX_FPS} (got {text})"));
            None
        } else {
            Some(r)
        }
    }

    fn render(&mut self, root: &Obj) -> Render {
        let o = self.object(root, "render");
        let d = Render::default();
        let width = self.opt_int(&o, "width", 2, 8192);
        let height = self.opt_int(&o, "height", 2, 8192);
        match (o.given("width").is_some(), o.given("height").is_some()) {
            (true, false) => self.push(
                o.child("height"),
                "must be given together with render.width",
            ),
            (false, true) => self.push(
                o.child("width"),
                "must be given together with render.height",
            ),
            _ => {}
        }
        Render {
            width,
            height,
            max_width: self.int(&o, "max_width", d.max_width, 2, 8192),
            max_height: self.int(&o, "max_height", d.max_height, 2, 8192),
        }
    }

    fn motion(&mut self, root: &Obj) -> Motion {
        let o = self.object(root, "motion");
        let d = Motion::default();
        Motion {
            mode: self.choice(&o, "mode", d.mode),
            strength: self.number(&o, "strength", d.strength, 0.0, 0.5),
        }
    }

    fn comfyui(&mut self, root: &Obj, base: &Path) -> Comfyui {
        let o = self.object(root, "comfyui");
        let d = Comfyui::default();
        let pool = self.urls(&o, &d.pool);
        let url = pool.first().cloned().unwrap_or_else(|| d.url.clone());
        let retry = {
            let r = self.object(&o, "retry");
            let d = Retry::default();
            Retry {
                attempts: self.int(&r, "attempts", d.attempts, 1, 20),
                backoff_ms: self.int(&r, "backoff_ms", d.backoff_ms, 0, 600_000),
            }
        };
        let wav2lip = {
            let x = self.object(&o, "wav2lip");
            let d = Wav2lip::default();
            Wav2lip {
                mode: self.choice(&x, "mode", d.mode),
                face_detect_batch: self.int(&x, "face_detect_batch", d.face_detect_batch, 1, 256),
                on_no_face: self.choice(&x, "on_no_face", d.on_no_face),
            }
        };
        Comfyui {
            enable: self.boolean(&o, "enable", d.enable),
            url,
            pool,
            workflow_ids: self.workflow_ids(&o),
            chunk_size: self.opt_int(&o, "chunk_size", 1, 100_000),
            poll_interval_ms: self.int(&o, "poll_interval_ms", d.poll_interval_ms, 10, 60_000),
            timeout_seconds: self.int(&o, "timeout_seconds", d.timeout_seconds, 1, 604_800),
            input_dir: self.path(&o, "input_dir", base),
            retry,
            wav2lip,
        }
    }

    /// `comfyui.url`: one URL, several separated by commas (`COMFYUI_URL`), or a list; each
    /// an http(s) URL, none twice.
    fn urls(&mut self, o: &Obj, default: &[String]) -> Vec<String> {
        let path = o.child("url");
        let listed: Vec<(String, String)> = match o.get("url") {
            None => return default.to_vec(),
            Some(Value::String(s)) => s
                .split(',')
                .map(|u| (path.clone(), u.trim().to_string()))
                .collect(),
            Some(Value::Array(a)) if !a.is_empty() => {
                let mut out = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v {
                        Value::String(s) => {
                            out.push((format!("{path}[{i}]"), s.trim().to_string()))
                        }
                        other => self.push(
                            format!("{path}[{i}]"),
                            format!("must be a string (got {})", kind(other)),
                        ),
                    }
                }
                out
            }
            Some(Value::Array(_)) => {
                self.push(path, "must list at least one URL");
                return default.to_vec();
            }
            Some(other) => {
                self.push(
                    path,
                    format!(
                        "must be a string or an array of strings (got {})",
                        kind(other)
                    ),
                );
                return default.to_vec();
            }
        };
        let mut out: Vec<String> = Vec::new();
        for (at, u) in listed {
            if let Err(m) = check_url(&u) {
                self.push(at, m);
            } else if out.iter().any(|x| {
                x.trim_end_matches('/')
                    .eq_ignore_ascii_case(u.trim_end_matches('/'))
            }) {
                self.push(at, format!("lists {} twice", quoted(&u)));
            } else {
                out.push(u);
            }
        }
        out
    }

    fn workflow_ids(&mut self, o: &Obj) -> Option<Vec<String>> {
        let path = o.child("workflow_ids");
        let items = match o.given("workflow_ids")? {
            Value::Array(items) => items,
            other => {
                self.push(
                    path,
                    format!(
                        "must be an array of workflow ids or null (got {})",
                        kind(other)
                    ),
                );
                return None;
            }
        };
        if items.is_empty() {
            self.push(path, "must not be empty (use null for the defaults)");
            return None;
        }
        let mut ids = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match item {
                Value::String(s) => match check_workflow_id(s) {
                    Ok(()) => ids.push(s.clone()),
                    Err(m) => self.push(p, m),
                },
                other => self.push(p, format!("must be a string (got {})", kind(other))),
            }
        }
        Some(ids)
    }

    fn lipsync(&mut self, root: &Obj, comfyui: &Comfyui) -> Lipsync {
        let o = self.object(root, "lipsync");
        let enable = self.boolean(&o, "enable", false);
        let provider = self.opt_string(&o, "provider");
        if let Some(p) = &provider {
            if p.trim().is_empty() {
                self.push(o.child("provider"), "must not be empty (use null for none)");
            }
        }
        // Lip-sync runs inside ComfyUI (Wav2Lip) or through an external provider; with neither
        // there is nothing that could do it.
        if enable && !comfyui.enable && o.given("provider").is_none() {
            self.push(
                o.child("provider"),
                "is required when lipsync.enable is true and comfyui.enable is false",
            );
        }
        Lipsync {
            enable,
            provider,
            allow_passthrough: self.boolean(&o, "allow_passthrough", false),
        }
    }

    fn encode(&mut self, root: &Obj) -> Encode {
        let o = self.object(root, "encode");
        let d = Encode::default();
        Encode {
            preset: self.choice(&o, "preset", d.preset),
            crf: self.int(&o, "crf", d.crf, 0, 51),
            audio_bitrate: self.int(&o, "audio_bitrate", d.audio_bitrate, 8_000, 512_000),
            threads: self.int(&o, "threads", d.threads, 0, 64),
            audio_rate: self.audio_rate(&o, d.audio_rate),
            loudness: self.loudness(&o),
        }
    }

    /// `encode.audio_rate`: a rate AAC carries, or `"source"`.
    fn audio_rate(&mut self, o: &Obj, default: AudioRate) -> AudioRate {
        let Some(v) = o.get("audio_rate") else {
            return default;
        };
        if v == "source" {
            return AudioRate::Source;
        }
        if let Some(r) = v.as_u64().and_then(|r| u32::try_from(r).ok()) {
            if AAC_RATES.contains(&r) {
                return AudioRate::Hz(r);
            }
        }
        let mut rates: Vec<u32> = AAC_RATES.to_vec();
        rates.sort_unstable();
        let list: Vec<String> = rates.iter().map(u32::to_string).collect();
        self.push(
            o.child("audio_rate"),
            format!(
                "must be \"source\" or a rate AAC carries: {} (got {})",
                list.join(", "),
                shown(v)
            ),
        );
        default
    }

    /// `encode.loudness`: `null` (off) or `{target_lufs, true_peak_db}`.
    fn loudness(&mut self, parent: &Obj) -> Option<Loudness> {
        parent.given("loudness")?;
        let o = self.object(parent, "loudness");
        o.map?;
        if o.given("target_lufs").is_none() {
            self.push(o.child("target_lufs"), "is required (e.g. -16 or -14)");
            return None;
        }
        Some(Loudness {
            target_lufs: self.number(&o, "target_lufs", -16.0, MIN_LUFS, MAX_LUFS),
            true_peak_db: self.number(
                &o,
                "true_peak_db",
                Loudness::DEFAULT_TRUE_PEAK_DB,
                MIN_TRUE_PEAK_DB,
                0.0,
            ),
        })
    }

    fn output(&mut self, root: &Obj) -> Output {
        let o = self.object(root, "output");
        let d = Output::default();
        let final_name = self.string(&o, "final_name", &d.final_name);
        if let Err(m) = check_final_name(&final_name) {
            self.push(o.child("final_name"), m);
        }
        Output { final_name }
    }

    // ---- readers: each records its problem and returns a default ----

    /// The object `key` of `parent`; an absent key reads as an empty object (all defaults).
    fn object<'a>(&mut self, parent: &Obj<'a>, key: &str) -> Obj<'a> {
        let path = parent.child(key);
        match parent.get(key) {
            Some(Value::Object(m)) => {
                self.unknown_keys(&path, m);
                Obj { path, map: Some(m) }
            }
            None => Obj { path, map: None },
            Some(other) => {
                self.push(&path, format!("must be an object (got {})", kind(other)));
                Obj { path, map: None }
            }
        }
    }

    fn unknown_keys(&mut self, path: &str, m: &Map<String, Value>) {
        let allowed = allowed_keys(path);
        for key in m.keys() {
            if !allowed.contains(&key.as_str()) {
                self.push(
                    join(path, &path_key(key)),
                    format!(
                        "unknown field {}{}",
                        quoted(key),
                        suggestion(path, key, allowed)
                    ),
                );
            }
        }
    }

    fn int<T: TryFrom<u64> + Copy>(
        &mut self,
        o: &Obj,
        key: &str,
        default: T,
        min: u64,
        max: u64,
    ) -> T {
        match o.get(key) {
            None => default,
            Some(v) => self
                .u64_in(o.child(key), v, min, max, false)
                .and_then(|x| T::try_from(x).ok())
                .unwrap_or(default),
        }
    }

    fn opt_int<T: TryFrom<u64> + Copy>(
        &mut self,
        o: &Obj,
        key: &str,
        min: u64,
        max: u64,
    ) -> Option<T> {
        let v = o.given(key)?;
        self.u64_in(o.child(key), v, min, max, true)
            .and_then(|x| T::try_from(x).ok())
    }

    fn u64_in(
        &mut self,
        path: String,
        v: &Value,
        min: u64,
        max: u64,
        nullable: bool,
    ) -> Option<u64> {
        let Value::Number(n) = v else {
            let or_null = if nullable { " or null" } else { "" };
            self.push(
                path,
                format!("must be an integer{or_null} (got {})", kind(v)),
            );
            return None;
        };
        if let Some(x) = n.as_u64() {
            if x < min {
                self.push(path, format!("must be >= {min} (got {x})"));
            } else if x > max {
                self.push(path, format!("must be <= {max} (got {x})"));
            } else {
                return Some(x);
            }
            return None;
        }
        // Negative integers and fractions: report the bound when it is broken, else the type.
        let f = n.as_f64().unwrap_or(f64::NAN);
        if f < min as f64 {
            self.push(path, format!("must be >= {min} (got {n})"));
        } else if f > max as f64 {
            self.push(path, format!("must be <= {max} (got {n})"));
        } else {
            self.push(path, format!("must be an integer (got {n})"));
        }
        None
    }

    fn number(&mut self, o: &Obj, key: &str, default: f64, min: f64, max: f64) -> f64 {
        let path = o.child(key);
        match o.get(key) {
            None => default,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x < min => {
                    self.push(path, format!("must be >= {min} (got {n})"));
                    default
                }
                Some(x) if x > max => {
                    self.push(path, format!("must be <= {max} (got {n})"));
                    default
                }
                // -0 is written back as 0, not as "-0.0".
                Some(x) => {
                    if x == 0.0 {
                        0.0
                    } else {
                        x
                    }
                }
                None => {
                    self.push(path, format!("must be a number (got {n})"));
                    default
                }
            },
            Some(other) => {
                self.push(path, format!("must be a number (got {})", kind(other)));
                default
            }
        }
    }

    fn boolean(&mut self, o: &Obj, key: &str, default: bool) -> bool {
        match o.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.push(
                    o.child(key),
                    format!("must be true or false (got {})", kind(other)),
                );
                default
            }
        }
    }

    fn string(&mut self, o: &Obj, key: &str, default: &str) -> String {
        match o.get(key) {
            None => default.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.push(
                    o.child(key),
                    format!("must be a string (got {})", kind(other)),
                );
                default.to_string()
            }
        }
    }

    fn opt_string(&mut self, o: &Obj, key: &str) -> Option<String> {
        match o.given(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.push(
                    o.child(key),
                    format!("must be a string or null (got {})", kind(other)),
                );
                None
            }
        }
    }

    fn choice<T: Choice>(&mut self, o: &Obj, key: &str, default: T) -> T {
        let Some(v) = o.get(key) else {
            return default;
        };
        if let Value::String(s) = v {
            if let Some((_, c)) = T::NAMES.iter().find(|(n, _)| n == s) {
                return *c;
            }
        }
        let names: Vec<String> = T::NAMES.iter().map(|(n, _)| quoted(n)).collect();
        let got = match v {
            Value::String(s) => match close_match(s, T::NAMES.iter().map(|(n, _)| *n)) {
                Some(near) => format!("{}; did you mean {}?", shown(v), quoted(near)),
                None => shown(v),
            },
            other => kind(other).to_string(),
        };
        self.push(
            o.child(key),
            format!("must be one of {} (got {got})", names.join(", ")),
        );
        default
    }

    /// An optional file path, resolved against the job's folder; `null` reads as absent. A
    /// path that is not UTF-8 is given in the escaped form of [`path_json`].
    fn path(&mut self, o: &Obj, key: &str, base: &Path) -> Option<PathBuf> {
        let path = o.child(key);
        let v = o.given(key)?;
        let given = match v {
            Value::String(s) if s.trim().is_empty() => {
                self.push(path, "must not be empty");
                return None;
            }
            Value::String(s) => PathBuf::from(s),
            other => match path_json::from_value(other) {
                Some(Ok(p)) => p,
                Some(Err(reason)) => {
                    self.push(path, reason);
                    return None;
                }
                None => {
                    self.push(
                        path,
                        format!("must be a file path string (got {})", kind(other)),
                    );
                    return None;
                }
            },
        };
        if path_json::os_bytes(&given).contains(&0) {
            self.push(path, "must not contain a NUL character");
            return None;
        }
        Some(resolve(base, &given))
    }
}

/// Absolute paths are kept; relative ones are joined to `base`. `.` components are dropped,
/// `..` is kept (resolving it needs the file system and symlinks).
fn resolve(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    std::path::absolute(&joined).unwrap_or(joined)
}

fn allowed_keys(path: &str) -> &'static [&'static str] {
    SCHEMA
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, keys)| *keys)
        .unwrap_or(&[])
}

/// ` did you mean …?` for a near miss among the object's own keys, or for the same name at
/// another level (`fps` at the top means `determinism.fps`); else the keys allowed here.
fn suggestion(path: &str, key: &str, allowed: &[&str]) -> String {
    if let Some(k) = close_match(key, allowed.iter().copied()) {
        return format!(", did you mean {}?", quoted(k));
    }
    let elsewhere: BTreeSet<String> = SCHEMA
        .iter()
        .filter(|(p, keys)| *p != path && keys.contains(&key))
        .map(|(p, _)| join(p, key))
        .collect();
    if let Some(full) = elsewhere.into_iter().next() {
        return format!(", did you mean {}?", quoted(&full));
    }
    if allowed.is_empty() {
        String::new()
    } else {
        format!(" (allowed here: {})", allowed.join(", "))
    }
}

/// The candidate most like `s`, when it is like enough to be a typo of it.
fn close_match<'a>(s: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(s, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `http://` or `https://` followed by a host.
fn check_url(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| format!("must be an http:// or https:// URL (got {})", quoted(url)))?;
    if rest.is_empty() || rest.starts_with('/') || rest.starts_with(':') {
        return Err(format!("has no host (got {})", quoted(url)));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("must not contain spaces (got {})", quoted(url)));
    }
    Ok(())
}

/// Workflow ids name files (`config/workflows/<id>.json`), so they must stay file names.
fn check_workflow_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be a workflow id of letters, digits, '_', '-' and '.' (got {})",
            quoted(id)
        ))
    }
}

/// A plain file name inside the workdir, ending in `.mp4`.
fn check_final_name(name: &str) -> Result<(), String> {
    if name.contains(['/', '\\']) {
        return Err(format!(
            "must be a plain file name without folders (got {})",
            quoted(name)
        ));
    }
    if name.chars().any(char::is_control) || name.contains(':') {
        return Err(format!(
            "must not contain control characters or ':' (got {})",
            quoted(name)
        ));
    }
    let lower = name.to_ascii_lowercase();
    match lower.strip_suffix(".mp4") {
        Some(stem) if !stem.is_empty() && stem.trim() == stem && !stem.starts_with('.') => Ok(()),
        Some(_) => Err(format!(
            "needs a name before .mp4, without leading dots or surrounding spaces (got {})",
            quoted(name)
        )),
        None => Err(format!("must end in .mp4 (got {})", quoted(name))),
    }
}

/// The JSON type of a value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value as JSON, shortened for one-line messages.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let head: String = s.chars().take(57).collect();
        format!("{head}...")
    } else {
        s
    }
}

/// A key as it appears in a problem's path: as written when it is plain, else quoted and
/// shortened (a hostile key must not make the message unreadable).
fn path_key(key: &str) -> String {
    let plain = key.chars().count() <= 40
        && !key.is_empty()
        && key.chars().all(|c| !c.is_control() && c != '.' && c != '"');
    if plain {
        key.to_string()
    } else {
        quoted(key)
    }
}

fn quoted(s: &str) -> String {
    shown(&Value::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> PathBuf {
        PathBuf::from("/jobs")
    }

    fn minimal() -> Value {
        json!({"audio": "voice.wav", "start_image": "face.png", "determinism": {"seed": 7}})
    }

    fn with(mut v: Value, path: &str, x: Value) -> Value {
        let mut cur = &mut v;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                cur[*p] = x;
                break;
            }
            if cur.get(*p).is_none() {
                cur[*p] = json!({});
            }
            cur = &mut cur[*p];
        }
        v
    }

    fn ok(v: Value) -> Job {
        from_value(v, &base()).unwrap()
    }

    fn problems(v: Value) -> Vec<String> {
        from_value(v, &base())
            .unwrap_err()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// Exactly one problem, at `path`, whose message contains `needle`.
    fn rejects(path: &str, x: Value, needle: &str) {
        let ps = from_value(with(minimal(), path, x.clone()), &base()).unwrap_err();
        assert_eq!(ps.len(), 1, "{path}={x}: {ps:?}");
        assert_eq!(ps[0].path, path, "{ps:?}");
        assert!(ps[0].message.contains(needle), "{path}={x}: {}", ps[0]);
    }

    fn accepts(path: &str, x: Value) -> Job {
        from_value(with(minimal(), path, x.clone()), &base())
            .unwrap_or_else(|e| panic!("{path}={x}: {e:?}"))
    }

    #[test]
    fn defaults_are_the_spec_defaults() {
        let j = ok(minimal());
        assert_eq!(j.audio, PathBuf::from("/jobs/voice.wav"));
        assert_eq!(j.start, StartKind::Image(PathBuf::from("/jobs/face.png")));
        assert_eq!(j.end_image, None);
        assert_eq!(j.buffer.pre_seconds.value(), 0.0);
        assert_eq!(j.buffer.post_seconds.value(), 0.0);
        assert_eq!(j.post_seconds().num(), 0);
        assert_eq!((j.fps().num(), j.fps().den()), (25, 1));
        assert_eq!(j.determinism.rounding, crate::timeline::Rounding::Round);
        assert_eq!(j.determinism.seed, Some(7));
        assert_eq!(j.determinism.seed_policy, SeedPolicy::Fixed);
        assert_eq!(
            j.render,
            Render {
                width: None,
                height: None,
                max_width: 854,
                max_height: 480
            }
        );
        assert_eq!(j.motion.mode, crate::timeline::MotionMode::ZoomIn);
        assert_eq!(j.motion.strength, 0.10);
        assert_eq!(j.video.extend, crate::timeline::Extend::Pingpong);
        assert_eq!(j.end_image_fit, EndImageFit::Contain);
        assert_eq!(j.background.to_string(), "#000000");
        let c = &j.comfyui;
        assert!(c.enable);
        assert_eq!(c.url, "http://127.0.0.1:8188");
        assert_eq!(
            (c.workflow_ids.clone(), c.chunk_size, c.input_dir.clone()),
            (None, None, None)
        );
        assert_eq!((c.poll_interval_ms, c.timeout_seconds), (500, 3600));
        assert_eq!((c.retry.attempts, c.retry.backoff_ms), (3, 1000));
        assert_eq!(
            c.wav2lip.mode,
            super::super::schema::Wav2lipMode::Sequential
        );
        assert_eq!(c.wav2lip.face_detect_batch, 8);
        assert_eq!(
            c.wav2lip.on_no_face,
            super::super::schema::OnNoFace::Passthrough
        );
        assert_eq!(
            j.lipsync,
            Lipsync {
                enable: false,
                provider: None,
                allow_passthrough: false
            }
        );
        assert_eq!((j.prompt.clone(), j.negative.clone()), (None, None));
        assert_eq!(j.encode.preset.as_str(), "veryfast");
        assert_eq!(
            (j.encode.crf, j.encode.audio_bitrate, j.encode.threads),
            (20, 192_000, 0)
        );
        assert_eq!(j.output.final_name, "final.mp4");
        assert_eq!(j.limits.max_image_pixels, 64_000_000);
    }

    #[test]
    fn explicit_nulls_mean_absent_for_nullable_fields() {
        let j = ok(json!({
            "audio": "a.wav", "start_image": null, "start_video": "v.mp4", "end_image": null,
            "determinism": {"seed": null, "seed_policy": "random"},
            "render": {"width": null, "height": null},
            "comfyui": {"workflow_ids": null, "chunk_size": null, "input_dir": null},
            "lipsync": {"provider": null}, "prompt": null, "negative": null
        }));
        assert_eq!(
            j.start_kind(),
            StartKind::Video(PathBuf::from("/jobs/v.mp4"))
        );
        assert_eq!(j.determinism.seed, None);
    }

    #[test]
    fn null_is_not_a_default_for_required_values() {
        rejects("encode.crf", Value::Null, "must be an integer");
        rejects("comfyui.enable", Value::Null, "must be true or false");
        rejects("buffer", Value::Null, "must be an object");
    }

    #[test]
    fn buffer_range() {
        assert_eq!(
            accepts("buffer.pre_seconds", json!(0.5))
                .pre_seconds()
                .den(),
            2
        );
        accepts("buffer.post_seconds", json!(3600));
        rejects("buffer.post_seconds", json!(-1), "must be >= 0");
        rejects("buffer.pre_seconds", json!(3600.5), "must be <= 3600");
        rejects("buffer.pre_seconds", json!("0.5"), "must be a number");
    }

    #[test]
    fn post_seconds_message_matches_the_spec_example() {
        let ps = problems(with(minimal(), "buffer.post_seconds", json!(-0.5)));
        assert_eq!(ps, ["buffer.post_seconds: must be >= 0 (got -0.5)"]);
    }

    #[test]
    fn fps_as_number_and_string() {
        let f = |x: Value| {
            let r = accepts("determinism.fps", x).fps();
            (r.num(), r.den())
        };
        assert_eq!(f(json!(25)), (25, 1));
        assert_eq!(f(json!("25")), (25, 1));
        assert_eq!(f(json!(29.97)), (30000, 1001));
        assert_eq!(f(json!("29.97")), (30000, 1001));
        assert_eq!(f(json!("30000/1001")), (30000, 1001));
        assert_eq!(f(json!(23.976)), (24000, 1001));
        assert_eq!(f(json!(240)), (240, 1));
        rejects("determinism.fps", json!(241), "must be <= 240");
        rejects("determinism.fps", json!("480000/1999"), "must be <= 240");
        rejects("determinism.fps", json!(0), "");
        rejects("determinism.fps", json!(-25), "");
        rejects("determinism.fps", json!("fast"), "not a frame rate");
        rejects(
            "determinism.fps",
            json!(true),
            "must be a number or a string",
        );
    }

    #[test]
    fn integer_ranges() {
        let cases: &[(&str, u64, u64)] = &[
            ("encode.crf", 0, 51),
            ("encode.threads", 0, 64),
            ("encode.audio_bitrate", 8000, 512_000),
            ("render.max_width", 2, 8192),
            ("render.max_height", 2, 8192),
            ("comfyui.retry.attempts", 1, 20),
            ("comfyui.retry.backoff_ms", 0, 600_000),
            ("comfyui.poll_interval_ms", 10, 60_000),
            ("comfyui.timeout_seconds", 1, 604_800),
            ("comfyui.wav2lip.face_detect_batch", 1, 256),
            ("comfyui.chunk_size", 1, 100_000),
            ("determinism.seed", 0, MAX_SEED),
            ("limits.max_image_pixels", 4, 1_000_000_000),
            ("limits.max_comfyui_json_bytes", 1024, 1 << 40),
            ("limits.max_comfyui_file_bytes", 1024, 1 << 40),
        ];
        for &(path, min, max) in cases {
            accepts(path, json!(min));
            accepts(path, json!(max));
            rejects(path, json!(max + 1), &format!("must be <= {max}"));
            if min > 0 {
                rejects(path, json!(min - 1), &format!("must be >= {min}"));
            }
            rejects(path, json!(-1), &format!("must be >= {min}"));
            rejects(path, json!(min as f64 + 0.5), "must be an integer");
            rejects(path, json!("1"), "must be an integer");
        }
    }

    #[test]
    fn delivery_audio_rate_and_loudness() {
        assert_eq!(ok(minimal()).encode.audio_rate, AudioRate::Hz(48_000));
        assert_eq!(ok(minimal()).encode.loudness, None);
        assert_eq!(
            accepts("encode.audio_rate", json!("source"))
                .encode
                .audio_rate,
            AudioRate::Source
        );
        assert_eq!(
            accepts("encode.audio_rate", json!(44_100))
                .encode
                .audio_rate,
            AudioRate::Hz(44_100)
        );
        rejects("encode.audio_rate", json!(44_000), "a rate AAC carries");
        rejects("encode.audio_rate", json!("48k"), "must be \"source\"");
        let j = accepts("encode.loudness", json!({"target_lufs": -14}));
        assert_eq!(
            j.encode.loudness,
            Some(Loudness {
                target_lufs: -14.0,
                true_peak_db: -1.5
            })
        );
        assert_eq!(
            j.to_effective_json()["encode"]["loudness"],
            json!({"target_lufs": -14.0, "true_peak_db": -1.5})
        );
        accepts("encode.loudness", Value::Null);
        rejects("encode.loudness", json!(-16), "must be an object");
        for (x, at, needle) in [
            (json!({}), "encode.loudness.target_lufs", "is required"),
            (
                json!({"target_lufs": -16, "true_peak_db": 1}),
                "encode.loudness.true_peak_db",
                "must be <= 0",
            ),
            (
                json!({"target_lufs": -80}),
                "encode.loudness.target_lufs",
                "must be >= -50",
            ),
            (
                json!({"target_lufs": -16, "peak": -1}),
                "encode.loudness.peak",
                "unknown field",
            ),
        ] {
            let ps =
                from_value(with(minimal(), "encode.loudness", x.clone()), &base()).unwrap_err();
            assert_eq!(ps.len(), 1, "{x}: {ps:?}");
            assert_eq!(ps[0].path, at, "{x}: {ps:?}");
            assert!(ps[0].message.contains(needle), "{x}: {}", ps[0]);
        }
    }

    #[test]
    fn fps_whose_timescale_cannot_be_written_is_refused() {
        // 239761/10000 with 48 kHz: lcm = 11508528000 > 2^31 - 1.
        rejects("determinism.fps", json!("23.9761"), "11508528000");
        // The NTSC rate it approximates is fine, and so is 23.9761 where the rate waits for
        // the input ("source" is checked at admission).
        accepts("determinism.fps", json!("23.976"));
        let v = with(
            with(minimal(), "determinism.fps", json!("23.9761")),
            "encode.audio_rate",
            json!("source"),
        );
        ok(v);
    }

    #[test]
    fn render_size_is_given_as_a_pair() {
        let j = ok(with(
            minimal(),
            "render",
            json!({"width": 641, "height": 480}),
        ));
        assert_eq!((j.render.width, j.render.height), (Some(641), Some(480)));
        let ps = problems(with(minimal(), "render", json!({"width": 1, "height": 2})));
        assert_eq!(ps, ["render.width: must be >= 2 (got 1)"]);
        let ps = problems(with(
            minimal(),
            "render",
            json!({"width": 8194, "height": 2}),
        ));
        assert_eq!(ps, ["render.width: must be <= 8192 (got 8194)"]);
        let ps = problems(with(minimal(), "render.width", json!(640)));
        assert_eq!(
            ps,
            ["render.height: must be given together with render.width"]
        );
        let ps = problems(with(minimal(), "render.height", json!(480)));
        assert_eq!(
            ps,
            ["render.width: must be given together with render.height"]
        );
    }

    #[test]
    fn strength_range() {
        accepts("motion.strength", json!(0));
        accepts("motion.strength", json!(0.5));
        let j = accepts("motion.strength", json!(-0.0));
        assert_eq!(
            j.to_effective_json()["motion"]["strength"].to_string(),
            "0.0"
        );
        rejects("motion.strength", json!(0.51), "must be <= 0.5");
        rejects("motion.strength", json!(-0.1), "must be >= 0");
    }

    #[test]
    fn choices_list_the_allowed_values() {
        rejects(
            "end_image_fit",
            json!("contian"),
            r#"must be one of "contain", "cover", "stretch" (got "contian"; did you mean "contain"?)"#,
        );
        rejects(
            "encode.preset",
            json!("turbo"),
            r#""ultrafast", "superfast""#,
        );
        rejects(
            "encode.preset",
            json!("veryfats"),
            r#"(got "veryfats"; did you mean "veryfast"?)"#,
        );
        rejects("determinism.rounding", json!(1), "(got a number)");
        rejects(
            "determinism.seed_policy",
            json!("sometimes"),
            "\"per_retry\"",
        );
        let ps = problems(json!({"audio": "a.wav", "start_image": "i.png",
            "determinism": {"seed_policy": "sometimes"}}));
        assert_eq!(ps.len(), 1, "{ps:?}");
        let ps = problems(json!({"audio": "a.wav", "start_image": "i.png", "determinism": 25}));
        assert_eq!(ps, ["determinism: must be an object (got a number)"]);
        rejects("motion.mode", json!("zoom"), "\"zoom_out\"");
        rejects("video.extend", json!("repeat"), "\"pingpong\"");
        rejects("comfyui.wav2lip.mode", json!("parallel"), "\"repetitive\"");
        rejects("comfyui.wav2lip.on_no_face", json!("skip"), "\"error\"");
        assert_eq!(
            accepts("encode.preset", json!("placebo"))
                .encode
                .preset
                .as_str(),
            "placebo"
        );
        assert_eq!(
            accepts("end_image_fit", json!("stretch")).end_image_fit,
            EndImageFit::Stretch
        );
    }

    #[test]
    fn unknown_field_gets_a_suggestion() {
        let ps = problems(with(minimal(), "buffer.pre_second", json!(0.5)));
        assert_eq!(
            ps,
            [r#"buffer.pre_second: unknown field "pre_second", did you mean "pre_seconds"?"#]
        );
        let ps = problems(with(minimal(), "fps", json!(25)));
        assert_eq!(
            ps,
            [r#"fps: unknown field "fps", did you mean "determinism.fps"?"#]
        );
        let ps = problems(with(minimal(), "comfyui.retry.tries", json!(2)));
        assert_eq!(
            ps,
            [r#"comfyui.retry.tries: unknown field "tries" (allowed here: attempts, backoff_ms)"#]
        );
    }

    #[test]
    fn all_problems_at_once_sorted_by_path() {
        let v = json!({
            "audio": 3,
            "start_image": "a.png", "start_video": "b.mp4",
            "buffer": {"pre_seconds": -1, "post_second": 1},
            "determinism": {"fps": "x", "seed_policy": "fixed"},
            "encode": {"crf": 99, "preset": "warp"},
            "output": {"final_name": "../out.mov"},
            "comfyui": {"url": "ftp://x", "retry": {"attempts": 0}},
            "colour": "#fff"
        });
        let ps = problems(v);
        let paths: Vec<&str> = ps.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "audio",
                "buffer.post_second",
                "buffer.pre_seconds",
                "colour",
                "comfyui.retry.attempts",
                "comfyui.url",
                "determinism.fps",
                "determinism.seed",
                "encode.crf",
                "encode.preset",
                "output.final_name",
                "start_image",
            ],
            "{ps:#?}"
        );
    }

    #[test]
    fn exactly_one_start_input() {
        let ps = problems(json!({"audio": "a.wav", "determinism": {"seed": 1}}));
        assert_eq!(
            ps,
            ["start_image: one of start_image or start_video is required"]
        );
        let ps = problems(
            json!({"audio": "a.wav", "start_image": "i.png", "start_video": "v.mp4",
            "determinism": {"seed": 1}}),
        );
        assert_eq!(
            ps,
            ["start_image: give only one of start_image and start_video, not both"]
        );
        // A wrongly typed start input is one problem, not two.
        let ps = problems(json!({"audio": "a.wav", "start_video": 5, "determinism": {"seed": 1}}));
        assert_eq!(
            ps,
            ["start_video: must be a file path string (got a number)"]
        );
    }

    #[test]
    fn audio_is_required() {
        let ps = problems(json!({"start_image": "i.png", "determinism": {"seed": 1}}));
        assert_eq!(ps, ["audio: is required (the speech audio file)"]);
        rejects("audio", json!(""), "must not be empty");
    }

    #[test]
    fn seed_rules() {
        // No seed: the policy is random (a seed is drawn per run); a seed makes it fixed.
        let j = ok(json!({"audio": "a.wav", "start_image": "i.png"}));
        assert_eq!(
            (j.determinism.seed, j.determinism.seed_policy),
            (None, SeedPolicy::Random)
        );
        let j =
            ok(json!({"audio": "a.wav", "start_image": "i.png", "determinism": {"seed": null}}));
        assert_eq!(j.determinism.seed_policy, SeedPolicy::Random);
        let j = ok(json!({"audio": "a.wav", "start_image": "i.png", "determinism": {"seed": 5}}));
        assert_eq!(
            (j.determinism.seed, j.determinism.seed_policy),
            (Some(5), SeedPolicy::Fixed)
        );
        // Only an explicit `fixed` needs a seed.
        let ps = problems(json!({"audio": "a.wav", "start_image": "i.png",
            "determinism": {"seed_policy": "fixed"}}));
        assert_eq!(ps.len(), 1);
        assert!(
            ps[0].starts_with("determinism.seed: is required when"),
            "{ps:?}"
        );
        let j = ok(json!({"audio": "a.wav", "start_image": "i.png",
            "determinism": {"seed_policy": "random"}}));
        assert_eq!(j.determinism.seed_policy, SeedPolicy::Random);
        let j = ok(json!({"audio": "a.wav", "start_image": "i.png",
            "determinism": {"seed_policy": "per_retry", "seed": 9}}));
        assert_eq!(j.determinism.seed_policy, SeedPolicy::PerRetry);
        // A broken seed is reported once, as its own problem.
        rejects("determinism.seed", json!("7"), "must be an integer or null");
    }

    #[test]
    fn lipsync_needs_comfyui_or_a_provider() {
        let v = with(minimal(), "lipsync.enable", json!(true));
        assert!(ok(v.clone()).lipsync.enable);
        let off = with(v.clone(), "comfyui.enable", json!(false));
        let ps = problems(off.clone());
        assert_eq!(ps.len(), 1);
        assert!(ps[0].starts_with("lipsync.provider: is required when lipsync.enable is true"));
        let j = ok(with(off, "lipsync.provider", json!("sync_api")));
        assert_eq!(j.lipsync.provider.as_deref(), Some("sync_api"));
        rejects("lipsync.provider", json!(" "), "must not be empty");
    }

    #[test]
    fn final_name_is_a_plain_mp4_name() {
        accepts("output.final_name", json!("fertig.mp4"));
        accepts("output.final_name", json!("Take 2 – ü.MP4"));
        for bad in [
            "out/final.mp4",
            "..\\x.mp4",
            "final.mov",
            ".mp4",
            "x.mp4\n",
            "c:final.mp4",
            "",
        ] {
            let ps =
                from_value(with(minimal(), "output.final_name", json!(bad)), &base()).unwrap_err();
            assert_eq!(ps.len(), 1, "{bad:?}");
            assert_eq!(ps[0].path, "output.final_name");
        }
        rejects("output.final_name", json!(null), "must be a string");
    }

    #[test]
    fn url_must_be_http() {
        accepts("comfyui.url", json!("https://gpu.example:8188/"));
        accepts("comfyui.url", json!("HTTP://127.0.0.1:8188"));
        rejects("comfyui.url", json!("ftp://x"), "http:// or https://");
        rejects("comfyui.url", json!("http://"), "has no host");
        rejects("comfyui.url", json!("http://a b"), "spaces");
        rejects("comfyui.url", json!(8188), "must be a string");
    }

    #[test]
    fn url_may_list_a_pool() {
        let j = accepts("comfyui.url", json!("http://127.0.0.1:8188"));
        assert_eq!(j.comfyui.pool, vec!["http://127.0.0.1:8188"]);
        let j = accepts("comfyui.url", json!("http://a:8188, http://b:8189"));
        assert_eq!(j.comfyui.pool, vec!["http://a:8188", "http://b:8189"]);
        assert_eq!(j.comfyui.url, "http://a:8188");
        let j = accepts("comfyui.url", json!(["https://gpu1", "https://gpu2/"]));
        assert_eq!(j.comfyui.pool, vec!["https://gpu1", "https://gpu2/"]);
        let bad = |x: Value, at: &str, needle: &str| {
            let ps = from_value(with(minimal(), "comfyui.url", x.clone()), &base()).unwrap_err();
            assert_eq!(ps.len(), 1, "{x}: {ps:?}");
            assert_eq!(ps[0].path, at, "{ps:?}");
            assert!(ps[0].message.contains(needle), "{x}: {}", ps[0]);
        };
        bad(json!([]), "comfyui.url", "at least one");
        bad(json!(["http://a", 3]), "comfyui.url[1]", "must be a string");
        bad(json!(["http://a", "ftp://b"]), "comfyui.url[1]", "http://");
        bad(json!(["http://a/", "http://A"]), "comfyui.url[1]", "twice");
        bad(json!("http://a,,http://b"), "comfyui.url", "http://");
    }

    #[test]
    fn workflow_ids() {
        let j = accepts(
            "comfyui.workflow_ids",
            json!(["vidax_faceprobe", "my-flow.v2"]),
        );
        assert_eq!(j.comfyui.workflow_ids.unwrap().len(), 2);
        rejects("comfyui.workflow_ids", json!([]), "must not be empty");
        rejects("comfyui.workflow_ids", json!("vidax"), "must be an array");
        let ps = problems(with(
            minimal(),
            "comfyui.workflow_ids",
            json!(["ok", "../etc", 3]),
        ));
        assert_eq!(ps.len(), 2);
        assert!(ps[0].starts_with("comfyui.workflow_ids[1]: must be a workflow id"));
        assert!(ps[1].starts_with("comfyui.workflow_ids[2]: must be a string"));
    }

    #[test]
    fn background_colour() {
        assert_eq!(
            accepts("background", json!("#FFFFFF"))
                .background
                .to_string(),
            "#ffffff"
        );
        rejects("background", json!("white"), "#rrggbb");
        rejects("background", json!(0), "must be a string");
        rejects("background", Value::Null, "must be a string");
    }

    #[test]
    fn relative_paths_resolve_against_the_job_folder() {
        let v = json!({
            "audio": "sub/voice one.wav",
            "start_video": "./clips/ünï cödé.mp4",
            "end_image": "/abs/end.png",
            "determinism": {"seed": 1},
            "comfyui": {"input_dir": "../comfy/input"}
        });
        let j = from_value(v, Path::new("/data/my jobs")).unwrap();
        assert_eq!(j.audio, PathBuf::from("/data/my jobs/sub/voice one.wav"));
        assert_eq!(
            j.start.path(),
            Path::new("/data/my jobs/clips/ünï cödé.mp4")
        );
        assert_eq!(j.end_image, Some(PathBuf::from("/abs/end.png")));
        assert_eq!(
            j.comfyui.input_dir,
            Some(PathBuf::from("/data/my jobs/../comfy/input"))
        );
    }

    #[test]
    fn relative_base_dir_is_made_absolute() {
        let j = from_value(minimal(), Path::new("rel")).unwrap();
        assert!(j.audio.is_absolute(), "{}", j.audio.display());
        assert!(j.audio.ends_with("rel/voice.wav"));
    }

    #[test]
    fn non_object_root() {
        assert_eq!(
            problems(json!([1])),
            ["$: must be a JSON object (got an array)"]
        );
        assert_eq!(
            problems(Value::Null),
            ["$: must be a JSON object (got null)"]
        );
    }

    #[test]
    fn odd_inputs_never_panic() {
        let long = "x".repeat(10_000);
        for v in [
            json!({}),
            json!({"audio": {}, "buffer": [], "determinism": "25", "comfyui": {"retry": 1}}),
            json!({(long.clone()): 1, "audio": long, "start_image": "i", "encode": {"crf": 1e300}}),
            json!({"audio": "a", "start_image": "i", "determinism": {"fps": "1/0", "seed": 18446744073709551615u64}}),
            json!({"audio": "a", "start_image": "i", "determinism": {"fps": "18446744073709551615/1", "seed": 1}}),
            json!({"audio": "a", "start_image": "i", "determinism": {"fps": 1e308, "seed": 1}}),
        ] {
            let ps = from_value(v, &base()).unwrap_err();
            assert!(!ps.is_empty());
            assert!(ps.iter().all(|p| p.to_string().len() < 400), "{ps:?}");
        }
    }

    /// Every field replaced by every odd value: never a panic, and a problem names the field
    /// (or the cross-field rule it broke).
    #[test]
    fn every_field_survives_every_odd_value() {
        let odd = [
            Value::Null,
            json!(true),
            json!(-1),
            json!(0),
            json!(1e300),
            json!(0.5),
            json!(""),
            json!("x"),
            json!([]),
            json!([1]),
            json!({}),
            json!({"x": 1}),
        ];
        for (obj, keys) in SCHEMA {
            for key in *keys {
                let path = join(obj, key);
                for x in &odd {
                    if let Err(ps) = from_value(with(minimal(), &path, x.clone()), &base()) {
                        assert!(
                            ps.iter().any(|p| p.path.starts_with(&path)
                                || [
                                    "start_image",
                                    "determinism.seed",
                                    "render.width",
                                    "render.height",
                                    "encode.loudness.target_lufs"
                                ]
                                .contains(&p.path.as_str())),
                            "{path}={x}: {ps:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn schema_table_matches_the_effective_job() {
        // With every optional object present (loudness is null by default).
        let eff = ok(with(
            minimal(),
            "encode.loudness",
            json!({"target_lufs": -16}),
        ))
        .to_effective_json();
        let mut from_json = Vec::new();
        collect_objects("", &eff, &mut from_json);
        let from_schema: Vec<(String, Vec<String>)> = SCHEMA
            .iter()
            .map(|(p, keys)| (p.to_string(), keys.iter().map(|k| k.to_string()).collect()))
            .collect();
        assert_eq!(from_json, from_schema);
    }

    fn collect_objects(path: &str, v: &Value, out: &mut Vec<(String, Vec<String>)>) {
        if let Value::Object(m) = v {
            out.push((path.to_string(), m.keys().cloned().collect()));
            for (k, child) in m {
                collect_objects(&join(path, k), child, out);
            }
        }
    }
}
