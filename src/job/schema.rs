//! The job's data model (SPEC §3): one Rust type per JSON object, with the defaults and the
//! JSON names of every choice.
//!
//! These types are the *validated* job: they are built only by [`super::from_value`] (and
//! [`super::load`]), which checks every rule in `validate.rs` first, so a [`Job`] in hand is
//! always consistent (exactly one start input, exact rationals for fps and buffers, absolute
//! input paths). They serialise to the effective job (`<workdir>/job.json`); reading JSON is
//! deliberately not done through serde, so that validation can report every problem at once.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::files::path_json;
use crate::timeline::{seconds_from_f64, Extend, MotionMode, Rational, Rounding};

/// A validated job with every default applied. Fields are public for reading; to change a job,
/// change its JSON and validate again, so the rules keep holding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Speech audio, absolute path.
    #[serde(serialize_with = "path_json::serialize")]
    pub audio: PathBuf,
    /// The start image or the start video (JSON: `start_image` / `start_video`, one of them null).
    #[serde(flatten)]
    pub start: StartKind,
    /// Optional end image, held over the post buffer.
    #[serde(serialize_with = "path_json::opt::serialize")]
    pub end_image: Option<PathBuf>,
    pub buffer: Buffer,
    pub determinism: Determinism,
    pub render: Render,
    pub motion: Motion,
    pub video: VideoOptions,
    pub end_image_fit: EndImageFit,
    /// Fill colour for letterbox bars and transparent image pixels.
    pub background: Rgb,
    pub comfyui: Comfyui,
    pub lipsync: Lipsync,
    /// Passed to workflows that use a prompt; the default graphs ignore it.
    pub prompt: Option<String>,
    pub negative: Option<String>,
    pub encode: Encode,
    pub output: Output,
    pub limits: Limits,
}

/// What the picture starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartKind {
    Image(PathBuf),
    Video(PathBuf),
}

impl StartKind {
    pub fn path(&self) -> &Path {
        match self {
            StartKind::Image(p) | StartKind::Video(p) => p,
        }
    }

    /// The job field that names this input: `start_image` or `start_video`.
    pub fn field(&self) -> &'static str {
        match self {
            StartKind::Image(_) => "start_image",
            StartKind::Video(_) => "start_video",
        }
    }

    pub fn is_image(&self) -> bool {
        matches!(self, StartKind::Image(_))
    }
}

/// Written as the two job fields, the unused one `null`, so the effective job has the same
/// shape as the input.
impl Serialize for StartKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let value = |p: &Path| Some(path_json::to_value(p));
        let (image, video) = match self {
            StartKind::Image(p) => (value(p), None),
            StartKind::Video(p) => (None, value(p)),
        };
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("start_image", &image)?;
        m.serialize_entry("start_video", &video)?;
        m.end()
    }
}

/// Silence added before and after the speech.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Buffer {
    pub pre_seconds: Seconds,
    pub post_seconds: Seconds,
}

/// A duration as the user wrote it and as the exact rational the timeline computes with.
/// Only constructible through [`Seconds::new`], so the two always agree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds {
    value: f64,
    exact: Rational,
}

impl Seconds {
    /// Converts with `timeline::seconds_from_f64`; fails on negative or non-finite values.
    pub fn new(value: f64) -> std::result::Result<Seconds, String> {
        Ok(Seconds {
            value,
            exact: seconds_from_f64(value)?,
        })
    }

    /// The value as written in the job.
    pub fn value(self) -> f64 {
        self.value
    }

    /// The exact value the timeline uses.
    pub fn exact(self) -> Rational {
        self.exact
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_f64(self.value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Determinism {
    /// Exact output frame rate (30000/1001, never 29.97).
    #[serde(serialize_with = "ser_fps")]
    pub fps: Rational,
    pub rounding: Rounding,
    pub seed: Option<u64>,
    pub seed_policy: SeedPolicy,
}

/// How the ComfyUI seed is chosen. Not given: `fixed` when the job has a seed, `random` when
/// it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedPolicy {
    /// `determinism.seed` is used for every attempt (and is required when named explicitly).
    Fixed,
    /// One seed is drawn per run and recorded in the manifest; a given seed is ignored.
    Random,
    /// A new seed per ComfyUI attempt; the first attempt uses `determinism.seed` when given.
    PerRetry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Render {
    /// Explicit output size; when set (both or neither), it wins over the fit into max_*.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub max_width: u32,
    pub max_height: u32,
}

impl Default for Render {
    fn default() -> Self {
        Render {
            width: None,
            height: None,
            max_width: 854,
            max_height: 480,
        }
    }
}

/// The zoom fallback for a start image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Motion {
    pub mode: MotionMode,
    /// Maximum zoom is `1 + strength`.
    pub strength: f64,
}

impl Default for Motion {
    fn default() -> Self {
        Motion {
            mode: MotionMode::ZoomIn,
            strength: 0.10,
        }
    }
}

/// What to do with a start video shorter than the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VideoOptions {
    pub extend: Extend,
}

impl Default for VideoOptions {
    fn default() -> Self {
        VideoOptions {
            extend: Extend::Pingpong,
        }
    }
}

/// How the end image is fitted into the render size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndImageFit {
    /// Whole image visible, padded with `background`.
    #[default]
    Contain,
    /// Fills the frame, cropped centrally.
    Cover,
    /// Fills the frame, aspect not kept.
    Stretch,
}

