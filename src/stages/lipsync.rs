//! `lipsync`: an external lip-sync provider turns (video, audio) into `lipsync/output.mp4`
//! (SPEC §6, `docs/LIPSYNC_INTERFACE.md`). Providers are listed in `lipsync.providers.json`
//! (the state dir's `config/`, else the current directory's `config/`): a `command` run
//! without a shell from an argv template, or an `http` endpoint. Every wait is bounded by the
//! provider's `timeout_seconds`. Failures are returned as errors with `LIPSYNC_FAILED`; the
//! runner turns them into a degraded run that keeps the base video.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::job::Job;
use crate::record::manifest::{ErrorRecord, LipsyncSource, Manifest};
use crate::record::meta::{ExternalLipsync, ExternalStatus, LipsyncRecord};
use crate::record::PhaseName;

use super::comfyui::{self, Visual};
use super::compose::{self, Compositor};
use super::prepare::Prepared;
use super::run::{phase, skip, RunOptions};

/// The providers file name.
pub const PROVIDERS_FILE: &str = "lipsync.providers.json";
const DEFAULT_TIMEOUT: u64 = 600;

/// One provider as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    /// `argv[0]` run with the rest as arguments (no shell); `{video}`, `{audio}`, `{output}`
    /// replaced in every element.
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
    /// `POST url` with a multipart body (`video`, `audio` files); the answer body is the MP4.
    Http {
        url: String,
        headers: Vec<(String, String)>,
        timeout: Duration,
    },
}

/// What the main segment shows after the `lipsync` phase.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// ComfyUI's pictures, the provider's video, or `None` (the fallback).
    pub visual: Option<Visual>,
    pub source: LipsyncSource,
    /// The first failure that made the run degraded (ComfyUI's, else the provider's).
    pub degraded_reason: Option<String>,
}

/// The `lipsync` phase: with `lipsync.enable` and a `lipsync.provider`, the provider makes a
/// lip-synced video of the base video; skipped otherwise. A provider that fails leaves the
/// phase completed and the run degraded (`LIPSYNC_FAILED`), showing the base video.
pub fn run_phase(
    job: &Job,
    opts: &RunOptions,
    prepared: &Prepared,
    comfy: &comfyui::Outcome,
    centre: Option<(f64, f64)>,
    manifest: &mut Manifest,
) -> Result<Outcome> {
    let mut out = Outcome {
        visual: comfy.visual.clone(),
        source: if comfy.lipsync_inside {
            LipsyncSource::InsideComfy
        } else {
            LipsyncSource::Off
        },
        degraded_reason: comfy.degraded_reason.clone(),
    };
    let id = match (&job.lipsync.provider, job.lipsync.enable) {
        (Some(id), false) => {
            manifest.lipsync_meta = Some(LipsyncRecord::External(ExternalLipsync {
                provider: id.clone(),
                place: None,
                output: None,
                config: None,
                status: ExternalStatus::Ignored,
                reason: Some("lipsync.enable=false".into()),
                error: None,
            }));
            let why = format!("lipsync.enable=false: provider {id:?} ignored");
            skip(manifest, opts, PhaseName::Lipsync, &why)?;
            return Ok(out);
        }
        (None, enable) => {
            let why = if enable {
                "no external provider (lip-sync inside ComfyUI)"
            } else {
                "lipsync.enable=false"
            };
            skip(manifest, opts, PhaseName::Lipsync, why)?;
            return Ok(out);
        }
        (Some(id), true) => id,
    };
    let visual = out.visual.clone();
    let result = phase(manifest, opts, PhaseName::Lipsync, |m| {
        let mut meta = ExternalLipsync {
            provider: id.clone(),
            place: Some("external".into()),
            output: Some("lipsync/output.mp4".into()),
            config: None,
            status: ExternalStatus::Running,
            reason: None,
            error: None,
        };
        let r = external(job, opts, prepared, visual.as_ref(), centre, &mut meta);
        m.lipsync_meta = Some(LipsyncRecord::External(meta));
        Ok(r)
    })?;
    match result {
        Ok(v) => {
            out.visual = Some(v);
            out.source = LipsyncSource::External;
        }
        Err(e) => {
            tracing::warn!(stage = "lipsync", code = e.code(), "{}", e.message);
            manifest.add_warning(format!(
                "{}: {} (the encode uses the base video)",
                e.code(),
                e.message
            ));
            if let Some(LipsyncRecord::External(r)) = &mut manifest.lipsync_meta {
                r.error = Some(ErrorRecord::from(&e));
            }
            out.degraded_reason
                .get_or_insert_with(|| e.code().to_string());
        }
    }
    Ok(out)
}

