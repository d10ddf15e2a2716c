//! `<workdir>/manifest.json`: the record of one run (SPEC §5), field names as the seed's users
//! know them.
//!
//! The runner creates a [`Manifest`], hands it to each stage in turn, and saves it (atomically)
//! after every phase change; `--resume` loads it back and skips completed phases. Every field is
//! typed (the phases in [`super::phases`], the stages' records in [`super::meta`] and
//! [`super::comfyui`]); most are `Option`s so that a run that stops early still leaves a valid
//! record: a value not (yet) known is written as `null`, never left out, so readers see a
//! stable set of keys. Only `extra` (keys of a newer version) and ComfyUI's own answers stay
//! JSON values.
//!
//! Times in the record are twofold on purpose: the `*_seconds`/`fps_value` floats are for
//! display, and the exact companions (`audio` sample counts, `fps` as a rational string,
//! `target_frames`) are what tests and tools compare. This module stores them; it computes
//! none of them (the timeline does).

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::meta::{EffectiveParams, LipsyncRecord, MotionMeta};
pub use super::phases::{PhaseName, PhaseState, PhaseStatus, Phases};
use crate::error::{Error, ErrorKind, Result};
use crate::files::{path_json, sha256_file, write_json_atomic};
use crate::media::verify::VerifyReport;
use crate::stages::faceprobe::FaceMeta;

/// The manifest's file name inside the workdir.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The phases' JSON names in pipeline order (SPEC §5), as [`PhaseName::ALL`] spells them.
/// [`Manifest::new`] lists them all as `pending`, so a manifest shows from the start what is
/// still to come.
pub const PHASES: [&str; 6] = [
    PhaseName::Prepare.as_str(),
    PhaseName::Faceprobe.as_str(),
    PhaseName::Comfyui.as_str(),
    PhaseName::Lipsync.as_str(),
    PhaseName::Encode.as_str(),
    PhaseName::Finalize.as_str(),
];

/// What `inputs.<role>.sha256` says when the input file does not exist.
pub const INPUT_NOT_FOUND: &str = "INPUT_NOT_FOUND";

/// The state of the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
    /// Stopped on request (`DELETE /jobs/:id` of the API); resumable.
    Cancelled,
    /// Stopped before it ended: SIGINT/SIGTERM, its supervising `va serve` went away, or its
    /// process died without a word (its workdir lock was found free); resumable.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// The run will not change any more (unless resumed): every status but pending/running.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `seeds`: the seed handed to ComfyUI and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Seeds {
    /// `null` only while not yet drawn.
    pub value: Option<u64>,
    /// `fixed` | `random` | `per_retry`, as the job says.
    pub policy: String,
}

/// `error`: why a failed run failed, with the stable code name (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub code: String,
    pub message: String,
}

impl From<&Error> for ErrorRecord {
    fn from(e: &Error) -> Self {
        ErrorRecord {
            code: e.code().to_string(),
            message: e.message.clone(),
        }
    }
}

/// `inputs.<role>`: an input file and its real SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    #[serde(with = "path_json")]
    pub path: PathBuf,
    /// Lowercase hex, or [`INPUT_NOT_FOUND`].
    pub sha256: String,
    /// `null` when the file does not exist.
    #[serde(default)]
    pub bytes: Option<u64>,
}

impl InputRecord {
    /// Hashes `path`; a missing file is recorded as [`INPUT_NOT_FOUND`] rather than failing,
    /// so the manifest says what was missing (validation reports it as an error separately).
    pub fn from_path(path: &Path) -> Result<InputRecord> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(InputRecord {
                path: path.to_path_buf(),
                sha256: INPUT_NOT_FOUND.to_string(),
                bytes: None,
            }),
            Err(e) => Err(Error::at_path(ErrorKind::InputNotFound, path, e)),
            Ok(meta) => Ok(InputRecord {
                path: path.to_path_buf(),
                sha256: sha256_file(path)?,
                bytes: Some(meta.len()),
            }),
        }
    }

    pub fn found(&self) -> bool {
        self.sha256 != INPUT_NOT_FOUND
    }
}

