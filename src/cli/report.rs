//! What `va run` and `va produce` show while a run works and when it ends: a progress bar on
//! a terminal (stderr), NDJSON on stdout with `--json`, and the one-line summary. The stages
//! only report ([`crate::progress::Progress`]); this is the one place that draws.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Error;
use crate::progress::{ChunkProgress, EncodeProgress, PhaseChange, Progress};
use crate::stages::RunOutcome;

/// One NDJSON line of `va run --json` / `va produce --json` (docs/CLI.md, "Machine output").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JsonEvent {
    /// The run has its id and workdir (first line of a run that got that far).
    Started { run_id: String, workdir: String },
    /// A phase changed: `started`, `completed`, `failed` or `skipped`.
    Phase { phase: String, status: PhaseChange },
    /// Progress of the current phase, at most [`JSON_PROGRESS_PER_SECOND`] lines a second
    /// (the last one always).
    Progress(ProgressLine),
    /// ComfyUI chunks done, over the pool and per endpoint (each time one finishes).
    Chunks(ChunkProgress),
    /// The run completed: the summary.
    Done(Summary),
    /// The command failed (before or during the run).
    Error {
        code: String,
        message: String,
        hint: Option<String>,
        exit_status: i32,
    },
}

/// A progress line's body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressLine {
    /// `encode` or `comfyui`.
    pub phase: String,
    /// Done share of the phase, 0 to 1 (1 only when the phase's output is complete).
    pub fraction: f64,
    /// Encode: video frames encoded and total; ComfyUI: the prompt's steps.
    pub done: u64,
    pub total: u64,
    /// Encode only: audio samples muxed and total (per channel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_samples_done: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_samples_total: Option<u64>,
}

/// Most progress lines a second in `--json` mode.
pub const JSON_PROGRESS_PER_SECOND: u32 = 4;

/// What a completed run delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub run_id: String,
    #[serde(rename = "final")]
    pub final_path: String,
    pub frames: u64,
    pub duration_seconds: f64,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// Programme seconds per wall-clock second of the whole command.
    pub speed: f64,
    pub degraded: bool,
    pub degraded_reason: Option<String>,
    pub exit_status: i32,
}

impl Summary {
    pub fn of(outcome: &RunOutcome, wall: Duration, exit_status: i32) -> Summary {
        let m = &outcome.manifest;
        let duration = m.audio_duration_seconds.unwrap_or(0.0);
        let detail = m.video_source_detail.as_ref();
        Summary {
            run_id: outcome.run_id.clone(),
            final_path: outcome.final_path.display().to_string(),
            frames: m.target_frames.unwrap_or(0),
            duration_seconds: duration,
            width: m.render.map_or(0, |r| r.width),
            height: m.render.map_or(0, |r| r.height),
            bytes: std::fs::metadata(&outcome.final_path).map_or(0, |f| f.len()),
            speed: duration / wall.as_secs_f64().max(1e-6),
            degraded: outcome.degraded,
            degraded_reason: detail.and_then(|d| d.degraded_reason.clone()),
            exit_status,
        }
    }

    /// `final.mp4: 1539 frames, 61.56 s, 854×480, 3.1 MB, 12.4× real time` (+ `, degraded: …`).
    pub fn line(&self) -> String {
        let name = Path::new(&self.final_path)
            .file_name()
            .map_or_else(|| self.final_path.clone(), |n| n.to_string_lossy().into());
        let mut s = format!(
            "{name}: {} frames, {:.2} s, {}×{}, {}, {}× real time",
            self.frames,
            self.duration_seconds,
            self.width,
            self.height,
            human_bytes(self.bytes),
            speed_text(self.speed)
        );
        if self.degraded {
            s.push_str(&format!(
                ", degraded: {}",
                self.degraded_reason
                    .as_deref()
                    .unwrap_or("fallback picture")
            ));
        }
        s
    }
}

/// `12.4`, and below 1 two significant digits (`0.083`: a run that waited on ComfyUI), so a
/// slow run never reads `0.0`.
fn speed_text(speed: f64) -> String {
    if speed >= 1.0 || speed <= 0.0 || !speed.is_finite() {
        return format!("{speed:.1}");
    }
    let decimals = (1 - speed.log10().floor() as i32).clamp(1, 6) as usize;
    format!("{speed:.decimals$}")
}

