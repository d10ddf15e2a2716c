//! The HTTP and websocket client for one ComfyUI server (reqwest + tokio).
//!
//! Every request has its own bound ([`REQUEST_TIMEOUT`]); callers add the job's overall
//! deadline on top. Failures carry whether they are transient (no answer, a reset, a 5xx: worth
//! a retry) or an answer that will not change (a 400, a malformed body).

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, ErrorKind};

/// The bound of one request (a `/view` of one frame included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed exchange with the server.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: Error,
    /// Worth a retry: the server did not answer, reset the connection, or answered 5xx.
    pub transient: bool,
    /// ComfyUI's `node_errors` of a rejected graph (else null).
    pub node_errors: Value,
}

impl Failure {
    fn transient(msg: String) -> Failure {
        Failure {
            error: Error::new(ErrorKind::ComfyuiBadResponse, msg),
            transient: true,
            node_errors: Value::Null,
        }
    }

    /// A non-2xx answer: transient for a 5xx, else `kind`.
    fn status(status: reqwest::StatusCode, msg: String, kind: ErrorKind) -> Failure {
        if status.is_server_error() {
            Failure::transient(msg)
        } else {
            Failure::answer(kind, msg)
        }
    }

    fn answer(kind: ErrorKind, msg: String) -> Failure {
        Failure {
            error: Error::new(kind, msg),
            transient: false,
            node_errors: Value::Null,
        }
    }
}

pub type Fallible<T> = std::result::Result<T, Failure>;

/// What `POST /prompt` came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Posted {
    /// 200 with `{"prompt_id", "number", "node_errors"}`.
    Accepted { number: i64 },
    /// No usable answer (connection dropped, body cut): the server may or may not have queued
    /// the prompt; the caller must look before posting again.
    Lost(String),
}

