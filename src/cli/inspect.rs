//! `va status` and `va logs`: read a run's records back.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::{Error, ErrorKind, Result};
use crate::files::state_dir;
use crate::record::{events, registry, workdir, Manifest};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A run id (or unique prefix) from the registry, a workdir, or a job id of `va serve`.
    pub run: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// A run id (or unique prefix), a workdir, or a job id of `va serve`.
    pub run: PathBuf,
    /// Keep printing new events as they arrive (Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
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
        return list(a.json);
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

/// The registered runs, each checked against its workdir's lock (a `running` entry whose
/// lock is free is a run that died: it shows, and is recorded, as `interrupted`).
fn list(json: bool) -> Result<i32> {
    let state = state_dir();
    let mut runs = registry::list(&state)?;
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
    for r in runs.iter().rev().take(20) {
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
    let workdir = workdir_of(&a.run)?;
    let path = events::events_path(&workdir);
    let render = |v: &serde_json::Value| {
        if a.json {
            v.to_string()
        } else {
            events::format_event_human(v)
        }
    };
    let mut out = std::io::stdout().lock();
    if a.follow {
        events::follow_with(&path, &mut out, render, || false)?;
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
