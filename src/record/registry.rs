//! The run registry: `runs.json` in the state dir, one entry per run (SPEC §5), read by
//! `va status` without arguments and by the API.
//!
//! Several `va` processes (and the API's workers) may finish runs at the same moment, and no
//! entry may ever be lost. Every change therefore happens under an exclusive OS file lock on
//! `runs.json.lock` (a separate file, because `runs.json` itself is replaced by rename and a
//! lock on a replaced inode protects nothing), as read–modify–write, with the new file written
//! atomically. Readers take a shared lock; since writers rename, even an unlocked read sees a
//! whole file.
//!
//! A corrupt `runs.json` must not fail a run: it is moved aside as
//! `runs.json.corrupt-<timestamp>` (kept for the user) and the registry starts afresh.
//! Entries are kept on disk as raw JSON, so fields or entries this version cannot read are
//! carried along untouched rather than dropped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::manifest::{now_compact, now_rfc3339, ErrorRecord, RunStatus};
use crate::error::{Error, ErrorKind, Result};
use crate::files::{path_json, write_json_atomic, FileLock};

/// The registry's file name inside the state dir.
pub const REGISTRY_FILE: &str = "runs.json";
/// The lock file next to it.
pub const LOCK_FILE: &str = "runs.json.lock";

/// One run in the registry. Paths are written losslessly ([`path_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEntry {
    pub id: String,
    #[serde(with = "path_json")]
    pub workdir: PathBuf,
    /// The job file the run was started from (for `produce`, the one it wrote).
    #[serde(default, with = "path_json::opt")]
    pub job: Option<PathBuf>,
    #[serde(default)]
    pub status: RunStatus,
    /// The final file, once written.
    #[serde(rename = "final", default, with = "path_json::opt")]
    pub final_path: Option<PathBuf>,
    /// RFC 3339 UTC. [`upsert`] keeps the first recorded value of a run.
    #[serde(default)]
    pub created_at: String,
    /// RFC 3339 UTC. [`upsert`] sets it.
    #[serde(default)]
    pub updated_at: String,
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// A completed run fell back to a lesser picture source (the manifest says why).
    #[serde(default)]
    pub degraded: bool,
    /// Why a failed or interrupted run ended: the code name and the one-line reason.
    #[serde(default)]
    pub error: Option<ErrorRecord>,
}

impl RunEntry {
    /// A pending entry created now.
    pub fn new(id: impl Into<String>, workdir: impl Into<PathBuf>) -> RunEntry {
        let now = now_rfc3339();
        RunEntry {
            id: id.into(),
            workdir: workdir.into(),
            job: None,
            status: RunStatus::Pending,
            final_path: None,
            created_at: now.clone(),
            updated_at: now,
            exit_status: None,
            degraded: false,
            error: None,
        }
    }
}

/// Inserts `entry`, or replaces the entry with the same id in place (keeping its
/// `created_at`), under the exclusive registry lock; stamps `updated_at`. Creates the state
/// dir if needed.
pub fn upsert(state_dir: &Path, mut entry: RunEntry) -> Result<()> {
    if entry.id.is_empty() {
        return Err(Error::internal("registry entry without a run id"));
    }
    edit(state_dir, |runs, path| {
        entry.updated_at = now_rfc3339();
        let slot = runs
            .iter_mut()
            .find(|v| v.get("id").and_then(Value::as_str) == Some(entry.id.as_str()));
        match slot {
            Some(old) => {
                if let Some(created) = old
                    .get("created_at")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty())
                {
                    entry.created_at = created.to_string();
                }
                *old = to_value(&entry, path)?;
            }
            None => {
                if entry.created_at.is_empty() {
                    entry.created_at = entry.updated_at.clone();
                }
                runs.push(to_value(&entry, path)?);
            }
        }
        Ok(())
    })
}

