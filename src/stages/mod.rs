//! The pipeline phases, each owning one step in its own module, and the run that orders them
//! ([`run`], a short sequencer): `prepare` → `faceprobe` → `comfyui` → `lipsync` → `encode` →
//! `finalize`. Each phase's `run_phase` returns its typed output (the plan, the face check,
//! ComfyUI's outcome, what the main segment shows, the encode report) and writes its typed
//! record into the manifest, which is passed along explicitly.

pub mod admit;
pub mod comfyui;
pub mod compose;
pub mod effect;
pub mod encode;
pub mod faceprobe;
pub mod finalize;
pub mod lipsync;
pub mod prepare;
pub mod run;
pub mod staging;

pub use admit::{admit, Admitted};
pub use prepare::Prepared;
pub use run::{run_job, RunOptions, RunOutcome};
