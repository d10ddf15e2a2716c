//! The VIDAX HTTP API (`va serve`, SPEC §7; docs/VIDAX_API.md, docs/SECURITY.md).
//!
//! An axum server over the [`jobs`] table and its worker pool. This module owns the router,
//! the key check and the limits every request passes; [`routes`] has the handlers, [`ops`]
//! the ComfyUI and install operations, [`paths`] the confinement of input paths, [`config`]
//! the server config. Runs themselves happen in child `va run` processes, never in here.

pub mod config;
pub mod error;
pub mod jobs;
pub mod listen;
pub mod ops;
pub mod paths;
mod routes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;

use self::config::Config;
use self::error::ApiError;
use self::jobs::Jobs;
use self::paths::Roots;
use crate::error::{Error, ErrorKind, Result};

/// The OpenAPI document served at `GET /openapi.json` (also in docs/VIDAX_API.md).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route: method and path (axum's `:param` syntax). The router is built from this
/// list and a test holds the OpenAPI document to it.
pub const ROUTES: [(&str, &str); 15] = [
    ("GET", "/health"),
    ("GET", "/openapi.json"),
    ("GET", "/install/status"),
    ("POST", "/install"),
    ("GET", "/comfyui/health"),
    ("POST", "/comfyui/start"),
    ("POST", "/produce"),
    ("GET", "/jobs"),
    ("POST", "/jobs"),
    ("GET", "/jobs/:id"),
    ("DELETE", "/jobs/:id"),
    ("POST", "/jobs/:id/start"),
    ("POST", "/jobs/:id/resume"),
    ("GET", "/jobs/:id/manifest"),
    ("GET", "/jobs/:id/logs"),
];

/// The shared state of the server.
pub struct App {
    pub cfg: Arc<Config>,
    pub jobs: Arc<Jobs>,
    pub roots: Roots,
    /// One install and one ComfyUI start at a time.
    pub install_busy: tokio::sync::Mutex<()>,
    pub comfyui_busy: tokio::sync::Mutex<()>,
    key_digest: [u8; 32],
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// Compares the given key with the configured one in constant time: both are hashed first
/// (so neither length nor content shortcuts the comparison), then every byte is compared.
fn key_matches(expected: &[u8; 32], given: &[u8]) -> bool {
    let given = digest(given);
    expected
        .iter()
        .zip(given.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn method_router(method: &str, path: &str) -> MethodRouter<Arc<App>> {
    use routes as r;
    match (method, path) {
        ("GET", "/health") => get(r::health),
        ("GET", "/openapi.json") => get(r::openapi),
        ("GET", "/install/status") => get(r::install_status),
        ("POST", "/install") => post(r::install),
        ("GET", "/comfyui/health") => get(r::comfyui_health),
        ("POST", "/comfyui/start") => post(r::comfyui_start),
        ("POST", "/produce") => post(r::produce),
        ("GET", "/jobs") => get(r::list_jobs),
        ("POST", "/jobs") => post(r::create_job),
        ("GET", "/jobs/:id") => get(r::get_job),
        ("DELETE", "/jobs/:id") => delete(r::cancel_job),
        ("POST", "/jobs/:id/start") => post(r::start_job),
        ("POST", "/jobs/:id/resume") => post(r::resume_job),
        ("GET", "/jobs/:id/manifest") => get(r::manifest),
        ("GET", "/jobs/:id/logs") => get(r::logs),
        _ => MethodRouter::new(),
    }
}

/// The router with its key check, body limit and JSON error answers.
pub fn router(app: Arc<App>) -> Router {
    let mut by_path: BTreeMap<&str, MethodRouter<Arc<App>>> = BTreeMap::new();
    for (method, path) in ROUTES {
        let mr = method_router(method, path);
        let merged = match by_path.remove(path) {
            Some(existing) => existing.merge(mr),
            None => mr,
        };
        by_path.insert(path, merged);
    }
    let mut router = Router::new();
    for (path, mr) in by_path {
        router = router.route(path, mr);
    }
    router
        .fallback(routes::no_route)
        .layer(DefaultBodyLimit::max(app.cfg.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            read_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            require_key,
        ))
        .layer(axum::middleware::map_response(json_method_not_allowed))
        .with_state(app)
}

/// Every route but `GET /health` needs the `X-API-Key`.
async fn require_key(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET && req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given = req.headers().get("x-api-key").map(|v| v.as_bytes());
    match given {
        Some(k) if key_matches(&app.key_digest, k) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Usage,
            "X-API-Key is wrong",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Usage,
            "X-API-Key header missing",
        )
        .into_response(),
    }
}

/// Reads a (keyed) request's body whole within `body_timeout_seconds` and `max_body_bytes`
/// before a handler sees it: a client that trickles its body gets 408 and the connection is
/// closed; one over the size gets 413.
async fn read_body(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let limit = app.cfg.max_body_bytes;
    let secs = app.cfg.body_timeout_seconds;
    let read = axum::body::to_bytes(body, limit);
    let bytes = match tokio::time::timeout(std::time::Duration::from_secs(secs), read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorKind::ValidationFailed,
                    "request body too large",
                )
                .into_response()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::ValidationFailed,
                    format!("cannot read the request body: {e}"),
                )
                .into_response()
            };
        }
        Err(_) => {
            let mut resp = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorKind::Usage,
                format!("the request body did not arrive within body_timeout_seconds = {secs}"),
            )
            .into_response();
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return resp;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// axum answers a wrong method with an empty 405; clients get the JSON error body instead.
async fn json_method_not_allowed(resp: Response) -> Response {
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && resp.headers().get(header::CONTENT_TYPE).is_none()
    {
        let allow = resp.headers().get(header::ALLOW).cloned();
        let mut out = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Usage,
            "method not allowed on this route",
        )
        .into_response();
        if let Some(a) = allow {
            out.headers_mut().insert(header::ALLOW, a);
        }
        return out;
    }
    resp
}

