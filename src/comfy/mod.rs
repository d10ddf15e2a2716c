//! The ComfyUI HTTP client. This issue brings the strict health check only; graph
//! submission, progress and output collection build on it.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// Strict health: `GET /system_stats` must answer 200 with a body that has `system` and
/// `devices`, and `GET /object_info` must answer 200. Anything else is COMFYUI_UNAVAILABLE.
pub fn health(url: &str, timeout: Duration) -> Result<serde_json::Value> {
    let base = url.trim_end_matches('/');
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("HTTP client: {e}")))?;
    let unavailable = |what: String| {
        Error::new(ErrorKind::ComfyuiUnavailable, format!("ComfyUI at {base}: {what}"))
            .with_hint("start ComfyUI, or pass --no-comfyui / set comfyui.enable=false for the diagnostic path")
    };
    let resp = client
        .get(format!("{base}/system_stats"))
        .send()
        .map_err(|e| unavailable(format!("GET /system_stats failed ({e})")))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(unavailable(format!("GET /system_stats answered {status}")));
    }
    let body: serde_json::Value = resp
        .json()
        .map_err(|e| unavailable(format!("GET /system_stats body is not JSON ({e})")))?;
    if !body.get("system").is_some_and(|s| s.is_object())
        || !body.get("devices").is_some_and(|d| d.is_array())
    {
        return Err(unavailable(
            "GET /system_stats body lacks \"system\"/\"devices\"".into(),
        ));
    }
    let resp = client
        .get(format!("{base}/object_info"))
        .send()
        .map_err(|e| unavailable(format!("GET /object_info failed ({e})")))?;
    if !resp.status().is_success() {
        return Err(unavailable(format!(
            "GET /object_info answered {}",
            resp.status()
        )));
    }
    Ok(body)
}
