//! The HTTP and websocket client for one ComfyUI server (reqwest + tokio, rustls for
//! `https://` and `wss://`).
//!
//! Every request has its own bound ([`REQUEST_TIMEOUT`]); callers add the job's overall
//! deadline on top. Failures carry whether they are transient (no answer, a reset, a 5xx: worth
//! a retry) or an answer that will not change (a 400, a malformed body).
//!
//! The server is not trusted ([`Bounds`], docs/SECURITY.md): every JSON body is read in pieces
//! up to a size limit, `/view` files are bounded by bytes and by the pixels their header
//! declares, and a redirect is followed only within the configured origin (scheme, host,
//! port), so inputs and graphs never go anywhere else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, ErrorKind};
use crate::job::Limits;
use crate::media::picture::{self, HeaderSize};

/// The bound of one request (a `/view` of one frame included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects followed within the configured origin, at most.
pub const MAX_REDIRECTS: usize = 5;
/// How far into a `/view` image its header must have shown the size.
pub const HEADER_WINDOW: usize = 1 << 20;

/// What the client takes from the server (the job's `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Largest JSON body, and largest `/ws` message (`limits.max_comfyui_json_bytes`).
    pub json_bytes: u64,
    /// Largest `/view` file (`limits.max_comfyui_file_bytes`).
    pub file_bytes: u64,
    /// Most pixels a `/view` image may declare (`limits.max_image_pixels`).
    pub frame_pixels: u64,
}

impl Bounds {
    pub fn of(limits: &Limits) -> Bounds {
        Bounds {
            json_bytes: limits.max_comfyui_json_bytes,
            file_bytes: limits.max_comfyui_file_bytes,
            frame_pixels: limits.max_image_pixels,
        }
    }
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds::of(&Limits::default())
    }
}

/// Why a `/view` fetch stopped.
#[derive(Debug)]
pub enum FetchError {
    /// The server's doing (no answer, a bad status, over a bound, not an image): the partial
    /// file is gone.
    Peer(Failure),
    /// Writing here failed (out of disk, a file size limit): the partial file is gone; the run
    /// must end with this error.
    Local(Error),
}

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
    bounds: Bounds,
}

