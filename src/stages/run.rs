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
use crate::job::{Job, OnNoFace, SeedPolicy, StartKind};
use crate::media;
use crate::record::manifest::{
    ErrorRecord, LipsyncSource, Manifest, PhaseStatus, Seeds, StartSource, VideoSourceDetail,
};
use crate::record::registry::{self, RunEntry};
use crate::record::workdir::{self, WorkdirLock};
use crate::record::{EventLog, RunStatus};
use crate::timeline::Rounding;

use super::admit::Admitted;
use super::compose::Compositor;
use super::faceprobe::FaceMeta;
use super::staging::{self, Staged};
use super::{comfyui, faceprobe, lipsync, prepare};

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

/// On `--resume`, the completed `prepare` of the earlier attempt, when its padded WAV is
/// intact and the job still asks for the same padding; `None` means prepare runs again.
fn resumable_prepare(
    admitted: &Admitted,
    opts: &RunOptions,
    m: &Manifest,
) -> Option<prepare::Prepared> {
    let job = &admitted.job;
    if !opts.resume || !m.phase_completed("prepare") {
        return None;
    }
    let (a, r) = (m.audio?, m.render?);
    let wav = opts.workdir.join("prepare").join("audio_padded.wav");
    let reader = hound::WavReader::open(&wav).ok()?;
    let rate = a.output_rate;
    // The same delivery rate and loudness as the job asks for now.
    let loudness = |l: &crate::job::Loudness| (l.target_lufs, l.true_peak_db);
    if rate != job.encode.audio_rate.output_rate(a.rate)
        || job.encode.loudness.as_ref().map(loudness)
            != m.loudness.map(|r| (r.target_lufs, r.true_peak_ceiling_db))
    {
        return None;
    }
    let (pre_s, post_s) = (job.pre_seconds(), job.post_seconds());
    let same = reader.spec().sample_rate == rate
        && u64::from(reader.duration()) == a.total_samples
        && crate::timeline::samples_for(pre_s, rate, Rounding::Round) == a.pre_samples
        && crate::timeline::samples_for(post_s, rate, Rounding::Round) == a.post_samples;
    if !same {
        return None;
    }
    let audio = crate::timeline::AudioPlan {
        rate,
        input_samples: a.input_samples,
        pre_samples: a.pre_samples,
        post_samples: a.post_samples,
    };
    let frames = crate::timeline::FramePlan::new(
        &audio,
        job.fps(),
        job.determinism.rounding,
        post_s,
        job.end_image.is_some(),
    )
    .ok()?;
    let render = crate::timeline::render_size(
        r.source_width,
        r.source_height,
        job.render.width,
        job.render.height,
        job.render.max_width,
        job.render.max_height,
    )
    .ok()?;
    if render != (r.width, r.height) {
        return None;
    }
    // A start video is planned again from its probe at admission.
    let start_video = match &job.start {
        StartKind::Image(_) => None,
        StartKind::Video(p) => {
            let probe = admitted.start_video()?.clone();
            if probe.display_size() != (r.source_width, r.source_height) {
                return None;
            }
            Some(prepare::plan_start_video(job, p, probe, &frames, render).ok()?)
        }
    };
    Some(prepare::Prepared {
        audio,
        frames,
        render,
        source_size: (r.source_width, r.source_height),
        wav,
        start_video,
    })
}

fn phase<T>(
    m: &mut Manifest,
    opts: &RunOptions,
    name: &str,
    f: impl FnOnce(&mut Manifest) -> Result<T>,
) -> Result<T> {
    use crate::progress::PhaseChange;
    let workdir = &opts.workdir;
    // A stop requested meanwhile is honoured between phases too (not only in the waits).
    crate::interrupt::check()?;
    m.phase_start(name);
    m.save(workdir)?;
    tracing::info!(stage = name, "phase started");
    opts.progress.phase(name, PhaseChange::Started);
    let started = std::time::Instant::now();
    let out = f(m);
    m.phase_field(name, "duration_seconds", started.elapsed().as_secs_f64());
    m.phase_end(
        name,
        match &out {
            Ok(_) => PhaseStatus::Completed,
            Err(e) if e.kind.is_stop() => PhaseStatus::Interrupted,
            Err(_) => PhaseStatus::Failed,
        },
    );
    m.save(workdir)?;
    tracing::info!(stage = name, ok = out.is_ok(), "phase ended");
    opts.progress.phase(
        name,
        match &out {
            Ok(_) => PhaseChange::Completed,
            Err(e) if e.kind.is_stop() => PhaseChange::Interrupted,
            Err(_) => PhaseChange::Failed,
        },
    );
    out
}

