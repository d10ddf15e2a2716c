//! The route handlers. Request bodies are read as bytes and parsed here, so that every
//! refusal (a body too large, not JSON, an unknown field) answers with the JSON error body.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::jobs::{new_job_id, JobRecord, JobStatus, QueueRefusal};
use super::{ops, App, OPENAPI};
use crate::error::{Error, ErrorKind};
use crate::job::{self, Job, JobDraft};
use crate::record::events::events_path;
use crate::stages::admit::{self as admission, Admitted, Probed};

type AppState = State<Arc<App>>;

pub async fn no_route() -> ApiError {
    ApiError::not_found("no such route (the routes are in GET /openapi.json)")
}

pub async fn health() -> Json<Value> {
    Json(json!({"ok": true, "service": "vidax", "version": env!("CARGO_PKG_VERSION")}))
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The body as JSON; `None` for an empty body.
fn body_json(body: Result<Bytes, BytesRejection>) -> ApiResult<Option<Value>> {
    let bytes = body.map_err(|r| {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body too large".to_string()
        } else {
            format!("cannot read the request body: {}", r.body_text())
        };
        ApiError::new(status, ErrorKind::ValidationFailed, message)
    })?;
    // Whatever max_body_bytes allows, no request of this API needs more than a job file may
    // have (job::MAX_JOB_BYTES).
    if bytes.len() as u64 > job::MAX_JOB_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::ValidationFailed,
            format!(
                "request body too large ({} bytes; a job may have {})",
                bytes.len(),
                job::MAX_JOB_BYTES
            ),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        ApiError::bad_request(ErrorKind::ValidationFailed, format!("body: not JSON: {e}"))
    })
}

/// A body that must be a JSON object of type `T` (unknown fields refused by `T`); an empty
/// body reads as `{}`.
fn parse_body<T: serde::de::DeserializeOwned>(what: &str, v: Option<Value>) -> ApiResult<T> {
    let v = v.unwrap_or_else(|| json!({}));
    // serde would also read a struct from an array; the API takes objects only.
    if !v.is_object() {
        return Err(ApiError::bad_request(
            ErrorKind::ValidationFailed,
            format!("{what}: must be a JSON object"),
        ));
    }
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(ErrorKind::ValidationFailed, format!("{what}: {e}")))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(t)| t)
        .map_err(|r| ApiError::bad_request(ErrorKind::Usage, format!("query: {}", r.body_text())))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::from(Error::internal(format!("worker task: {e}"))))?
}

// ---- operations -------------------------------------------------------------------------

pub async fn install_status(State(app): AppState) -> ApiResult<Json<Value>> {
    ops::install_status(&app.cfg).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallRequest {
    #[serde(default)]
    no_comfy_nodes: bool,
}

pub async fn install(
    State(app): AppState,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let req: InstallRequest = parse_body("body", body_json(body)?)?;
    let Ok(_busy) = app.install_busy.try_lock() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorKind::Usage,
            "an install is already running",
        ));
    };
    ops::install(&app.cfg, req.no_comfy_nodes).await.map(Json)
}

pub async fn comfyui_health(State(app): AppState) -> ApiResult<Json<Value>> {
    ops::comfyui_health(&app.cfg).await.map(Json)
}

pub async fn comfyui_start(
    State(app): AppState,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    // No options: the command comes from the config only, never from a request.
    let _: Empty = parse_body("body", body_json(body)?)?;
    let Ok(_busy) = app.comfyui_busy.try_lock() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorKind::Usage,
            "ComfyUI is already being started",
        ));
    };
    ops::comfyui_start(&app.cfg).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

// ---- submitting jobs --------------------------------------------------------------------

/// A job document checked before it is validated: an object, and no other ComfyUI than the
/// configured one (a request must not point a run at another host).
fn check_document(app: &App, doc: &Value, what: &str) -> ApiResult<()> {
    if !doc.is_object() {
        return Err(ApiError::bad_request(
            ErrorKind::ValidationFailed,
            format!("{what}: must be a JSON object"),
        ));
    }
    check_comfyui_url(app, doc["comfyui"]["url"].as_str())
}

