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

pub use atomic::{write_atomic, write_json_atomic};
pub use hash::{sha256_file, sha256_read};
pub use lock::FileLock;
pub use state::state_dir;