/// Changes the entry with id `id` in place through `f` (stamping `updated_at`), under the
/// exclusive registry lock; `false` when there is no such (readable) entry.
pub fn update(state_dir: &Path, id: &str, f: impl FnOnce(&mut RunEntry)) -> Result<bool> {
    let mut found = false;
    edit(state_dir, |runs, path| {
        let slot = runs
            .iter_mut()
            .find(|v| v.get("id").and_then(Value::as_str) == Some(id));
        if let Some(old) = slot {
            if let Ok(mut entry) = serde_json::from_value::<RunEntry>(old.clone()) {
                f(&mut entry);
                entry.updated_at = now_rfc3339();
                *old = to_value(&entry, path)?;
                found = true;
            }
        }
        Ok(())
    })?;
    Ok(found)
}

/// Reads the runs under the exclusive lock, lets `f` change them and writes them back
/// atomically. A corrupt registry is moved aside first (never silently dropped).
fn edit(state_dir: &Path, f: impl FnOnce(&mut Vec<Value>, &Path) -> Result<()>) -> Result<()> {
    std::fs::create_dir_all(state_dir).map_err(|e| {
        Error::at_path(
            ErrorKind::Internal,
            state_dir,
            format!("cannot create state dir: {e}"),
        )
    })?;
    let _lock = FileLock::exclusive(&state_dir.join(LOCK_FILE))?;
    let path = state_dir.join(REGISTRY_FILE);

    let mut runs = match read_registry(&path)? {
        Contents::Missing => Vec::new(),
        Contents::Runs(runs) => runs,
        Contents::Corrupt(reason) => {
            let backup = state_dir.join(format!("{REGISTRY_FILE}.corrupt-{}", now_compact()));
            // Moving it aside must work: starting afresh without a backup would lose entries.
            std::fs::rename(&path, &backup).map_err(|e| {
                Error::at_path(
                    ErrorKind::Internal,
                    &path,
                    format!("corrupt ({reason}) and cannot be moved aside: {e}"),
                )
            })?;
            tracing::warn!(
                path = %path.display(),
                backup = %backup.display(),
                reason = %reason,
                "run registry was corrupt; moved aside, starting a new one"
            );
            Vec::new()
        }
    };
    f(&mut runs, &path)?;
    write_json_atomic(&path, &serde_json::json!({ "runs": runs }))
}

/// Every readable entry, in registration order. A missing state dir or registry is empty; a
/// corrupt registry reads as empty too (with a warning; the next [`upsert`] moves it aside).
/// Entries this version cannot read are skipped with a warning.
pub fn list(state_dir: &Path) -> Result<Vec<RunEntry>> {
    if !state_dir.is_dir() {
        return Ok(Vec::new());
    }
    // The lock is belt and braces (writers rename, so a read never sees half a file); a state
    // dir we may not write to must not stop `va status`.
    let _lock = FileLock::shared(&state_dir.join(LOCK_FILE)).ok();
    let path = state_dir.join(REGISTRY_FILE);
    let runs = match read_registry(&path)? {
        Contents::Missing => return Ok(Vec::new()),
        Contents::Corrupt(reason) => {
            tracing::warn!(path = %path.display(), reason = %reason, "run registry is corrupt; listing no runs");
            return Ok(Vec::new());
        }
        Contents::Runs(runs) => runs,
    };
    let mut entries = Vec::with_capacity(runs.len());
    for (i, v) in runs.into_iter().enumerate() {
        match serde_json::from_value::<RunEntry>(v) {
            Ok(e) => entries.push(e),
            Err(e) => {
                tracing::warn!(path = %path.display(), index = i, error = %e, "skipping unreadable registry entry")
            }
        }
    }
    Ok(entries)
}

/// The run with id `id_or_prefix`, else the only run whose id starts with it. `None` when
/// nothing matches; `USAGE` when a prefix matches several runs (they are named).
pub fn find(state_dir: &Path, id_or_prefix: &str) -> Result<Option<RunEntry>> {
    if id_or_prefix.is_empty() {
        return Ok(None);
    }
    let entries = list(state_dir)?;
    if let Some(e) = entries.iter().find(|e| e.id == id_or_prefix) {
        return Ok(Some(e.clone()));
    }
    let mut matches: Vec<RunEntry> = entries
        .into_iter()
        .filter(|e| e.id.starts_with(id_or_prefix))
        .collect();
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.pop()),
        n => {
            let ids: Vec<&str> = matches.iter().take(5).map(|e| e.id.as_str()).collect();
            let more = if n > 5 {
                format!(" and {} more", n - 5)
            } else {
                String::new()
            };
            Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "run id prefix \"{id_or_prefix}\" is ambiguous: {}{more}",
                    ids.join(", ")
                ),
            )
            .with_hint("give more of the id"))
        }
    }
}

