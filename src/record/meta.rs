//! The manifest's records of what the run used and made, typed: `effective_params` (the
//! effective job), `motion_meta` and `lipsync_meta` (docs/OUTPUT_CONTRACT.md). `face_meta`,
//! `verify`, `comfyui` and `phases.encode.report` are the stages' own types
//! ([`crate::stages::faceprobe::FaceMeta`], [`crate::media::verify::VerifyReport`],
//! [`super::comfyui::ComfyuiRecord`], [`crate::media::encode::EncodeReport`]).

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::manifest::ErrorRecord;
use crate::error::{Error, ErrorKind, Result};
use crate::job::Job;
use crate::stages::effect::LipsyncMeta;
use crate::timeline::MotionMode;

/// `effective_params`: the effective job (the document `job.json` holds) with
/// `determinism.seed` set to the seed the run used. Written as the job serialises; read back
/// through the job's validation, so a manifest's job is as consistent as a job file's.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveParams(Job);

impl EffectiveParams {
    /// `job` with `seed` as its `determinism.seed` (`None`: the job's own).
    pub fn new(job: &Job, seed: Option<u64>) -> Result<EffectiveParams> {
        let Some(seed) = seed else {
            return Ok(EffectiveParams(job.clone()));
        };
        // A job is changed through its JSON and validated again (src/job/schema.rs).
        let mut v = job.to_effective_json();
        v["determinism"]["seed"] = seed.into();
        crate::job::from_value(v, Path::new("/"))
            .map(EffectiveParams)
            .map_err(|problems| {
                Error::new(
                    ErrorKind::Internal,
                    format!(
                        "effective job with seed {seed}: {}",
                        problems
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                )
            })
    }

    pub fn job(&self) -> &Job {
        &self.0
    }
}

impl Serialize for EffectiveParams {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EffectiveParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        crate::job::from_value(v, Path::new("/"))
            .map(EffectiveParams)
            .map_err(|problems| {
                let first = problems.first().map(|p| p.to_string()).unwrap_or_default();
                serde::de::Error::custom(format!("effective_params is not a valid job: {first}"))
            })
    }
}

/// `motion_meta`: where the main segment's motion came from, by `source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum MotionMeta {
    /// `vidax_motion_chunks` delivered the frames.
    Comfyui {
        workflow_id: String,
        /// Relative to the workdir.
        frames_dir: String,
        frame_count: Option<u64>,
        /// Exact, `num/den` or whole.
        fps: String,
        mode: MotionMode,
        strength: f64,
        chunk_size: Option<u64>,
        chunk_count: Option<u64>,
    },
    /// vidax's own renderer: the zoom over the start image, or over ComfyUI's frames
    /// (`over: "comfyui frames"`, with their `workflow_id`).
    Local {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        over: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workflow_id: Option<String>,
        mode: MotionMode,
        strength: f64,
        frame_count: u64,
        fps: String,
        /// The face centre the zoom follows, in the start image's pixels.
        centre: Option<[f64; 2]>,
        renderer: String,
    },
}

/// The renderer the local motion names in its record.
pub const LOCAL_RENDERER: &str = "vidax sub-pixel window resampler";

/// `lipsync_meta`: inside ComfyUI (the effect check's record) or by an external provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LipsyncRecord {
    InsideComfy(Box<LipsyncMeta>),
    External(ExternalLipsync),
}

/// `lipsync_meta` of an external provider (LIPSYNC_INTERFACE.md), or of one the job gave with
/// `lipsync.enable: false` (`status: ignored`, with the `reason`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalLipsync {
    pub provider: String,
    /// `external`; absent for an ignored provider.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// `lipsync/output.mp4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The providers file the provider was found in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    pub status: ExternalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The provider's failure (the run went on degraded with the base video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
}

/// `lipsync_meta.status` of an external provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExternalStatus {
    Running,
    Completed,
    /// `--resume` kept the earlier attempt's output.
    Reused,
    /// Given with `lipsync.enable: false`.
    Ignored,
}
