//! The media adapter: the only module that uses FFmpeg's libraries (`ffmpeg_next`). It speaks
//! the timeline's types outward and keeps every libav detail inside.
//!
//! - [`audio`]: decode, count and pad the programme; [`resample`] for rates AAC lacks;
//! - [`picture`]: image loading and the Y'CbCr working form; [`render`]: sub-pixel windows;
//! - [`video`]: start videos (timestamps, orientation, decoding to [`picture::Planes`]);
//! - [`encode`]: the one-pass H.264/AAC MP4; [`verify`]: the read-back;
//! - [`ffi`]: the native av_log bridge and the few raw libav calls (the only `unsafe`).

pub mod audio;
pub mod decode;
pub mod encode;
mod ffi;
pub mod picture;
pub mod probe;
pub mod render;
pub mod resample;
pub mod synth;
pub mod verify;
pub mod video;

use std::path::Path;
use std::sync::Once;

use crate::error::{Error, ErrorKind, Result};

/// Initialises FFmpeg once per process and routes its log to `tracing`.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg_next::init();
        ffi::install_log_bridge();
    });
}

/// Restores the default SIGPIPE action (see [`ffi::restore_default_sigpipe`]).
pub fn restore_default_sigpipe() {
    ffi::restore_default_sigpipe();
}

/// The checks every input file gets before a decoder sees it: it exists, is a regular file,
/// can be opened, and is not empty.
pub fn check_input_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::at_path(ErrorKind::InputNotFound, path, "no such file")
        }
        _ => Error::at_path(ErrorKind::InputNotFound, path, e),
    })?;
    if meta.is_dir() {
        return Err(Error::at_path(
            ErrorKind::InputNotFound,
            path,
            "is a directory, not a file",
        ));
    }
    std::fs::File::open(path).map_err(|e| {
        Error::at_path(
            ErrorKind::InputNotFound,
            path,
            format!("cannot be read ({e})"),
        )
    })?;
    if meta.len() == 0 {
        return Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            "is empty",
        ));
    }
    Ok(())
}