/// Jobs reach the configured ComfyUI only.
fn check_comfyui_url(app: &App, given: Option<&str>) -> ApiResult<()> {
    let given_url = given.map(|u| u.trim_end_matches('/').to_string());
    let url = app.cfg.comfyui.url.trim_end_matches('/');
    if given_url.as_deref().is_some_and(|u| u != url) {
        return Err(ApiError::forbidden(format!(
            "comfyui.url: jobs of this server use the configured ComfyUI ({url})"
        )));
    }
    Ok(())
}

/// Schema problems of a posted job, told as `what` (`job`, `produce options`) with the list.
fn problems_error(what: &str) -> impl Fn(&[job::Problem]) -> ApiError + '_ {
    move |problems| {
        let mut e = ApiError::bad_input(job::problems_error(Path::new(what), problems));
        e.problems = serde_json::to_value(problems).ok();
        e
    }
}

/// A validated job made the server's, then admitted ([`crate::stages::admit`]): its input
/// paths confined to the roots (and replaced by their real paths), the configured ComfyUI
/// set, each input probed once (`earlier`: probes already taken, kept). The job is validated
/// once, by the caller; nothing here validates it again.
fn admit(app: &App, mut j: Job, earlier: Vec<Probed>) -> ApiResult<Admitted> {
    let url = app.cfg.comfyui.url.trim_end_matches('/').to_string();
    j.comfyui.pool = vec![url.clone()];
    j.comfyui.url = url;
    j.audio = app.roots.confine("audio", &j.audio)?;
    let start = app.roots.confine(j.start.field(), j.start.path())?;
    j.start = match j.start {
        job::StartKind::Image(_) => job::StartKind::Image(start),
        job::StartKind::Video(_) => job::StartKind::Video(start),
    };
    if let Some(end) = &j.end_image {
        j.end_image = Some(app.roots.confine("end_image", end)?);
    }
    if let Some(dir) = &j.comfyui.input_dir {
        j.comfyui.input_dir = Some(app.roots.confine("comfyui.input_dir", dir)?);
    }
    // The runs use the state dir of this process's environment (`va run` is its child).
    admission::admit(j, &crate::files::state_dir(), earlier).map_err(ApiError::bad_input)
}

/// Creates the job's workdir under the runs root and its record (status `created`).
fn create(app: &App, j: &Job, kind: &str) -> ApiResult<JobRecord> {
    let id = new_job_id();
    let workdir = app.cfg.runs_root.join(&id);
    std::fs::create_dir(&workdir).map_err(|e| {
        Error::at_path(
            ErrorKind::Internal,
            &workdir,
            format!("cannot create workdir: {e}"),
        )
    })?;
    let job_file = workdir.join("job.json");
    crate::files::write_json_atomic(&job_file, &j.to_effective_json())?;
    let rec = JobRecord::new(id, kind, workdir, job_file);
    app.jobs.insert(rec.clone());
    Ok(rec)
}

fn queue_error(id: &str, refusal: QueueRefusal, action: &str) -> ApiError {
    match refusal {
        QueueRefusal::Full(limit) => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::Usage,
                format!("the queue is full ({limit} jobs waiting); try again later"),
            );
            e.retry_after = Some(5);
            e
        }
        QueueRefusal::NotFound => ApiError::not_found(format!("no job {id}")),
        QueueRefusal::State(s) => ApiError::new(
            StatusCode::CONFLICT,
            if action == "resume" {
                ErrorKind::ResumeInvalid
            } else {
                ErrorKind::Usage
            },
            format!("job {id} is {}: cannot {action} it", status_name(s)),
        ),
    }
}

