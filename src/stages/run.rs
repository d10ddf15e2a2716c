//! Orders the phases of one run, keeps the manifest and the registry current, and makes a
//! failed run harmless: the final file is written under a temporary name and renamed only
//! after it verified, so an earlier final is never overwritten or removed.
//!
//! The run around the phases ([`run_job`]): it holds its workdir's lock from before it
//! reads or writes anything there until its records are final (one run per workdir), it
//! never takes over a workdir that holds another run's manifest, and every run that got an
//! id stays on record: `completed` (flagged when degraded), `failed` with its code, or
//! `interrupted` (SIGINT/SIGTERM or the supervising server, see [`crate::interrupt`]).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, ErrorKind, Result};
use crate::job::SeedPolicy;
use crate::record::manifest::{ErrorRecord, Manifest, Seeds};
use crate::record::meta::EffectiveParams;
use crate::record::registry::{self, RunEntry};
use crate::record::workdir::{self, WorkdirLock};
use crate::record::{EventLog, PhaseName, PhaseStatus, RunStatus};

use super::admit::Admitted;
use super::{comfyui, encode, faceprobe, finalize, lipsync, prepare};

pub use crate::record::workdir::partial_path;

/// How to run a job.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workdir: PathBuf,
    pub resume: bool,
    pub state_dir: PathBuf,
    /// The job file, for the registry and the `--resume` hint (`None`: the run's own
    /// `job.json`).
    pub job_file: Option<PathBuf>,
    /// Where the run reports its phases and the encode's progress (the CLI draws it).
    pub progress: crate::progress::Reporter,
    /// The run id to use for a new run (the CLI names the default workdir after it, the API
    /// uses its job id); `None`: a fresh one. A resumed run keeps its manifest's id.
    pub run_id: Option<String>,
    /// The process's event log: pointed at the workdir once the run holds it.
    pub events: Option<EventLog>,
}

/// The result of a completed run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub final_path: PathBuf,
    pub degraded: bool,
    pub manifest: Manifest,
}

/// A new run id, `YYYYMMDD-HHMMSS-xxxxxxxx` (UTC, then 8 hex digits of a hash of the clock's
/// nanoseconds, the process id and a per-process counter: unique within a process, and
/// across processes short of a 1 in 4·10⁹ collision in the same second). One id names a run
/// everywhere: the manifest, the registry, the CLI's default workdir (`workdir/<id>`) and the
/// API's job id.
pub fn new_run_id() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = time::OffsetDateTime::from_unix_timestamp(now.as_secs() as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year][month][day]-[hour][minute][second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| now.as_secs().to_string());
    let digest = Sha256::digest(format!("{}-{}-{n}", now.as_nanos(), std::process::id()));
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{stamp}-{hex}")
}

pub(crate) fn random_seed() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // splitmix64 over time and pid: a fresh value per run, recorded in the manifest.
    let mut z = now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) & ((1 << 53) - 1)
}

/// Runs the admitted job in `opts.workdir`.
///
/// Before the run gets an id nothing is written: an existing final (`OUTPUT_EXISTS`, or
/// `RESUME_INVALID` with `--resume`), a workdir another run holds (`WORKDIR_BUSY`) or one
/// that holds another run's manifest (`OUTPUT_EXISTS`, naming that run and its `--resume`
/// command); bad input was refused before, at admission ([`super::admit`]). From then on the
/// run is on record whatever happens.
pub fn run_job(admitted: &Admitted, opts: &RunOptions) -> Result<RunOutcome> {
    let job = &admitted.job;
    crate::interrupt::check()?;
    let workdir = &opts.workdir;
    let final_path = workdir.join(&job.output.final_name);
    refuse_existing_final(&final_path, opts.resume)?;
    let lock = WorkdirLock::acquire(workdir)?;
    // Another run may have finished here while this one was checking its inputs.
    refuse_existing_final(&final_path, opts.resume)?;
    let mut manifest = claim(opts, &lock)?;
    let run_id = manifest.run_id.clone();
    lock.set_holder(&run_id)?;
    if let Some(events) = &opts.events {
        events.set_workdir(Some(workdir))?;
    }
    let mut entry = RunEntry::new(run_id.clone(), workdir.clone());
    entry.job = Some(
        opts.job_file
            .clone()
            .unwrap_or_else(|| workdir.join("job.json")),
    );
    entry.status = RunStatus::Running;
    registry::upsert(&opts.state_dir, entry.clone())?;

    let _span = tracing::info_span!("run", run_id = %run_id).entered();
    opts.progress.run_started(&run_id, workdir);
    let result = crate::interrupt::check()
        .and_then(|()| run_phases(admitted, opts, &mut manifest, &final_path));
    let result = match result {
        Ok(()) => {
            manifest.mark_completed(0);
            entry.status = RunStatus::Completed;
            entry.exit_status = Some(0);
            entry.final_path = Some(final_path.clone());
            entry.degraded = manifest.degraded();
            entry.error = None;
            Ok(())
        }
        Err(e) if e.kind.is_stop() => {
            let _ = std::fs::remove_file(partial_path(workdir, &job.output.final_name));
            // Like a failure: in the event log, not on stderr (the error line says it).
            tracing::error!(stage = "run", code = e.code(), "{}", e.message);
            manifest.mark_interrupted(&e);
            entry.status = RunStatus::Interrupted;
            entry.exit_status = Some(e.exit_code());
            entry.error = Some(ErrorRecord::from(&e));
            Err(stopped(e, &run_id, opts))
        }
        Err(e) => {
            tracing::error!(stage = "run", code = e.code(), "{}", e.message);
            manifest.mark_failed(&e);
            entry.status = RunStatus::Failed;
            entry.exit_status = Some(e.exit_code());
            entry.error = Some(ErrorRecord::from(&e));
            Err(e)
        }
    };
    let saved = manifest.save(workdir);
    let registered = registry::upsert(&opts.state_dir, entry);
    // The run's own error first: a record that could not be written is the lesser news.
    result?;
    saved?;
    registered?;
    drop(lock);
    Ok(RunOutcome {
        run_id,
        degraded: manifest.degraded(),
        final_path,
        manifest,
    })
}

