//! The manifest's `comfyui` record (docs/OUTPUT_CONTRACT.md, docs/COMFYUI_INTERFACE.md): what
//! the GPU stage asked of which ComfyUI server and what came back — the pool of endpoints,
//! each workflow with its chunks (endpoint, prompt id, frames, timing, attempts), every
//! attempt, and the failure that degraded the run. Typed: `--resume` reads it back.
//!
//! Only `failure.details` holds ComfyUI's own answers (history keys, `node_errors`) as JSON:
//! foreign bodies, kept as the server sent them.

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
    pub start: String,
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
    /// ComfyUI's answer in short (`history_keys`, `output_keys`, `messages`, `node_errors`,
    /// `preflight`, ...), as the server sent it.
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
}