/// The `faceprobe` phase (SPEC §6): when the job's ComfyUI workflows lip-sync or zoom (or
/// name `vidax_faceprobe`), stages the pictures the Wav2Lip graphs get and runs the face check on
/// them; skipped otherwise. No face with `on_no_face=error` fails the run here
/// (`COMFYUI_FACE_NOT_FOUND`), before the long GPU job. `--resume` reuses a completed check
/// whose staged pictures are intact.
fn face_phase(
    job: &Job,
    opts: &RunOptions,
    prepared: &prepare::Prepared,
    seed: u64,
    manifest: &mut Manifest,
) -> Result<(Option<FaceMeta>, Option<Staged>)> {
    let workdir = &opts.workdir;
    if !comfyui::needs_face_check(job, &opts.state_dir) {
        skip(
            manifest,
            opts,
            "faceprobe",
            "no lip-sync or motion workflow in ComfyUI (the face check runs only before one)",
        )?;
        return Ok((None, None));
    }
    let earlier = (opts.resume && manifest.phase_completed("faceprobe"))
        .then(|| serde_json::from_value::<FaceMeta>(manifest.face_meta.clone()).ok())
        .flatten();
    let (meta, staged) = phase(manifest, opts, "faceprobe", |m| {
        let staged = staging::stage(job, prepared, workdir, opts.resume)?;
        let rel = |p: &Path| p.strip_prefix(workdir).unwrap_or(p).display().to_string();
        let staged_file = staged
            .still
            .as_ref()
            .map(|s| &s.0)
            .or(staged.clip.as_ref().map(|c| &c.0));
        m.phase_field("faceprobe", "staged", staged_file.map(|p| rel(p)));
        if let Some(meta) = earlier {
            tracing::info!(stage = "faceprobe", "resume: the face check already ran");
            m.phase_field("faceprobe", "reused", true);
            return Ok((meta, staged));
        }
        let input = comfyui::Input {
            job,
            prepared,
            workdir,
            state_dir: &opts.state_dir,
            face: None,
            staged: Some(&staged),
            seed,
            run_id: &m.run_id.clone(),
            progress: opts.progress.clone(),
            resume: opts.resume,
        };
        let meta = match comfyui::face_check(&input, &staged.probes, m)? {
            comfyui::FaceCheck::Reports(r) => faceprobe::from_reports(r, &staged.probes, workdir),
            comfyui::FaceCheck::Failed(why) => {
                tracing::warn!(stage = "faceprobe", "face check failed: {why}");
                m.add_warning(format!(
                    "face check: {why}; the size heuristic stands in (face_meta.method: size_heuristic)"
                ));
                faceprobe::fallback(&staged, workdir, &why)
                    .ok_or_else(|| faceprobe::no_face_error(None, &staged, job.start.path()))?
            }
        };
        if meta.source == "comfyui" && meta.report.method != "s3fd" {
            // The node had no detector and said so: recorded, and said again here.
            m.add_warning(format!(
                "face check: VIDAX_FaceProbe used {} ({}): the face box is not a detected face",
                meta.report.method,
                meta.report
                    .fallback_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ));
        }
        m.face_meta = serde_json::to_value(&meta).unwrap_or_default();
        m.phase_field("faceprobe", "method", meta.report.method.clone());
        m.phase_field("faceprobe", "found", meta.found());
        faceprobe::write(&meta, workdir)?;
        m.phase_field("faceprobe", "face_meta", "faceprobe/face_meta.json");
        // No face fails the run only where a lip-sync was asked for; the zoom alone then
        // centres on the picture.
        if !meta.found()
            && job.comfyui.wav2lip.on_no_face == OnNoFace::Error
            && comfyui::lipsyncs(job, &opts.state_dir)
        {
            return Err(faceprobe::no_face_error(
                Some(&meta),
                &staged,
                job.start.path(),
            ));
        }
        Ok((meta, staged))
    })?;
    Ok((Some(meta), Some(staged)))
}