/// `audio`: the exact sample arithmetic behind the `*_duration_seconds` floats (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AudioRecord {
    /// The input's native sample rate.
    pub rate: u32,
    /// `N_in`, counted by decoding, at `output_rate` (`encode.audio_rate`, 48000 by default;
    /// a programme resampled from `rate` has `round(N_in(rate) · output_rate / rate)`); all
    /// counts here are at `output_rate`.
    pub input_samples: u64,
    pub pre_samples: u64,
    pub post_samples: u64,
    /// `N = pre + N_in + post`.
    pub total_samples: u64,
    /// The rate of the encoded audio track.
    pub output_rate: u32,
}

/// `buffer`: the silence padding as the job asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BufferRecord {
    pub pre_seconds: f64,
    pub post_seconds: f64,
}

/// `render`: output size and the start image/video size it was derived from (after rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RenderRecord {
    pub width: u32,
    pub height: u32,
    pub source_width: u32,
    pub source_height: u32,
}

/// `video_source_detail.start_source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartSource {
    StartImage,
    StartVideo,
}

/// `video_source_detail.comfyui_output`: what ComfyUI delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComfyuiOutput {
    Frames,
    Video,
}

/// `video_source_detail.lipsync`: where lip-sync happened, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LipsyncSource {
    InsideComfy,
    External,
    #[default]
    Off,
}

/// `video_source_detail`: where the pictures of the final file came from, and whether the run
/// fell back to a lesser source (`degraded`, with a reason code such as
/// `COMFYUI_OUTPUTS_MISSING`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoSourceDetail {
    pub start_source: StartSource,
    #[serde(default)]
    pub comfyui_workflow_id: Option<String>,
    /// `null` when ComfyUI delivered nothing (disabled or failed).
    #[serde(default)]
    pub comfyui_output: Option<ComfyuiOutput>,
    #[serde(default)]
    pub lipsync: LipsyncSource,
    #[serde(default)]
    pub degraded: bool,
    #[serde(default)]
    pub degraded_reason: Option<String>,
}

