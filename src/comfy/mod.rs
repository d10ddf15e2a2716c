//! ComfyUI over HTTP (SPEC §6): the client ([`client`]), the graphs it submits ([`graph`]) and
//! the reading of what comes back ([`outputs`], and the nodes' own reports: [`report`]). The stage that drives them per run is
//! `stages::comfyui`; nothing here knows about workdirs or manifests.

pub mod client;
pub mod graph;
pub mod outputs;
pub mod report;

use std::time::Duration;

use crate::error::{Error, Result};

/// Strict health, blocking (for commands outside a run, such as `va doctor`):
/// `GET /system_stats` must answer 200 with a body that has `system` and `devices`, and
/// `GET /object_info` must answer 200. Anything else is COMFYUI_UNAVAILABLE (a body over the
/// default `limits.max_comfyui_json_bytes`: COMFYUI_BAD_RESPONSE). Returns the
/// `/system_stats` body.
pub fn health(url: &str, timeout: Duration) -> Result<serde_json::Value> {
    blocking(url, timeout, |c| async move {
        c.health().await.map(|(stats, _)| stats)
    })
}

/// Whether the server at `url` has loaded the node `class` (`GET /object_info/<class>`),
/// blocking; `false` for any failure.
pub fn has_class(url: &str, class: &str, timeout: Duration) -> bool {
    blocking(url, timeout, |c| async move {
        c.has_class(class).await.map_err(|f| f.error)
    })
    .unwrap_or(false)
}

/// Runs `f` on a fresh client (the default bounds) for `url` within `timeout`, blocking.
fn blocking<T: Send, F>(
    url: &str,
    timeout: Duration,
    f: impl FnOnce(client::Client) -> F + Send,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    off_runtime(|| {
        let rt = runtime()?;
        let client = client::Client::new(url, "vidax-health", client::Bounds::default())?;
        let base = client.base.clone();
        rt.block_on(async {
            match tokio::time::timeout(timeout, f(client)).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    crate::error::ErrorKind::ComfyuiUnavailable,
                    format!("ComfyUI at {base}: no answer within {timeout:?}"),
                )),
            }
        })
    })
}

/// A current-thread tokio runtime for the blocking callers.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("tokio runtime: {e}")))
}

/// Runs `f` where blocking is allowed: directly, or on a scoped thread of its own when the
/// caller is inside a tokio runtime (an API server's worker), where `block_on` and blocking
/// HTTP clients would panic.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_health_works_from_inside_a_runtime() {
        // Nothing listens on a just-closed port: the answer is COMFYUI_UNAVAILABLE, not a
        // panic about blocking inside a runtime.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let rt = runtime().unwrap();
        let e = rt
            .block_on(async { health(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5)) })
            .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::ComfyuiUnavailable);
    }
}