fn status_name(s: JobStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateQuery {
    /// Queue the job at once.
    #[serde(default)]
    start: bool,
}

pub async fn create_job(
    State(app): AppState,
    q: Result<Query<CreateQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let doc = body_json(body)?.unwrap_or(Value::Null);
    let app2 = Arc::clone(&app);
    let rec = blocking(move || {
        check_document(&app2, &doc, "job")?;
        let base = app2.roots.base().to_path_buf();
        let j = job::from_value(doc, &base).map_err(|p| problems_error("job")(p.as_slice()))?;
        let admitted = admit(&app2, j, Vec::new())?;
        create(&app2, &admitted.job, "job")
    })
    .await?;
    if q.start {
        return queue_new(&app, rec);
    }
    Ok((StatusCode::CREATED, Json(rec.to_json())).into_response())
}

/// Queues a job just created; a full queue removes it again (nothing was run).
fn queue_new(app: &App, rec: JobRecord) -> ApiResult<Response> {
    match app.jobs.enqueue(&rec.id, &[JobStatus::Created], false) {
        Ok(r) => Ok((StatusCode::ACCEPTED, Json(r.to_json())).into_response()),
        Err(refusal) => {
            app.jobs.forget(&rec.id);
            let _ = std::fs::remove_dir_all(&rec.workdir);
            Err(queue_error(&rec.id, refusal, "start"))
        }
    }
}

/// `POST /produce`: the options of `va produce`, snake_case (SPEC §7).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceRequest {
    audio: PathBuf,
    start: PathBuf,
    end: Option<PathBuf>,
    pre: Option<f64>,
    post: Option<f64>,
    fps: Option<NumberOrText>,
    width: Option<u32>,
    height: Option<u32>,
    max_width: Option<u32>,
    max_height: Option<u32>,
    lipsync: Option<OnOff>,
    lipsync_provider: Option<String>,
    comfyui_chunk_size: Option<u32>,
    no_comfyui: Option<bool>,
    seed: Option<u64>,
    prompt: Option<String>,
    negative: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(serde_json::Number),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OnOff {
    Bool(bool),
    Text(String),
}

pub async fn produce(
    State(app): AppState,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: ProduceRequest = parse_body("body", body_json(body)?)?;
    let app2 = Arc::clone(&app);
    let rec = blocking(move || {
        let roots = &app2.roots;
        let draft = JobDraft {
            audio: roots.confine("audio", &req.audio)?,
            start: roots.confine("start", &req.start)?,
            end: req
                .end
                .as_deref()
                .map(|e| roots.confine("end", e))
                .transpose()?,
            pre: req.pre,
            post: req.post,
            fps: req.fps.map(|f| match f {
                NumberOrText::Number(n) => n.to_string(),
                NumberOrText::Text(t) => t,
            }),
            width: req.width.map(i64::from),
            height: req.height.map(i64::from),
            max_width: req.max_width.map(i64::from),
            max_height: req.max_height.map(i64::from),
            lipsync: req
                .lipsync
                .map(|l| match l {
                    OnOff::Bool(b) => Ok(b),
                    OnOff::Text(t) => job::draft::on_off(&t),
                })
                .transpose()
                .map_err(ApiError::bad_input)?,
            lipsync_provider: req.lipsync_provider,
            comfyui_chunk_size: req.comfyui_chunk_size.map(i64::from),
            // The server to use (default http://127.0.0.1:8188), e.g. a remote GPU box.
            comfyui_url: std::env::var("COMFYUI_URL").ok(),
            no_comfyui: req.no_comfyui.unwrap_or(app2.cfg.skip_comfyui),
            // Past i64 the seed is out of range anyway: validation says so.
            seed: req.seed.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            prompt: req.prompt,
            negative: req.negative,
            loudness: None,
        };
        check_comfyui_url(&app2, draft.comfyui_url.as_deref())?;
        // The draft's start is probed once: for its kind, and kept for admission.
        let (j, start) = admission::draft_job(
            &draft,
            app2.roots.base(),
            problems_error("produce options"),
            ApiError::bad_input,
        )?;
        let admitted = admit(&app2, j, vec![start])?;
        create(&app2, &admitted.job, "produce")
    })
    .await?;
    queue_new(&app, rec)
}

// ---- reading and steering jobs ----------------------------------------------------------

fn known(app: &App, id: &str) -> ApiResult<JobRecord> {
    app.jobs
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<JobStatus>,
}

pub async fn list_jobs(
    State(app): AppState,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let jobs: Vec<Value> = app
        .jobs
        .list()
        .iter()
        .filter(|r| q.status.is_none_or(|s| r.status == s))
        .map(JobRecord::to_json)
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

pub async fn get_job(State(app): AppState, UrlPath(id): UrlPath<String>) -> ApiResult<Json<Value>> {
    Ok(Json(known(&app, &id)?.to_json()))
}

pub async fn start_job(State(app): AppState, UrlPath(id): UrlPath<String>) -> ApiResult<Response> {
    known(&app, &id)?;
    let r = app
        .jobs
        .enqueue(&id, &[JobStatus::Created], false)
        .map_err(|refusal| queue_error(&id, refusal, "start"))?;
    Ok((StatusCode::ACCEPTED, Json(r.to_json())).into_response())
}

pub async fn resume_job(State(app): AppState, UrlPath(id): UrlPath<String>) -> ApiResult<Response> {
    let rec = known(&app, &id)?;
    let resumable = [
        JobStatus::Interrupted,
        JobStatus::Cancelled,
        JobStatus::Failed,
    ];
    if resumable.contains(&rec.status) {
        let manifest = crate::record::Manifest::path(&rec.workdir);
        if !manifest.is_file() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorKind::ResumeInvalid,
                format!("job {id} never started a run (no manifest): nothing to resume"),
            ));
        }
    }
    let r = app
        .jobs
        .enqueue(&id, &resumable, true)
        .map_err(|refusal| queue_error(&id, refusal, "resume"))?;
    Ok((StatusCode::ACCEPTED, Json(r.to_json())).into_response())
}

