//! vidax: an in-process talking-head video runner.
//!
//! Speech audio plus a start image or start video become one MP4 whose picture lasts exactly
//! as long as the padded audio, to the frame. The crate is layered:
//! - [`timeline`]: pure, exact frame/sample arithmetic (no FFI, no float time);
//! - [`media`]: the only user of FFmpeg's libraries (probe, decode, render, encode, verify);
//! - [`job`]: the job schema and its validation;
//! - [`record`]: manifest, run registry and event log;
//! - [`stages`]: the pipeline phases and the run that orders them;
//! - [`install`]: setup: doctor, install-test, install (assets, custom nodes, pip);
//! - [`api`]: the VIDAX HTTP API (`va serve`);
//! - [`cli`]: the `va` commands.

pub mod api;
pub mod cli;
pub mod comfy;
pub mod error;
pub mod install;
pub mod job;
pub mod media;
pub mod progress;
pub mod record;
pub mod stages;
pub mod timeline;

pub use error::{Error, ErrorKind, Result};

#[cfg(test)]
mod docs_check;
