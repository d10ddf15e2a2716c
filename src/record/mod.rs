//! The run records (SPEC §5): what a run leaves behind for people and programs to read.
//!
//! - [`manifest`]: `<workdir>/manifest.json`, the per-run record the stages fill in phase by
//!   phase. A plain serde struct the runner owns and passes to the stages; not a global. Its
//!   parts: [`phases`] (each phase by [`PhaseName`], with its stage's typed fields), [`meta`]
//!   (the effective job, motion and lip-sync records) and [`comfyui`] (the GPU stage's record).
//! - [`registry`]: `runs.json` in the state dir, one entry per run, safe under concurrent
//!   processes (OS file lock + atomic replace).
//! - [`events`]: `<workdir>/logs/events.jsonl`, a `tracing` layer writing one JSON object per
//!   event, plus the reader/formatter/follower behind `va logs`.
//! - [`workdir`]: the workdir's lock (one run per workdir) and who holds it.
//!
//! The file helpers the records stand on (atomic writes, SHA-256, the state dir, file locks,
//! paths in JSON) live in [`crate::files`], shared with `install`.
//!
//! This module records; it does not decide. Which phase runs, what exit status a run gets and
//! what a degraded run means are the stages' and the binary's business.

pub mod comfyui;
pub mod events;
pub mod manifest;
pub mod meta;
pub mod phases;
pub mod registry;
pub mod workdir;

pub use events::{format_event_human, read_events, EventLayer, EventLog};
pub use manifest::{now_rfc3339, Manifest, RunStatus};
pub use phases::{Phase, PhaseName, PhaseState, PhaseStatus};
pub use registry::RunEntry;

// The file helpers moved to `crate::files`; the stages still name them here (kept until the
// stage rewrites in flight have landed, so that their merges build).
pub use crate::files::{atomic, sha256_file, state_dir, write_atomic, write_json_atomic};
