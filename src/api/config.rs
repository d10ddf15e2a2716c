//! The server config `vidax.json` (SPEC §7): where it is found, what it may say, and the
//! checks that make a server safe to start (a key, existing roots, a runs root).
//!
//! Relative paths in the file resolve against the file's folder. Unknown keys are refused:
//! a misspelt `api_key` or `roots` must not silently fall back to a default.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// The resolved config of a running server.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    pub host: IpAddr,
    /// 0 picks a free port (the server prints the one it got).
    pub port: u16,
    pub api_key: String,
    /// The input roots, canonical (symlinks resolved), in the order given.
    pub roots: Vec<PathBuf>,
    /// Every workdir is created under it, canonical.
    pub runs_root: PathBuf,
    pub workers: usize,
    pub queue_limit: usize,
    pub comfyui: ComfyuiConfig,
    pub skip_comfyui: bool,
    /// `VA_STATE_DIR` for the server and its runs, when the config sets one.
    pub va_state_dir: Option<PathBuf>,
    /// The state dir (`<VA_STATE_DIR>/state`): the registry and the API's job store live here.
    pub state_dir: PathBuf,
    pub max_body_bytes: usize,
    pub install_timeout_seconds: u64,
    /// A connection must deliver a request's header within this (then it is closed).
    pub header_timeout_seconds: u64,
    /// A request's body must arrive whole within this (else 408).
    pub body_timeout_seconds: u64,
    /// Open connections, at most (lowered to what `RLIMIT_NOFILE` leaves, see `api::listen`).
    pub max_connections: usize,
    /// Open connections from one peer address, at most.
    pub max_connections_per_peer: usize,
}

/// How `POST /comfyui/start` starts ComfyUI.
#[derive(Debug, Clone)]
pub struct ComfyuiConfig {
    pub url: String,
    /// The ComfyUI folder (where `main.py` is); the process runs there.
    pub cwd: Option<PathBuf>,
    pub command: String,
    pub args: Vec<String>,
    pub start_timeout_seconds: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    host: Option<String>,
    port: Option<u16>,
    api_key: Option<String>,
    #[serde(default)]
    roots: Vec<PathBuf>,
    runs_root: Option<PathBuf>,
    workers: Option<usize>,
    queue_limit: Option<usize>,
    #[serde(default)]
    comfyui: ComfyuiFile,
    skip_comfyui: Option<bool>,
    state_dir: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    install_timeout_seconds: Option<u64>,
    header_timeout_seconds: Option<u64>,
    body_timeout_seconds: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_peer: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComfyuiFile {
    url: Option<String>,
    cwd: Option<PathBuf>,
    command: Option<String>,
    args: Option<Vec<String>>,
    start_timeout_seconds: Option<u64>,
}

pub const DEFAULT_PORT: u16 = 8787;
pub const DEFAULT_COMFYUI_URL: &str = "http://127.0.0.1:8188";
/// 1 MiB: a job JSON is a few hundred bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
pub const DEFAULT_WORKERS: usize = 1;
pub const DEFAULT_QUEUE_LIMIT: usize = 16;
pub const DEFAULT_INSTALL_TIMEOUT_SECONDS: u64 = 1800;
pub const DEFAULT_START_TIMEOUT_SECONDS: u64 = 120;
/// A client on loopback sends its header in well under a second.
pub const DEFAULT_HEADER_TIMEOUT_SECONDS: u64 = 10;
/// 1 MiB at a slow 35 kB/s.
pub const DEFAULT_BODY_TIMEOUT_SECONDS: u64 = 30;
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// On loopback every local client is one peer: this is the share one address may hold.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 64;

/// Every limit `vidax.json` sets, with its default: docs/SECURITY.md lists them, and a test
/// (`docs_check`) keeps the two equal.
pub const LIMITS: [(&str, u64); 9] = [
    ("max_body_bytes", DEFAULT_MAX_BODY_BYTES as u64),
    ("header_timeout_seconds", DEFAULT_HEADER_TIMEOUT_SECONDS),
    ("body_timeout_seconds", DEFAULT_BODY_TIMEOUT_SECONDS),
    ("max_connections", DEFAULT_MAX_CONNECTIONS as u64),
    (
        "max_connections_per_peer",
        DEFAULT_MAX_CONNECTIONS_PER_PEER as u64,
    ),
    ("workers", DEFAULT_WORKERS as u64),
    ("queue_limit", DEFAULT_QUEUE_LIMIT as u64),
    ("install_timeout_seconds", DEFAULT_INSTALL_TIMEOUT_SECONDS),
    (
        "comfyui.start_timeout_seconds",
        DEFAULT_START_TIMEOUT_SECONDS,
    ),
];

impl Config {
    /// Finds and reads the config: `explicit` (`--config`), else `VIDAX_CONFIG`, else
    /// `$VA_STATE_DIR/state/config/vidax.json`, else `config/vidax.json`.
    pub fn resolve(explicit: Option<&Path>) -> Result<Config> {
        let env = std::env::var_os("VIDAX_CONFIG").filter(|v| !v.is_empty());
        let candidates: Vec<PathBuf> = match (explicit, env) {
            (Some(p), _) => vec![p.to_path_buf()],
            (None, Some(p)) => vec![PathBuf::from(p)],
            (None, None) => vec![
                crate::files::state_dir().join("config").join("vidax.json"),
                PathBuf::from("config").join("vidax.json"),
            ],
        };
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::new(
                ErrorKind::InputNotFound,
                format!("no server config: looked for {}", looked.join(", ")),
            )
            .with_hint(
                "write a vidax.json (docs/VIDAX_API.md) and pass --config or set VIDAX_CONFIG",
            ));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?;
        let key_env = std::env::var("VIDAX_API_KEY").ok();
        Config::from_text(path, &text, key_env.as_deref())
    }

