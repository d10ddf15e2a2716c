//! File helpers shared by the run records ([`crate::record`]), setup ([`crate::install`]),
//! the API and the stages: atomic replacement, SHA-256, the state dir, OS file locks, and
//! paths in JSON without loss.
//!
//! This module knows nothing about what the files mean; it only reads, writes and locks them.

pub mod atomic;
pub mod hash;
pub mod lock;
pub mod path_json;
pub mod state;

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// `file` (the file at `path`, for messages) from its start: a reader over a handle opened
/// earlier, so the file is read again without being opened again.
pub fn from_start<'f>(mut file: &'f std::fs::File, path: &Path) -> Result<&'f std::fs::File> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?;
    Ok(file)
}

pub use atomic::{write_atomic, write_json_atomic};
pub use hash::{sha256_file, sha256_read};
pub use lock::FileLock;
pub use state::state_dir;
