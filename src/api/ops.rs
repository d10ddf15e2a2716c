//! The operations routes: ComfyUI health and start, install status and install.
//!
//! Install work belongs to `va install-test --json` and `va install`; the server runs those
//! subcommands of its own binary (bounded in time) and relays what they say. ComfyUI is
//! started as SPEC §7 says: the configured command (default `python main.py --listen
//! 127.0.0.1 --port 8188`) in the configured folder, a venv's python preferred, arguments as
//! argv (never a shell); then its strict health is awaited with a bound.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::config::{ComfyuiConfig, Config};
use super::error::{ApiError, ApiResult};
use crate::error::{Error, ErrorKind};

/// What a `va` subcommand left behind.
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `va <args>` (this binary) with a time bound; the child is killed when it runs over.
pub async fn run_va(cfg: &Config, args: &[&str], limit: Duration) -> ApiResult<Finished> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::internal(format!("cannot find the va binary: {e}")))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(base) = &cfg.va_state_dir {
        cmd.env("VA_STATE_DIR", base);
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::internal(format!("cannot run va {}: {e}", args.join(" "))))?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(Finished {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
        Ok(Err(e)) => Err(Error::internal(format!("va {}: {e}", args.join(" "))).into()),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal,
            format!(
                "va {} did not finish within {} s; stopped",
                args.join(" "),
                limit.as_secs()
            ),
        )),
    }
}

/// The error a failed `va` subcommand reported on its `error: CODE: message` line, else an
/// internal error naming the command and its last line.
pub fn subcommand_error(what: &str, f: &Finished) -> ApiError {
    let lines: Vec<&str> = f.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let error_line = lines.iter().rev().find_map(|l| l.strip_prefix("error: "));
    if let Some((code, message)) = error_line.and_then(|l| l.split_once(": ")) {
        if let Some(kind) = ErrorKind::ALL.iter().find(|k| k.code() == code) {
            // A usage error of the subcommand the server runs (e.g. `va install` without
            // COMFYUI_DIR in the server's environment) is a state of the server the request
            // cannot change: 409 with the subcommand's reason, not a server fault.
            let e = ApiError::from(Error::new(*kind, format!("{what}: {message}")));
            return if *kind == ErrorKind::Usage {
                e.with_status(StatusCode::CONFLICT)
            } else {
                e
            };
        }
    }
    let status = f
        .code
        .map_or("a signal".to_string(), |c| format!("exit status {c}"));
    let said = error_line.or(lines.last().copied()).unwrap_or("no output");
    Error::internal(format!("{what} failed ({status}): {said}")).into()
}

/// `GET /install/status`: the report of `va install-test --json`.
pub async fn install_status(cfg: &Config) -> ApiResult<Value> {
    let f = run_va(cfg, &["install-test", "--json"], Duration::from_secs(120)).await?;
    match serde_json::from_str::<Value>(f.stdout.trim()) {
        Ok(report) => Ok(json!({"ok": f.code == Some(0), "exit_status": f.code, "report": report})),
        Err(_) => Err(subcommand_error("va install-test --json", &f)),
    }
}

/// `POST /install`: runs `va install`.
pub async fn install(cfg: &Config, no_comfy_nodes: bool) -> ApiResult<Value> {
    let mut args = vec!["install"];
    if no_comfy_nodes {
        args.push("--no-comfy-nodes");
    }
    let limit = Duration::from_secs(cfg.install_timeout_seconds);
    let f = run_va(cfg, &args, limit).await?;
    if f.code != Some(0) {
        return Err(subcommand_error(&format!("va {}", args.join(" ")), &f));
    }
    let tail: Vec<&str> = f.stdout.lines().rev().take(50).collect();
    let output: Vec<&str> = tail.into_iter().rev().collect();
    Ok(json!({"ok": true, "exit_status": 0, "output": output}))
}

/// `GET /comfyui/health`: the strict health check of SPEC §6.
pub async fn comfyui_health(cfg: &Config) -> ApiResult<Value> {
    if cfg.skip_comfyui {
        return Ok(
            json!({"ok": false, "skipped": true, "url": cfg.comfyui.url, "system_stats": null}),
        );
    }
    let url = cfg.comfyui.url.clone();
    let stats = blocking_health(url.clone(), Duration::from_secs(5)).await?;
    Ok(json!({"ok": true, "skipped": false, "url": url, "system_stats": stats}))
}

async fn blocking_health(url: String, timeout: Duration) -> ApiResult<Value> {
    tokio::task::spawn_blocking(move || crate::comfy::health(&url, timeout))
        .await
        .map_err(|e| Error::internal(format!("health check task: {e}")))?
        .map_err(ApiError::from)
}