/// Runs the server until SIGINT/SIGTERM. Refuses to start without a key (the config checks
/// that) and when another server uses the same state dir.
pub fn serve(cfg: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("async runtime: {e}")))?;
    let result = runtime.block_on(serve_async(cfg));
    // Log follows and subcommands must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

async fn serve_async(cfg: Config) -> Result<()> {
    let cfg = Arc::new(cfg);
    let _server_lock = lock_state(&cfg)?;
    if !cfg.host.is_loopback() {
        tracing::warn!(
            host = %cfg.host,
            "va serve binds {}: reachable from other machines; keep the API key secret and prefer 127.0.0.1 behind a proxy",
            cfg.host
        );
        eprintln!(
            "warning: va serve binds {} (not loopback): the API is reachable from other machines",
            cfg.host
        );
    }
    if cfg.api_key.len() < 16 {
        eprintln!("warning: the API key is shorter than 16 characters");
    }
    let jobs = Jobs::open(Arc::clone(&cfg))?;
    jobs.start_workers();
    let app = Arc::new(App {
        roots: Roots::new(cfg.roots.clone()),
        jobs,
        install_busy: tokio::sync::Mutex::new(()),
        comfyui_busy: tokio::sync::Mutex::new(()),
        key_digest: digest(cfg.api_key.as_bytes()),
        cfg: Arc::clone(&cfg),
    });
    let addr = SocketAddr::new(cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(ErrorKind::Usage, format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("listener address: {e}")))?;
    // The first line of stdout: scripts (and the tests) read the port from it.
    println!("va serve: listening on http://{local}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let limits = listen::Limits::of(&cfg);
    if limits.max_connections < cfg.max_connections {
        tracing::warn!(
            max_connections = cfg.max_connections,
            "RLIMIT_NOFILE leaves room for {} connections: the cap is lowered to that",
            limits.max_connections
        );
    }
    let server = listen::serve(listener, router(app), limits);
    tokio::select! {
        () = server => {}
        () = shutdown_signal() => {
            eprintln!("va serve: stopping; running jobs stop and become interrupted");
        }
    }
    Ok(())
}

/// One server per state dir: two would run each other's queued jobs.
fn lock_state(cfg: &Config) -> Result<crate::files::FileLock> {
    let dir = cfg.state_dir.join("api");
    std::fs::create_dir_all(&dir).map_err(|e| Error::at_path(ErrorKind::Internal, &dir, e))?;
    let path = dir.join("server.lock");
    crate::files::FileLock::try_exclusive(&path)?.ok_or_else(|| {
        Error::at_path(
            ErrorKind::Usage,
            &path,
            "another va serve uses this state dir",
        )
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_compare() {
        let d = digest(b"secret-key");
        assert!(key_matches(&d, b"secret-key"));
        assert!(!key_matches(&d, b"secret-kez"));
        assert!(!key_matches(&d, b"secret-key "));
        assert!(!key_matches(&d, b""));
    }

    /// Every route is in the OpenAPI document, and the document has no other operation.
    #[test]
    fn openapi_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let routes: std::collections::BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.replace(":id", "{id}")))
            .collect();
        assert_eq!(documented, routes);
    }

    /// docs/VIDAX_API.md carries the same OpenAPI document.
    #[test]
    fn docs_carry_the_openapi_document() {
        let md = include_str!("../../docs/VIDAX_API.md");
        let start = md
            .find("```json openapi")
            .expect("docs/VIDAX_API.md: ```json openapi block");
        let rest = &md[start..];
        let body_start = rest.find('\n').expect("block body") + 1;
        let body_end = rest[body_start..].find("\n```").expect("block end") + body_start;
        let in_docs: serde_json::Value =
            serde_json::from_str(&rest[body_start..body_end]).expect("docs block is JSON");
        let served: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json");
        assert_eq!(
            in_docs, served,
            "docs/VIDAX_API.md and src/api/openapi.json differ"
        );
    }

    /// The server stands on the library: no file of `src/api/` names the command line
    /// (issue 12; it used to fill `cli::run::ProduceArgs` from JSON).
    #[test]
    fn the_server_does_not_import_the_command_line() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        // Spelled in pieces, so that this file does not match itself.
        let needles = [
            ["crate", "cli"].join("::"),
            ["super", "super", "cli"].join("::"),
            ["vidax", "cli"].join("::"),
        ];
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for n in &needles {
                    assert!(!text.contains(n.as_str()), "{} uses {n}", path.display());
                }
                read += 1;
            }
        }
        assert!(read >= 5, "read {read} files of {}", dir.display());
    }
}
