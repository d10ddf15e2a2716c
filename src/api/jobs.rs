//! The API's jobs: their records (one JSON file per job in `<state>/api/jobs/`), the bounded
//! queue and the worker pool that runs them.
//!
//! Each run is a child process of the `va` binary itself (`va run JOB --workdir DIR
//! --supervised LOCK`, arguments as separate argv, never a shell): the tracing event log is
//! one per process, a crash stays in the child, and a cancel is the end of a process. The
//! child holds an exclusive lock on `<id>.lock` while it lives and stops when its stdin pipe
//! closes, so a server that dies (even by SIGKILL) takes its runs with it, and a restarted
//! server knows a run is gone once it can take that lock: such a run is `interrupted`, its
//! manifest and registry entry say so, and `POST /jobs/:id/resume` continues it.
//!
//! This module decides job states; the runs themselves (manifest, registry, final) are the
//! stages' business, except for marking runs that were stopped from outside.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::files::{lock, path_json};
use crate::record::manifest::ErrorRecord;
use crate::record::{registry, workdir, Manifest, PhaseStatus, RunStatus};

/// The state of a job of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Submitted with `POST /jobs`, waiting for `POST /jobs/:id/start`.
    Created,
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    Interrupted,
    /// Its record in the store cannot be read (cut short, not JSON): reported with the
    /// reason in `error`, kept on disk as it is, and never run.
    Corrupt,
}

/// One job, as stored and as `GET /jobs/:id` shows it. Paths are written losslessly
/// ([`path_json`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// `job` (`POST /jobs`) or `produce` (`POST /produce`); `unknown` for a corrupt record.
    pub kind: String,
    pub status: JobStatus,
    pub exit_status: Option<i32>,
    #[serde(rename = "final", with = "path_json::opt")]
    pub final_path: Option<PathBuf>,
    pub degraded: bool,
    /// The run id of the manifest and the registry, once the run started.
    pub run_id: Option<String>,
    #[serde(with = "path_json")]
    pub workdir: PathBuf,
    #[serde(with = "path_json")]
    pub job_file: PathBuf,
    pub error: Option<ErrorRecord>,
    /// The next run continues the earlier one (`va run --resume`).
    pub resume: bool,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
}

impl JobRecord {
    pub fn new(id: String, kind: &str, workdir: PathBuf, job_file: PathBuf) -> JobRecord {
        let now = crate::record::now_rfc3339();
        JobRecord {
            id,
            kind: kind.into(),
            status: JobStatus::Created,
            exit_status: None,
            final_path: None,
            degraded: false,
            run_id: None,
            workdir,
            job_file,
            error: None,
            resume: false,
            created_at: now.clone(),
            updated_at: now,
            started_at: None,
            ended_at: None,
        }
    }

    /// The stand-in for a record that cannot be read: status `corrupt`, the reason in
    /// `error`, and the workdir where this server puts job `id`'s.
    fn corrupt(id: String, workdir: PathBuf, path: &Path, reason: &str) -> JobRecord {
        let mut rec = JobRecord::new(id, "unknown", workdir.clone(), workdir.join("job.json"));
        rec.status = JobStatus::Corrupt;
        rec.error = Some(ErrorRecord {
            code: ErrorKind::Internal.code().into(),
            message: format!(
                "{}: the job record is damaged ({reason}); it is kept as it is and the job cannot be run",
                path.display()
            ),
        });
        let stamp = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .map(|t| crate::record::manifest::format_utc(time::OffsetDateTime::from(t)));
        if let Some(t) = stamp {
            rec.created_at.clone_from(&t);
            rec.updated_at = t;
        }
        rec
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self)
            .unwrap_or_else(|e| json!({"id": self.id, "error": e.to_string()}))
    }
}

/// A new job id: the run id the job's run will have (`va run --run-id`), so one id names the
/// job in the API, the manifest, the registry and `va status`/`va logs`.
pub fn new_job_id() -> String {
    crate::stages::run::new_run_id()
}