fn skip(m: &mut Manifest, opts: &RunOptions, name: &str, reason: &str) -> Result<()> {
    m.phase_field(name, "reason", reason);
    m.phase_end(name, PhaseStatus::Skipped);
    opts.progress
        .phase(name, crate::progress::PhaseChange::Skipped);
    m.save(&opts.workdir)
}

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
    manifest.effective_params = job.to_effective_json();
    if let Some(s) = seed {
        manifest.effective_params["determinism"]["seed"] = s.into();
    }
    manifest.save(workdir)?;

    let prepared = match resumable_prepare(admitted, opts, manifest) {
        Some(p) => {
            tracing::info!(
                stage = "prepare",
                "resume: prepare already completed, reusing prepare/audio_padded.wav"
            );
            p
        }
        None => phase(manifest, opts, "prepare", |m| {
            prepare::prepare(admitted, workdir, m)
        })?,
    };

    let is_image = matches!(job.start, StartKind::Image(_));
    let (face, staged) = face_phase(job, opts, &prepared, seed.unwrap_or(0), manifest)?;
    // The local motion fallback zooms about the face found, in the start image's pixels.
    let centre = face
        .as_ref()
        .filter(|f| f.found())
        .and_then(|f| f.centre_in(prepared.source_size));
    let mut comfy = comfyui::Outcome::default();
    if job.comfyui.enable {
        comfy = phase(manifest, opts, "comfyui", |m| {
            let input = comfyui::Input {
                job,
                prepared: &prepared,
                workdir,
                state_dir: &opts.state_dir,
                face: face.as_ref(),
                staged: staged.as_ref(),
                seed: seed.unwrap_or(0),
                run_id: &m.run_id.clone(),
                progress: opts.progress.clone(),
                resume: opts.resume,
            };
            comfyui::run(&input, m)
        })?;
    } else {
        skip(
            manifest,
            opts,
            "comfyui",
            "comfyui.enable=false (diagnostic path)",
        )?;
    }
    // The main segment's source so far: ComfyUI's output, else the local fallback.
    let mut visual = comfy.visual.clone();
    let mut degraded_reason = comfy.degraded_reason.clone();
    let mut lipsync_source = if comfy.lipsync_inside {
        LipsyncSource::InsideComfy
    } else {
        LipsyncSource::Off
    };
    match (&job.lipsync.provider, job.lipsync.enable) {
        (Some(id), false) => {
            manifest.lipsync_meta = serde_json::json!({"provider": id, "status": "ignored",
                "reason": "lipsync.enable=false"});
            skip(
                manifest,
                opts,
                "lipsync",
                &format!("lipsync.enable=false: provider {id:?} ignored"),
            )?;
        }
        (None, enable) => skip(
            manifest,
            opts,
            "lipsync",
            if enable {
                "no external provider (lip-sync inside ComfyUI)"
            } else {
                "lipsync.enable=false"
            },
        )?,
        (Some(id), true) => {
            let out = phase(manifest, opts, "lipsync", |m| {
                Ok(external_lipsync(
                    job,
                    opts,
                    &prepared,
                    visual.as_ref(),
                    centre,
                    id,
                    m,
                ))
            })?;
            match out {
                Ok(v) => {
                    visual = Some(v);
                    lipsync_source = LipsyncSource::External;
                }
                Err(e) => {
                    tracing::warn!(stage = "lipsync", code = e.code(), "{}", e.message);
                    manifest.add_warning(format!(
                        "{}: {} (the encode uses the base video)",
                        e.code(),
                        e.message
                    ));
                    manifest.lipsync_meta["error"] =
                        serde_json::json!({"code": e.code(), "message": e.message});
                    degraded_reason.get_or_insert_with(|| e.code().to_string());
                }
            }
        }
    }
    // The motion fallback renders a start image only; a start video is shown without zoom.
    // Frames of the lip-synced still get the same zoom in the render.
    if let Some(comfyui::Visual::Frames {
        zoom: Some(z),
        count,
        ..
    }) = &visual
    {
        manifest.motion_meta = serde_json::json!({
            "source": "local", "over": "comfyui frames", "workflow_id": comfy.workflow_id,
            "mode": job.motion.mode, "strength": job.motion.strength,
            "frame_count": count, "fps": prepared.frames.fps.to_string(),
            "centre": z.centre.map(|c| [c.0, c.1]),
            "renderer": "vidax sub-pixel window resampler",
        });
    } else if is_image && visual.is_none() {
        manifest.motion_meta = local_motion_meta(job, &prepared, centre);
    } else if !is_image {
        manifest.motion_meta = serde_json::Value::Null;
    }
    manifest.video_source_detail = Some(VideoSourceDetail {
        start_source: if is_image {
            StartSource::StartImage
        } else {
            StartSource::StartVideo
        },
        comfyui_workflow_id: comfy.workflow_id.clone(),
        comfyui_output: comfy.output,
        lipsync: lipsync_source,
        degraded: degraded_reason.is_some(),
        degraded_reason,
    });
    manifest.save(workdir)?;

    let partial = partial_path(workdir, &job.output.final_name);
    let encoded = phase(manifest, opts, "encode", |m| {
        let encode = |visual: Option<&comfyui::Visual>| {
            let compositor = Compositor::for_run(job, &prepared, visual, centre)?;
            encode_with(job, &prepared, compositor, &partial, &*opts.progress).inspect_err(|_| {
                let _ = std::fs::remove_file(&partial);
            })
        };
        let report = match encode(visual.as_ref()) {
            // A ComfyUI frame that does not decode: the fallback instead, degraded.
            Err(e) if comfyui::frames_unusable(&e, visual.as_ref()) => {
                let fallback = is_image.then(|| local_motion_meta(job, &prepared, centre));
                comfyui::fall_back_from_frames(m, &e, fallback);
                encode(None)?
            }
            r => r?,
        };
        m.phase_field(
            "encode",
            "report",
            serde_json::to_value(&report).unwrap_or_default(),
        );
        m.phase_field("encode", "passes", 1);
        Ok(report)
    })?;

    phase(manifest, opts, "finalize", |m| {
        let result = finalize(&partial, final_path, &prepared, job.determinism.rounding, m);
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    })?;
    tracing::info!(
        stage = "finalize",
        frames = encoded.video_frames,
        "final written"
    );
    Ok(())
}

