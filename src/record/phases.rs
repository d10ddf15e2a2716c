//! `manifest.phases`: the phases of a run by [`PhaseName`], each a [`Phase`] with its state
//! (status, times, duration, why it was skipped) and the typed fields its stage records
//! (docs/OUTPUT_CONTRACT.md, "`phases`"). The JSON is the flat object the contract documents:
//! `{"status": "completed", "started_at": …, "ended_at": …, "duration_seconds": 0.3, "frames": …}`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::comfyui::AttemptRecord;
use crate::media::encode::EncodeReport;
use crate::media::video::TimestampSource;
use crate::timeline::Extend;

/// The phases of a run, in pipeline order (SPEC §5); the JSON key of each is [`PhaseName::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseName {
    Prepare,
    Faceprobe,
    Comfyui,
    Lipsync,
    Encode,
    Finalize,
}

impl PhaseName {
    /// Every phase, in pipeline order.
    pub const ALL: [PhaseName; 6] = [
        PhaseName::Prepare,
        PhaseName::Faceprobe,
        PhaseName::Comfyui,
        PhaseName::Lipsync,
        PhaseName::Encode,
        PhaseName::Finalize,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            PhaseName::Prepare => "prepare",
            PhaseName::Faceprobe => "faceprobe",
            PhaseName::Comfyui => "comfyui",
            PhaseName::Lipsync => "lipsync",
            PhaseName::Encode => "encode",
            PhaseName::Finalize => "finalize",
        }
    }
}

impl fmt::Display for PhaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    #[default]
    Pending,
    Running,
    Completed,
    Skipped,
    Failed,
    /// The run was stopped while this phase ran.
    Interrupted,
}

impl PhaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Pending => "pending",
            PhaseStatus::Running => "running",
            PhaseStatus::Completed => "completed",
            PhaseStatus::Skipped => "skipped",
            PhaseStatus::Failed => "failed",
            PhaseStatus::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for PhaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every phase records, whatever its stage.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PhaseState {
    pub status: PhaseStatus,
    /// RFC 3339 UTC; `null` for a phase that never started (pending, or skipped outright).
    pub started_at: Option<String>,
    /// RFC 3339 UTC; `null` while pending or running.
    pub ended_at: Option<String>,
    /// Wall-clock seconds the phase took; absent for pending phases and ones skipped outright.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Why the phase was skipped; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One phase: its state and its stage's fields `F`, flattened into one object.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Phase<F> {
    #[serde(flatten)]
    pub state: PhaseState,
    #[serde(flatten)]
    pub fields: F,
}

/// A phase whose stage records nothing of its own (`lipsync`, `finalize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NoFields {}

/// Reads a field that is present (even as `null`) as `Some`: with `#[serde(default)]`, an
/// absent key stays `None`, so `null` and "not recorded" stay apart.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `phases.prepare`'s fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PrepareFields {
    /// The audio decoder's name, e.g. `pcm_s16le`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_codec: Option<String>,
    /// Channels of the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_channels: Option<u16>,
    /// Packets the decoder refused and skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt_packets: Option<u64>,
    /// `prepare/audio_padded.wav`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_padded: Option<String>,
    /// The start video found and how it is mapped; `Some(None)` (`null`) for a start image.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub start_video: Option<Option<StartVideoRecord>>,
}

/// `phases.prepare.start_video` (docs/OUTPUT_CONTRACT.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartVideoRecord {
    pub codec: String,
    pub coded_width: u32,
    pub coded_height: u32,
    pub rotation: u16,
    pub mirrored: bool,
    pub display_matrix_degrees: Option<f64>,
    pub frames: u64,
    pub vfr: bool,
    /// `num/den`.
    pub time_base: String,
    pub duration_seconds: f64,
    pub timestamps: TimestampSource,
    pub extend: Extend,
    pub extended: bool,
    pub cached_frames: bool,
}

/// `phases.faceprobe`'s fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FaceprobeFields {
    /// The staged picture, relative to the workdir (`null`: none staged).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub staged: Option<Option<String>>,
    /// The face check's prompts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_ids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptRecord>>,
    /// `face_meta.method`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    /// `faceprobe/face_meta.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face_meta: Option<String>,
    /// `true` when a resume kept the earlier check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused: Option<bool>,
}

