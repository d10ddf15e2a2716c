//! One run per workdir: `<workdir>/.va.lock`, held (an exclusive OS file lock) by the run
//! for its whole life, with the holder's run id and process id written in it.
//!
//! The lock is what tells a live run from a dead one: the kernel releases it however the
//! holder ends (`kill -9`, power loss), so a record that still says `running` while the lock
//! is free belongs to a run that died without a word ([`liveness`]). The lock file itself
//! stays (see [`crate::files::lock`]).

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::manifest::{now_rfc3339, Manifest, RunStatus};
use super::registry::{self, RunEntry};
use crate::error::{Error, ErrorKind, Result};
use crate::files::lock::{self, FileLock, Holder};

/// The lock file's name inside the workdir.
pub const LOCK_FILE: &str = ".va.lock";

/// `<workdir>/.va.lock`.
pub fn lock_path(workdir: &Path) -> PathBuf {
    workdir.join(LOCK_FILE)
}

/// Where the final is encoded before it verified and is linked into place:
/// `<workdir>/.<final_name>.partial`. A run that ends any other way removes it.
pub fn partial_path(workdir: &Path, final_name: &str) -> PathBuf {
    workdir.join(format!(".{final_name}.partial"))
}

/// Creates `workdir` (and its parents) if missing; `INTERNAL` naming it otherwise.
pub fn create(workdir: &Path) -> Result<()> {
    std::fs::create_dir_all(workdir).map_err(|e| {
        Error::at_path(
            ErrorKind::Internal,
            workdir,
            format!("cannot create workdir: {e}"),
        )
    })
}

/// What the holder writes into the lock file (JSON), for the run refused as busy to name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    pub run_id: String,
    pub pid: u32,
    /// RFC 3339 UTC.
    pub since: String,
}

/// A workdir held by this process; released on drop (or when the process ends).
#[derive(Debug)]
pub struct WorkdirLock {
    lock: FileLock,
}

impl WorkdirLock {
    /// Takes the lock of `workdir` (creating the folder and the lock file as needed), or
    /// `WORKDIR_BUSY` naming the run that holds it.
    pub fn acquire(workdir: &Path) -> Result<WorkdirLock> {
        create(workdir)?;
        let path = lock_path(workdir);
        match FileLock::try_exclusive(&path)? {
            Some(lock) => Ok(WorkdirLock { lock }),
            None => Err(busy(workdir)),
        }
    }

    /// The lock of `workdir` if nobody holds it; `None` when a run holds it or there is no
    /// lock file (nothing is created).
    pub fn try_existing(workdir: &Path) -> Result<Option<WorkdirLock>> {
        Ok(FileLock::try_existing(&lock_path(workdir))?.map(|lock| WorkdirLock { lock }))
    }

    /// Writes who holds the workdir into the lock file.
    pub fn set_holder(&self, run_id: &str) -> Result<()> {
        let info = HolderInfo {
            run_id: run_id.to_string(),
            pid: std::process::id(),
            since: now_rfc3339(),
        };
        let mut text = serde_json::to_vec(&info).unwrap_or_default();
        text.push(b'\n');
        let mut f = self.lock.file();
        // In place: the lock belongs to this file, so it cannot be replaced by a rename.
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(&text))
            .map_err(|e| Error::at_path(ErrorKind::Internal, self.lock.path(), e))
    }
}

