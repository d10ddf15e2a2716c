//! The run records (SPEC §5): what a run leaves behind for people and programs to read.
//!
//! - [`manifest`]: `<workdir>/manifest.json`, the per-run record the stages fill in phase by
//!   phase. A plain serde struct the runner owns and passes to the stages; not a global.
//! - [`registry`]: `runs.json` in the state dir, one entry per run, safe under concurrent
//!   processes (OS file lock + atomic replace).
//! - [`events`]: `<workdir>/logs/events.jsonl`, a `tracing` layer writing one JSON object per
//!   event, plus the reader/formatter/follower behind `va logs`.
//! - [`atomic`]: temp file + fsync + rename, used by the two JSON records.
//!
//! This module records; it does not decide. Which phase runs, what exit status a run gets and
//! what a degraded run means are the stages' and the binary's business.

pub mod atomic;
pub mod comfyui;
pub mod events;
pub mod manifest;
pub mod registry;

pub use atomic::{write_atomic, write_json_atomic};
pub use events::{format_event_human, read_events, EventLayer, EventLog};
pub use manifest::{now_rfc3339, sha256_file, Manifest, Phase, PhaseStatus, RunStatus};
pub use registry::{state_dir, RunEntry};

/// Serializing paths as JSON strings without failing on non-UTF-8 names (serde's own
/// `Path` impl refuses them, which would fail a run over a log record). Deserializing needs no
/// help: serde reads a string into a `PathBuf`.
pub(crate) mod serde_path {
    use std::path::{Path, PathBuf};

    use serde::Serializer;

    pub fn lossy<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string_lossy())
    }

    #[allow(clippy::ref_option)] // serde's `serialize_with` hands us `&Option<_>`.
    pub fn lossy_opt<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.serialize_str(&p.to_string_lossy()),
            None => s.serialize_none(),
        }
    }
}