/// `motion_meta` of a start image rendered by the local motion fallback.
fn local_motion_meta(
    job: &Job,
    prepared: &prepare::Prepared,
    centre: Option<(f64, f64)>,
) -> serde_json::Value {
    serde_json::json!({
        "source": "local", "mode": job.motion.mode, "strength": job.motion.strength,
        "frame_count": prepared.frames.main_frames(), "fps": prepared.frames.fps.to_string(),
        "centre": centre.map(|c| [c.0, c.1]),
        "renderer": "vidax sub-pixel window resampler",
    })
}

/// The A/V delta the rounding allows: half a frame for `round`, under one frame otherwise.
fn max_delta(rounding: Rounding) -> f64 {
    match rounding {
        Rounding::Round => 0.5,
        Rounding::Floor | Rounding::Ceil => 1.0,
    }
}

/// Reads the encoded file back, checks it against the timeline, and renames it into place.
fn finalize(
    partial: &Path,
    final_path: &Path,
    prepared: &prepare::Prepared,
    rounding: Rounding,
    m: &mut Manifest,
) -> Result<()> {
    let fps = prepared.frames.fps;
    let expect = media::verify::Expect {
        fps: Some((fps.num(), fps.den())),
        frames: Some(prepared.frames.target_frames),
        audio_seconds: Some(prepared.audio.duration().to_f64()),
        video_packets_only: true,
        max_av_delta_frames: Some(max_delta(rounding)),
        audio_required: true,
    };
    let report = media::verify::verify(partial, &expect)?;
    m.verify = serde_json::to_value(&report).unwrap_or_default();
    let declared = report.audio.as_ref().map(|a| a.declared_samples);
    if declared != i64::try_from(prepared.audio.total_samples()).ok() {
        return Err(Error::new(
            ErrorKind::FfmpegFailed,
            format!(
                "read-back: audio declares {declared:?} samples, the programme has {}",
                prepared.audio.total_samples()
            ),
        ));
    }
    if !report.ok {
        return Err(Error::new(
            ErrorKind::FfmpegFailed,
            format!("read-back failed: {}", report.failures.join("; ")),
        ));
    }
    // A hard link never replaces an existing file: a final that appeared meanwhile (another
    // run in the same workdir) is left untouched.
    std::fs::hard_link(partial, final_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::at_path(
            ErrorKind::OutputExists,
            final_path,
            "appeared during the run; left untouched",
        ),
        _ => Error::at_path(ErrorKind::Internal, final_path, e),
    })?;
    let _ = std::fs::remove_file(partial);
    // The read-back was of the temporary file; the record names the file it now is.
    m.verify["file"] = final_path.display().to_string().into();
    m.final_path = Some(final_path.to_path_buf());
    Ok(())
}