/// The workdir of the API job `id` whose record lies in `<state_dir>/api/jobs/` (for
/// `va status`/`va logs`, which accept a job id too); `None` when there is no such record.
pub fn workdir_of_job(state_dir: &Path, id: &str) -> Option<PathBuf> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if id.is_empty() || id.starts_with('.') || !id.chars().all(plain) {
        return None;
    }
    let bytes = std::fs::read(store_of(state_dir).join(format!("{id}.json"))).ok()?;
    serde_json::from_slice::<JobRecord>(&bytes)
        .ok()
        .map(|r| r.workdir)
}

/// `<state_dir>/api/jobs`: one record per job.
fn store_of(state_dir: &Path) -> PathBuf {
    state_dir.join("api").join("jobs")
}

/// Why a job could not be queued.
pub enum QueueRefusal {
    Full(usize),
    NotFound,
    /// The job is in a state that does not allow it.
    State(JobStatus),
}

struct Inner {
    jobs: BTreeMap<String, JobRecord>,
    /// Jobs in `queued` (waiting for a worker).
    queued: usize,
    /// Running jobs' cancel triggers.
    cancels: HashMap<String, oneshot::Sender<()>>,
}

/// The job table, its store and the pool's queue.
pub struct Jobs {
    cfg: Arc<Config>,
    store: PathBuf,
    exe: PathBuf,
    inner: Mutex<Inner>,
    tx: mpsc::UnboundedSender<String>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
}

