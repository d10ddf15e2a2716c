//! ComfyUI over HTTP (SPEC §6): the client ([`client`]), the graphs it submits ([`graph`]) and
//! the reading of what comes back ([`outputs`]). The stage that drives them per run is
//! `stages::comfyui`; nothing here knows about workdirs or manifests.

pub mod client;
pub mod graph;
pub mod outputs;

use std::time::Duration;

use crate::error::{Error, Result};

/// Strict health, blocking (for commands outside a run, such as `va doctor`):
/// `GET /system_stats` must answer 200 with a body that has `system` and `devices`, and
/// `GET /object_info` must answer 200. Anything else is COMFYUI_UNAVAILABLE. Returns the
/// `/system_stats` body. Must not be called from inside a tokio runtime.
pub fn health(url: &str, timeout: Duration) -> Result<serde_json::Value> {
    let rt = runtime()?;
    let client = client::Client::new(url, "vidax-health")?;
    rt.block_on(async {
        match tokio::time::timeout(timeout, client.health()).await {
            Ok(r) => r.map(|(stats, _)| stats),
            Err(_) => Err(Error::new(
                crate::error::ErrorKind::ComfyuiUnavailable,
                format!("ComfyUI at {}: no answer within {timeout:?}", client.base),
            )),
        }
    })
}

/// A current-thread tokio runtime for the blocking callers.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("tokio runtime: {e}")))
}
