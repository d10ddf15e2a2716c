//! OS file locks (flock on Unix, LockFileEx on Windows) on lock files: the run registry's
//! `runs.json.lock`, each workdir's `.va.lock`, the API's per-job and server locks.
//!
//! A lock belongs to an open file description, so it holds between processes, and the kernel
//! releases it when its holder ends, however it ends (`kill -9`, a crash): a free lock is
//! proof that no holder is alive. Lock files are never removed (removing one while another
//! process waits on it would let two holders in); they are small and dot-prefixed.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

use crate::error::{Error, ErrorKind, Result};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

/// What [`probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Some process holds the lock.
    Alive,
    /// Nobody holds it.
    Free,
    /// There is no lock file (so nobody ever held it there, or its folder is gone).
    NoLockFile,
}

fn open(path: &Path, create: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

fn lock_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::at_path(ErrorKind::Internal, path, format!("cannot lock: {e}"))
}

impl FileLock {
    fn opened(path: &Path) -> Result<File> {
        open(path, true).map_err(|e| {
            Error::at_path(
                ErrorKind::Internal,
                path,
                format!("cannot open lock file: {e}"),
            )
        })
    }

    /// Waits for the exclusive lock on `path` (created if missing).
    pub fn exclusive(path: &Path) -> Result<FileLock> {
        let file = FileLock::opened(path)?;
        // Fully qualified: std's `File` has grown inherent lock methods of its own.
        FileExt::lock_exclusive(&file).map_err(|e| lock_error(path, e))?;
        Ok(FileLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Waits for a shared lock on `path` (created if missing).
    pub fn shared(path: &Path) -> Result<FileLock> {
        let file = FileLock::opened(path)?;
        FileExt::lock_shared(&file).map_err(|e| lock_error(path, e))?;
        Ok(FileLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The exclusive lock on `path` (created if missing) if nobody holds it, else `None`.
    pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>> {
        let file = FileLock::opened(path)?;
        FileLock::try_on(file, path)
    }

    /// Like [`FileLock::try_exclusive`], but never creates the lock file: `Ok(None)` when it
    /// does not exist either.
    pub fn try_existing(path: &Path) -> Result<Option<FileLock>> {
        match open(path, false) {
            Ok(file) => FileLock::try_on(file, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::at_path(
                ErrorKind::Internal,
                path,
                format!("cannot open lock file: {e}"),
            )),
        }
    }

    fn try_on(file: File, path: &Path) -> Result<Option<FileLock>> {
        match FileExt::try_lock_exclusive(&file) {
            Ok(true) => Ok(Some(FileLock {
                file,
                path: path.to_path_buf(),
            })),
            Ok(false) => Ok(None),
            Err(e) => Err(lock_error(path, e)),
        }
    }

    /// The locked file (for the holder to write who it is).
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

/// Whether a process holds the lock on `path`, without creating the file. Taking the lock to
/// find out, it is released at once.
pub fn probe(path: &Path) -> Result<Holder> {
    if !path.exists() {
        return Ok(Holder::NoLockFile);
    }
    Ok(match FileLock::try_existing(path)? {
        Some(_) => Holder::Free,
        None if path.exists() => Holder::Alive,
        None => Holder::NoLockFile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_drop_releases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".x.lock");
        assert_eq!(probe(&p).unwrap(), Holder::NoLockFile);
        assert!(FileLock::try_existing(&p).unwrap().is_none());
        assert!(!p.exists(), "try_existing never creates the file");
        let held = FileLock::try_exclusive(&p).unwrap().expect("free");
        assert_eq!(held.path(), p);
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        assert_eq!(probe(&p).unwrap(), Holder::Alive);
        drop(held);
        assert_eq!(probe(&p).unwrap(), Holder::Free);
        let _again = FileLock::exclusive(&p).unwrap();
    }
}