/// An sRGB colour, written `#rrggbb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rgb {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl Rgb {
    /// Parses `#rrggbb` (hex digits in either case).
    pub fn parse(s: &str) -> std::result::Result<Rgb, String> {
        let bad = || "must be a colour like \"#000000\" (#rrggbb)".to_string();
        let hex = s.strip_prefix('#').ok_or_else(bad)?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let channel = |i: usize| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        };
        Ok(Rgb {
            r: channel(0)?,
            g: channel(2)?,
            b: channel(4)?,
        })
    }
}

impl fmt::Display for Rgb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }
}

impl Serialize for Rgb {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comfyui {
    pub enable: bool,
    /// Base URL, http or https, as written: the first of [`Comfyui::pool`].
    #[serde(skip)]
    pub url: String,
    /// Every endpoint of the pool (`comfyui.url` as a list, or comma-separated), `url` first;
    /// written back as `url` (a string for one, a list for several).
    #[serde(rename = "url", serialize_with = "ser_urls")]
    pub pool: Vec<String>,
    /// `None`: the defaults for the start kind (SPEC §6).
    pub workflow_ids: Option<Vec<String>>,
    /// Frames per ComfyUI chunk; `None`: chosen from the render size (`stages::comfyui::default_chunk_size`).
    pub chunk_size: Option<u32>,
    pub poll_interval_ms: u64,
    pub timeout_seconds: u64,
    /// ComfyUI's input folder, absolute; `None`: `COMFYUI_INPUT_DIR`, `COMFYUI_DIR/input`, upload.
    #[serde(serialize_with = "path_json::opt::serialize")]
    pub input_dir: Option<PathBuf>,
    pub retry: Retry,
    pub wav2lip: Wav2lip,
}

impl Default for Comfyui {
    fn default() -> Self {
        Comfyui {
            enable: true,
            url: "http://127.0.0.1:8188".to_string(),
            pool: vec!["http://127.0.0.1:8188".to_string()],
            workflow_ids: None,
            chunk_size: None,
            poll_interval_ms: 500,
            timeout_seconds: 3600,
            input_dir: None,
            retry: Retry::default(),
            wav2lip: Wav2lip::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub backoff_ms: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 3,
            backoff_ms: 1000,
        }
    }
}

/// Settings handed to the `VIDAX_Wav2Lip` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Wav2lip {
    pub mode: Wav2lipMode,
    pub face_detect_batch: u32,
    pub on_no_face: OnNoFace,
}

