//! The manifest's `comfyui` record (docs/OUTPUT_CONTRACT.md, docs/COMFYUI_INTERFACE.md): what
//! the GPU stage asked of which ComfyUI server and what came back — the pool of endpoints,
//! each workflow with its chunks (endpoint, prompt id, frames, timing, attempts), every
//! attempt, and the failure that degraded the run. Typed: `--resume` reads it back.
//!
//! Only ComfyUI's own answers are kept as JSON, as the server sent them: each endpoint's
//! `system` (`/system_stats`) and `failure.details.node_errors`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::manifest::{ComfyuiOutput, OrderedMap};

/// `comfyui`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ComfyuiRecord {
    /// The first usable endpoint (the only one for a pool of one).
    pub url: String,
    /// Every endpoint of `comfyui.url`, in the job's order, with its health.
    pub endpoints: Vec<EndpointRecord>,
    pub client_id: String,
    pub workflow_ids: Vec<String>,
    /// The workflow whose frames the main segment shows.
    pub workflow_id: Option<String>,
    /// The last prompt id submitted.
    pub prompt_id: Option<String>,
    pub prompt_ids: Vec<String>,
    pub chunk_size: Option<u64>,
    /// `job` (`comfyui.chunk_size`) or `default` (chosen from the render size).
    pub chunk_size_source: Option<String>,
    pub chunk_count: Option<u64>,
    pub frames_expected: Option<u64>,
    pub frames_received: Option<u64>,
    pub output: Option<ComfyuiOutput>,
    /// Workflow id -> its frames folder or video file (relative to the workdir).
    pub outputs: OrderedMap<String>,
    pub workflows: OrderedMap<WorkflowRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub inputs: Option<InputsRecord>,
    pub failure: Option<FailureRecord>,
    /// What was done instead after a failure.
    pub action: Option<String>,
}

/// `comfyui.endpoints[]`: one ComfyUI server of the pool.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointRecord {
    pub url: String,
    /// `usable`; `unavailable` (health check failed); `missing_nodes` (the preflight found
    /// classes or inputs it lacks); `died` (stopped answering during the run).
    pub status: String,
    /// Why it is not (or no longer) usable.
    pub reason: Option<String>,
    /// Chunks it delivered.
    pub chunks_completed: u64,
    /// Frames it delivered.
    pub frames: u64,
    /// `/system_stats`'s `system` object, as the server sent it.
    pub system: Value,
}

/// `comfyui.workflows.<id>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowRecord {
    /// `completed`, `failed`, `no_effect`, `skipped`.
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Frames folder, relative to the workdir.
    pub dir: Option<String>,
    pub frames: Option<u64>,
    /// The video output, relative to the workdir, when the workflow made one.
    pub video: Option<String>,
    pub chunk_size: Option<u64>,
    pub chunk_count: Option<u64>,
    /// Taken from an earlier attempt by `--resume` (nothing asked of ComfyUI).
    pub reused: bool,
    pub chunks: Vec<ChunkRecord>,
}

/// `comfyui.workflows.<id>.chunks[]`: one chunk of the timeline, one prompt.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkRecord {
    /// 0-based chunk number.
    pub index: u64,
    /// First timeline frame (the node's `start_frame`).
    pub start: u64,
    pub frames: u64,
    /// `completed` (its frames are on disk), `pending`, `failed`.
    pub status: String,
    /// The endpoint that delivered it.
    pub endpoint: Option<String>,
    pub prompt_id: Option<String>,
    /// Attempts made for it, over every endpoint.
    pub attempts: u32,
    /// Seconds from its submission to its history entry, and for fetching its frames.
    pub run_seconds: Option<f64>,
    pub fetch_seconds: Option<f64>,
    /// Taken from an earlier attempt by `--resume`.
    pub reused: bool,
}

/// `comfyui.attempts[]`: one prompt submitted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AttemptRecord {
    pub workflow_id: String,
    pub chunk: u64,
    pub attempt: u32,
    pub endpoint: String,
    pub prompt_id: String,
    pub seed: u64,
    /// `finished`, or why the attempt failed.
    pub result: String,
}

/// `comfyui.inputs`: the names the inputs have in ComfyUI's input folder.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InputsRecord {
    pub audio: String,
    /// The start file itself; `None` when no graph of the run loads it.
    pub start: Option<String>,
    pub staged: Option<String>,
    /// `copy` or `upload`.
    pub staging: String,
    pub input_dir: Option<String>,
}

/// `comfyui.failure`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureRecord {
    pub code: String,
    pub message: String,
    /// ComfyUI's answer in short, and what vidax found; absent when there is nothing to add.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<FailureDetails>,
}

/// `comfyui.failure.details`: what ComfyUI answered, in short, and what vidax checked.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureDetails {
    /// The keys of the prompt's `/history` entry (empty when there was none).
    pub history_keys: Vec<String>,
    /// The output node ids of that entry.
    pub output_keys: Vec<String>,
    /// ComfyUI's status messages: the message name, with the node, exception type and
    /// message for an execution error.
    pub messages: Vec<String>,
    /// `node_errors` as ComfyUI sent them (a rejected graph); `{}` or `null` otherwise.
    pub node_errors: Value,
    /// Problems the preflight against `/object_info` found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preflight: Option<Vec<String>>,
    /// Frames a chunk asked for and received, when too few came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_asked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_received: Option<u64>,
    /// The effect check that found no lip-sync (`LIPSYNC_NO_EFFECT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::stages::effect::EffectCheck>,
}

impl FailureDetails {
    /// Nothing from ComfyUI's history (the failure was found before or beside it).
    pub fn empty() -> FailureDetails {
        FailureDetails {
            node_errors: Value::Object(Default::default()),
            ..FailureDetails::default()
        }
    }
}