/// `3.1 MB` (powers of 1000, one decimal; bytes below 1 kB).
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if b < 1000 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Writes one NDJSON line to stdout; a closed stdout is ignored (the run goes on).
pub fn emit(e: &JsonEvent) {
    if let Ok(line) = serde_json::to_string(e) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The error line of `--json`.
pub fn error_event(e: &Error) -> JsonEvent {
    JsonEvent::Error {
        code: e.code().to_string(),
        message: e.message.clone(),
        hint: e.hint.clone(),
        exit_status: e.exit_code(),
    }
}

/// NDJSON progress on stdout.
#[derive(Default)]
pub struct JsonProgress {
    last: Mutex<Option<(String, Instant)>>,
}

impl JsonProgress {
    /// Emits `line` unless a line of the same phase went out less than 1/4 s ago (the
    /// phase's last line, `fraction` 1, always goes out).
    fn throttled(&self, line: ProgressLine) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let gap = Duration::from_secs(1) / JSON_PROGRESS_PER_SECOND;
        let due = match &*last {
            Some((phase, at)) => *phase != line.phase || at.elapsed() >= gap,
            None => true,
        };
        if due || line.fraction >= 1.0 {
            *last = Some((line.phase.clone(), Instant::now()));
            emit(&JsonEvent::Progress(line));
        }
    }
}

impl Progress for JsonProgress {
    fn run_started(&self, run_id: &str, workdir: &Path) {
        emit(&JsonEvent::Started {
            run_id: run_id.to_string(),
            workdir: workdir.display().to_string(),
        });
    }

    fn phase(&self, name: &str, change: PhaseChange) {
        emit(&JsonEvent::Phase {
            phase: name.to_string(),
            status: change,
        });
    }

    fn comfyui(&self, value: u64, max: u64) {
        self.throttled(ProgressLine {
            phase: "comfyui".into(),
            fraction: value as f64 / max.max(1) as f64,
            done: value,
            total: max,
            audio_samples_done: None,
            audio_samples_total: None,
        });
    }

    fn comfyui_chunks(&self, p: &ChunkProgress) {
        emit(&JsonEvent::Chunks(p.clone()));
    }

    fn encode(&self, p: EncodeProgress) {
        self.throttled(ProgressLine {
            phase: "encode".into(),
            fraction: p.fraction(),
            done: p.frames_done,
            total: p.frames_total,
            audio_samples_done: Some(p.samples_done),
            audio_samples_total: Some(p.samples_total),
        });
    }
}

/// Steps of the encode bar (its length): the fraction in thousandths.
const BAR_STEPS: u64 = 1000;

/// A progress bar on stderr for ComfyUI's steps and the encode (video and audio together).
pub struct TerminalProgress {
    bar: Mutex<Option<(String, indicatif::ProgressBar)>>,
}

impl TerminalProgress {
    /// `None` when stderr is not a terminal: then nothing is drawn.
    pub fn for_stderr() -> Option<TerminalProgress> {
        std::io::stderr().is_terminal().then(|| TerminalProgress {
            bar: Mutex::new(None),
        })
    }

    fn with_bar(&self, phase: &str, len: u64, f: impl FnOnce(&indicatif::ProgressBar)) {
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_none_or(|(p, _)| p != phase) {
            if let Some((_, old)) = slot.take() {
                old.finish_and_clear();
            }
            let bar = indicatif::ProgressBar::new(len);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix:>7} {bar:40} {percent:>3}% eta {eta:<4} {msg}",
            ) {
                bar.set_style(style);
            }
            bar.set_prefix(phase.to_string());
            *slot = Some((phase.to_string(), bar));
        }
        if let Some((_, bar)) = slot.as_ref() {
            bar.set_length(len);
            f(bar);
        }
    }
}