fn to_value(entry: &RunEntry, path: &Path) -> Result<Value> {
    serde_json::to_value(entry).map_err(|e| Error::at_path(ErrorKind::Internal, path, e))
}

enum Contents {
    Missing,
    Runs(Vec<Value>),
    Corrupt(String),
}

/// Reads the registry. Not JSON, not UTF-8, or no `runs` list is corrupt; an empty file is
/// an empty registry; a bare list (hand-written) is accepted as the runs.
fn read_registry(path: &Path) -> Result<Contents> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contents::Missing),
        Err(e) => {
            return Err(Error::at_path(
                ErrorKind::Internal,
                path,
                format!("cannot read run registry: {e}"),
            ))
        }
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(Contents::Corrupt("not UTF-8".to_string()));
    };
    if text.trim().is_empty() {
        return Ok(Contents::Runs(Vec::new()));
    }
    Ok(match serde_json::from_str::<Value>(text) {
        Err(e) => Contents::Corrupt(format!("not JSON: {e}")),
        Ok(Value::Array(runs)) => Contents::Runs(runs),
        Ok(Value::Object(mut obj)) => match obj.remove("runs") {
            Some(Value::Array(runs)) => Contents::Runs(runs),
            _ => Contents::Corrupt("no \"runs\" list".to_string()),
        },
        Ok(_) => Contents::Corrupt("not a JSON object".to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> RunEntry {
        let mut e = RunEntry::new(id, format!("/runs/{id}"));
        e.job = Some(format!("/runs/{id}/job.json").into());
        e
    }

    fn raw(state: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(state.join(REGISTRY_FILE)).unwrap()).unwrap()
    }

    #[test]
    fn upsert_inserts_then_replaces_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        upsert(&state, entry("a")).unwrap();
        upsert(&state, entry("b")).unwrap();
        let created_a = list(&state).unwrap()[0].created_at.clone();

        let mut done = entry("a");
        done.status = RunStatus::Completed;
        done.exit_status = Some(0);
        done.final_path = Some("/runs/a/final.mp4".into());
        done.created_at = "2099-01-01T00:00:00.000Z".into();
        upsert(&state, done).unwrap();

        let runs = list(&state).unwrap();
        assert_eq!(
            runs.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(runs[0].status, RunStatus::Completed);
        assert_eq!(
            runs[0].created_at, created_a,
            "created_at is the first one recorded"
        );
        assert!(runs[0].updated_at >= runs[0].created_at);

        let v = raw(&state);
        assert_eq!(v["runs"][0]["final"], "/runs/a/final.mp4");
        assert_eq!(v["runs"][0]["status"], "completed");
        assert_eq!(v["runs"][1]["final"], Value::Null);
        assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn update_changes_one_entry_in_place_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        upsert(state, entry("a")).unwrap();
        upsert(state, entry("b")).unwrap();
        let found = update(state, "a", |e| {
            e.status = RunStatus::Failed;
            e.exit_status = Some(30);
            e.error = Some(ErrorRecord {
                code: "COMFYUI_UNAVAILABLE".into(),
                message: "no answer".into(),
            });
        })
        .unwrap();
        assert!(found);
        assert!(!update(state, "zzz", |_| {}).unwrap());
        let v = raw(state);
        assert_eq!(v["runs"][0]["status"], "failed");
        assert_eq!(v["runs"][0]["error"]["code"], "COMFYUI_UNAVAILABLE");
        assert_eq!(v["runs"][0]["exit_status"], 30);
        assert_eq!(v["runs"][1]["status"], "pending");
        assert_eq!(v["runs"][1]["error"], Value::Null);
    }

    #[cfg(unix)]
    #[test]
    fn a_workdir_that_is_not_utf8_is_stored_losslessly() {
        use std::os::unix::ffi::OsStringExt;
        let dir = tempfile::tempdir().unwrap();
        let odd = PathBuf::from(std::ffi::OsString::from_vec(b"/runs/caf\xe9".to_vec()));
        upsert(dir.path(), RunEntry::new("r", odd.clone())).unwrap();
        assert_eq!(
            raw(dir.path())["runs"][0]["workdir"]["escaped"],
            "/runs/caf%E9"
        );
        assert_eq!(list(dir.path()).unwrap()[0].workdir, odd);
    }

    #[test]
    fn concurrent_upserts_from_threads_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let state = state.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        upsert(&state, entry(&format!("t{t}-{i:02}"))).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let v = raw(&state);
        assert_eq!(v["runs"].as_array().unwrap().len(), 200);
        let mut ids: Vec<_> = list(&state).unwrap().into_iter().map(|e| e.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 200);
    }

    /// The child side of the multi-process test: does nothing unless the parent set the env.
    #[test]
    fn child_process_upserts() {
        let Some(state) = std::env::var_os("VIDAX_REGISTRY_TEST_CHILD_DIR") else {
            return;
        };
        let tag = std::env::var("VIDAX_REGISTRY_TEST_CHILD_TAG").unwrap();
        for i in 0..25 {
            upsert(Path::new(&state), entry(&format!("p{tag}-{i:02}"))).unwrap();
        }
    }

    #[test]
    fn concurrent_upserts_from_processes_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..4)
            .map(|p| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "record::registry::tests::child_process_upserts",
                        "--test-threads=1",
                    ])
                    .env("VIDAX_REGISTRY_TEST_CHILD_DIR", dir.path())
                    .env("VIDAX_REGISTRY_TEST_CHILD_TAG", p.to_string())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        assert_eq!(list(dir.path()).unwrap().len(), 100);
    }

    #[test]
    fn corrupt_registry_is_moved_aside_and_the_run_still_registers() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        std::fs::write(state.join(REGISTRY_FILE), "{\"runs\": [ {\"id\": \"a\"").unwrap();
        assert!(list(state).unwrap().is_empty());
        upsert(state, entry("new")).unwrap();
        assert_eq!(list(state).unwrap().len(), 1);
        let backups: Vec<_> = std::fs::read_dir(state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("runs.json.corrupt-"))
            .collect();
        assert_eq!(backups.len(), 1, "{backups:?}");
        assert_eq!(
            std::fs::read_to_string(state.join(&backups[0])).unwrap(),
            "{\"runs\": [ {\"id\": \"a\""
        );
    }

    #[test]
    fn unreadable_entries_are_kept_on_disk_and_skipped_in_list() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        std::fs::write(
            state.join(REGISTRY_FILE),
            r#"{"runs": [{"id": "odd", "status": "teleported", "workdir": "/x", "extra": 1}, {"no_id": true}]}"#,
        )
        .unwrap();
        upsert(state, entry("b")).unwrap();
        assert_eq!(
            list(state)
                .unwrap()
                .iter()
                .map(|e| e.id.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        let v = raw(state);
        assert_eq!(v["runs"][0]["status"], "teleported");
        assert_eq!(v["runs"][1]["no_id"], true);
        assert_eq!(v["runs"][2]["id"], "b");
    }

    #[test]
    fn list_of_a_missing_state_dir_is_empty_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("none");
        assert!(list(&state).unwrap().is_empty());
        assert!(!state.exists());
    }

    #[test]
    fn find_by_id_or_unique_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        for id in [
            "run-20240501-0800",
            "run-20240501-0900",
            "run-2024",
            "other",
        ] {
            upsert(state, entry(id)).unwrap();
        }
        assert_eq!(
            find(state, "run-2024").unwrap().unwrap().id,
            "run-2024",
            "exact id wins"
        );
        assert_eq!(find(state, "oth").unwrap().unwrap().id, "other");
        assert_eq!(find(state, "zzz").unwrap(), None);
        assert_eq!(find(state, "").unwrap(), None);
        let e = find(state, "run-20240501").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(
            e.message.contains("run-20240501-0800") && e.message.contains("run-20240501-0900"),
            "{e}"
        );
    }
}