impl Default for Wav2lip {
    fn default() -> Self {
        Wav2lip {
            mode: Wav2lipMode::Sequential,
            face_detect_batch: 8,
            on_no_face: OnNoFace::Passthrough,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wav2lipMode {
    #[default]
    Sequential,
    Repetitive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNoFace {
    /// Frames without a face pass through unchanged.
    #[default]
    Passthrough,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Lipsync {
    pub enable: bool,
    /// Id of an external provider in `lipsync.providers.json`.
    pub provider: Option<String>,
    pub allow_passthrough: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Encode {
    pub preset: Preset,
    pub crf: u8,
    /// AAC bit rate in bits per second.
    pub audio_bitrate: u32,
    /// Encoder threads; 0 lets the encoder choose.
    pub threads: u32,
    /// The delivered audio's sample rate.
    pub audio_rate: AudioRate,
    /// Loudness normalisation of the delivered audio; `None`: the input's loudness is kept.
    pub loudness: Option<Loudness>,
}

impl Default for Encode {
    fn default() -> Self {
        Encode {
            preset: Preset::Veryfast,
            crf: 20,
            audio_bitrate: 192_000,
            threads: 0,
            audio_rate: AudioRate::Hz(48_000),
            loudness: None,
        }
    }
}

/// `encode.audio_rate`: a fixed delivery rate (the input is resampled once, exactly, to it) or
/// the input's own rate (`"source"`; resampled only where AAC cannot carry it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioRate {
    Source,
    Hz(u32),
}

impl AudioRate {
    /// The rate the programme is delivered at for an input at `source_rate`.
    pub fn output_rate(self, source_rate: u32) -> u32 {
        match self {
            AudioRate::Source => crate::media::audio::output_rate(source_rate),
            AudioRate::Hz(r) => r,
        }
    }
}

impl Serialize for AudioRate {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            AudioRate::Source => s.serialize_str("source"),
            AudioRate::Hz(r) => s.serialize_u32(*r),
        }
    }
}

/// `encode.loudness`: EBU R128 integrated loudness to reach, and the true-peak ceiling a
/// look-ahead limiter keeps where the gain alone would cross it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Loudness {
    /// Integrated loudness of the delivered programme, LUFS.
    pub target_lufs: f64,
    /// Highest true peak allowed, dBTP.
    pub true_peak_db: f64,
}

impl Loudness {
    /// The ceiling when only a target is given (`va produce --loudness`).
    pub const DEFAULT_TRUE_PEAK_DB: f64 = -1.5;
}

/// The libx264 speed presets, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Ultrafast,
    Superfast,
    #[default]
    Veryfast,
    Faster,
    Fast,
    Medium,
    Slow,
    Slower,
    Veryslow,
    Placebo,
}

impl Preset {
    /// The name libx264 takes as its `preset` option.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Ultrafast => "ultrafast",
            Preset::Superfast => "superfast",
            Preset::Veryfast => "veryfast",
            Preset::Faster => "faster",
            Preset::Fast => "fast",
            Preset::Medium => "medium",
            Preset::Slow => "slow",
            Preset::Slower => "slower",
            Preset::Veryslow => "veryslow",
            Preset::Placebo => "placebo",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Output {
    /// File name of the final MP4 inside the workdir.
    pub final_name: String,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            final_name: "final.mp4".to_string(),
        }
    }
}

/// Guards against hostile inputs and peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest decoded image (width × height) accepted for start and end images, start-video
    /// frames and the frames ComfyUI returns.
    pub max_image_pixels: u64,
    /// Largest JSON body taken from ComfyUI (`/system_stats`, `/object_info`, `/history`,
    /// `/queue`, `/prompt`, `/upload/image`) and largest `/ws` message.
    pub max_comfyui_json_bytes: u64,
    /// Largest file taken from ComfyUI's `/view` (a frame or a video).
    pub max_comfyui_file_bytes: u64,
}

/// `limits.max_comfyui_json_bytes` by default: 64 MiB. A recorded `/object_info` of ComfyUI
/// 0.3.64 with its own nodes only (496 classes) is 505,830 bytes; node packs add some 10 kB a
/// class at most, and `LoadImage`-like nodes list the input folder's file names.
pub const DEFAULT_MAX_COMFYUI_JSON_BYTES: u64 = 64 << 20;
/// `limits.max_comfyui_file_bytes` by default: 2 GiB (an hour of 1080p H.264 at 4 Mb/s).
pub const DEFAULT_MAX_COMFYUI_FILE_BYTES: u64 = 2 << 30;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_image_pixels: 64_000_000,
            max_comfyui_json_bytes: DEFAULT_MAX_COMFYUI_JSON_BYTES,
            max_comfyui_file_bytes: DEFAULT_MAX_COMFYUI_FILE_BYTES,
        }
    }
}

/// A closed set of JSON string values: each value with its JSON name.
pub trait Choice: Copy + PartialEq + 'static {
    /// Every value with its JSON name, in documentation order.
    const NAMES: &'static [(&'static str, Self)];
}

impl Choice for Rounding {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("round", Rounding::Round),
        ("floor", Rounding::Floor),
        ("ceil", Rounding::Ceil),
    ];
}

impl Choice for MotionMode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("zoom_in", MotionMode::ZoomIn),
        ("zoom_out", MotionMode::ZoomOut),
        ("none", MotionMode::None),
    ];
}

impl Choice for Extend {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("pingpong", Extend::Pingpong),
        ("loop", Extend::Loop),
        ("hold", Extend::Hold),
    ];
}

impl Choice for SeedPolicy {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("fixed", SeedPolicy::Fixed),
        ("random", SeedPolicy::Random),
        ("per_retry", SeedPolicy::PerRetry),
    ];
}

impl Choice for EndImageFit {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("contain", EndImageFit::Contain),
        ("cover", EndImageFit::Cover),
        ("stretch", EndImageFit::Stretch),
    ];
}