/// An existing final refuses a run (`OUTPUT_EXISTS`; `RESUME_INVALID` with `--resume`):
/// checked again by [`run_job`] once it holds the workdir, and by the command line before
/// admission, so that this answer comes before any input is probed.
pub fn refuse_existing_final(final_path: &Path, resume: bool) -> Result<()> {
    if !final_path.exists() {
        return Ok(());
    }
    if resume {
        return Err(Error::at_path(
            ErrorKind::ResumeInvalid,
            final_path,
            "already exists: nothing to resume",
        ));
    }
    Err(
        Error::at_path(ErrorKind::OutputExists, final_path, "already exists").with_hint(
            "choose another --workdir, remove the file, or pass --resume for an unfinished run",
        ),
    )
}

/// The run's manifest, with the workdir's lock held: a fresh one for a new run in a workdir
/// without one, the earlier attempt's for `--resume`. A new run never takes over a workdir
/// that holds another run's manifest (readable or not): `OUTPUT_EXISTS`, naming that run and
/// the command that continues it. An earlier run found `running` there died without a word
/// (the lock was free) and is recorded `interrupted` first.
fn claim(opts: &RunOptions, lock: &WorkdirLock) -> Result<Manifest> {
    let workdir = &opts.workdir;
    let manifest_path = Manifest::path(workdir);
    let earlier = if manifest_path.exists() {
        workdir::settle_dead_run(lock, workdir, &opts.state_dir)?
    } else {
        None
    };
    if opts.resume {
        let mut m = match earlier {
            Some(m) => m,
            None => Manifest::load(workdir)?,
        };
        m.run_status = RunStatus::Running;
        m.exit_status = None;
        m.error = None;
        return Ok(m);
    }
    if !manifest_path.exists() {
        return Ok(Manifest::new(
            opts.run_id.clone().unwrap_or_else(new_run_id),
        ));
    }
    let held_by = match &earlier {
        Some(m) => format!("run {} ({})", m.run_id, m.run_status),
        None => "a run record that cannot be read".to_string(),
    };
    let job_file = opts
        .job_file
        .clone()
        .unwrap_or_else(|| workdir.join("job.json"));
    let hint = match &earlier {
        Some(m) if m.run_status == RunStatus::Completed => format!(
            "that run completed: choose another --workdir (if its final is gone, {} makes it again)",
            resume_command(&job_file, workdir)
        ),
        _ => format!(
            "continue it with: {}, or choose another --workdir",
            resume_command(&job_file, workdir)
        ),
    };
    Err(Error::at_path(
        ErrorKind::OutputExists,
        workdir,
        format!("already holds {held_by}; nothing was written"),
    )
    .with_hint(hint))
}

/// The stop's error with the run named and the command that continues it.
fn stopped(e: Error, run_id: &str, opts: &RunOptions) -> Error {
    let job_file = opts
        .job_file
        .clone()
        .unwrap_or_else(|| opts.workdir.join("job.json"));
    Error::new(e.kind, format!("run {run_id} {}", e.message)).with_hint(format!(
        "continue it with: {}",
        resume_command(&job_file, &opts.workdir)
    ))
}

/// `va run JOB --workdir DIR --resume`, quoted for a POSIX shell.
fn resume_command(job_file: &Path, workdir: &Path) -> String {
    format!(
        "va run {} --workdir {} --resume",
        shell_quote(job_file),
        shell_quote(workdir)
    )
}

/// A path as a POSIX shell word: bare when it is plain, in single quotes otherwise, and as
/// `$'…'` with `\xNN` escapes when it is not UTF-8 (bash, zsh, ksh).
pub fn shell_quote(p: &Path) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c);
    match p.to_str() {
        Some(s) if !s.is_empty() && s.chars().all(plain) => s.to_string(),
        Some(s) => format!("'{}'", s.replace('\'', r"'\''")),
        None => {
            let mut out = String::from("$'");
            for &b in crate::files::path_json::os_bytes(p).iter() {
                match b {
                    b'\'' | b'\\' => {
                        out.push('\\');
                        out.push(char::from(b));
                    }
                    0x20..=0x7e => out.push(char::from(b)),
                    _ => out.push_str(&format!("\\x{b:02x}")),
                }
            }
            out.push('\'');
            out
        }
    }
}