/// A progress event from `/ws` for our prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    Progress {
        value: u64,
        max: u64,
    },
    /// `executing` with `node: null` (or `execution_success`/`execution_error`): the prompt
    /// finished; `/history` has the result.
    Finished,
    Other,
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Clone)]
pub struct Client {
    pub base: String,
    pub client_id: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(url: &str, client_id: &str) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        Ok(Client {
            base: url.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unavailable(&self, what: String) -> Error {
        Error::new(ErrorKind::ComfyuiUnavailable, format!("ComfyUI at {}: {what}", self.base))
            .with_hint("start ComfyUI, or pass --no-comfyui / set comfyui.enable=false for the diagnostic path")
    }

    /// Strict health: `GET /system_stats` answers 200 with `system` and `devices`, and
    /// `GET /object_info` answers 200 with an object. Returns both bodies; anything else is
    /// `COMFYUI_UNAVAILABLE`.
    pub async fn health(&self) -> Result<(Value, Value), Error> {
        let stats: Value = self
            .get_json("/system_stats")
            .await
            .map_err(|f| self.unavailable(f.error.message))?;
        if !stats.get("system").is_some_and(Value::is_object)
            || !stats.get("devices").is_some_and(Value::is_array)
        {
            return Err(
                self.unavailable("GET /system_stats body lacks \"system\"/\"devices\"".into())
            );
        }
        let info = self
            .get_json("/object_info")
            .await
            .map_err(|f| self.unavailable(f.error.message))?;
        if !info.is_object() {
            return Err(self.unavailable("GET /object_info body is not an object".into()));
        }
        Ok((stats, info))
    }

    async fn get_json(&self, path: &str) -> Fallible<Value> {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| Failure::transient(format!("GET {path} failed ({e})")))?;
        let status = resp.status();
        if !status.is_success() {
            let f = format!("GET {path} answered {status}");
            return Err(Failure::status(status, f, ErrorKind::ComfyuiBadResponse));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::transient(format!("GET {path}: body cut ({e})")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::answer(
                ErrorKind::ComfyuiBadResponse,
                format!("GET {path}: body is not JSON ({e})"),
            )
        })
    }

    /// `POST /upload/image` (multipart `image`, `overwrite=true`, `type=input`): returns the
    /// name the server stored the file under. Audio and video files are accepted too.
    pub async fn upload(&self, file: &Path, name: &str) -> Fallible<String> {
        let data = tokio::fs::read(file).await.map_err(|e| {
            Failure::answer(ErrorKind::InputNotFound, format!("{}: {e}", file.display()))
        })?;
        let boundary = format!("vidax-{:016x}", data.len() as u64 ^ 0x5eed_b0da_1234_5678);
        let mut body = Vec::with_capacity(data.len() + 512);
        for (k, v) in [("overwrite", "true"), ("type", "input"), ("subfolder", "")] {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let resp = self
            .http
            .post(self.url("/upload/image"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::transient(format!("POST /upload/image failed ({e})")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let f = format!("POST /upload/image answered {status}: {}", clip(&text));
            return Err(Failure::status(status, f, ErrorKind::ComfyuiBadResponse));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let stored = v["name"].as_str().ok_or_else(|| {
            Failure::answer(
                ErrorKind::ComfyuiBadResponse,
                format!("POST /upload/image: no \"name\" in {}", clip(&text)),
            )
        })?;
        Ok(match v["subfolder"].as_str() {
            Some(s) if !s.is_empty() => format!("{s}/{stored}"),
            _ => stored.to_string(),
        })
    }

    /// `POST /prompt` with our own `prompt_id` and `client_id`. A 400 is the server's verdict
    /// on the graph (`error.message` and `node_errors` kept); a dropped answer is
    /// [`Posted::Lost`], never a failure, so the caller can look before posting again.
    pub async fn post_prompt(&self, graph: &Value, prompt_id: &str) -> Fallible<Posted> {
        let body = serde_json::json!({
            "prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id,
        });
        let resp = match self.http.post(self.url("/prompt")).json(&body).send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(Failure::transient(format!(
                    "POST /prompt: cannot connect ({e})"
                )))
            }
            Err(e) => return Ok(Posted::Lost(format!("POST /prompt: no answer ({e})"))),
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Ok(Posted::Lost(format!("POST /prompt: answer cut ({e})"))),
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            if v["prompt_id"].as_str().is_some_and(|id| id != prompt_id) {
                return Err(Failure::answer(
                    ErrorKind::ComfyuiBadResponse,
                    format!(
                        "POST /prompt answered prompt_id {} for our {prompt_id}",
                        v["prompt_id"]
                    ),
                ));
            }
            return Ok(Posted::Accepted {
                number: v["number"].as_i64().unwrap_or(-1),
            });
        }
        if status.is_server_error() {
            return Err(Failure::transient(format!(
                "POST /prompt answered {status}"
            )));
        }
        let msg = v["error"]["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| clip(&String::from_utf8_lossy(&bytes)));
        let mut f = Failure::answer(
            ErrorKind::ComfyuiBadResponse,
            format!(
                "ComfyUI rejected the graph ({status}): {msg}{}",
                node_errors_line(&v["node_errors"])
            ),
        );
        f.node_errors = v["node_errors"].clone();
        Err(f)
    }

    /// `GET /history/<id>`: the entry once the prompt has finished, `None` while `{}`.
    pub async fn history(&self, prompt_id: &str) -> Fallible<Option<Value>> {
        let v = self.get_json(&format!("/history/{prompt_id}")).await?;
        Ok(v.get(prompt_id).cloned())
    }

    /// Whether `/queue` lists the prompt as running or pending.
    pub async fn queued(&self, prompt_id: &str) -> Fallible<bool> {
        let q = self.get_json("/queue").await?;
        let listed = |key: &str| {
            q[key].as_array().is_some_and(|items| {
                items.iter().any(|item| {
                    item.as_array()
                        .is_some_and(|a| a.iter().take(3).any(|x| x.as_str() == Some(prompt_id)))
                })
            })
        };
        Ok(listed("queue_running") || listed("queue_pending"))
    }

    /// Streams `GET /view?filename=&subfolder=&type=` into `dest` (through a temp name, renamed
    /// when complete); returns the bytes written.
    pub async fn view_to_file(&self, f: &super::outputs::OutputFile, dest: &Path) -> Fallible<u64> {
        let what = format!("GET /view {}", f.filename);
        let mut resp = self
            .http
            .get(self.url("/view"))
            .query(&[
                ("filename", f.filename.as_str()),
                ("subfolder", f.subfolder.as_str()),
                ("type", f.kind.as_str()),
            ])
            .send()
            .await
            .map_err(|e| Failure::transient(format!("{what} failed ({e})")))?;
        let status = resp.status();
        if !status.is_success() {
            let m = format!("{what} answered {status}");
            return Err(Failure::status(status, m, ErrorKind::ComfyuiOutputsMissing));
        }
        let tmp = dest.with_extension("part");
        let io = |e: std::io::Error| {
            Failure::answer(ErrorKind::Internal, format!("{}: {e}", tmp.display()))
        };
        let mut out = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut n = 0u64;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    out.write_all(&c).await.map_err(io)?;
                    n += c.len() as u64;
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(Failure::transient(format!("{what}: body cut ({e})")));
                }
            }
        }
        out.flush().await.map_err(io)?;
        drop(out);
        tokio::fs::rename(&tmp, dest).await.map_err(io)?;
        Ok(n)
    }

    /// Opens `/ws?clientId=<id>` (events go only to the client that submitted, so this comes
    /// before the POST). `None` when the socket cannot be opened: the wait then polls.
    pub async fn open_ws(&self) -> Option<WsStream> {
        let ws_url = self
            .base
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let url = format!("{ws_url}/ws?clientId={}", self.client_id);
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url)).await {
            Ok(Ok((ws, _))) => Some(ws),
            Ok(Err(e)) => {
                tracing::warn!(
                    stage = "comfyui",
                    "websocket not available ({e}); polling /history"
                );
                None
            }
            Err(_) => None,
        }
    }
}

