//! Atomic file replacement: the run records (`manifest.json`, `runs.json`, `job.json`), the
//! API's job records, and the files `va install` writes.
//!
//! A reader (another process running `va status`, the API serving `/jobs/:id/manifest`) must
//! never see a half-written file, and a crash must leave either the old or the new file. So
//! the bytes go to a temporary file in the same directory (same filesystem, so the rename is
//! atomic), are flushed to disk, and the temporary file is renamed over the target.
//!
//! This module only writes; it knows nothing about what the files contain.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{Context, Error, ErrorKind, Result};

/// Replaces `path` with `bytes` atomically: temp file in the same directory, write, fsync,
/// rename. The parent directory must exist. Errors are `INTERNAL` and name `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_beside(path, ".tmp")?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| {
            Error::at_path(
                ErrorKind::Internal,
                path,
                format!("cannot write temp file: {e}"),
            )
        })?;
    persist(tmp, path)
}

/// A temporary file in `path`'s directory named `.<name>.<random><suffix>`, so that one a
/// crash leaves behind says what it was for. It is removed when dropped unless [`persist`]ed.
/// The parent directory must exist. Errors are `INTERNAL` and name `path`.
pub fn temp_beside(path: &Path, suffix: &str) -> Result<tempfile::NamedTempFile> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| Error::at_path(ErrorKind::Internal, path, "not a file path"))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(suffix);
    #[cfg(unix)]
    {
        // Like `File::create`: 0666 less the umask, not tempfile's private 0600, so the
        // record stays readable by whoever could read the one it replaces.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|e| {
        Error::at_path(
            ErrorKind::Internal,
            path,
            format!("cannot create temp file: {e}"),
        )
    })
}

/// Renames a finished (already written and synced) temp file over `path` and makes the
/// rename durable.
pub fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    tmp.persist(path).map_err(|e| {
        Error::at_path(
            ErrorKind::Internal,
            path,
            format!("cannot replace file: {}", e.error),
        )
    })?;
    sync_dir(parent_dir(path));
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Serializes `value` as pretty JSON with a trailing newline and writes it with
/// [`write_atomic`].
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).at(ErrorKind::Internal, path)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Makes the rename itself durable. Best effort: some filesystems refuse to fsync a
/// directory, and the rename has already happened, so a failure here is not an error.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn json_is_pretty_with_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.json");
        write_json_atomic(&p, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\n  \"a\": 1\n}\n");
    }

    #[test]
    fn missing_directory_is_internal_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("m.json");
        let e = write_atomic(&p, b"x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("m.json"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn file_is_not_private_to_the_temp_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("perm.json");
        write_atomic(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        // Owner read/write always; group/other read unless the umask forbids it.
        assert_eq!(mode & 0o600, 0o600);
    }
}