/// How long a stopped child may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Jobs {
    /// Opens the store, rebuilds the table from it and the runs' manifests (runs of a server
    /// that went away become `interrupted`; queued jobs queue again).
    pub fn open(cfg: Arc<Config>) -> Result<Arc<Jobs>> {
        let store = store_of(&cfg.state_dir);
        std::fs::create_dir_all(&store)
            .map_err(|e| Error::at_path(ErrorKind::Internal, &store, e))?;
        let exe = std::env::current_exe()
            .map_err(|e| Error::internal(format!("cannot find the va binary: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let jobs = Arc::new(Jobs {
            cfg,
            store,
            exe,
            inner: Mutex::new(Inner {
                jobs: BTreeMap::new(),
                queued: 0,
                cancels: HashMap::new(),
            }),
            tx,
            rx: tokio::sync::Mutex::new(rx),
        });
        jobs.recover()?;
        Ok(jobs)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.store.join(format!("{id}.json"))
    }

    fn lock_path(&self, id: &str) -> PathBuf {
        self.store.join(format!("{id}.lock"))
    }

    fn save(&self, rec: &mut JobRecord) {
        // A damaged record stays on disk as it was found, for the user to look at.
        if rec.status == JobStatus::Corrupt {
            return;
        }
        rec.updated_at = crate::record::now_rfc3339();
        if let Err(e) = crate::files::write_json_atomic(&self.record_path(&rec.id), rec) {
            tracing::warn!(job = %rec.id, error = %e, "cannot save job record");
        }
    }

    fn recover(&self) -> Result<()> {
        let entries = std::fs::read_dir(&self.store)
            .map_err(|e| Error::at_path(ErrorKind::Internal, &self.store, e))?;
        let mut records: Vec<JobRecord> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(String::from) else {
                tracing::warn!(path = %path.display(), "a job record whose name is not a job id: left alone");
                continue;
            };
            let read = std::fs::read(&path)
                .map_err(|e| format!("cannot read it: {e}"))
                .and_then(|b| {
                    serde_json::from_slice::<JobRecord>(&b)
                        .map_err(|e| format!("not a job record: {e}"))
                });
            match read {
                Ok(r) => records.push(r),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), reason = %reason, "job record is damaged: reported as corrupt");
                    let wd = self.cfg.runs_root.join(&id);
                    records.push(JobRecord::corrupt(id, wd, &path, &reason));
                }
            }
        }
        records.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        for mut rec in records {
            match rec.status {
                JobStatus::Running => {
                    wait_until_gone(&self.lock_path(&rec.id));
                    mark_run(&rec.workdir, &self.cfg.state_dir, RunStatus::Interrupted);
                    rec.status = JobStatus::Interrupted;
                    rec.resume = true;
                    rec.run_id = run_id_of(&rec.workdir).or(rec.run_id);
                    rec.ended_at = Some(crate::record::now_rfc3339());
                    rec.error = Some(ErrorRecord {
                        code: ErrorKind::Internal.code().into(),
                        message: "interrupted: the server stopped while the job ran; POST /jobs/:id/resume continues it".into(),
                    });
                    self.save(&mut rec);
                    tracing::warn!(job = %rec.id, "job was running when the server stopped: interrupted");
                }
                JobStatus::Queued => {
                    let _ = self.tx.send(rec.id.clone());
                    self.lock().queued += 1;
                }
                _ => {}
            }
            self.lock().jobs.insert(rec.id.clone(), rec);
        }
        Ok(())
    }

    /// Adds a new job (status `created`).
    pub fn insert(&self, mut rec: JobRecord) {
        self.save(&mut rec);
        self.lock().jobs.insert(rec.id.clone(), rec);
    }

    /// Drops a job that never ran (its queueing was refused).
    pub fn forget(&self, id: &str) {
        self.lock().jobs.remove(id);
        let _ = std::fs::remove_file(self.record_path(id));
    }

    pub fn get(&self, id: &str) -> Option<JobRecord> {
        self.lock().jobs.get(id).cloned()
    }

    pub fn list(&self) -> Vec<JobRecord> {
        self.lock().jobs.values().cloned().collect()
    }

    pub fn status(&self, id: &str) -> Option<JobStatus> {
        self.lock().jobs.get(id).map(|r| r.status)
    }

    /// Queues a job that is in one of `from`; `resume` makes the run continue the earlier one.
    pub fn enqueue(
        &self,
        id: &str,
        from: &[JobStatus],
        resume: bool,
    ) -> std::result::Result<JobRecord, QueueRefusal> {
        let mut inner = self.lock();
        let limit = self.cfg.queue_limit;
        // The job's own state first: a job that cannot be queued is a conflict whether or
        // not the queue has room.
        let status = inner.jobs.get(id).ok_or(QueueRefusal::NotFound)?.status;
        if !from.contains(&status) {
            return Err(QueueRefusal::State(status));
        }
        if inner.queued >= limit {
            return Err(QueueRefusal::Full(limit));
        }
        let rec = inner.jobs.get_mut(id).ok_or(QueueRefusal::NotFound)?;
        rec.status = JobStatus::Queued;
        rec.resume = resume;
        rec.error = None;
        rec.exit_status = None;
        rec.ended_at = None;
        let mut copy = rec.clone();
        inner.queued += 1;
        drop(inner);
        self.save(&mut copy);
        if let Some(r) = self.lock().jobs.get_mut(id) {
            r.updated_at.clone_from(&copy.updated_at);
        }
        let _ = self.tx.send(id.to_string());
        Ok(copy)
    }

    /// Cancels a job: a created or queued one at once, a running one by stopping its run
    /// (waits until the run has ended). `Err` carries the state when there is nothing to cancel.
    pub async fn cancel(&self, id: &str) -> std::result::Result<JobRecord, Option<JobStatus>> {
        let waiter = {
            let mut inner = self.lock();
            let Some(rec) = inner.jobs.get_mut(id) else {
                return Err(None);
            };
            match rec.status {
                JobStatus::Created | JobStatus::Queued => {
                    if rec.status == JobStatus::Queued {
                        inner.queued -= 1;
                    }
                    let rec = inner.jobs.get_mut(id).ok_or(None)?;
                    rec.status = JobStatus::Cancelled;
                    rec.ended_at = Some(crate::record::now_rfc3339());
                    let mut copy = rec.clone();
                    drop(inner);
                    self.save(&mut copy);
                    return Ok(copy);
                }
                JobStatus::Running => inner.cancels.remove(id),
                other => return Err(Some(other)),
            }
        };
        if let Some(trigger) = waiter {
            let _ = trigger.send(());
        }
        // The worker settles the record once the child has exited (within STOP_GRACE, else
        // after a kill); wait for that, bounded.
        let deadline = tokio::time::Instant::now() + STOP_GRACE * 2;
        loop {
            match self.get(id) {
                Some(r) if r.status != JobStatus::Running => return Ok(r),
                None => return Err(None),
                Some(r) if tokio::time::Instant::now() >= deadline => return Ok(r),
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Starts the pool's workers.
    pub fn start_workers(self: &Arc<Self>) {
        for _ in 0..self.cfg.workers {
            let jobs = Arc::clone(self);
            tokio::spawn(async move {
                loop {
                    let next = jobs.rx.lock().await.recv().await;
                    match next {
                        Some(id) => jobs.run_one(&id).await,
                        None => break,
                    }
                }
            });
        }
    }

    async fn run_one(&self, id: &str) {
        let (trigger, cancelled) = oneshot::channel();
        let rec = {
            let mut inner = self.lock();
            let Some(rec) = inner.jobs.get_mut(id) else {
                return;
            };
            // Cancelled while queued (or queued twice): nothing to do.
            if rec.status != JobStatus::Queued {
                return;
            }
            rec.status = JobStatus::Running;
            rec.started_at = Some(crate::record::now_rfc3339());
            let copy = rec.clone();
            inner.queued -= 1;
            inner.cancels.insert(id.to_string(), trigger);
            copy
        };
        let mut rec = rec;
        self.save(&mut rec);
        let outcome = self.supervise(&rec, cancelled).await;
        self.settle(id, outcome);
    }

    /// Runs the child and waits for its end or a cancel.
    async fn supervise(&self, rec: &JobRecord, cancelled: oneshot::Receiver<()>) -> ChildEnd {
        let logs = rec.workdir.join("logs");
        let out = std::fs::create_dir_all(&logs).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(logs.join(CHILD_LOG))
        });
        let out = match out {
            Ok(f) => f,
            Err(e) => return ChildEnd::NotStarted(format!("{}: {e}", logs.display())),
        };
        let err = match out.try_clone() {
            Ok(f) => f,
            Err(e) => return ChildEnd::NotStarted(format!("{}: {e}", logs.display())),
        };
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("run")
            .arg(&rec.job_file)
            .arg("--workdir")
            .arg(&rec.workdir)
            .arg("--supervised")
            .arg(self.lock_path(&rec.id))
            .arg("--run-id")
            .arg(&rec.id);
        if rec.resume {
            cmd.arg("--resume");
        }
        if let Some(base) = &self.cfg.va_state_dir {
            cmd.env("VA_STATE_DIR", base);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return ChildEnd::NotStarted(format!("cannot start {}: {e}", self.exe.display()))
            }
        };
        // Kept open while the run runs: its closing is the child's signal to stop.
        let stdin = child.stdin.take();
        let cancel = async {
            if cancelled.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            status = child.wait() => ChildEnd::Exited(status.ok().and_then(|s| s.code()), false),
            () = cancel => {
                drop(stdin);
                let status = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(s) => s.ok(),
                    Err(_) => {
                        let _ = child.kill().await;
                        child.wait().await.ok()
                    }
                };
                ChildEnd::Exited(status.and_then(|s| s.code()), true)
            }
        }
    }

    /// Records how a run ended, from the child's exit and the run's manifest.
    fn settle(&self, id: &str, end: ChildEnd) {
        let Some(mut rec) = self.get(id) else { return };
        let manifest = Manifest::load(&rec.workdir).ok();
        rec.run_id = manifest.as_ref().map(|m| m.run_id.clone()).or(rec.run_id);
        rec.ended_at = Some(crate::record::now_rfc3339());
        rec.final_path = None;
        rec.degraded = false;
        match end {
            ChildEnd::NotStarted(why) => {
                rec.status = JobStatus::Failed;
                rec.error = Some(ErrorRecord {
                    code: ErrorKind::Internal.code().into(),
                    message: why,
                });
            }
            ChildEnd::Exited(code, true) => {
                mark_run(&rec.workdir, &self.cfg.state_dir, RunStatus::Cancelled);
                rec.status = JobStatus::Cancelled;
                rec.exit_status = code;
                rec.error = None;
                rec.resume = manifest.is_some();
            }
            ChildEnd::Exited(code, false) => {
                rec.exit_status = code;
                match manifest.as_ref().map(|m| m.run_status) {
                    Some(RunStatus::Completed) if code == Some(0) => {
                        let m = manifest.as_ref();
                        rec.status = JobStatus::Completed;
                        rec.final_path = m.and_then(|m| m.final_path.clone());
                        rec.degraded = m.is_some_and(Manifest::degraded);
                        rec.error = None;
                    }
                    Some(RunStatus::Failed) => {
                        rec.status = JobStatus::Failed;
                        rec.error = manifest.and_then(|m| m.error);
                    }
                    // Stopped by a signal sent to the child itself: resumable.
                    Some(RunStatus::Interrupted) => {
                        rec.status = JobStatus::Interrupted;
                        rec.resume = true;
                        rec.error = manifest.and_then(|m| m.error);
                    }
                    _ => {
                        // Refused before it wrote a manifest, or ended without recording
                        // how: the child's own error line says why.
                        let line = last_error_line(&rec.workdir.join("logs").join(CHILD_LOG));
                        if manifest.is_some() {
                            let err = Error::internal(format!(
                                "va run ended without finishing (exit status {code:?})"
                            ));
                            mark_failed(&rec.workdir, &self.cfg.state_dir, &err);
                        }
                        rec.status = JobStatus::Failed;
                        rec.error = Some(line.unwrap_or_else(|| ErrorRecord {
                            code: ErrorKind::Internal.code().into(),
                            message: format!("va run ended with exit status {code:?}"),
                        }));
                    }
                }
            }
        }
        self.save(&mut rec);
        let mut inner = self.lock();
        inner.cancels.remove(id);
        inner.jobs.insert(id.to_string(), rec);
    }
}