/// The provider's turn: the base video (the main segment as it stands, with the end hold, and
/// the padded audio) goes to `lipsync/input.mp4`, the provider writes `lipsync/output.mp4`,
/// which must decode with at least the main segment's frames. `--resume` keeps an output that
/// does. `meta` (`lipsync_meta`) follows what happened: `config`, `status`.
fn external(
    job: &Job,
    opts: &RunOptions,
    prepared: &Prepared,
    visual: Option<&Visual>,
    centre: Option<(f64, f64)>,
    meta: &mut ExternalLipsync,
) -> Result<Visual> {
    let dir = opts.workdir.join("lipsync");
    let output = dir.join("output.mp4");
    let paths = config_paths(&opts.state_dir);
    if opts.resume && output.is_file() && compose::visual_video(job, prepared, &output).is_ok() {
        tracing::info!(stage = "lipsync", "resume: lipsync/output.mp4 reused");
        meta.status = ExternalStatus::Reused;
        return Ok(Visual::Video(output));
    }
    let (provider, file) = find_provider(&meta.provider, &paths)?;
    meta.config = Some(file.display().to_string());
    std::fs::create_dir_all(&dir).map_err(|e| Error::at_path(ErrorKind::Internal, &dir, e))?;
    let input = dir.join("input.mp4");
    let compositor = Compositor::for_run(job, prepared, visual, centre)?;
    super::encode::encode_with(job, prepared, compositor, &input, &crate::progress::Silent)?;
    run_provider(&provider, &input, &prepared.wav, &output)?;
    compose::visual_video(job, prepared, &output).map_err(|e| {
        Error::new(
            ErrorKind::LipsyncFailed,
            format!("provider output: {}", e.message),
        )
    })?;
    meta.status = ExternalStatus::Completed;
    Ok(Visual::Video(output))
}

/// The folders searched for [`PROVIDERS_FILE`], in order.
pub fn config_paths(state_dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![state_dir.join("config").join(PROVIDERS_FILE)];
    if let Ok(cwd) = std::env::current_dir() {
        v.push(cwd.join("config").join(PROVIDERS_FILE));
    }
    v
}

fn failed(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::LipsyncFailed, msg)
}

/// Finds provider `id` in the first providers file that exists.
pub fn find_provider(id: &str, paths: &[PathBuf]) -> Result<(Provider, PathBuf)> {
    let path = paths.iter().find(|p| p.is_file()).ok_or_else(|| {
        failed(format!(
            "lipsync.provider {id:?}: no {PROVIDERS_FILE} in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ))
    })?;
    let bad = |why: String| Error::at_path(ErrorKind::LipsyncFailed, path, why);
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let p = doc["providers"]
        .get(id)
        .ok_or_else(|| bad(format!("no provider {id:?} under \"providers\"")))?;
    let timeout = Duration::from_secs(
        p["timeout_seconds"]
            .as_u64()
            .unwrap_or(DEFAULT_TIMEOUT)
            .max(1),
    );
    let provider = match p["type"].as_str() {
        Some("command") => {
            let argv: Vec<String> = p["argv"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if argv.is_empty() || argv.len() != p["argv"].as_array().map_or(0, Vec::len) {
                return Err(bad(format!(
                    "providers.{id}.argv: must be a non-empty array of strings"
                )));
            }
            Provider::Command { argv, timeout }
        }
        Some("http") => {
            let url = p["url"]
                .as_str()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .ok_or_else(|| bad(format!("providers.{id}.url: must be an http(s) URL")))?;
            let headers = p["headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            Provider::Http {
                url: url.to_string(),
                headers,
                timeout,
            }
        }
        other => {
            return Err(bad(format!(
                "providers.{id}.type: must be \"command\" or \"http\" (got {})",
                other.map_or("nothing".into(), |o| format!("{o:?}"))
            )))
        }
    };
    Ok((provider, path.clone()))
}

/// Runs `provider` on `video` + `audio`, leaving the result at `output`. The output must
/// exist and be non-empty afterwards.
pub fn run_provider(provider: &Provider, video: &Path, audio: &Path, output: &Path) -> Result<()> {
    crate::comfy::off_runtime(|| run_provider_blocking(provider, video, audio, output))
}

fn run_provider_blocking(
    provider: &Provider,
    video: &Path,
    audio: &Path,
    output: &Path,
) -> Result<()> {
    let _ = std::fs::remove_file(output);
    match provider {
        Provider::Command { argv, timeout } => run_command(argv, *timeout, video, audio, output)?,
        Provider::Http {
            url,
            headers,
            timeout,
        } => run_http(url, headers, *timeout, video, audio, output)?,
    }
    match std::fs::metadata(output) {
        Ok(m) if m.len() > 0 => Ok(()),
        _ => Err(Error::at_path(
            ErrorKind::LipsyncFailed,
            output,
            "the provider finished but left no output",
        )),
    }
}

fn run_command(
    argv: &[String],
    timeout: Duration,
    video: &Path,
    audio: &Path,
    output: &Path,
) -> Result<()> {
    let fill = |a: &str| {
        a.replace("{video}", &video.to_string_lossy())
            .replace("{audio}", &audio.to_string_lossy())
            .replace("{output}", &output.to_string_lossy())
    };
    let args: Vec<String> = argv.iter().map(|a| fill(a)).collect();
    let log = output.with_file_name("provider.log");
    let stderr =
        std::fs::File::create(&log).map_err(|e| Error::at_path(ErrorKind::Internal, &log, e))?;
    let mut child = std::process::Command::new(&args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| failed(format!("cannot start provider command {:?}: {e}", args[0])))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let last = tail
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                return Err(failed(format!(
                    "provider command {:?} exited with {status}: {last}",
                    args[0]
                )));
            }
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "provider command {:?} did not finish within {} s (killed)",
                    args[0],
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(failed(format!("waiting for provider command: {e}"))),
        }
    }
}

