//! vidax: an in-process talking-head video runner.
//!
//! Speech audio plus a start image or start video become one MP4 whose picture lasts exactly
//! as long as the padded audio, to the frame. The crate is layered:
//! - [`timeline`]: pure, exact frame/sample arithmetic (no FFI, no float time);
//! - [`media`]: the only user of FFmpeg's libraries (probe, decode, render, encode, verify);
//! - [`job`]: the job schema and its validation;
//! - [`files`]: file helpers below the records and setup (atomic writes, SHA-256, the state
//!   dir, file locks, paths in JSON);
//! - [`record`]: manifest, run registry, event log and the workdir lock;
//! - [`interrupt`]: stopping a run on SIGINT/SIGTERM or its supervisor's request;
//! - [`stages`]: the pipeline phases and the run that orders them;
//! - [`install`]: setup: doctor, install-test, install (assets, custom nodes, pip);
//! - [`api`]: the VIDAX HTTP API (`va serve`);
//! - [`cli`]: the `va` commands.

pub mod api;
pub mod cli;
pub mod comfy;
pub mod error;
pub mod files;
pub mod install;
pub mod interrupt;
pub mod job;
pub mod media;
pub mod progress;
pub mod record;
pub mod stages;
pub mod timeline;

pub use error::{Error, ErrorKind, Result};

#[cfg(test)]
mod docs_check;