/// Where a supervised run's stdout and stderr go.
pub const CHILD_LOG: &str = "va-run.log";

enum ChildEnd {
    NotStarted(String),
    /// Exit code (none for a signal), and whether it was cancelled.
    Exited(Option<i32>, bool),
}

/// Waits (bounded) until no process holds the run lock at `path`.
fn wait_until_gone(path: &Path) {
    for _ in 0..200 {
        if !matches!(lock::probe(path), Ok(lock::Holder::Alive)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::warn!(lock = %path.display(), "a run still holds its lock after 10 s");
}

fn run_id_of(workdir: &Path) -> Option<String> {
    Manifest::load(workdir).ok().map(|m| m.run_id)
}

/// Marks a run stopped from outside (its process is gone): the manifest's `run_status` and
/// unfinished phases, and its registry entry. A run that already ended is left as it is,
/// except that a cancel turns the `interrupted` the stopped run recorded into `cancelled`.
fn mark_run(workdir: &Path, state_dir: &Path, status: RunStatus) {
    let Ok(mut m) = Manifest::load(workdir) else {
        return;
    };
    let recorded_stop = m.run_status == RunStatus::Interrupted && status == RunStatus::Cancelled;
    if m.run_status.is_terminal() && !recorded_stop {
        return;
    }
    let now = crate::record::now_rfc3339();
    for phase in m.phases.states_mut() {
        if phase.status == PhaseStatus::Running {
            phase.status = PhaseStatus::Failed;
            phase.ended_at = Some(now.clone());
        }
    }
    m.run_status = status;
    save_run(workdir, state_dir, &m);
}

fn mark_failed(workdir: &Path, state_dir: &Path, err: &Error) {
    let Ok(mut m) = Manifest::load(workdir) else {
        return;
    };
    if m.run_status.is_terminal() {
        return;
    }
    m.mark_failed(err);
    save_run(workdir, state_dir, &m);
}

fn save_run(workdir: &Path, state_dir: &Path, m: &Manifest) {
    if let Err(e) = m.save(workdir) {
        tracing::warn!(error = %e, "cannot update the manifest");
    }
    // A stopped encode leaves its partial file; it is no final and only takes space.
    if let Some(name) = m.final_name() {
        let _ = std::fs::remove_file(workdir::partial_path(workdir, name));
    }
    let updated = registry::update(state_dir, &m.run_id, |entry| {
        entry.status = m.run_status;
        entry.exit_status = m.exit_status;
        entry.error.clone_from(&m.error);
    });
    if let Err(e) = updated {
        tracing::warn!(error = %e, "cannot update the run registry");
    }
}

/// The `error: CODE: message` line a `va` child printed last, if any.
fn last_error_line(log: &Path) -> Option<ErrorRecord> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find_map(|l| l.strip_prefix("error: "))?;
    let (code, message) = line.split_once(": ")?;
    ErrorKind::ALL.iter().find(|k| k.code() == code)?;
    Some(ErrorRecord {
        code: code.into(),
        message: message.into(),
    })
}