    /// Parses and checks the config text of the file at `path`; `key_env` is
    /// `VIDAX_API_KEY`, which wins over `api_key`.
    pub fn from_text(path: &Path, text: &str, key_env: Option<&str>) -> Result<Config> {
        let invalid = |field: &str, why: String| {
            Error::new(
                ErrorKind::ValidationFailed,
                format!("{}: {field}: {why}", path.display()),
            )
        };
        let file: ConfigFile = serde_json::from_str(text)
            .map_err(|e| Error::at_path(ErrorKind::ValidationFailed, path, e))?;
        let base = crate::job::job_folder(path);
        let resolve = |p: &Path| base.join(p);

        let api_key = key_env
            .filter(|k| !k.is_empty())
            .map(String::from)
            .or(file.api_key)
            .unwrap_or_default();
        if api_key.trim().is_empty() {
            return Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "{}: no API key configured: the server refuses to start without one",
                    path.display()
                ),
            )
            .with_hint("set api_key in the config or the VIDAX_API_KEY environment variable"));
        }
        let host_text = file.host.unwrap_or_else(|| "127.0.0.1".into());
        let host: IpAddr = if host_text == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            host_text
                .parse()
                .map_err(|e| invalid("host", format!("{host_text:?} is not an IP address ({e})")))?
        };
        if file.roots.is_empty() {
            return Err(invalid(
                "roots",
                "empty: list the folders inputs may come from".into(),
            ));
        }
        let mut roots = Vec::new();
        for (i, r) in file.roots.iter().enumerate() {
            let p = resolve(r);
            let canon = p
                .canonicalize()
                .map_err(|e| invalid(&format!("roots[{i}]"), format!("{}: {e}", p.display())))?;
            if !canon.is_dir() {
                return Err(invalid(
                    &format!("roots[{i}]"),
                    format!("{}: not a folder", p.display()),
                ));
            }
            roots.push(canon);
        }
        let va_state_dir = file.state_dir.as_deref().map(resolve);
        let state_dir = match &va_state_dir {
            Some(d) => d.join("state"),
            None => crate::files::state_dir(),
        };
        let runs_root = file
            .runs_root
            .as_deref()
            .map(resolve)
            .unwrap_or_else(|| state_dir.join("runs"));
        std::fs::create_dir_all(&runs_root)
            .map_err(|e| invalid("runs_root", format!("{}: {e}", runs_root.display())))?;
        let runs_root = runs_root
            .canonicalize()
            .map_err(|e| invalid("runs_root", format!("{}: {e}", runs_root.display())))?;
        let positive = |field: &str, v: Option<usize>, default: usize| match v {
            None => Ok(default),
            Some(0) => Err(invalid(field, "must be at least 1".into())),
            Some(n) => Ok(n),
        };
        let workers = positive("workers", file.workers, DEFAULT_WORKERS)?;
        let queue_limit = positive("queue_limit", file.queue_limit, DEFAULT_QUEUE_LIMIT)?;
        let max_body_bytes = positive(
            "max_body_bytes",
            file.max_body_bytes,
            DEFAULT_MAX_BODY_BYTES,
        )?;
        let seconds = |field: &str, v: Option<u64>, default: u64| {
            positive(field, v.map(|s| s as usize), default as usize).map(|s| s as u64)
        };
        let header_timeout_seconds = seconds(
            "header_timeout_seconds",
            file.header_timeout_seconds,
            DEFAULT_HEADER_TIMEOUT_SECONDS,
        )?;
        let body_timeout_seconds = seconds(
            "body_timeout_seconds",
            file.body_timeout_seconds,
            DEFAULT_BODY_TIMEOUT_SECONDS,
        )?;
        let max_connections = positive(
            "max_connections",
            file.max_connections,
            DEFAULT_MAX_CONNECTIONS,
        )?;
        let max_connections_per_peer = positive(
            "max_connections_per_peer",
            file.max_connections_per_peer,
            DEFAULT_MAX_CONNECTIONS_PER_PEER,
        )?;
        let url = file
            .comfyui
            .url
            .unwrap_or_else(|| DEFAULT_COMFYUI_URL.into());
        let port = comfyui_port(&url).map_err(|why| invalid("comfyui.url", why))?;
        let comfyui = ComfyuiConfig {
            cwd: file.comfyui.cwd.as_deref().map(resolve),
            command: file.comfyui.command.unwrap_or_else(|| "python".into()),
            args: file.comfyui.args.unwrap_or_else(|| {
                [
                    "main.py",
                    "--listen",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                ]
                .map(String::from)
                .to_vec()
            }),
            start_timeout_seconds: file
                .comfyui
                .start_timeout_seconds
                .unwrap_or(DEFAULT_START_TIMEOUT_SECONDS),
            url,
        };
        Ok(Config {
            source: path.to_path_buf(),
            host,
            port: file.port.unwrap_or(DEFAULT_PORT),
            api_key,
            roots,
            runs_root,
            workers,
            queue_limit,
            comfyui,
            skip_comfyui: file.skip_comfyui.unwrap_or(false),
            va_state_dir,
            state_dir,
            max_body_bytes,
            install_timeout_seconds: file
                .install_timeout_seconds
                .unwrap_or(DEFAULT_INSTALL_TIMEOUT_SECONDS),
            header_timeout_seconds,
            body_timeout_seconds,
            max_connections,
            max_connections_per_peer,
        })
    }
}