/// Reads the next event for `prompt_id` from the socket; `None` when the socket closed.
pub async fn next_event(ws: &mut WsStream, prompt_id: &str) -> Option<WsEvent> {
    loop {
        let msg = ws.next().await?.ok()?;
        let text = match msg {
            tokio_tungstenite::tungstenite::Message::Text(t) => t,
            tokio_tungstenite::tungstenite::Message::Close(_) => return None,
            // Binary frames are previews; pings are answered by the library.
            _ => continue,
        };
        if let Some(ev) = classify(&text, prompt_id) {
            return Some(ev);
        }
    }
}

/// What a `/ws` text frame means for `prompt_id`; `None` for frames about other prompts and
/// for text that is not an event.
pub fn classify(text: &str, prompt_id: &str) -> Option<WsEvent> {
    let v: Value = serde_json::from_str(text).ok()?;
    let data = &v["data"];
    if data["prompt_id"].as_str().is_some_and(|p| p != prompt_id) {
        return None;
    }
    Some(match v["type"].as_str().unwrap_or("") {
        "progress" => WsEvent::Progress {
            value: data["value"].as_u64().unwrap_or(0),
            max: data["max"].as_u64().unwrap_or(0),
        },
        "executing" if data["node"].is_null() && data["prompt_id"].is_string() => WsEvent::Finished,
        "execution_success" | "execution_error" | "execution_interrupted" => WsEvent::Finished,
        _ => WsEvent::Other,
    })
}

fn clip(s: &str) -> String {
    let t: String = s.chars().take(300).collect();
    t.replace('\n', " ")
}

/// `node_errors` as one line: `; node 2 (RepeatImageBatch): required_input_missing amount`.
fn node_errors_line(ne: &Value) -> String {
    let Some(o) = ne.as_object().filter(|o| !o.is_empty()) else {
        return String::new();
    };
    let parts: Vec<String> = o
        .iter()
        .map(|(id, n)| {
            let errs: Vec<String> = n["errors"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .map(|e| {
                            format!(
                                "{} {}",
                                e["type"].as_str().unwrap_or("?"),
                                e["details"].as_str().unwrap_or("")
                            )
                            .trim()
                            .to_string()
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "node {id} ({}): {}",
                n["class_type"].as_str().unwrap_or("?"),
                errs.join(", ")
            )
        })
        .collect();
    format!("; {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(name: &str) -> Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/comfyui")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn the_recorded_event_stream_finishes_each_prompt_and_skips_the_others() {
        let msgs = recorded("ws_messages.json");
        let texts: Vec<String> = msgs
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].to_string())
            .collect();
        let ours = "e7ba2602-256d-4319-b052-3ab98cdd0608";
        let events: Vec<WsEvent> = texts.iter().filter_map(|t| classify(t, ours)).collect();
        // Its execution_success, then the closing `executing {node: null}`.
        assert_eq!(
            events.iter().filter(|e| **e == WsEvent::Finished).count(),
            2
        );
        let runtime_error = "55125fab-1421-476c-a0e4-38e878669c25";
        let first_finish = texts
            .iter()
            .position(|t| classify(t, runtime_error) == Some(WsEvent::Finished))
            .unwrap();
        assert!(texts[first_finish].contains("execution_error"));
        let p = r#"{"type": "progress", "data": {"value": 3, "max": 8, "prompt_id": "x", "node": "4"}}"#;
        assert_eq!(
            classify(p, "x"),
            Some(WsEvent::Progress { value: 3, max: 8 })
        );
        assert_eq!(classify(p, "y"), None);
    }

    #[test]
    fn recorded_400_bodies_become_one_line_with_every_node_error() {
        let v = recorded("prompt_vhs_loadvideo_only_cap_response.json");
        let line = node_errors_line(&v["node_errors"]);
        assert!(
            line.starts_with("; node 1 (VHS_LoadVideo): required_input_missing custom_width,"),
            "{line}"
        );
        assert_eq!(line.matches("required_input_missing").count(), 5);
        let v = recorded("prompt_invalid_value_below_min.json");
        assert_eq!(
            node_errors_line(&v["node_errors"]),
            "; node 2 (RepeatImageBatch): value_smaller_than_min amount"
        );
        assert_eq!(
            node_errors_line(&recorded("prompt_invalid_unknown_class.json")["node_errors"]),
            ""
        );
    }
}