/// The program to run: for a plain `python`/`python3`, the venv's python in the ComfyUI
/// folder when there is one (`venv/bin/python`, `.venv/bin/python`,
/// `venv/Scripts/python.exe`).
pub fn comfyui_program(c: &ComfyuiConfig) -> PathBuf {
    if matches!(c.command.as_str(), "python" | "python3") {
        if let Some(cwd) = &c.cwd {
            for rel in [
                "venv/bin/python",
                ".venv/bin/python",
                "venv/Scripts/python.exe",
            ] {
                let p = cwd.join(rel);
                if p.is_file() {
                    return p;
                }
            }
        }
    }
    PathBuf::from(&c.command)
}

/// `POST /comfyui/start`: starts ComfyUI unless it is already healthy, and waits (bounded)
/// for its health. Its output goes to `<state>/logs/comfyui.log`.
pub async fn comfyui_start(cfg: &Config) -> ApiResult<Value> {
    let c = &cfg.comfyui;
    let failed = |why: String| -> ApiError {
        Error::new(ErrorKind::ComfyuiStartFailed, why)
            .with_hint("check comfyui.cwd/command/args in the server config and the ComfyUI log")
            .into()
    };
    if blocking_health(c.url.clone(), Duration::from_secs(2))
        .await
        .is_ok()
    {
        return Ok(json!({"started": false, "already_running": true, "url": c.url, "pid": null}));
    }
    if let Some(cwd) = &c.cwd {
        if !cwd.is_dir() {
            return Err(failed(format!(
                "comfyui.cwd {}: not a folder",
                cwd.display()
            )));
        }
    }
    let program = comfyui_program(c);
    let log_path = cfg.state_dir.join("logs").join("comfyui.log");
    let log = open_log(&log_path).map_err(|e| failed(format!("{}: {e}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| failed(format!("{}: {e}", log_path.display())))?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&c.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(false);
    if let Some(cwd) = &c.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(format!("cannot start {}: {e}", program.display())))?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(c.start_timeout_seconds);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(format!(
                "{} exited with {status} before ComfyUI answered{}",
                program.display(),
                last_line(&log_path)
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            )));
        }
        if blocking_health(c.url.clone(), Duration::from_secs(2))
            .await
            .is_ok()
        {
            // ComfyUI outlives this request (and the server); tokio reaps it when it ends.
            drop(child);
            return Ok(
                json!({"started": true, "already_running": false, "url": c.url, "pid": pid}),
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill().await;
            return Err(failed(format!(
                "no healthy answer from {} within {} s; the process was stopped",
                c.url, c.start_timeout_seconds
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(line.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comfy(command: &str, cwd: Option<PathBuf>) -> ComfyuiConfig {
        ComfyuiConfig {
            url: "http://127.0.0.1:8188".into(),
            cwd,
            command: command.into(),
            args: vec![],
            start_timeout_seconds: 1,
        }
    }

    #[test]
    fn a_venv_python_in_the_comfyui_folder_is_preferred() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().to_path_buf();
        assert_eq!(
            comfyui_program(&comfy("python", Some(cwd.clone()))),
            PathBuf::from("python")
        );
        std::fs::create_dir_all(cwd.join(".venv/bin")).unwrap();
        std::fs::write(cwd.join(".venv/bin/python"), "").unwrap();
        assert_eq!(
            comfyui_program(&comfy("python3", Some(cwd.clone()))),
            cwd.join(".venv/bin/python")
        );
        std::fs::create_dir_all(cwd.join("venv/bin")).unwrap();
        std::fs::write(cwd.join("venv/bin/python"), "").unwrap();
        assert_eq!(
            comfyui_program(&comfy("python", Some(cwd.clone()))),
            cwd.join("venv/bin/python")
        );
        // An explicit program is taken as it is.
        assert_eq!(
            comfyui_program(&comfy("/opt/py/bin/python3.11", Some(cwd))),
            PathBuf::from("/opt/py/bin/python3.11")
        );
    }

    #[test]
    fn subcommand_errors_keep_their_code() {
        let f = |stderr: &str| Finished {
            code: Some(22),
            stdout: String::new(),
            stderr: stderr.into(),
        };
        let e = subcommand_error(
            "va install",
            &f("note\nerror: DOWNLOAD_FAILED: https://x: 404\n"),
        );
        assert_eq!(
            (e.error.kind, e.status),
            (ErrorKind::DownloadFailed, StatusCode::BAD_GATEWAY)
        );
        assert!(
            e.error.message.starts_with("va install: https://x"),
            "{}",
            e.error.message
        );
        let e = subcommand_error(
            "va install",
            &f("error: unrecognized subcommand 'install'\n"),
        );
        assert_eq!(
            (e.error.kind, e.status),
            (ErrorKind::Internal, StatusCode::INTERNAL_SERVER_ERROR)
        );
        let e = subcommand_error(
            "va install",
            &f("error: USAGE: COMFYUI_DIR is not set: …\n"),
        );
        assert_eq!(
            (e.error.kind, e.status),
            (ErrorKind::Usage, StatusCode::CONFLICT)
        );
        assert!(
            e.error.message.contains("COMFYUI_DIR"),
            "{}",
            e.error.message
        );
    }
}