/// The port of an `http://host:port` ComfyUI URL (80 when none is given).
fn comfyui_port(url: &str) -> std::result::Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: expected http://host:port"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once(':') {
        Some((_, port)) => port
            .parse()
            .map_err(|_| format!("{url:?}: bad port {port:?}")),
        None => Ok(80),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str, key_env: Option<&str>) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        let path = dir.path().join("vidax.json");
        let c = Config::from_text(&path, text, key_env);
        drop(dir);
        c
    }

    #[test]
    fn no_key_refuses_to_start() {
        let e = cfg(r#"{"roots": ["in"], "runs_root": "runs"}"#, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.message.contains("no API key"), "{e}");
        let e = cfg(
            r#"{"api_key": " ", "roots": ["in"], "runs_root": "runs"}"#,
            Some(""),
        )
        .unwrap_err();
        assert!(e.message.contains("no API key"), "{e}");
    }

    #[test]
    fn env_key_wins_and_defaults_apply() {
        let c = cfg(
            r#"{"api_key": "file", "roots": ["in"], "runs_root": "runs"}"#,
            Some("env"),
        )
        .unwrap();
        assert_eq!(c.api_key, "env");
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!((c.port, c.workers, c.queue_limit), (8787, 1, 16));
        assert_eq!(
            c.comfyui.args,
            ["main.py", "--listen", "127.0.0.1", "--port", "8188"]
        );
        assert_eq!(c.comfyui.command, "python");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let e = cfg(r#"{"api_kye": "k", "roots": ["in"]}"#, None).unwrap_err();
        assert!(e.message.contains("api_kye"), "{e}");
        let e = cfg(r#"{"api_key": "k", "roots": []}"#, None).unwrap_err();
        assert!(e.message.contains("roots"), "{e}");
        let e = cfg(r#"{"api_key": "k", "roots": ["missing"]}"#, None).unwrap_err();
        assert!(e.message.contains("roots[0]"), "{e}");
        let e = cfg(
            r#"{"api_key": "k", "roots": ["in"], "runs_root": "r", "workers": 0}"#,
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("workers"), "{e}");
        let e = cfg(
            r#"{"api_key": "k", "roots": ["in"], "runs_root": "r", "host": "example.org"}"#,
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("host"), "{e}");
    }
}
