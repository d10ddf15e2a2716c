//! Progress of a run, as the stages report it (gifski's pattern): the library reports what
//! happens to a [`Progress`]; only a front door draws it (`va run`/`va produce` draw a bar on
//! a terminal and write NDJSON with `--json`; the server's child runs report to nothing).
//!
//! Owns: the events and the no-op reporter. Must not: print, or decide whether a terminal
//! is there.

use std::path::Path;
use std::sync::Arc;

/// Encode progress: both tracks count, so the work is done only when both are muxed and
/// the file is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncodeProgress {
    /// Video frames encoded, of `frames_total`.
    pub frames_done: u64,
    pub frames_total: u64,
    /// Audio samples (per channel) muxed, of `samples_total`.
    pub samples_done: u64,
    pub samples_total: u64,
    /// The trailer is written: the file is complete.
    pub finished: bool,
}

impl EncodeProgress {
    /// Done share in `[0, 1]`: video and audio weigh the same; 1 only once `finished`.
    pub fn fraction(&self) -> f64 {
        if self.finished {
            return 1.0;
        }
        let part = |done: u64, total: u64| {
            if total == 0 {
                1.0
            } else {
                (done as f64 / total as f64).min(1.0)
            }
        };
        let f = (part(self.frames_done, self.frames_total)
            + part(self.samples_done, self.samples_total))
            / 2.0;
        // Never 100 % before the trailer is written.
        f.min(0.999)
    }
}

/// Where a ComfyUI workflow's chunks stand.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChunkProgress {
    pub workflow_id: String,
    pub chunks_done: u64,
    pub chunks_total: u64,
    pub frames_done: u64,
    pub frames_total: u64,
    pub endpoints: Vec<EndpointProgress>,
}

/// One endpoint's share of a workflow's chunks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointProgress {
    pub url: String,
    pub chunks_done: u64,
    pub frames_done: u64,
    pub in_flight: u64,
}

/// A phase's state change, as the manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseChange {
    Started,
    Completed,
    Failed,
    Skipped,
    /// The run was stopped while the phase ran (SIGINT/SIGTERM, its server).
    Interrupted,
}

/// What a run reports while it works. Every method has a no-op default; implementations
/// must be cheap (the encoder calls [`Progress::encode`] once per frame and audio packet).
pub trait Progress: Send + Sync {
    /// The run has its id and workdir.
    fn run_started(&self, _run_id: &str, _workdir: &Path) {}
    /// A phase started, ended or was skipped.
    fn phase(&self, _name: &str, _change: PhaseChange) {}
    /// ComfyUI reported `value` of `max` steps of the current prompt.
    fn comfyui(&self, _value: u64, _max: u64) {}
    /// A ComfyUI workflow's chunks: how many are done and in flight, over the pool and per
    /// endpoint (sent when its chunks are handed out and each time one finishes).
    fn comfyui_chunks(&self, _p: &ChunkProgress) {}
    /// The encode advanced.
    fn encode(&self, _p: EncodeProgress) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

/// A shared handle on a [`Progress`], for options structs that are `Clone` and `Debug`.
#[derive(Clone)]
pub struct Reporter(pub Arc<dyn Progress>);

impl Reporter {
    pub fn new(p: impl Progress + 'static) -> Reporter {
        Reporter(Arc::new(p))
    }

    pub fn silent() -> Reporter {
        Reporter::new(Silent)
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::silent()
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

impl std::ops::Deref for Reporter {
    type Target = dyn Progress;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_fraction_counts_both_tracks_and_ends_with_the_file() {
        let mut p = EncodeProgress {
            frames_done: 100,
            frames_total: 100,
            samples_done: 0,
            samples_total: 48_000,
            finished: false,
        };
        assert_eq!(p.fraction(), 0.5, "video alone is half the work");
        p.samples_done = 48_000;
        assert_eq!(p.fraction(), 0.999, "not done before the trailer");
        p.finished = true;
        assert_eq!(p.fraction(), 1.0);
    }
}