/// Encodes the whole timeline from `compositor` with the padded audio into `out`.
fn encode_with(
    job: &Job,
    prepared: &prepare::Prepared,
    compositor: Compositor,
    out: &Path,
    progress: &dyn crate::progress::Progress,
) -> Result<media::encode::EncodeReport> {
    let (w, h) = prepared.render;
    let fps = prepared.frames.fps;
    let to_i32 = |v: u64| u32::try_from(v).ok().filter(|&x| x <= i32::MAX as u32);
    let (Some(fps_num), Some(fps_den)) = (to_i32(fps.num()), to_i32(fps.den())) else {
        return Err(Error::new(
            ErrorKind::FfmpegFailed,
            format!("fps {fps} does not fit FFmpeg's 32-bit rationals"),
        ));
    };
    let video = media::encode::VideoSettings {
        width: w,
        height: h,
        fps_num,
        fps_den,
        frames: prepared.frames.target_frames,
        preset: job.encode.preset.as_str().to_string(),
        crf: job.encode.crf,
        threads: job.encode.threads,
    };
    let audio = media::encode::AudioSettings {
        wav: prepared.wav.clone(),
        bitrate: job.encode.audio_bitrate,
    };
    let producer = Box::new(StopAware(compositor));
    media::encode::encode_mp4(out, &video, producer, &audio, progress)
}

/// The compositor, ending the encode at the next frame once a stop is requested (the encode
/// then fails with the stop's error and its partial file is removed).
struct StopAware(Compositor);

impl media::encode::FrameProducer for StopAware {
    fn render(&mut self, index: u64, out: &mut media::picture::Yuv420) -> Result<()> {
        crate::interrupt::check()?;
        self.0.render(index, out)
    }
}

/// The `lipsync` phase with an external provider: the base video (the main segment as it
/// stands, with the end hold, and the padded audio) goes to `lipsync/input.mp4`, the provider
/// writes `lipsync/output.mp4`, which must decode with at least the main segment's frames.
/// The outer `Result` is the phase's own failure; the inner one the provider's (degraded).
fn external_lipsync(
    job: &Job,
    opts: &RunOptions,
    prepared: &prepare::Prepared,
    visual: Option<&comfyui::Visual>,
    centre: Option<(f64, f64)>,
    id: &str,
    m: &mut Manifest,
) -> Result<comfyui::Visual> {
    let dir = opts.workdir.join("lipsync");
    let output = dir.join("output.mp4");
    let paths = lipsync::config_paths(&opts.state_dir);
    m.lipsync_meta = serde_json::json!({"provider": id, "where": "external",
        "output": "lipsync/output.mp4", "status": "running"});
    if opts.resume
        && output.is_file()
        && super::compose::visual_video(job, prepared, &output).is_ok()
    {
        tracing::info!(stage = "lipsync", "resume: lipsync/output.mp4 reused");
        m.lipsync_meta["status"] = "reused".into();
        return Ok(comfyui::Visual::Video(output));
    }
    let (provider, file) = lipsync::find_provider(id, &paths)?;
    m.lipsync_meta["config"] = file.display().to_string().into();
    std::fs::create_dir_all(&dir).map_err(|e| Error::at_path(ErrorKind::Internal, &dir, e))?;
    let input = dir.join("input.mp4");
    let compositor = Compositor::for_run(job, prepared, visual, centre)?;
    encode_with(job, prepared, compositor, &input, &crate::progress::Silent)?;
    lipsync::run_provider(&provider, &input, &prepared.wav, &output)?;
    super::compose::visual_video(job, prepared, &output).map_err(|e| {
        Error::new(
            ErrorKind::LipsyncFailed,
            format!("provider output: {}", e.message),
        )
    })?;
    m.lipsync_meta["status"] = "completed".into();
    Ok(comfyui::Visual::Video(output))
}