pub async fn cancel_job(
    State(app): AppState,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    match app.jobs.cancel(&id).await {
        Ok(r) => Ok(Json(r.to_json())),
        Err(None) => Err(ApiError::not_found(format!("no job {id}"))),
        Err(Some(s)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorKind::Usage,
            format!("job {id} is {}: nothing to cancel", status_name(s)),
        )),
    }
}

pub async fn manifest(State(app): AppState, UrlPath(id): UrlPath<String>) -> ApiResult<Response> {
    let rec = known(&app, &id)?;
    let path = crate::record::Manifest::path(&rec.workdir);
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::not_found(format!(
            "job {id} has no manifest yet (status {})",
            status_name(rec.status)
        ))),
        Err(e) => Err(Error::at_path(ErrorKind::Internal, &path, e).into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

const NDJSON: &str = "application/x-ndjson";

/// `GET /jobs/:id/logs`: `logs/events.jsonl` as NDJSON; with `follow=true` the answer is
/// streamed (chunked) while the job is queued or running, and ends once it is not (a job
/// that is only `created` may never start, so its follow ends at once).
pub async fn logs(
    State(app): AppState,
    UrlPath(id): UrlPath<String>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let rec = known(&app, &id)?;
    let path = events_path(&rec.workdir);
    if !q.follow {
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::at_path(ErrorKind::Internal, &path, e).into()),
        };
        // Only whole lines: a line being written is left for the next read.
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        return Ok(([(header::CONTENT_TYPE, NDJSON)], bytes[..end].to_vec()).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let jobs = Arc::clone(&app.jobs);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter(tx.clone());
        let stop = || {
            tx.is_closed()
                || !matches!(
                    jobs.status(&id),
                    Some(JobStatus::Queued | JobStatus::Running)
                )
        };
        let _ = crate::record::events::follow_with(&path, &mut out, |v| v.to_string(), stop);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Ok(([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(stream)).into_response())
}

/// A `Write` that hands each write to the streaming response; a client gone closes it.
struct ChannelWriter(tokio::sync::mpsc::Sender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
