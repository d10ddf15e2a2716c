//! The media adapter: the only module that uses FFmpeg's libraries (`ffmpeg_next`). It speaks
//! the timeline's types outward and keeps every libav detail inside.
//!
//! - [`audio`]: decode, count and pad the programme; [`resample`] to the delivery rate;
//!   [`loudness`]: EBU R128 measurement, gain and true-peak limiter (no FFmpeg);
//! - [`picture`]: image loading and the Y'CbCr working form; [`render`]: sub-pixel windows;
//! - [`video`]: start videos (timestamps, orientation, decoding to [`picture::Planes`]);
//! - [`encode`]: the one-pass H.264/AAC MP4; [`clip`]: the lossless clip ComfyUI reads;
//!   [`verify`]: the read-back;
//! - [`ffi`]: the native av_log bridge and the few raw libav calls (the only `unsafe`).

pub mod ahead;
pub mod audio;
pub mod clip;
pub mod decode;
pub mod encode;
mod ffi;
pub mod loudness;
pub(crate) use ffi::{open_input, open_input_file, open_output, FileInput};
pub mod picture;
pub mod pngread;
pub mod probe;
pub mod render;
pub mod resample;
pub mod synth;
pub mod threads;
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

/// Checks that `path` names a regular file (symlinks followed) and says what it is otherwise:
/// missing, a symlink loop, a directory, a FIFO, a socket, a device (`INPUT_NOT_FOUND`, the
/// message naming the path). Nothing is opened: a FIFO must not block the check.
pub fn check_regular_file(path: &Path) -> Result<std::fs::Metadata> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        let reason = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            _ if e.raw_os_error() == Some(libc::ELOOP) => "is a symlink loop".to_string(),
            _ => e.to_string(),
        };
        Error::at_path(ErrorKind::InputNotFound, path, reason)
    })?;
    let t = meta.file_type();
    let what = if t.is_file() {
        return Ok(meta);
    } else if t.is_dir() {
        "is a folder, not a file"
    } else if t.is_fifo() {
        "is a FIFO, not a regular file"
    } else if t.is_socket() {
        "is a socket, not a regular file"
    } else if t.is_block_device() || t.is_char_device() {
        "is a device, not a regular file"
    } else {
        "is not a regular file"
    };
    Err(Error::at_path(ErrorKind::InputNotFound, path, what))
}

/// The checks every input file gets before a decoder sees it: it is a regular file
/// ([`check_regular_file`]), can be opened, and is not empty.
pub fn check_input_file(path: &Path) -> Result<()> {
    open_input_file_checked(path).map(drop)
}

/// [`check_input_file`]'s checks, keeping the file open: the one open of an input that is
/// then sniffed, hashed and probed through this handle.
pub fn open_input_file_checked(path: &Path) -> Result<std::fs::File> {
    let meta = check_regular_file(path)?;
    let file = std::fs::File::open(path).map_err(|e| {
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
    Ok(file)
}

/// Read errors in a row after which a file counts as ending there: a reader that never gets
/// past a bad spot must not loop forever (`ffmpeg_next`'s own packet iterator retries without
/// bound).
pub(crate) const MAX_READ_ERRORS_IN_A_ROW: u32 = 64;

/// The packets of `input` as (stream index, packet), ending at the end of the file or after
/// [`MAX_READ_ERRORS_IN_A_ROW`] failed reads; the callers' length checks catch what is lost.
pub(crate) fn packets(input: &mut ffmpeg_next::format::context::Input) -> Packets<'_> {
    Packets { input, errors: 0 }
}

pub(crate) struct Packets<'a> {
    input: &'a mut ffmpeg_next::format::context::Input,
    errors: u32,
}

impl Iterator for Packets<'_> {
    type Item = (usize, ffmpeg_next::Packet);

    fn next(&mut self) -> Option<Self::Item> {
        let mut packet = ffmpeg_next::Packet::empty();
        loop {
            match packet.read(self.input) {
                Ok(()) => {
                    self.errors = 0;
                    return Some((packet.stream(), packet));
                }
                Err(ffmpeg_next::Error::Eof) => return None,
                Err(_) => {
                    self.errors += 1;
                    if self.errors >= MAX_READ_ERRORS_IN_A_ROW {
                        return None;
                    }
                }
            }
        }
    }
}
