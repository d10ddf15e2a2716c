//! `va status` and `va logs`: read a run's records back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use crate::error::{Error, ErrorKind, Result};
use crate::record::{events, registry, Manifest};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A run id (or unique prefix) from the registry, or a workdir; without one, the runs
    /// in the registry, newest first.
    pub run: Option<String>,
    /// How many runs to list, newest first (0: all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// JSON on stdout: the run's manifest, or the list of runs (newest first).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// A run id (or unique prefix), or a workdir.
    pub run: String,
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
        let mut runs = registry::list(&registry::state_dir())?;
        // Newest first: the registry keeps registration order.
        runs.reverse();
        if a.limit > 0 {
            runs.truncate(a.limit);
        }
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&runs).unwrap_or_default()
            );
        } else if runs.is_empty() {
            println!("no runs registered in {}", registry::state_dir().display());
        } else {
            for r in &runs {
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
    let workdir = if a.follow {
        wait_for_run(&a.run, Duration::from_secs(a.wait))?
    } else {
        workdir_of(&a.run)?
    };
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
        // Ends once the manifest says the run ended (the last read after that covers every
        // event written before it).
        let ended = || Manifest::load(&workdir).is_ok_and(|m| m.run_status.is_terminal());
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
fn wait_for_run(run: &str, wait: Duration) -> Result<PathBuf> {
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