impl Progress for TerminalProgress {
    fn phase(&self, name: &str, change: PhaseChange) {
        if change == PhaseChange::Started {
            return;
        }
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|(p, _)| p == name) {
            if let Some((_, bar)) = slot.take() {
                // The encode's bar stays on screen at 100 %; ComfyUI's goes.
                if name == "encode" && change == PhaseChange::Completed {
                    bar.finish();
                } else {
                    bar.finish_and_clear();
                }
            }
        }
    }

    fn comfyui(&self, value: u64, max: u64) {
        self.with_bar("comfyui", max, |b| {
            b.set_position(value);
            b.set_message(format!("{value}/{max} steps"));
        });
    }

    fn comfyui_chunks(&self, p: &ChunkProgress) {
        let per: Vec<String> = p
            .endpoints
            .iter()
            .map(|e| format!("{} {}+{}", e.url, e.chunks_done, e.in_flight))
            .collect();
        self.with_bar("comfyui", p.frames_total, |b| {
            b.set_position(p.frames_done);
            b.set_message(format!(
                "{}/{} chunks ({})",
                p.chunks_done,
                p.chunks_total,
                per.join(", ")
            ));
        });
    }

    fn encode(&self, p: EncodeProgress) {
        self.with_bar("encode", BAR_STEPS, |b| {
            b.set_position((p.fraction() * BAR_STEPS as f64).floor() as u64);
            b.set_message(if p.finished {
                format!("{} frames, audio muxed", p.frames_total)
            } else {
                format!("{}/{} frames", p.frames_done, p.frames_total)
            });
        });
    }
}

/// Reports to several reporters.
pub struct Both(pub Vec<Box<dyn Progress>>);

impl Progress for Both {
    fn run_started(&self, run_id: &str, workdir: &Path) {
        self.0.iter().for_each(|p| p.run_started(run_id, workdir));
    }
    fn phase(&self, name: &str, change: PhaseChange) {
        self.0.iter().for_each(|p| p.phase(name, change));
    }
    fn comfyui(&self, value: u64, max: u64) {
        self.0.iter().for_each(|p| p.comfyui(value, max));
    }
    fn comfyui_chunks(&self, c: &ChunkProgress) {
        self.0.iter().for_each(|p| p.comfyui_chunks(c));
    }
    fn encode(&self, e: EncodeProgress) {
        self.0.iter().for_each(|p| p.encode(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_reads_like_the_issue() {
        let s = Summary {
            run_id: "x".into(),
            final_path: "/w/final.mp4".into(),
            frames: 1539,
            duration_seconds: 61.56,
            width: 854,
            height: 480,
            bytes: 3_100_000,
            speed: 12.43,
            degraded: false,
            degraded_reason: None,
            exit_status: 0,
        };
        assert_eq!(
            s.line(),
            "final.mp4: 1539 frames, 61.56 s, 854×480, 3.1 MB, 12.4× real time"
        );
        let d = Summary {
            degraded: true,
            degraded_reason: Some("COMFYUI_UNAVAILABLE".into()),
            ..s
        };
        assert!(d.line().ends_with(", degraded: COMFYUI_UNAVAILABLE"));
        // A run that waited minutes on ComfyUI for 8 s of video: not "0.0×".
        let slow = Summary {
            speed: 0.0834,
            degraded: false,
            ..d.clone()
        };
        assert!(
            slow.line().ends_with(", 0.083× real time"),
            "{}",
            slow.line()
        );
        assert_eq!(speed_text(0.5), "0.50");
        assert_eq!(speed_text(0.00123), "0.0012");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_250_000_000), "1.2 GB");
    }

    #[test]
    fn json_events_have_their_documented_shape() {
        let v = serde_json::to_value(JsonEvent::Phase {
            phase: "encode".into(),
            status: PhaseChange::Skipped,
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event": "phase", "phase": "encode", "status": "skipped"})
        );
        let v = serde_json::to_value(JsonEvent::Progress(ProgressLine {
            phase: "comfyui".into(),
            fraction: 0.5,
            done: 1,
            total: 2,
            audio_samples_done: None,
            audio_samples_total: None,
        }))
        .unwrap();
        assert_eq!(v["event"], "progress");
        assert!(v.get("audio_samples_done").is_none());
    }
}