/// The `WORKDIR_BUSY` error for a workdir whose lock another process holds. The holder writes
/// its id right after taking the lock; a refusal in that instant waits a moment for it.
fn busy(workdir: &Path) -> Error {
    let mut info = None;
    for _ in 0..20 {
        info = holder(workdir);
        if info.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let who = match info {
        Some(h) => format!("run {} (pid {}, since {})", h.run_id, h.pid, h.since),
        None => "another run that is starting".to_string(),
    };
    Error::at_path(
        ErrorKind::WorkdirBusy,
        workdir,
        format!("in use by {who}; nothing was written"),
    )
    .with_hint("wait for that run to end, or choose another --workdir")
}

/// Who holds (or last held) the workdir, as written in its lock file.
pub fn holder(workdir: &Path) -> Option<HolderInfo> {
    let text = std::fs::read(lock_path(workdir)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether a run is alive in `workdir`, from its lock alone.
pub fn liveness(workdir: &Path) -> Result<Holder> {
    lock::probe(&lock_path(workdir))
}

/// Records the run in `workdir` as `interrupted` when its manifest still says `pending` or
/// `running`: the caller holds the workdir's lock, so the run that wrote that cannot be alive
/// (killed, crashed, or the machine stopped). Its partial final is removed and its registry
/// entry (in `state_dir`) follows. Returns the manifest as it now stands; `None` when there is
/// no readable one.
pub fn settle_dead_run(
    _held: &WorkdirLock,
    workdir: &Path,
    state_dir: &Path,
) -> Result<Option<Manifest>> {
    let Ok(mut m) = Manifest::load(workdir) else {
        return Ok(None);
    };
    if m.run_status.is_terminal() {
        return Ok(Some(m));
    }
    let err = Error::new(
        ErrorKind::Interrupted,
        "ended without a word: its process is gone (killed, crashed, or the machine stopped) \
         and its workdir lock was free",
    );
    m.mark_interrupted(&err);
    // How the process ended is not known.
    m.exit_status = None;
    if let Some(name) = m.final_name() {
        let _ = std::fs::remove_file(partial_path(workdir, name));
    }
    m.save(workdir)?;
    registry::update(state_dir, &m.run_id, |e| mark_dead(e, &m))?;
    tracing::info!(run_id = %m.run_id, workdir = %workdir.display(), "a run that died without a word is now recorded as interrupted");
    Ok(Some(m))
}

fn mark_dead(e: &mut RunEntry, m: &Manifest) {
    if !e.status.is_terminal() {
        e.status = RunStatus::Interrupted;
        e.exit_status = None;
        e.error.clone_from(&m.error);
    }
}

/// The manifest of `workdir` as it stands, checked against the workdir's lock: one that says
/// `pending`/`running` while no run holds the lock belongs to a run that died without a word
/// and reads (and, when the lock can be taken, is recorded) as `interrupted`.
pub fn observe(workdir: &Path, state_dir: &Path) -> Result<Manifest> {
    let m = Manifest::load(workdir)?;
    if m.run_status.is_terminal() {
        return Ok(m);
    }
    match liveness(workdir)? {
        Holder::Alive => Ok(m),
        Holder::Free => match WorkdirLock::try_existing(workdir)? {
            None => Manifest::load(workdir),
            Some(held) => Ok(settle_dead_run(&held, workdir, state_dir)?.unwrap_or(m)),
        },
        Holder::NoLockFile => {
            let mut m = m;
            m.mark_interrupted(&Error::new(
                ErrorKind::Interrupted,
                "ended without a word: no run holds its workdir",
            ));
            m.exit_status = None;
            Ok(m)
        }
    }
}

/// Brings a registry entry that says `pending`/`running` in line with its workdir's lock:
/// held, the run is alive and the entry stays; free (or no lock file: no run of this version
/// holds that workdir), the run died without a word and is `interrupted`: recorded so in its
/// manifest and the registry when the lock can be taken (best effort; `va status` only
/// reads when it may not write), and in `entry` in any case.
pub fn check_alive(state_dir: &Path, entry: &mut RunEntry) {
    if entry.status.is_terminal() {
        return;
    }
    let settled = match liveness(&entry.workdir) {
        Ok(Holder::Alive) | Err(_) => return,
        Ok(Holder::Free) => match WorkdirLock::try_existing(&entry.workdir) {
            // Taken meanwhile: a run (a resume) has just started there.
            Ok(None) | Err(_) => return,
            Ok(Some(held)) => settle_dead_run(&held, &entry.workdir, state_dir)
                .ok()
                .flatten()
                .filter(|m| m.run_id == entry.id),
        },
        Ok(Holder::NoLockFile) => None,
    };
    match settled {
        Some(m) => {
            entry.status = m.run_status;
            entry.exit_status = m.exit_status;
            entry.error.clone_from(&m.error);
        }
        None => {
            let m = Manifest {
                error: Some(super::manifest::ErrorRecord {
                    code: ErrorKind::Interrupted.code().into(),
                    message: "ended without a word: no run holds its workdir".into(),
                }),
                ..Manifest::default()
            };
            mark_dead(entry, &m);
            let _ = registry::update(state_dir, &entry.id, |e| mark_dead(e, &m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_acquire_is_busy_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let wd = dir.path().join("wd");
        assert_eq!(liveness(&wd).unwrap(), Holder::NoLockFile);
        let held = WorkdirLock::acquire(&wd).unwrap();
        held.set_holder("run-a").unwrap();
        assert_eq!(liveness(&wd).unwrap(), Holder::Alive);
        let e = WorkdirLock::acquire(&wd).unwrap_err();
        assert_eq!(e.kind, ErrorKind::WorkdirBusy);
        assert_eq!(e.exit_code(), 14);
        assert!(e.message.contains("run-a"), "{e}");
        assert!(
            e.message.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        held.set_holder("run-b").unwrap();
        assert_eq!(holder(&wd).unwrap().run_id, "run-b", "rewritten whole");
        drop(held);
        assert_eq!(liveness(&wd).unwrap(), Holder::Free);
        let again = WorkdirLock::acquire(&wd).unwrap();
        drop(again);
    }

    /// A manifest left `running` (its process died) with the lock free: held by the caller,
    /// it is recorded interrupted, in the manifest and in the registry, and its partial final
    /// is removed; a finished one is left alone.
    #[test]
    fn a_dead_run_is_settled_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let (wd, state) = (dir.path().join("wd"), dir.path().join("state"));
        let mut m = Manifest::new("run-dead");
        let job = crate::job::from_value(
            serde_json::json!({"audio": "/a.wav", "start_image": "/s.png",
                               "output": {"final_name": "final.mp4"}}),
            Path::new("/"),
        )
        .unwrap();
        m.effective_params = Some(crate::record::meta::EffectiveParams::new(&job, None).unwrap());
        m.phase_start(crate::record::PhaseName::Encode);
        m.save(&wd).unwrap();
        let partial = partial_path(&wd, "final.mp4");
        std::fs::write(&partial, b"half").unwrap();
        let mut e = RunEntry::new("run-dead", &wd);
        e.status = RunStatus::Running;
        registry::upsert(&state, e.clone()).unwrap();

        // Seen from the registry, without the lock file: interrupted, registry follows.
        let mut seen = e.clone();
        check_alive(&state, &mut seen);
        assert_eq!(seen.status, RunStatus::Interrupted);

        let held = WorkdirLock::acquire(&wd).unwrap();
        let m = settle_dead_run(&held, &wd, &state).unwrap().unwrap();
        assert_eq!(m.run_status, RunStatus::Interrupted);
        assert_eq!(m.exit_status, None);
        assert_eq!(m.error.as_ref().unwrap().code, "INTERRUPTED");
        assert_eq!(
            m.phase(crate::record::PhaseName::Encode).unwrap().status,
            crate::record::PhaseStatus::Interrupted
        );
        assert!(!partial.exists());
        let reg = registry::list(&state).unwrap();
        assert_eq!(reg[0].status, RunStatus::Interrupted);
        assert_eq!(reg[0].error.as_ref().unwrap().code, "INTERRUPTED");
        // Settled once: a second look changes nothing.
        let before = std::fs::read(Manifest::path(&wd)).unwrap();
        settle_dead_run(&held, &wd, &state).unwrap();
        assert_eq!(std::fs::read(Manifest::path(&wd)).unwrap(), before);
        drop(held);
        // With the lock free and the lock file there, observe says the same.
        assert_eq!(
            observe(&wd, &state).unwrap().run_status,
            RunStatus::Interrupted
        );
    }
}