impl Choice for Wav2lipMode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("sequential", Wav2lipMode::Sequential),
        ("repetitive", Wav2lipMode::Repetitive),
    ];
}

impl Choice for OnNoFace {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("passthrough", OnNoFace::Passthrough),
        ("error", OnNoFace::Error),
    ];
}

impl Choice for Preset {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("ultrafast", Preset::Ultrafast),
        ("superfast", Preset::Superfast),
        ("veryfast", Preset::Veryfast),
        ("faster", Preset::Faster),
        ("fast", Preset::Fast),
        ("medium", Preset::Medium),
        ("slow", Preset::Slow),
        ("slower", Preset::Slower),
        ("veryslow", Preset::Veryslow),
        ("placebo", Preset::Placebo),
    ];
}

impl Job {
    /// The output frame rate, exact.
    pub fn fps(&self) -> Rational {
        self.determinism.fps
    }

    /// `buffer.pre_seconds`, exact.
    pub fn pre_seconds(&self) -> Rational {
        self.buffer.pre_seconds.exact()
    }

    /// `buffer.post_seconds`, exact.
    pub fn post_seconds(&self) -> Rational {
        self.buffer.post_seconds.exact()
    }

    pub fn start_kind(&self) -> StartKind {
        self.start.clone()
    }

    /// The input files with the job field naming each: `audio`, `start_image` or
    /// `start_video`, then `end_image` when given.
    pub fn inputs(&self) -> Vec<(&'static str, &Path)> {
        let mut v = vec![
            ("audio", self.audio.as_path()),
            (self.start.field(), self.start.path()),
        ];
        if let Some(end) = &self.end_image {
            v.push(("end_image", end.as_path()));
        }
        v
    }

    /// Checks that every input is an existing regular file (`INPUT_NOT_FOUND` saying what it is
    /// otherwise: missing, a symlink loop, a folder, a FIFO, a socket, a device). Validation
    /// itself does not touch the file system; a run calls this before its first phase.
    pub fn check_inputs(&self) -> Result<()> {
        for (field, path) in self.inputs() {
            crate::media::check_regular_file(path)
                .map_err(|e| Error::new(e.kind, format!("{field}: {}", e.message)))?;
        }
        Ok(())
    }

    /// The effective job: every field present, defaults applied, input paths absolute. This is
    /// what `<workdir>/job.json` holds; it validates back to an equal `Job`.
    pub fn to_effective_json(&self) -> Value {
        // Every field serialises to a JSON string, number, bool or null, so this cannot fail;
        // the fallback only keeps the function total.
        serde_json::to_value(self)
            .unwrap_or_else(|e| Value::String(format!("unserialisable job: {e}")))
    }
}

fn ser_urls<S: Serializer>(urls: &[String], s: S) -> std::result::Result<S::Ok, S::Error> {
    match urls {
        [one] => s.serialize_str(one),
        many => s.collect_seq(many),
    }
}

/// Integral rates as a number (`25`), others as the exact fraction (`"30000/1001"`).
fn ser_fps<S: Serializer>(r: &Rational, s: S) -> std::result::Result<S::Ok, S::Error> {
    if r.den() == 1 {
        s.serialize_u64(r.num())
    } else {
        s.collect_str(&format_args!("{}/{}", r.num(), r.den()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_match_serde<T: Choice + Serialize>() {
        for (name, value) in T::NAMES {
            assert_eq!(serde_json::to_value(value).unwrap(), Value::from(*name));
        }
    }

    #[test]
    fn choice_names_are_the_serde_names() {
        names_match_serde::<Rounding>();
        names_match_serde::<MotionMode>();
        names_match_serde::<Extend>();
        names_match_serde::<SeedPolicy>();
        names_match_serde::<EndImageFit>();
        names_match_serde::<Wav2lipMode>();
        names_match_serde::<OnNoFace>();
        names_match_serde::<Preset>();
        for (name, p) in Preset::NAMES {
            assert_eq!(p.as_str(), *name);
        }
    }

    #[test]
    fn rgb_parses_and_prints() {
        assert_eq!(
            Rgb::parse("#FF8000").unwrap(),
            Rgb {
                r: 255,
                g: 128,
                b: 0
            }
        );
        assert_eq!(
            Rgb {
                r: 255,
                g: 128,
                b: 0
            }
            .to_string(),
            "#ff8000"
        );
        for bad in ["", "#", "ff8000", "#ff800", "#ff80001", "#gg0000", "#ééé"] {
            assert!(Rgb::parse(bad).is_err(), "{bad}");
        }
    }
}