/// `phases.comfyui`'s fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ComfyuiFields {
    /// The `system` object of ComfyUI's `/system_stats` answer, as the server sent it (ComfyUI's
    /// data, not vidax's: kept whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_stats: Option<Value>,
}

/// `phases.encode`'s fields.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EncodeFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<EncodeReport>,
    /// Encode passes over the timeline: `1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passes: Option<u32>,
}

/// `manifest.phases`: one entry per phase, written in pipeline order; a phase absent from a
/// manifest read back stays absent. Phases this version does not know (a newer version's) are
/// kept in `extra`, after the known ones.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Phases {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepare: Option<Phase<PrepareFields>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faceprobe: Option<Phase<FaceprobeFields>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comfyui: Option<Phase<ComfyuiFields>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lipsync: Option<Phase<NoFields>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encode: Option<Phase<EncodeFields>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finalize: Option<Phase<NoFields>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Phases {
    /// Every phase, pending.
    pub fn all_pending() -> Phases {
        Phases {
            prepare: Some(Phase::default()),
            faceprobe: Some(Phase::default()),
            comfyui: Some(Phase::default()),
            lipsync: Some(Phase::default()),
            encode: Some(Phase::default()),
            finalize: Some(Phase::default()),
            extra: Map::new(),
        }
    }

    /// The state of `name`, if the manifest has that phase.
    pub fn state(&self, name: PhaseName) -> Option<&PhaseState> {
        match name {
            PhaseName::Prepare => self.prepare.as_ref().map(|p| &p.state),
            PhaseName::Faceprobe => self.faceprobe.as_ref().map(|p| &p.state),
            PhaseName::Comfyui => self.comfyui.as_ref().map(|p| &p.state),
            PhaseName::Lipsync => self.lipsync.as_ref().map(|p| &p.state),
            PhaseName::Encode => self.encode.as_ref().map(|p| &p.state),
            PhaseName::Finalize => self.finalize.as_ref().map(|p| &p.state),
        }
    }

    /// The state of `name`, the phase added (pending) if absent.
    pub fn state_mut(&mut self, name: PhaseName) -> &mut PhaseState {
        match name {
            PhaseName::Prepare => &mut self.prepare_mut().state,
            PhaseName::Faceprobe => &mut self.faceprobe_mut().state,
            PhaseName::Comfyui => &mut self.comfyui_mut().state,
            PhaseName::Lipsync => &mut self.lipsync.get_or_insert_with(Phase::default).state,
            PhaseName::Encode => &mut self.encode_mut().state,
            PhaseName::Finalize => &mut self.finalize.get_or_insert_with(Phase::default).state,
        }
    }

    pub fn prepare_mut(&mut self) -> &mut Phase<PrepareFields> {
        self.prepare.get_or_insert_with(Phase::default)
    }

    pub fn faceprobe_mut(&mut self) -> &mut Phase<FaceprobeFields> {
        self.faceprobe.get_or_insert_with(Phase::default)
    }

    pub fn comfyui_mut(&mut self) -> &mut Phase<ComfyuiFields> {
        self.comfyui.get_or_insert_with(Phase::default)
    }

    pub fn encode_mut(&mut self) -> &mut Phase<EncodeFields> {
        self.encode.get_or_insert_with(Phase::default)
    }

    /// The phases the manifest has, in pipeline order, with their states.
    pub fn iter(&self) -> impl Iterator<Item = (PhaseName, &PhaseState)> {
        PhaseName::ALL
            .into_iter()
            .filter_map(|n| self.state(n).map(|s| (n, s)))
    }

    /// The states of the phases the manifest has, in pipeline order.
    pub fn states_mut(&mut self) -> impl Iterator<Item = &mut PhaseState> {
        [
            self.prepare.as_mut().map(|p| &mut p.state),
            self.faceprobe.as_mut().map(|p| &mut p.state),
            self.comfyui.as_mut().map(|p| &mut p.state),
            self.lipsync.as_mut().map(|p| &mut p.state),
            self.encode.as_mut().map(|p| &mut p.state),
            self.finalize.as_mut().map(|p| &mut p.state),
        ]
        .into_iter()
        .flatten()
    }

    /// The JSON keys of the phases the manifest has, in the order they are written.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter()
            .map(|(n, _)| n.as_str())
            .chain(self.extra.keys().map(String::as_str))
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none() && self.extra.is_empty()
    }
}