/// Runs phase `name` as `f`: marks it running (saved), times it, and ends it `completed`,
/// `failed` or `interrupted` (saved), reporting each change. A stop requested meanwhile is
/// honoured before it starts.
pub(crate) fn phase<T>(
    m: &mut Manifest,
    opts: &RunOptions,
    name: PhaseName,
    f: impl FnOnce(&mut Manifest) -> Result<T>,
) -> Result<T> {
    use crate::progress::PhaseChange;
    let workdir = &opts.workdir;
    crate::interrupt::check()?;
    m.phase_start(name);
    m.save(workdir)?;
    tracing::info!(stage = name.as_str(), "phase started");
    opts.progress.phase(name.as_str(), PhaseChange::Started);
    let started = std::time::Instant::now();
    let out = f(m);
    m.phases.state_mut(name).duration_seconds = Some(started.elapsed().as_secs_f64());
    m.phase_end(
        name,
        match &out {
            Ok(_) => PhaseStatus::Completed,
            Err(e) if e.kind.is_stop() => PhaseStatus::Interrupted,
            Err(_) => PhaseStatus::Failed,
        },
    );
    m.save(workdir)?;
    tracing::info!(stage = name.as_str(), ok = out.is_ok(), "phase ended");
    opts.progress.phase(
        name.as_str(),
        match &out {
            Ok(_) => PhaseChange::Completed,
            Err(e) if e.kind.is_stop() => PhaseChange::Interrupted,
            Err(_) => PhaseChange::Failed,
        },
    );
    out
}

/// Records phase `name` as skipped, with why (saved).
pub(crate) fn skip(
    m: &mut Manifest,
    opts: &RunOptions,
    name: PhaseName,
    reason: &str,
) -> Result<()> {
    m.phases.state_mut(name).reason = Some(reason.to_string());
    m.phase_end(name, PhaseStatus::Skipped);
    opts.progress
        .phase(name.as_str(), crate::progress::PhaseChange::Skipped);
    m.save(&opts.workdir)
}

/// The phases in order, each in its own module; what one returns is what the next takes.
fn run_phases(
    admitted: &Admitted,
    opts: &RunOptions,
    manifest: &mut Manifest,
    final_path: &Path,
) -> Result<()> {
    let job = &admitted.job;
    let workdir = &opts.workdir;
    crate::record::atomic::write_json_atomic(&workdir.join("job.json"), &job.to_effective_json())?;
    let seed = match job.determinism.seed_policy {
        SeedPolicy::Fixed => job.determinism.seed,
        SeedPolicy::Random => Some(random_seed()),
        SeedPolicy::PerRetry => job.determinism.seed.or_else(|| Some(random_seed())),
    };
    let policy = serde_json::to_value(job.determinism.seed_policy)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    manifest.seeds = Some(Seeds {
        value: seed,
        policy,
    });
    manifest.effective_params = Some(EffectiveParams::new(job, seed)?);
    manifest.save(workdir)?;

    let earlier = match opts.resume {
        true => prepare::resume(job, workdir, manifest),
        false => Err("not a resume".into()),
    };
    let prepared = match earlier {
        Ok(p) => {
            tracing::info!(
                stage = "prepare",
                "resume: prepare already completed, reusing prepare/plan.json and prepare/audio_padded.wav"
            );
            p
        }
        Err(why) => {
            if opts.resume {
                tracing::info!(stage = "prepare", "resume: prepare runs again: {why}");
            }
            phase(manifest, opts, PhaseName::Prepare, |m| {
                prepare::prepare(admitted, workdir, m)
            })?
        }
    };
    let seed = seed.unwrap_or(0);
    let start_file = &admitted.start_file;
    let (face, staged) = faceprobe::run_phase(job, start_file, opts, &prepared, seed, manifest)?;
    // The local motion fallback zooms about the face found, in the start image's pixels.
    let centre = face
        .as_ref()
        .filter(|f| f.found())
        .and_then(|f| f.centre_in(prepared.source_size));
    let comfy = comfyui::run_phase(
        admitted,
        opts,
        &prepared,
        face.as_ref(),
        staged.as_ref(),
        seed,
        manifest,
    )?;
    let shown = lipsync::run_phase(job, opts, &prepared, &comfy, centre, manifest)?;
    encode::record_sources(job, &prepared, &comfy, &shown, centre, manifest);
    manifest.save(workdir)?;

    let partial = partial_path(workdir, &job.output.final_name);
    let encoded = encode::run_phase(
        job,
        opts,
        &prepared,
        shown.visual.as_ref(),
        centre,
        &partial,
        manifest,
    )?;
    let rounding = job.determinism.rounding;
    finalize::run_phase(opts, &prepared, rounding, &partial, final_path, manifest)?;
    tracing::info!(
        stage = "finalize",
        frames = encoded.video_frames,
        "final written"
    );
    Ok(())
}