impl Client {
    /// A client for the server at `url` that follows redirects only within `url`'s origin
    /// and takes answers within `bounds`.
    pub fn new(url: &str, client_id: &str, bounds: Bounds) -> Result<Client, Error> {
        let base = url.trim_end_matches('/').to_string();
        let origin = reqwest::Url::parse(&base)
            .map_err(|e| {
                Error::new(
                    ErrorKind::ValidationFailed,
                    format!("comfyui.url: {base:?}: {e}"),
                )
            })?
            .origin();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.url().origin() != origin {
                let to = attempt.url().to_string();
                attempt.error(format!(
                    "refused a redirect to {to}: another origin than comfyui.url"
                ))
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(policy)
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        Ok(Client {
            base,
            client_id: client_id.to_string(),
            http,
            bounds,
        })
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unavailable(&self, what: String) -> Error {
        Error::new(ErrorKind::ComfyuiUnavailable, format!("ComfyUI at {}: {what}", self.base))
            .with_hint("start ComfyUI, or pass --no-comfyui / set comfyui.enable=false for the diagnostic path")
    }

    /// Strict health: `GET /system_stats` answers 200 with `system` and `devices`, and
    /// `GET /object_info` answers 200 with an object. Returns both bodies; a body over
    /// [`Bounds::json_bytes`] is `COMFYUI_BAD_RESPONSE` (the server answered), anything else
    /// `COMFYUI_UNAVAILABLE`.
    pub async fn health(&self) -> Result<(Value, Value), Error> {
        let unhealthy = |(f, over): (Failure, bool)| {
            if over {
                f.error
            } else {
                self.unavailable(f.error.message)
            }
        };
        let stats = self
            .get_json_bounded("/system_stats")
            .await
            .map_err(unhealthy)?;
        if !stats.get("system").is_some_and(Value::is_object)
            || !stats.get("devices").is_some_and(Value::is_array)
        {
            return Err(
                self.unavailable("GET /system_stats body lacks \"system\"/\"devices\"".into())
            );
        }
        let info = self
            .get_json_bounded("/object_info")
            .await
            .map_err(unhealthy)?;
        if !info.is_object() {
            return Err(self.unavailable("GET /object_info body is not an object".into()));
        }
        Ok((stats, info))
    }

    /// `GET /object_info/<class>`: whether the server has loaded the node class.
    pub async fn has_class(&self, class: &str) -> Fallible<bool> {
        let v = self.get_json(&format!("/object_info/{class}")).await?;
        Ok(v.get(class).is_some())
    }

    async fn get_json(&self, path: &str) -> Fallible<Value> {
        self.get_json_bounded(path).await.map_err(|(f, _)| f)
    }

    /// `GET path` as JSON; the flag of a failure says it was a body over the bound.
    async fn get_json_bounded(&self, path: &str) -> Result<Value, (Failure, bool)> {
        let what = format!("GET {path}");
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| (not_sent(&what, &e), false))?;
        let status = resp.status();
        if !status.is_success() {
            let f = format!("{what} answered {status}");
            return Err((
                Failure::status(status, f, ErrorKind::ComfyuiBadResponse),
                false,
            ));
        }
        let bytes = self.json_body(resp, &what).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            let f = Failure::answer(
                ErrorKind::ComfyuiBadResponse,
                format!("{what}: body is not JSON ({e})"),
            );
            (f, false)
        })
    }

    /// The body of a JSON answer, at most [`Bounds::json_bytes`]: refused from its
    /// `Content-Length` when that says more, else dropped (and the connection with it) as soon
    /// as the bytes read pass the bound. The flag of a failure says it was over the bound.
    async fn json_body(
        &self,
        mut resp: reqwest::Response,
        what: &str,
    ) -> Result<Vec<u8>, (Failure, bool)> {
        let limit = self.bounds.json_bytes;
        let over = || {
            let f = Failure::answer(
                ErrorKind::ComfyuiBadResponse,
                format!(
                    "{what}: the answer is larger than limits.max_comfyui_json_bytes = {limit} bytes"
                ),
            );
            (f, true)
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(over());
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if (body.len() + c.len()) as u64 > limit {
                        return Err(over());
                    }
                    body.extend_from_slice(&c);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    let f = Failure::transient(format!("{what}: body cut ({e})"));
                    return Err((f, false));
                }
            }
        }
    }

    /// `POST /upload/image` (multipart `image`, `overwrite=true`, `type=input`): returns the
    /// name the server stored the file under. Audio and video files are accepted too.
    pub async fn upload(&self, data: &[u8], name: &str) -> Fallible<String> {
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
        body.extend_from_slice(data);
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
            .map_err(|e| not_sent("POST /upload/image", &e))?;
        let status = resp.status();
        let bytes = self
            .json_body(resp, "POST /upload/image")
            .await
            .map_err(|(f, _)| f)?;
        let text = String::from_utf8_lossy(&bytes);
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
            Err(e) if e.is_redirect() => return Err(not_sent("POST /prompt", &e)),
            Err(e) if e.is_connect() => {
                return Err(Failure::transient(format!(
                    "POST /prompt: cannot connect ({e})"
                )))
            }
            Err(e) => return Ok(Posted::Lost(format!("POST /prompt: no answer ({e})"))),
        };
        let status = resp.status();
        let bytes = match self.json_body(resp, "POST /prompt").await {
            Ok(b) => b,
            Err((f, true)) => return Err(f),
            Err((f, false)) => {
                return Ok(Posted::Lost(format!(
                    "POST /prompt: answer cut ({})",
                    f.error.message
                )))
            }
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

    /// `GET /queue`: how many prompts the server holds (running plus pending), whoever sent
    /// them: its load.
    pub async fn queue_depth(&self) -> Fallible<u64> {
        let q = self.get_json("/queue").await?;
        let len = |key: &str| q[key].as_array().map_or(0, |a| a.len() as u64);
        Ok(len("queue_running") + len("queue_pending"))
    }

    /// Withdraws our prompt: `POST /queue {"delete": [id]}` takes it off the pending queue and
    /// `POST /interrupt {"prompt_id": id}` stops it if it is the one running (ComfyUI
    /// interrupts nothing else: another client's prompt keeps running). Whether both were
    /// answered 2xx within `within`.
    pub async fn withdraw(&self, prompt_id: &str, within: std::time::Duration) -> bool {
        let post = |path: &'static str, body: Value| async move {
            let sent = self.http.post(self.url(path)).json(&body).send();
            matches!(
                tokio::time::timeout(within, sent).await,
                Ok(Ok(r)) if r.status().is_success()
            )
        };
        let deleted = post("/queue", serde_json::json!({ "delete": [prompt_id] })).await;
        let interrupted = post("/interrupt", serde_json::json!({ "prompt_id": prompt_id })).await;
        deleted && interrupted
    }

    /// Whether the server answers at all (`GET /system_stats` within `within`).
    pub async fn answers(&self, within: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.get_json("/system_stats")).await,
            Ok(Ok(_))
        )
    }

    /// Streams `GET /view?filename=&subfolder=&type=` into `dest` (through `<dest>.part`,
    /// renamed when complete); returns the bytes written. The file may have at most
    /// [`Bounds::file_bytes`] bytes and take at most `budget` (what is left of the run's
    /// bound, lowered by what arrives); an `image`'s header must show its size within the first
    /// [`HEADER_WINDOW`] bytes, at most [`Bounds::frame_pixels`] pixels, before more is
    /// written. Whatever stops the fetch (a bound, the peer, a local write error, the caller's
    /// timeout dropping the future) removes the partial file.
    pub async fn view_to_file(
        &self,
        f: &super::outputs::OutputFile,
        dest: &Path,
        image: bool,
        budget: &mut u64,
    ) -> Result<u64, FetchError> {
        let what = format!("GET /view {}", f.filename);
        let peer =
            |msg: String| FetchError::Peer(Failure::answer(ErrorKind::ComfyuiBadResponse, msg));
        let file_limit = self.bounds.file_bytes;
        let over_file = |n: u64| {
            peer(format!(
                "{what}: {n} bytes or more, over limits.max_comfyui_file_bytes = {file_limit} bytes"
            ))
        };
        let over_run = |n: u64| {
            peer(format!(
                "{what}: {n} bytes or more, over what is left of this run's bound for ComfyUI files ({} bytes; per frame 8 bytes a pixel of the larger of the render and the start picture, plus 1 MiB)",
                *budget
            ))
        };
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
            .map_err(|e| FetchError::Peer(not_sent(&what, &e)))?;
        let status = resp.status();
        if !status.is_success() {
            let m = format!("{what} answered {status}");
            return Err(FetchError::Peer(Failure::status(
                status,
                m,
                ErrorKind::ComfyuiOutputsMissing,
            )));
        }
        if let Some(n) = resp.content_length() {
            if n > file_limit {
                return Err(over_file(n));
            }
            if n > *budget {
                return Err(over_run(n));
            }
        }
        let part = dest.with_extension("part");
        let partial = Partial::new(part.clone());
        let local =
            |e: std::io::Error| FetchError::Local(Error::at_path(ErrorKind::Internal, &part, e));
        let mut out = tokio::fs::File::create(&part).await.map_err(local)?;
        // The first bytes of an image, kept until its header has shown the size.
        let mut head: Option<Vec<u8>> = image.then(Vec::new);
        let mut n = 0u64;
        loop {
            let c = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let f = Failure::transient(format!("{what}: body cut ({e})"));
                    return Err(FetchError::Peer(f));
                }
            };
            let total = n + c.len() as u64;
            if total > file_limit {
                return Err(over_file(total));
            }
            if total > *budget {
                return Err(over_run(total));
            }
            if let Some(h) = &mut head {
                h.extend_from_slice(&c[..c.len().min(HEADER_WINDOW - h.len().min(HEADER_WINDOW))]);
                match self.frame_header(h) {
                    Ok(true) => head = None,
                    Ok(false) => {}
                    Err(why) => return Err(peer(format!("{what}: {why}"))),
                }
            }
            out.write_all(&c).await.map_err(local)?;
            n = total;
        }
        if let Some(h) = &head {
            let why = match picture::header_size(h) {
                HeaderSize::NotAnImage(why) => why,
                _ => "not an image: it ends before its header does".into(),
            };
            return Err(peer(format!("{what}: {why}")));
        }
        out.flush().await.map_err(local)?;
        out.sync_all().await.map_err(local)?;
        drop(out);
        tokio::fs::rename(&part, dest).await.map_err(local)?;
        partial.kept();
        *budget -= n;
        Ok(n)
    }

    /// Checks an image's first bytes: `Ok(true)` once its header shows a size within
    /// [`Bounds::frame_pixels`], `Ok(false)` while more bytes are needed, the reason for too
    /// many pixels, for bytes that are no image vidax reads, or for no size within
    /// [`HEADER_WINDOW`] bytes.
    fn frame_header(&self, head: &[u8]) -> Result<bool, String> {
        match picture::header_size(head) {
            HeaderSize::Known(w, h) => {
                let pixels = u64::from(w) * u64::from(h);
                let max = self.bounds.frame_pixels;
                if pixels == 0 || pixels > max {
                    return Err(format!(
                        "the frame is {w}x{h} = {pixels} pixels, outside 1 to limits.max_image_pixels = {max}"
                    ));
                }
                Ok(true)
            }
            HeaderSize::NeedMore if head.len() >= HEADER_WINDOW => Err(format!(
                "no image header within its first {HEADER_WINDOW} bytes"
            )),
            HeaderSize::NeedMore => Ok(false),
            HeaderSize::NotAnImage(why) => Err(why),
        }
    }

    /// Opens `/ws?clientId=<id>` (events go only to the client that submitted, so this comes
    /// before the POST). `None` when the socket cannot be opened: the wait then polls.
    pub async fn open_ws(&self) -> Option<WsStream> {
        let ws_url = self
            .base
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let url = format!("{ws_url}/ws?clientId={}", self.client_id);
        let max = usize::try_from(self.bounds.json_bytes).unwrap_or(usize::MAX);
        let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        config.max_message_size = Some(max);
        config.max_frame_size = Some(config.max_frame_size.unwrap_or(max).min(max));
        let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), false);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
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

/// A request that got no usable answer: a refused cross-origin redirect is the server's
/// answer (it will not change), anything else (no connection, a reset, a TLS failure)
/// transient. The message carries the error's causes (reqwest's own says little).
fn not_sent(what: &str, e: &reqwest::Error) -> Failure {
    let mut why = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        why = format!("{why}: {s}");
        source = s.source();
    }
    if e.is_redirect() {
        return Failure::answer(
            ErrorKind::ComfyuiBadResponse,
            format!("{what}: {why}; inputs and graphs go to comfyui.url only"),
        );
    }
    Failure::transient(format!("{what} failed ({why})"))
}

/// A file being written, removed when dropped unless [`Partial::kept`].
struct Partial {
    path: PathBuf,
    keep: bool,
}

impl Partial {
    fn new(path: PathBuf) -> Partial {
        Partial { path, keep: false }
    }

    fn kept(mut self) {
        self.keep = true;
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
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
