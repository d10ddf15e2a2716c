//! `va status` and `va logs`: read a run's records back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use crate::error::{Error, ErrorKind, Result};
use crate::files::state_dir;
use crate::record::{events, registry, workdir, Manifest};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A run id (or unique prefix) from the registry, a workdir, or a job id of va serve;
    /// without one, the runs in the registry, newest first.
    pub run: Option<PathBuf>,
    /// How many runs to list, newest first (0: all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// JSON on stdout: the run's manifest, or the list of runs (newest first).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// A run id (or unique prefix), a workdir, or a job id of va serve.
    pub run: PathBuf,
    /// Keep printing new events until the run ends; a run not started yet is waited for
    /// (see --wait).
    #[arg(long)]
    pub follow: bool,
    /// With --follow: how long to wait for a run that has not started yet.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub wait: u64,
    /// Print the raw JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Resolves what the user named to a workdir: a folder holding a run's records, else a run
/// id (or unique prefix) of the registry, else a job id of the API (its record in
/// `<state dir>/api/jobs/`). The argument is taken as bytes, so a workdir whose name is not
/// UTF-8 works too.
fn workdir_of(run: &Path) -> Result<PathBuf> {
    let looks_like_workdir = Manifest::path(run).exists()
        || run.join("logs").exists()
        || workdir::lock_path(run).exists();
    if looks_like_workdir {
        return Ok(run.to_path_buf());
    }
    let state = state_dir();
    if let Some(id) = run.to_str() {
        if let Some(e) = registry::find(&state, id)? {
            return Ok(e.workdir);
        }
        if let Some(wd) = crate::api::jobs::workdir_of_job(&state, id) {
            return Ok(wd);
        }
    }
    Err(Error::new(
        ErrorKind::InputNotFound,
        format!(
            "{}: no such run id in the registry, no job of va serve, and no workdir there",
            run.display()
        ),
    ))
}

pub fn status(a: StatusArgs) -> Result<i32> {
    let Some(run) = a.run else {
        return list(a.json, a.limit);
    };
    let wd = workdir_of(&run)?;
    let m = workdir::observe(&wd, &state_dir())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
        return Ok(0);
    }
    println!("run        {}", m.run_id);
    println!("workdir    {}", wd.display());
    println!(
        "status     {} (exit {})",
        m.run_status.as_str(),
        m.exit_status.map_or("-".into(), |c| c.to_string())
    );
    if let Some(e) = &m.error {
        println!("error      {}: {}", e.code, e.message);
    }
    for (name, ph) in m.phases.iter() {
        println!("  {:<10} {}", name, ph.status.as_str());
    }
    if let (Some(fps), Some(frames)) = (&m.fps, m.target_frames) {
        println!(
            "frames     {frames} at {fps} fps (hold {})",
            m.hold_frames.unwrap_or(0)
        );
    }
    if let Some(d) = m.audio_duration_seconds {
        println!(
            "audio      {d:.6} s padded, {:.6} s input",
            m.audio_input_duration_seconds.unwrap_or(0.0)
        );
    }
    if let Some(r) = &m.render {
        println!("render     {}x{}", r.width, r.height);
    }
    if let Some(v) = &m.video_source_detail {
        println!(
            "degraded   {}{}",
            v.degraded,
            v.degraded_reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    if let Some(f) = &m.final_path {
        println!("final      {}", f.display());
    }
    Ok(0)
}

/// The registered runs, newest first, each checked against its workdir's lock (a `running`
/// entry whose lock is free is a run that died: it shows, and is recorded, as `interrupted`).
fn list(json: bool, limit: usize) -> Result<i32> {
    let state = state_dir();
    let mut runs = registry::list(&state)?;
    // Newest first: the registry keeps registration order.
    runs.reverse();
    if limit > 0 {
        runs.truncate(limit);
    }
    for r in &mut runs {
        workdir::check_alive(&state, r);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return Ok(0);
    }
    if runs.is_empty() {
        println!("no runs registered in {}", state.display());
        return Ok(0);
    }
    for r in &runs {
        let outcome = match (&r.final_path, &r.error) {
            (Some(f), _) if r.degraded => format!("{} (degraded)", f.display()),
            (Some(f), _) => f.display().to_string(),
            (None, Some(e)) => e.code.clone(),
            (None, None) => String::new(),
        };
        println!(
            "{:<28} {:<11} {} {}",
            r.id,
            r.status.as_str(),
            r.workdir.display(),
            outcome
        );
    }
    Ok(0)
}

pub fn logs(a: LogsArgs) -> Result<i32> {
    let wd = if a.follow {
        wait_for_run(&a.run, Duration::from_secs(a.wait))?
    } else {
        workdir_of(&a.run)?
    };
    let path = events::events_path(&wd);
    let render = |v: &serde_json::Value| {
        if a.json {
            v.to_string()
        } else {
            events::format_event_human(v)
        }
    };
    let mut out = std::io::stdout().lock();
    if a.follow {
        // Ends once the run ended (the last read after that covers every event written
        // before it): its manifest says so, or its workdir lock is free (it died).
        let state = state_dir();
        let ended = || workdir::observe(&wd, &state).is_ok_and(|m| m.run_status.is_terminal());
        events::follow_with(&path, &mut out, render, ended)?;
        return Ok(0);
    }
    use std::io::Write;
    for v in events::read_events(&path)? {
        if writeln!(out, "{}", render(&v)).is_err() {
            break;
        }
    }
    Ok(0)
}

/// The workdir of `run` once it has started (its manifest exists), polling up to `wait`.
fn wait_for_run(run: &Path, wait: Duration) -> Result<PathBuf> {
    let deadline = Instant::now() + wait;
    loop {
        let found = workdir_of(run);
        if let Ok(w) = &found {
            if Manifest::path(w).exists() {
                return Ok(w.clone());
            }
        }
        if Instant::now() >= deadline {
            return match found {
                Ok(w) => Err(Error::at_path(
                    ErrorKind::InputNotFound,
                    &w,
                    format!("the run has not started after {} s", wait.as_secs()),
                )),
                Err(e) => Err(e.with_hint(format!(
                    "waited {} s for it to start; va logs --wait SECONDS waits longer",
                    wait.as_secs()
                ))),
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
