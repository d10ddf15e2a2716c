//! The pipeline phases, each owning one step, and the run that orders them:
//! `prepare` → `faceprobe` → `comfyui` → `lipsync` → `encode` → `finalize`.
//! The manifest is the record they write, passed along explicitly.

pub mod admit;
pub mod comfyui;
pub mod compose;
pub mod effect;
pub mod faceprobe;
pub mod lipsync;
pub mod prepare;
pub mod run;
pub mod staging;

pub use admit::{admit, Admitted};
pub use prepare::Prepared;
pub use run::{run_job, RunOptions, RunOutcome};
