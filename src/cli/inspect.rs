//! `va status` and `va logs`: read a run's records back.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::{Error, ErrorKind, Result};
use crate::record::{events, registry, Manifest};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A run id (or unique prefix) from the registry, or a workdir.
    pub run: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// A run id (or unique prefix), or a workdir.
    pub run: String,
    /// Keep printing new events as they arrive (Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
    /// Print the raw JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Resolves a run id or a workdir path to the workdir.
fn workdir_of(run: &str) -> Result<PathBuf> {
    let p = Path::new(run);
    if p.join("manifest.json").exists() || p.join("logs").exists() {
        return Ok(p.to_path_buf());
    }
    match registry::find(&registry::state_dir(), run)? {
        Some(e) => Ok(e.workdir),
        None => Err(Error::new(
            ErrorKind::InputNotFound,
            format!("{run}: no such run id in the registry and no workdir there"),
        )),
    }
}

pub fn status(a: StatusArgs) -> Result<i32> {
    let Some(run) = a.run else {
        let runs = registry::list(&registry::state_dir())?;
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&runs).unwrap_or_default()
            );
        } else if runs.is_empty() {
            println!("no runs registered in {}", registry::state_dir().display());
        } else {
            for r in runs.iter().rev().take(20) {
                let fin = r
                    .final_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                println!(
                    "{:<28} {:<10} {} {}",
                    r.id,
                    r.status.as_str(),
                    r.workdir.display(),
                    fin
                );
            }
        }
        return Ok(0);
    };
    let workdir = workdir_of(&run)?;
    let m = Manifest::load(&workdir)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
        return Ok(0);
    }
    println!("run        {}", m.run_id);
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