/// The manifest. Stages mutate it through the helpers below or by setting fields directly;
/// the runner saves it with [`Manifest::save`] after every change worth surviving a crash.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    pub run_id: String,
    pub run_status: RunStatus,
    /// The process exit status once the run ended; `null` while it runs.
    pub exit_status: Option<i32>,
    pub error: Option<ErrorRecord>,
    /// Each phase's state and stage fields, in pipeline order (`null` reads as none).
    #[serde(deserialize_with = "null_as_default")]
    pub phases: Phases,
    pub seeds: Option<Seeds>,
    /// Role (`audio`, `start_image`, `start_video`, `end_image`) -> file and hash.
    pub inputs: OrderedMap<InputRecord>,
    /// `N_in / R`, for display.
    pub audio_input_duration_seconds: Option<f64>,
    /// `N / R`, for display.
    pub audio_duration_seconds: Option<f64>,
    /// `N / R` again: the picture lasts exactly as long as the padded audio.
    pub visual_target_duration_seconds: Option<f64>,
    pub audio: Option<AudioRecord>,
    /// Loudness normalisation (`encode.loudness`): measured in and out; `null` when off.
    pub loudness: Option<crate::media::loudness::LoudnessReport>,
    pub buffer: Option<BufferRecord>,
    /// Exact frame rate as `num/den` (`"30000/1001"`, `"25/1"`).
    pub fps: Option<String>,
    /// The same as a float, for display.
    pub fps_value: Option<f64>,
    pub target_frames: Option<u64>,
    pub hold_frames: Option<u64>,
    pub render: Option<RenderRecord>,
    /// The parameters the run actually used (defaults applied, seed drawn).
    pub effective_params: Option<EffectiveParams>,
    /// The face check's result (`faceprobe/face_meta.json`); `null` when it did not run.
    pub face_meta: Option<FaceMeta>,
    /// The motion of the main segment; `null` with a start video.
    pub motion_meta: Option<MotionMeta>,
    /// The lip-sync inside ComfyUI or by an external provider; `null` without one.
    pub lipsync_meta: Option<LipsyncRecord>,
    /// What the GPU stage asked of which ComfyUI and what came back (`null` before it ran).
    pub comfyui: Option<super::comfyui::ComfyuiRecord>,
    pub video_source_detail: Option<VideoSourceDetail>,
    /// What reading the final file back found (frames, samples, CFR, A/V delta): the same
    /// report as `va verify --json`.
    pub verify: Option<VerifyReport>,
    /// The final file.
    #[serde(rename = "final", with = "path_json::opt")]
    pub final_path: Option<PathBuf>,
    pub warnings: Vec<String>,
    /// Keys this version does not know (written by a newer one, or added by hand); kept so
    /// that a resume does not drop them. Never written by this version.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Manifest {
    /// A pending run with every phase of [`PhaseName::ALL`] pending.
    pub fn new(run_id: impl Into<String>) -> Manifest {
        Manifest {
            run_id: run_id.into(),
            phases: Phases::all_pending(),
            ..Manifest::default()
        }
    }

    /// `<workdir>/manifest.json`.
    pub fn path(workdir: &Path) -> PathBuf {
        workdir.join(MANIFEST_FILE)
    }

    /// The state of phase `name`, if the manifest has it.
    pub fn phase(&self, name: PhaseName) -> Option<&PhaseState> {
        self.phases.state(name)
    }

    /// Marks `name` running from now (added if the manifest lacks it). Fields recorded by an
    /// earlier attempt are kept: a resumed stage may want them. A pending run becomes running.
    pub fn phase_start(&mut self, name: PhaseName) {
        let phase = self.phases.state_mut(name);
        phase.status = PhaseStatus::Running;
        phase.started_at = Some(now_rfc3339());
        phase.ended_at = None;
        if self.run_status == RunStatus::Pending {
            self.run_status = RunStatus::Running;
        }
    }

    /// Ends `name` now with `status`. A phase skipped without being started keeps
    /// `started_at: null`.
    pub fn phase_end(&mut self, name: PhaseName, status: PhaseStatus) {
        let phase = self.phases.state_mut(name);
        phase.status = status;
        phase.ended_at = Some(now_rfc3339());
    }

    /// Whether `name` completed in an earlier attempt, so `--resume` may skip it. Only
    /// `completed` counts: a skipped phase was skipped for reasons the resumed run decides
    /// again.
    pub fn phase_completed(&self, name: PhaseName) -> bool {
        self.phases
            .state(name)
            .is_some_and(|p| p.status == PhaseStatus::Completed)
    }

    /// Hashes the input and records it under `role` (see [`InputRecord::from_path`]).
    pub fn record_input(&mut self, role: &str, path: &Path) -> Result<()> {
        let rec = InputRecord::from_path(path)?;
        self.inputs.insert(role.to_string(), rec);
        Ok(())
    }

    pub fn add_warning(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    /// Whether the run fell back to a lesser visual source.
    pub fn degraded(&self) -> bool {
        self.video_source_detail
            .as_ref()
            .is_some_and(|d| d.degraded)
    }

    /// The run ended successfully with `exit_status` (0, or 3 for `--fail-on-degraded`).
    pub fn mark_completed(&mut self, exit_status: i32) {
        self.run_status = RunStatus::Completed;
        self.exit_status = Some(exit_status);
        self.error = None;
    }

    /// The run failed with `err`: records code and message, the exit status, and fails
    /// whichever phase was still running.
    pub fn mark_failed(&mut self, err: &Error) {
        self.end_running_phases(PhaseStatus::Failed);
        self.run_status = RunStatus::Failed;
        self.exit_status = Some(err.exit_code());
        self.error = Some(ErrorRecord::from(err));
    }

    /// The run was stopped before it ended (`err`: `INTERRUPTED`/`TERMINATED`, or why it is
    /// known to have died): `interrupted`, resumable; the phase that ran is `interrupted`.
    pub fn mark_interrupted(&mut self, err: &Error) {
        self.end_running_phases(PhaseStatus::Interrupted);
        self.run_status = RunStatus::Interrupted;
        self.exit_status = Some(err.exit_code());
        self.error = Some(ErrorRecord::from(err));
    }

    fn end_running_phases(&mut self, status: PhaseStatus) {
        let now = now_rfc3339();
        for phase in self.phases.states_mut() {
            if phase.status == PhaseStatus::Running {
                phase.status = status;
                phase.ended_at = Some(now.clone());
            }
        }
    }

    /// The job's `output.final_name` as this run recorded it (in `effective_params`).
    pub fn final_name(&self) -> Option<&str> {
        self.effective_params
            .as_ref()
            .map(|p| p.job().output.final_name.as_str())
    }

    /// Writes `<workdir>/manifest.json` atomically (temp file + rename), creating the workdir
    /// if needed.
    pub fn save(&self, workdir: &Path) -> Result<()> {
        super::workdir::create(workdir)?;
        write_json_atomic(&Manifest::path(workdir), self)
    }

    /// Reads `<workdir>/manifest.json`. Missing, unreadable or not a manifest:
    /// `RESUME_INVALID` naming the file.
    pub fn load(workdir: &Path) -> Result<Manifest> {
        let path = Manifest::path(workdir);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::at_path(ErrorKind::ResumeInvalid, &path, "no manifest")
                    .with_hint("point at the workdir of an earlier run, or run without --resume")
            } else {
                Error::at_path(
                    ErrorKind::ResumeInvalid,
                    &path,
                    format!("cannot read manifest: {e}"),
                )
            }
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
            Error::at_path(
                ErrorKind::ResumeInvalid,
                &path,
                format!("not a valid manifest: {e}"),
            )
            .with_hint("start a new run in a fresh workdir")
        })?;
        if manifest.run_id.is_empty() {
            return Err(Error::at_path(
                ErrorKind::ResumeInvalid,
                &path,
                "not a valid manifest: run_id missing or empty",
            ));
        }
        Ok(manifest)
    }
}