fn run_http(
    url: &str,
    headers: &[(String, String)],
    timeout: Duration,
    video: &Path,
    audio: &Path,
    output: &Path,
) -> Result<()> {
    let boundary = "vidax-lipsync-boundary-7d1f3a";
    let mut body = Vec::new();
    for (field, path) in [("video", video), ("audio", audio)] {
        let data = std::fs::read(path).map_err(|e| Error::at_path(ErrorKind::Internal, path, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
    let mut req = client
        .post(url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req
        .send()
        .map_err(|e| failed(format!("provider POST {url}: {e}")))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .map_err(|e| failed(format!("provider POST {url}: answer cut ({e})")))?;
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        return Err(failed(format!(
            "provider POST {url} answered {status}: {text}"
        )));
    }
    crate::record::write_atomic(output, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> Vec<PathBuf> {
        let p = dir.join(PROVIDERS_FILE);
        std::fs::write(&p, text).unwrap();
        vec![dir.join("missing.json"), p]
    }

    #[test]
    fn providers_are_read_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let paths = write(
            d.path(),
            r#"{"providers": {"cp": {"type": "command", "argv": ["cp", "{video}", "{output}"], "timeout_seconds": 5},
                "api": {"type": "http", "url": "http://127.0.0.1:1/x", "headers": {"X-Key": "k"}},
                "bad": {"type": "ftp"}}}"#,
        );
        let (p, _) = find_provider("cp", &paths).unwrap();
        assert_eq!(
            p,
            Provider::Command {
                argv: vec!["cp".into(), "{video}".into(), "{output}".into()],
                timeout: Duration::from_secs(5)
            }
        );
        let (p, _) = find_provider("api", &paths).unwrap();
        assert!(matches!(p, Provider::Http { ref headers, .. } if headers.len() == 1));
        let e = find_provider("bad", &paths).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LipsyncFailed);
        assert!(e.message.contains("must be \"command\" or \"http\""));
        assert!(find_provider("nope", &paths)
            .unwrap_err()
            .message
            .contains("no provider \"nope\""));
    }

    #[test]
    fn a_command_runs_without_a_shell_and_its_failures_and_timeouts_are_lipsync_failed() {
        let d = tempfile::tempdir().unwrap();
        let (v, a, o) = (
            d.path().join("v.mp4"),
            d.path().join("a.wav"),
            d.path().join("out.mp4"),
        );
        std::fs::write(&v, b"video").unwrap();
        std::fs::write(&a, b"audio").unwrap();
        let cp = Provider::Command {
            argv: vec!["cp".into(), "{video}".into(), "{output}".into()],
            timeout: Duration::from_secs(10),
        };
        run_provider(&cp, &v, &a, &o).unwrap();
        assert_eq!(std::fs::read(&o).unwrap(), b"video");
        // No shell: the `;` is an argument, not a command separator.
        let no_shell = Provider::Command {
            argv: vec!["echo".into(), "x; touch {output}".into()],
            timeout: Duration::from_secs(10),
        };
        let e = run_provider(&no_shell, &v, &a, &o).unwrap_err();
        assert!(e.message.contains("left no output"), "{}", e.message);
        let fails = Provider::Command {
            argv: vec!["false".into()],
            timeout: Duration::from_secs(10),
        };
        assert!(run_provider(&fails, &v, &a, &o)
            .unwrap_err()
            .message
            .contains("exited with"));
        let slow = Provider::Command {
            argv: vec!["sleep".into(), "30".into()],
            timeout: Duration::from_secs(1),
        };
        let started = Instant::now();
        let e = run_provider(&slow, &v, &a, &o).unwrap_err();
        assert!(e.message.contains("did not finish within 1 s"));
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