/// A value given as `null` reads as its default (older or hand-written records say so).
fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> std::result::Result<T, D::Error> {
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// A JSON object whose entries keep their order: insertion order in memory and on write, file
/// order on read (`phases` must read in pipeline order). Small by design: lookups are linear.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<V>(Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<V> OrderedMap<V> {
    pub fn new() -> Self {
        OrderedMap(Vec::new())
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Inserts or replaces in place (a replaced entry keeps its position); returns the old value.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        match self.get_mut(&key) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut V)> {
        self.0.iter_mut().map(|(k, v)| (k.as_str(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<V: Default> OrderedMap<V> {
    /// The entry for `key`, appended with `V::default()` if absent.
    pub fn get_or_default(&mut self, key: &str) -> &mut V {
        let i = match self.0.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                self.0.push((key.to_string(), V::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

impl<V> FromIterator<(String, V)> for OrderedMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        let mut m = OrderedMap::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            // `null` reads as empty: older or hand-written records may say so.
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap::new())
            }

            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut m = OrderedMap::new();
                while let Some((k, v)) = a.next_entry::<String, V>()? {
                    m.insert(k, v);
                }
                Ok(m)
            }
        }

        // `deserialize_any`, not `_map`: inside a flattened struct serde buffers the value, and
        // its buffer hands `null` only to `visit_unit` through `deserialize_any`.
        d.deserialize_any(MapVisitor(PhantomData))
    }
}

/// Now as RFC 3339 UTC with milliseconds: `2024-05-01T08:00:01.123Z`. Used for every
/// timestamp in the records so they sort as strings.
pub fn now_rfc3339() -> String {
    format_utc(OffsetDateTime::now_utc())
}

pub(crate) fn format_utc(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    // Formatting a UTC time with a fixed description only fails for years past 9999.
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Now as a compact UTC stamp fit for file names on every OS: `20240501T080001.123Z`.
pub(crate) fn now_compact() -> String {
    let fmt = time::macros::format_description!(
        "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
    );
    let t = OffsetDateTime::now_utc();
    t.format(&fmt)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn new_lists_every_phase_pending_in_order() {
        let m = Manifest::new("run-1");
        assert_eq!(m.phases.keys().collect::<Vec<_>>(), PHASES);
        assert!(m
            .phases
            .iter()
            .all(|(_, p)| p.status == PhaseStatus::Pending));
        assert_eq!(m.run_status, RunStatus::Pending);
    }

    #[test]
    fn serializes_seed_names_with_nulls_in_spec_order() {
        let m = Manifest::new("run-1");
        let v = serde_json::to_value(&m).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "run_id",
                "run_status",
                "exit_status",
                "error",
                "phases",
                "seeds",
                "inputs",
                "audio_input_duration_seconds",
                "audio_duration_seconds",
                "visual_target_duration_seconds",
                "audio",
                "loudness",
                "buffer",
                "fps",
                "fps_value",
                "target_frames",
                "hold_frames",
                "render",
                "effective_params",
                "face_meta",
                "motion_meta",
                "lipsync_meta",
                "comfyui",
                "video_source_detail",
                "verify",
                "final",
                "warnings",
            ]
        );
        assert_eq!(v["run_status"], "pending");
        assert_eq!(v["exit_status"], Value::Null);
        assert_eq!(v["final"], Value::Null);
        assert_eq!(
            v["phases"]["prepare"],
            json!({"status": "pending", "started_at": null, "ended_at": null})
        );
    }

    #[test]
    fn phases_record_status_times_and_flattened_fields() {
        let mut m = Manifest::new("r");
        m.phase_start(PhaseName::Encode);
        assert_eq!(m.run_status, RunStatus::Running);
        m.phases.encode_mut().fields.passes = Some(1);
        m.phases.state_mut(PhaseName::Encode).duration_seconds = Some(0.25);
        m.phase_end(PhaseName::Encode, PhaseStatus::Completed);
        m.phases.state_mut(PhaseName::Faceprobe).reason = Some("no face check".into());
        m.phase_end(PhaseName::Faceprobe, PhaseStatus::Skipped);
        assert!(m.phase_completed(PhaseName::Encode));
        assert!(!m.phase_completed(PhaseName::Faceprobe));
        assert!(!m.phase_completed(PhaseName::Lipsync));

        let v = serde_json::to_value(&m).unwrap();
        let enc = &v["phases"]["encode"];
        assert_eq!(enc["status"], "completed");
        // Stage fields are flattened into the phase's object, next to its state.
        assert_eq!(enc["passes"], 1);
        assert_eq!(enc["duration_seconds"], 0.25);
        // Fields not recorded are left out, not written as null.
        assert!(enc.get("report").is_none(), "{enc}");
        assert!(enc.get("reason").is_none(), "{enc}");
        let started = enc["started_at"].as_str().unwrap();
        let ended = enc["ended_at"].as_str().unwrap();
        assert!(started <= ended);
        assert_eq!(v["phases"]["faceprobe"]["started_at"], Value::Null);
        assert_eq!(v["phases"]["faceprobe"]["status"], "skipped");
        assert_eq!(v["phases"]["faceprobe"]["reason"], "no face check");
        assert!(v["phases"]["faceprobe"].get("duration_seconds").is_none());

        // A phase a newer version writes is kept, after the known ones.
        let mut v = serde_json::to_value(&m).unwrap();
        v["phases"]["extra_step"] = json!({"status": "completed", "x": 1});
        let back: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(back.phases.keys().last(), Some("extra_step"));
        let again = serde_json::to_value(&back).unwrap();
        assert_eq!(
            again["phases"]["extra_step"],
            json!({"status": "completed", "x": 1})
        );
        assert_eq!(
            again["phases"]["encode"],
            serde_json::to_value(&m).unwrap()["phases"]["encode"]
        );
    }

    #[test]
    fn mark_failed_fails_the_running_phase_and_records_the_code() {
        let mut m = Manifest::new("r");
        m.phase_start(PhaseName::Prepare);
        m.mark_failed(&Error::new(ErrorKind::FfmpegFailed, "fewer than 2 frames"));
        assert_eq!(m.run_status, RunStatus::Failed);
        assert_eq!(m.exit_status, Some(40));
        assert_eq!(
            m.phase(PhaseName::Prepare).unwrap().status,
            PhaseStatus::Failed
        );
        assert!(m.phase(PhaseName::Prepare).unwrap().ended_at.is_some());
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v["error"],
            json!({"code": "FFMPEG_FAILED", "message": "fewer than 2 frames"})
        );
    }

    fn full_manifest() -> Manifest {
        let mut m = Manifest::new("run-20240501-080000");
        m.phase_start(PhaseName::Prepare);
        m.phases.prepare_mut().fields.audio_padded = Some("prepare/audio_padded.wav".into());
        m.phases.prepare_mut().fields.start_video = Some(None);
        m.phase_end(PhaseName::Prepare, PhaseStatus::Completed);
        m.seeds = Some(Seeds {
            value: Some(1234),
            policy: "fixed".into(),
        });
        m.inputs.insert(
            "audio".into(),
            InputRecord {
                path: "/in/voice.wav".into(),
                sha256: "ab".repeat(32),
                bytes: Some(1000),
            },
        );
        m.audio_input_duration_seconds = Some(1.0);
        m.audio_duration_seconds = Some(2.5);
        m.visual_target_duration_seconds = Some(2.5);
        m.audio = Some(AudioRecord {
            rate: 48000,
            input_samples: 48000,
            pre_samples: 24000,
            post_samples: 48000,
            total_samples: 120000,
            output_rate: 48000,
        });
        m.buffer = Some(BufferRecord {
            pre_seconds: 0.5,
            post_seconds: 1.0,
        });
        m.fps = Some("30000/1001".into());
        m.fps_value = Some(30000.0 / 1001.0);
        m.target_frames = Some(75);
        m.hold_frames = Some(30);
        m.render = Some(RenderRecord {
            width: 854,
            height: 480,
            source_width: 1920,
            source_height: 1080,
        });
        let job = crate::job::from_value(
            json!({"audio": "/in/voice.wav", "start_image": "/in/face.png",
                   "determinism": {"seed_policy": "random", "fps": "30000/1001"}}),
            Path::new("/"),
        )
        .unwrap();
        m.effective_params = Some(EffectiveParams::new(&job, Some(1234)).unwrap());
        m.comfyui = Some(super::super::comfyui::ComfyuiRecord {
            workflow_id: Some("vidax_wav2lip_video_audio".into()),
            chunk_count: Some(1),
            ..Default::default()
        });
        m.video_source_detail = Some(VideoSourceDetail {
            start_source: StartSource::StartImage,
            comfyui_workflow_id: Some("vidax_lipsync_mouthblend".into()),
            comfyui_output: Some(ComfyuiOutput::Frames),
            lipsync: LipsyncSource::InsideComfy,
            degraded: true,
            degraded_reason: Some("COMFYUI_OUTPUTS_MISSING".into()),
        });
        m.verify = Some(VerifyReport {
            file: "/runs/x/final.mp4".into(),
            video: None,
            audio: None,
            av_delta_frames: Some(-0.25),
            failures: vec![],
            ok: true,
        });
        m.final_path = Some("/runs/x/final.mp4".into());
        m.add_warning("torchcodec missing");
        m.mark_completed(0);
        m
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = full_manifest();
        m.save(dir.path()).unwrap();
        let back = Manifest::load(dir.path()).unwrap();
        assert_eq!(back, m);
        assert!(back.degraded());
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(Manifest::path(dir.path())).unwrap())
                .unwrap();
        assert_eq!(v["video_source_detail"]["lipsync"], "inside_comfy");
        assert_eq!(v["video_source_detail"]["start_source"], "start_image");
        assert_eq!(v["video_source_detail"]["comfyui_output"], "frames");
        assert_eq!(v["final"], "/runs/x/final.mp4");
        assert_eq!(v["fps"], "30000/1001");
        assert_eq!(v["audio"]["total_samples"], 120000);
        assert_eq!(v["effective_params"]["determinism"]["seed"], 1234);
        assert_eq!(
            v["effective_params"]["determinism"]["seed_policy"],
            "random"
        );
        assert_eq!(v["effective_params"]["output"]["final_name"], "final.mp4");
        assert_eq!(back.final_name(), Some("final.mp4"));
        assert_eq!(v["verify"]["ok"], true);
        assert_eq!(v["phases"]["prepare"]["start_video"], Value::Null);
        assert!(v["phases"]["prepare"].get("audio_codec").is_none());
    }

    #[test]
    fn save_creates_the_workdir() {
        let dir = tempfile::tempdir().unwrap();
        let wd = dir.path().join("a/b");
        Manifest::new("r").save(&wd).unwrap();
        assert!(wd.join(MANIFEST_FILE).is_file());
    }

    #[test]
    fn unknown_keys_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::to_value(Manifest::new("r")).unwrap();
        v["from_the_future"] = json!({"x": 1});
        std::fs::write(Manifest::path(dir.path()), v.to_string()).unwrap();
        let m = Manifest::load(dir.path()).unwrap();
        assert_eq!(m.extra["from_the_future"], json!({"x": 1}));
        m.save(dir.path()).unwrap();
        let again = Manifest::load(dir.path()).unwrap();
        assert_eq!(again.extra["from_the_future"], json!({"x": 1}));
    }

    #[test]
    fn load_missing_manifest_is_resume_invalid_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = Manifest::load(dir.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResumeInvalid);
        assert!(e.message.contains("manifest.json"), "{e}");
    }

    #[test]
    fn load_garbage_is_resume_invalid() {
        let dir = tempfile::tempdir().unwrap();
        for garbage in [
            "{not json",
            "",
            "[1,2]",
            "{\"run_status\": \"exploded\", \"run_id\": \"r\"}",
            "{}",
        ] {
            std::fs::write(Manifest::path(dir.path()), garbage).unwrap();
            let e = Manifest::load(dir.path()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::ResumeInvalid, "{garbage:?}: {e}");
            assert!(e.message.contains("manifest.json"), "{e}");
        }
    }

    #[test]
    fn minimal_manifest_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            Manifest::path(dir.path()),
            r#"{"run_id": "old", "phases": null}"#,
        )
        .unwrap();
        let m = Manifest::load(dir.path()).unwrap();
        assert_eq!(m.run_id, "old");
        assert!(m.phases.is_empty());
        assert_eq!(m.effective_params, None);
    }

    /// Regression guard for the atomic write: a reader polling the file while it is rewritten
    /// must always parse a whole manifest.
    #[test]
    fn save_is_atomic_under_concurrent_reads() {
        let dir = tempfile::tempdir().unwrap();
        let wd = dir.path().to_path_buf();
        let mut m = full_manifest();
        m.save(&wd).unwrap();
        let done = Arc::new(AtomicBool::new(false));

        let reader = {
            let wd = wd.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let text = std::fs::read_to_string(Manifest::path(&wd)).unwrap();
                    let parsed: Manifest = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("torn manifest after {reads} reads: {e}"));
                    assert_eq!(parsed.run_id, "run-20240501-080000");
                    reads += 1;
                }
                reads
            })
        };

        for i in 0..300u64 {
            // Vary the size so a torn write would show.
            m.warnings = (0..(i % 17))
                .map(|j| format!("warning {j} {}", "x".repeat(j as usize * 40)))
                .collect();
            m.phases.encode_mut().fields.passes = Some(i as u32);
            m.save(&wd).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0);
    }

    #[test]
    fn missing_input_is_recorded_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::new("r");
        let missing = dir.path().join("voice.wav");
        m.record_input("audio", &missing).unwrap();
        let rec = m.inputs.get("audio").unwrap();
        assert_eq!(rec.sha256, INPUT_NOT_FOUND);
        assert!(!rec.found());
        assert_eq!(rec.bytes, None);
        assert_eq!(
            sha256_file(&missing).unwrap_err().kind,
            ErrorKind::InputNotFound
        );

        std::fs::write(&missing, b"abc").unwrap();
        m.record_input("audio", &missing).unwrap();
        let rec = m.inputs.get("audio").unwrap();
        assert_eq!(rec.bytes, Some(3));
        assert!(rec.sha256.starts_with("ba7816bf"));
        assert_eq!(m.inputs.len(), 1);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        let t = now_rfc3339();
        assert_eq!(t.len(), "2024-05-01T08:00:01.123Z".len(), "{t}");
        assert!(
            t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.',
            "{t}"
        );
        let c = now_compact();
        assert!(!c.contains(':'), "{c}");
    }
}
