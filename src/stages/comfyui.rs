//! `comfyui`: runs the job's workflows on a ComfyUI server and collects their pictures
//! (SPEC §6). Health is strict (failure: `COMFYUI_UNAVAILABLE`, the run fails); every graph is
//! checked against `/object_info` before anything is submitted; inputs are staged under
//! deterministic names; each graph goes out with our own `prompt_id` after the `/ws` socket is
//! open; `/history` confirms the end and `/queue` tells queued from vanished; frames are
//! streamed to disk in the order of their original names.
//!
//! A server that answered but could not deliver (missing nodes, a run-time error, no or too
//! few outputs) does not fail the run: the stage returns a degraded outcome with the reason,
//! and the compositor uses the best source that did arrive, else the local fallback. The whole
//! stage is bounded by `comfyui.timeout_seconds` (`COMFYUI_TIMEOUT`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::comfy::client::{self, Client, Failure, Fallible, Posted, WsEvent};
use crate::comfy::graph::{self, Chunk, FaceInputs, GraphParams, Template};
use crate::comfy::outputs;
use crate::comfy::report::{self, FaceReport, Merged};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::job::{Job, SeedPolicy, StartKind};
use crate::progress::{ChunkProgress, EndpointProgress, Reporter};
use crate::record::comfyui::{
    AttemptRecord, ChunkRecord, ComfyuiRecord, EndpointRecord, FailureDetails, FailureRecord,
    InputsRecord, WorkflowRecord,
};
use crate::record::manifest::{ComfyuiOutput, Manifest, OrderedMap};
use crate::record::meta::{LipsyncRecord, MotionMeta};
use crate::record::PhaseName;

use super::effect::{self, LipsyncMeta, Verdict};
use super::faceprobe::FaceMeta;
use super::prepare::Prepared;
use super::run::{phase, skip, RunOptions};
use super::staging::{ProbeImage, Staged};

/// Built-in workflow ids (SPEC §6). `vidax_faceprobe` names the face check (the `faceprobe`
/// phase); it runs before any lip-sync workflow whether listed or not.
pub const FACEPROBE: &str = "vidax_faceprobe";
/// The face check's graph, as saved under `comfyui/`.
pub const FACECHECK: &str = "vidax_facecheck";
pub const MOTION_CHUNKS: &str = "vidax_motion_chunks";
pub const MOUTHBLEND: &str = "vidax_lipsync_mouthblend";
pub const WAV2LIP_IMAGE: &str = "vidax_wav2lip_image_audio";
pub const WAV2LIP_VIDEO: &str = "vidax_wav2lip_video_audio";

/// The degraded reason of a lip-sync that did not change the picture.
pub const LIPSYNC_NO_EFFECT: &str = "LIPSYNC_NO_EFFECT";

/// The workflows a job runs: its `comfyui.workflow_ids`, else the defaults by start kind
/// (start image with lip-sync: the Wav2Lip graph over the still, which the engine then
/// zooms; start image without lip-sync: motion chunks; start video: the Wav2Lip video graph,
/// with lip-sync only). A job whose lip-sync is an external provider gets no lip-sync graph
/// by default.
pub fn workflow_ids(job: &Job) -> Vec<String> {
    if let Some(ids) = &job.comfyui.workflow_ids {
        return ids.clone();
    }
    let comfy_lipsync = job.lipsync.enable && job.lipsync.provider.is_none();
    let ids: &[&str] = match (&job.start, comfy_lipsync) {
        (StartKind::Image(_), true) => &[WAV2LIP_IMAGE],
        (StartKind::Image(_), false) => &[MOTION_CHUNKS],
        (StartKind::Video(_), true) => &[WAV2LIP_VIDEO],
        (StartKind::Video(_), false) => &[],
    };
    ids.iter().map(|s| s.to_string()).collect()
}

/// The built-in workflows among the job's (a user template of the same id replaces the
/// built-in one) that are one of `ids`.
fn lists_builtin(job: &Job, state_dir: &Path, ids: &[&str]) -> bool {
    let dirs = graph::template_dirs(state_dir);
    workflow_ids(job).iter().any(|id| {
        ids.contains(&id.as_str()) && !matches!(graph::find_template(id, &dirs), Ok(Some(_)))
    })
}

/// Whether the job's workflows lip-sync inside ComfyUI (the built-in lip-sync workflows).
pub fn lipsyncs(job: &Job, state_dir: &Path) -> bool {
    job.comfyui.enable && lists_builtin(job, state_dir, &[MOUTHBLEND, WAV2LIP_IMAGE, WAV2LIP_VIDEO])
}

/// Whether the job's workflows need the face check first: a lip-sync workflow (where the
/// face is), the motion chunks (the zoom centre is the face's), or `vidax_faceprobe` named.
pub fn needs_face_check(job: &Job, state_dir: &Path) -> bool {
    job.comfyui.enable
        && (lipsyncs(job, state_dir)
            || lists_builtin(job, state_dir, &[MOTION_CHUNKS])
            || workflow_ids(job).iter().any(|id| id == FACEPROBE))
}

/// What the main segment shows after this stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Visual {
    /// `count` PNG frames `000001.png…` in `dir`, frame `k` for main frame `k`; with `zoom`,
    /// they show the still itself and get the start image's zoom in the render.
    Frames {
        dir: PathBuf,
        count: u64,
        zoom: Option<FrameZoom>,
        /// The picture the frames were made from (the staged still), when a frame may be a
        /// patch laid over it (`VIDAX_SavePatches`).
        base: Option<PathBuf>,
    },
    /// A video whose frame `k` (CFR at the job's fps) is main frame `k`.
    Video(PathBuf),
}

/// The start image's zoom applied to frames that show the still (`vidax_wav2lip_image_audio`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameZoom {
    /// The zoom centre in the frames' pixels (the detected face's centre); `None`: the middle.
    pub centre: Option<(f64, f64)>,
}

/// The stage's result for the compositor and `video_source_detail`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub visual: Option<Visual>,
    pub workflow_id: Option<String>,
    pub output: Option<ComfyuiOutput>,
    /// The visual came through a lip-sync graph.
    pub lipsync_inside: bool,
    pub degraded_reason: Option<String>,
}

/// What the stage needs from the run.
pub struct Input<'a> {
    pub job: &'a Job,
    /// The start file as admission opened it (read through it, not opened again).
    pub start_file: &'a std::fs::File,
    pub prepared: &'a Prepared,
    pub workdir: &'a Path,
    pub state_dir: &'a Path,
    /// The face check's result (`None` when it did not run).
    pub face: Option<&'a FaceMeta>,
    /// The pictures staged for the Wav2Lip graphs (`None` when there are none).
    pub staged: Option<&'a Staged>,
    pub seed: u64,
    pub run_id: &'a str,
    /// Where ComfyUI's step progress is reported (the CLI draws it).
    pub progress: crate::progress::Reporter,
    pub resume: bool,
}

enum Kind {
    Motion,
    MouthBlend,
    Wav2LipImage,
    Wav2LipVideo,
    Template(Template),
    /// The face check's graph (not a workflow of the list).
    FaceCheck(Value),
}

struct Workflow {
    id: String,
    kind: Kind,
}

impl Workflow {
    /// Where its frames go (relative to the workdir).
    fn frames_dir(&self) -> &'static str {
        match self.kind {
            Kind::Motion => "motion/frames",
            Kind::MouthBlend => "mouthblend/frames",
            _ => "frames",
        }
    }

    fn lipsync(&self) -> bool {
        matches!(
            self.kind,
            Kind::MouthBlend | Kind::Wav2LipImage | Kind::Wav2LipVideo
        )
    }

    /// Whether its graph loads the job's start file itself rather than a staged picture:
    /// the motion and mouth-blend graphs, and a template that uses `{{start_image}}`.
    fn loads_start(&self) -> bool {
        match &self.kind {
            Kind::Motion | Kind::MouthBlend => true,
            Kind::Template(t) => graph::placeholders_used(&t.graph)
                .iter()
                .any(|n| n == "start_image"),
            Kind::Wav2LipImage | Kind::Wav2LipVideo | Kind::FaceCheck(_) => false,
        }
    }

    fn chunked(&self) -> bool {
        match &self.kind {
            Kind::Template(t) => t.chunked(),
            Kind::FaceCheck(_) => false,
            _ => true,
        }
    }
}

fn resolve(ids: &[String], input: &Input) -> Result<Vec<Workflow>> {
    let dirs = graph::template_dirs(input.state_dir);
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if id == FACEPROBE {
            continue;
        }
        let kind = match graph::find_template(id, &dirs)? {
            Some(t) => Kind::Template(t),
            None => match id.as_str() {
                MOTION_CHUNKS => Kind::Motion,
                MOUTHBLEND => Kind::MouthBlend,
                WAV2LIP_IMAGE => Kind::Wav2LipImage,
                WAV2LIP_VIDEO => Kind::Wav2LipVideo,
                _ => {
                    return Err(Error::new(
                        ErrorKind::ValidationFailed,
                        format!(
                            "comfyui.workflow_ids[{i}]: no workflow {id:?}: not built in, and no {id}.json in {}",
                            dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ")
                        ),
                    ))
                }
            },
        };
        let start_image = input.job.start.is_image();
        let needs_image = matches!(kind, Kind::Motion | Kind::MouthBlend | Kind::Wav2LipImage);
        if needs_image && !start_image || matches!(kind, Kind::Wav2LipVideo) && start_image {
            return Err(Error::new(
                ErrorKind::ValidationFailed,
                format!(
                    "comfyui.workflow_ids[{i}]: {id} needs a {}",
                    if needs_image {
                        "start_image"
                    } else {
                        "start_video"
                    }
                ),
            ));
        }
        if matches!(kind, Kind::MouthBlend) && input.face.is_none() {
            return Err(Error::new(
                ErrorKind::ValidationFailed,
                format!("comfyui.workflow_ids[{i}]: {id} needs {FACEPROBE} before it"),
            ));
        }
        if matches!(kind, Kind::Wav2LipImage | Kind::Wav2LipVideo) && input.staged.is_none() {
            return Err(Error::internal(format!(
                "workflow {id}: the staged picture is missing (the faceprobe phase stages it)"
            )));
        }
        out.push(Workflow {
            id: id.clone(),
            kind,
        });
    }
    Ok(out)
}

/// ComfyUI's input folder: `comfyui.input_dir` → `COMFYUI_INPUT_DIR` → `COMFYUI_DIR/input`.
fn input_dir(job: &Job) -> Option<PathBuf> {
    job.comfyui
        .input_dir
        .clone()
        .or_else(|| std::env::var_os("COMFYUI_INPUT_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("COMFYUI_DIR").map(|d| PathBuf::from(d).join("input")))
}

/// Whether the server runs on this machine (then a known input folder is used directly).
fn is_local(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1")
}

/// `vidax_<role>_<sha16><ext>`.
fn staged_name(role: &str, path: &Path, known_sha: Option<&str>) -> Result<String> {
    let sha = match known_sha {
        Some(sha) if sha.len() == 64 => sha.to_string(),
        _ => crate::record::sha256_file(path)?,
    };
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy().to_lowercase()))
        .unwrap_or_default();
    Ok(format!("vidax_{role}_{}{ext}", &sha[..16]))
}

/// Copies `src` into `dir` as `name`, unless a file of the same size is there already;
/// read through `handle` (`src` opened earlier) when there is one.
fn copy_into(src: &Path, handle: Option<&std::fs::File>, dir: &Path, name: &str) -> Result<bool> {
    let dest = dir.join(name);
    let opened;
    let file = match handle {
        Some(f) => crate::files::from_start(f, src)?,
        None => {
            opened = std::fs::File::open(src).at(ErrorKind::InputNotFound, src)?;
            &opened
        }
    };
    let size = file.metadata().at(ErrorKind::InputNotFound, src)?.len();
    if std::fs::metadata(&dest).is_ok_and(|m| m.len() == size) {
        return Ok(false);
    }
    let tmp = dir.join(format!(".{name}.partial"));
    let copied = std::fs::File::create(&tmp).and_then(|mut out| {
        let mut file = file;
        std::io::copy(&mut file, &mut out)
    });
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::at_path(ErrorKind::Internal, &tmp, e));
    }
    std::fs::rename(&tmp, &dest).at(ErrorKind::Internal, &dest)?;
    Ok(true)
}

/// A fresh UUID (v4 layout) for a prompt id, from the clock, the process and a counter.
fn new_uuid() -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(now.as_nanos().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let mut b: [u8; 16] = h.finalize()[..16].try_into().unwrap_or([0; 16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A failure ComfyUI answered with, kept for the manifest and the log.
struct Degraded {
    /// The reason code (an error code name, or [`LIPSYNC_NO_EFFECT`]).
    reason: &'static str,
    message: String,
    details: Option<Box<FailureDetails>>,
}

impl Degraded {
    /// `summary`: the history entry's, when there was one; else the failure's own
    /// `node_errors` in that form.
    fn from_failure(f: Failure, summary: Option<FailureDetails>) -> Degraded {
        let details =
            Some(Box::new(summary.unwrap_or_else(|| {
                outputs::summary(&Value::Null, &f.node_errors)
            })));
        Degraded {
            reason: match f.error.kind {
                ErrorKind::ComfyuiOutputsMissing => ErrorKind::ComfyuiOutputsMissing.code(),
                _ => ErrorKind::ComfyuiBadResponse.code(),
            },
            message: f.error.message,
            details,
        }
    }
}

/// A workflow that ran: its record (`comfyui.workflows.<id>`) and the lip-sync reports its
/// history entries carried (with the reasons for any that could not be used).
struct Ran {
    rec: WorkflowRecord,
    reports: Vec<report::LipsyncReport>,
    report_problems: Vec<String>,
}

/// The degraded outcome of a history entry that reports a failed execution (`what` names the
/// graph), or `None` when it ran.
fn run_time_error(entry: &Value, what: &str) -> Option<Degraded> {
    if !outputs::failed(entry) {
        return None;
    }
    let why = outputs::execution_error(entry)
        .map(|(node, ty, msg)| format!("{node} failed: {ty}: {msg}"))
        .unwrap_or_else(|| "status error".into());
    Some(Degraded {
        reason: ErrorKind::ComfyuiBadResponse.code(),
        message: format!("{what}: run-time error: {why}"),
        details: Some(Box::new(outputs::summary(entry, &Value::Null))),
    })
}

/// Our prompts one endpoint may hold at once (one running, one waiting behind it, so its GPU
/// never waits for us).
const MAX_IN_FLIGHT: usize = 2;

/// Frames of one chunk by default: what keeps a chunk's float32 pictures (the loaded batch,
/// the network's output, SaveImage's copy and room for one more) within this many bytes of a
/// GPU's (or the host's) memory at the render size.
const DEFAULT_CHUNK_BYTES: u64 = 4 << 30;

/// The default `comfyui.chunk_size` for pictures of `pixels` pixels: [`DEFAULT_CHUNK_BYTES`]
/// over 4 float32 RGB copies a frame, at least 16 frames, at most `RepeatImageBatch`'s 4096.
pub fn default_chunk_size(pixels: u64) -> u64 {
    (DEFAULT_CHUNK_BYTES / (pixels.max(1) * 3 * 4 * 4)).clamp(16, graph::REPEAT_MAX)
}

/// How long a chunk's endpoint may give no answer at all before the chunk is taken elsewhere
/// (only when another endpoint is usable; a lone server is waited for).
fn silence_limit(poll: Duration) -> Duration {
    (poll * 20).max(Duration::from_secs(10))
}

/// Frames `VIDAX_Wav2Lip` smooths a face box over, less one: the context a start-video chunk
/// in `sequential` mode carries on each side (docs/COMFYUI_INTERFACE.md, "Chunked runs").
const SMOOTH_CONTEXT: u64 = 4;

/// The context frames (before, after) chunk `c` of `w` loads and then throws away, so that its
/// frames come out as in one unchunked run: [`SMOOTH_CONTEXT`] on each side (as far as the
/// main segment reaches) for the start-video graph in `sequential` mode with several chunks;
/// none otherwise.
fn context(job: &Job, w: &Workflow, c: Chunk, main: u64, chunk_count: usize) -> (u64, u64) {
    let smoothed = matches!(w.kind, Kind::Wav2LipVideo)
        && job.comfyui.wav2lip.mode == crate::job::Wav2lipMode::Sequential
        && chunk_count > 1;
    if !smoothed {
        return (0, 0);
    }
    (
        c.start.min(SMOOTH_CONTEXT),
        main.saturating_sub(c.start + c.frames).min(SMOOTH_CONTEXT),
    )
}

/// One ComfyUI server of the pool.
struct Endpoint {
    client: Client,
    /// Its `/object_info` (for the preflight).
    info: Value,
    rec: EndpointRecord,
    /// Our prompts on it now.
    in_flight: usize,
}

impl Endpoint {
    fn usable(&self) -> bool {
        self.rec.status == "usable"
    }

    fn leave_out(&mut self, status: &str, reason: String) {
        tracing::warn!(stage = "comfyui", endpoint = %self.client.base, status, "left out: {reason}");
        self.rec.status = status.into();
        self.rec.reason = Some(reason);
    }
}

/// Puts chunk `ci` back among the pending ones in index order, so that chunks retried
/// together are handed out (and their frames land) first to last.
fn requeue(pending: &mut VecDeque<usize>, ci: usize) {
    let at = pending
        .iter()
        .position(|&c| c > ci)
        .unwrap_or(pending.len());
    pending.insert(at, ci);
}

/// A prompt that came back (or failed) from an endpoint.
struct Done {
    ci: usize,
    ep: usize,
    prompt_id: String,
    seed: u64,
    attempt: u32,
    started: Instant,
    result: Fallible<Value>,
}

/// Where a workflow's finished chunks go.
struct Sink {
    /// The frames folder (absolute).
    dir: PathBuf,
    received: u64,
    video: Option<String>,
    reports: Vec<report::LipsyncReport>,
    report_problems: Vec<String>,
    /// The face check's history entry.
    entry: Option<Value>,
    /// Warnings for the manifest (more frames than asked).
    warnings: Vec<String>,
    chunks: Vec<ChunkRecord>,
}

struct Runner<'a> {
    input: &'a Input<'a>,
    endpoints: Vec<Endpoint>,
    client_id: String,
    /// `comfyui.workflows` of the earlier attempt (for `--resume`).
    previous: OrderedMap<WorkflowRecord>,
    params: GraphParams,
    prompt_ids: Vec<String>,
    attempts: Vec<AttemptRecord>,
    /// What ComfyUI's files may still add up to in this run ([`file_budget`]).
    budget: u64,
    /// A local failure while fetching (out of disk): the run ends with it.
    fatal: Option<Error>,
    /// Our prompts posted and not yet seen to end: withdrawn from ComfyUI when the stage is
    /// stopped or times out ([`Runner::withdraw`]), so no GPU keeps working for a run that
    /// is gone (and a `--resume` does not queue behind its own leftovers).
    outstanding: Arc<Mutex<Vec<Outstanding>>>,
}

/// A prompt of ours on an endpoint that has not ended yet.
#[derive(Clone)]
struct Outstanding {
    client: Client,
    record: AttemptRecord,
}

/// The `comfyui` phase: [`run`] when the job enables ComfyUI, skipped otherwise (the
/// diagnostic path: the main segment comes from the local fallback).
pub fn run_phase(
    admitted: &super::admit::Admitted,
    opts: &RunOptions,
    prepared: &Prepared,
    face: Option<&FaceMeta>,
    staged: Option<&Staged>,
    seed: u64,
    manifest: &mut Manifest,
) -> Result<Outcome> {
    let job = &admitted.job;
    if !job.comfyui.enable {
        skip(
            manifest,
            opts,
            PhaseName::Comfyui,
            "comfyui.enable=false (diagnostic path)",
        )?;
        return Ok(Outcome::default());
    }
    phase(manifest, opts, PhaseName::Comfyui, |m| {
        let input = Input {
            job,
            start_file: &admitted.start_file,
            prepared,
            workdir: &opts.workdir,
            state_dir: &opts.state_dir,
            face,
            staged,
            seed,
            run_id: &m.run_id.clone(),
            progress: opts.progress.clone(),
            resume: opts.resume,
        };
        run(&input, m)
    })
}

/// Runs the stage. `Err` only for a server that is not there (`COMFYUI_UNAVAILABLE`), the
/// overall timeout (`COMFYUI_TIMEOUT`), a job naming a workflow that does not exist
/// (`VALIDATION_FAILED`) and local I/O; everything ComfyUI answered badly is a degraded
/// [`Outcome`].
pub fn run(input: &Input, m: &mut Manifest) -> Result<Outcome> {
    crate::comfy::off_runtime(|| run_blocking(input, m))
}

/// Connects to every endpoint of `comfyui.url` (strict health, all at once, bounded by
/// `deadline`) and makes a runner of the usable ones; the others are recorded with why. The
/// first usable endpoint's `/system_stats` body comes with it, and, when none is usable but
/// one answered over a bound, that error (the server answered: the caller degrades after its
/// record). None usable otherwise: `COMFYUI_UNAVAILABLE`.
async fn connect<'a>(
    input: &'a Input<'a>,
    deadline: Instant,
) -> Result<(Runner<'a>, Value, Option<Error>)> {
    let client_id = format!("vidax-{}", input.run_id);
    let bounds = client::Bounds::of(&input.job.limits);
    let clients = input
        .job
        .comfyui
        .pool
        .iter()
        .map(|u| Client::new(u, &client_id, bounds))
        .collect::<Result<Vec<_>>>()?;
    let checks = futures_util::future::join_all(clients.iter().map(|c| {
        tokio::time::timeout_at(
            deadline.min(Instant::now() + client::REQUEST_TIMEOUT),
            crate::interrupt::unless_stopped(c.health()),
        )
    }))
    .await;
    let mut endpoints = Vec::new();
    let (mut stats, mut over, mut unavailable) = (Value::Null, None, Vec::new());
    for (client, check) in clients.into_iter().zip(checks) {
        let mut rec = EndpointRecord {
            url: client.base.clone(),
            status: "usable".into(),
            ..EndpointRecord::default()
        };
        let mut info = Value::Null;
        match check {
            Ok(Ok((s, i))) => {
                if stats.is_null() {
                    stats = s.clone();
                }
                rec.system = s["system"].clone();
                info = i;
            }
            Ok(Err(e)) => {
                rec.status = "unavailable".into();
                rec.reason = Some(e.message.clone());
                if e.kind == ErrorKind::ComfyuiBadResponse {
                    over.get_or_insert(e);
                } else {
                    unavailable.push(e);
                }
            }
            Err(_) => {
                let e = Error::new(
                    ErrorKind::ComfyuiUnavailable,
                    format!("ComfyUI at {}: no answer to the health check", client.base),
                );
                rec.status = "unavailable".into();
                rec.reason = Some(e.message.clone());
                unavailable.push(e);
            }
        }
        endpoints.push(Endpoint {
            client,
            info,
            rec,
            in_flight: 0,
        });
    }
    let usable = endpoints.iter().filter(|e| e.usable()).count();
    if usable == 0 && over.is_none() {
        let mut e = unavailable.swap_remove(0);
        if endpoints.len() > 1 {
            e.message = format!(
                "no ComfyUI of comfyui.url is usable: {}",
                endpoints
                    .iter()
                    .map(|p| p.rec.reason.clone().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        return Err(e);
    }
    for e in endpoints.iter().filter(|e| !e.usable()) {
        tracing::warn!(stage = "comfyui", endpoint = %e.client.base, "left out: {}", e.rec.reason.clone().unwrap_or_default());
    }
    let runner = Runner {
        input,
        params: params(input, String::new(), String::new(), String::new()),
        endpoints,
        client_id,
        previous: OrderedMap::new(),
        prompt_ids: Vec::new(),
        attempts: Vec::new(),
        budget: file_budget(input, 1),
        fatal: None,
        outstanding: Arc::default(),
    };
    Ok((runner, stats, if usable == 0 { over } else { None }))
}

fn timeout_error(runner: &Runner, timeout: Duration) -> Error {
    let base = runner.url();
    Error::new(
        ErrorKind::ComfyuiTimeout,
        format!(
            "ComfyUI at {base} did not finish within comfyui.timeout_seconds={}",
            timeout.as_secs()
        ),
    )
    .with_hint("raise comfyui.timeout_seconds, or check the ComfyUI console")
}

fn run_blocking(input: &Input, m: &mut Manifest) -> Result<Outcome> {
    let ids = workflow_ids(input.job);
    let workflows = resolve(&ids, input)?;
    let rt = crate::comfy::runtime()?;
    let timeout = Duration::from_secs(input.job.comfyui.timeout_seconds.max(1));
    let deadline = Instant::now() + timeout;
    rt.block_on(async {
        let (mut runner, stats, over) = connect(input, deadline).await?;
        runner.budget = file_budget(input, workflows.len());
        m.phases.comfyui_mut().fields.system_stats = Some(stats["system"].clone());
        let earlier = m.comfyui.take().unwrap_or_default();
        runner.previous = earlier.workflows;
        // A resumed run keeps the earlier attempt's prompts (a reused workflow's prompt id
        // stays on record).
        if input.resume {
            runner.prompt_ids = earlier.prompt_ids;
            runner.attempts = earlier.attempts;
        }
        m.comfyui = Some(ComfyuiRecord {
            url: runner.url(),
            client_id: runner.client_id.clone(),
            workflow_ids: ids,
            frames_expected: Some(input.prepared.frames.main_frames()),
            ..ComfyuiRecord::default()
        });
        runner.record(m);
        if let Some(e) = over {
            return Ok(unusable_health(input, m, e));
        }
        if workflows.is_empty() {
            rec(m).action = Some("no workflow for this job: nothing asked of ComfyUI".into());
            return Ok(Outcome::default());
        }
        // A stop (SIGINT/SIGTERM, the supervisor) ends every wait of the stage at once.
        let waits = crate::interrupt::unless_stopped(runner.run_all(&workflows, m));
        let r = match tokio::time::timeout_at(deadline, waits).await {
            Ok(r) => r,
            Err(_) => Err(timeout_error(&runner, timeout)),
        };
        // Prompts still out are the run's no more: a stop, the timeout, or a workflow that
        // gave up (degraded) while other chunks of it were in flight.
        let why = match &r {
            Err(e) => e.message.clone(),
            Ok(_) => "the workflow ended without it (degraded)".to_string(),
        };
        runner.withdraw(&why).await;
        runner.record(m);
        r
    })
}

/// What the face check found.
#[derive(Debug, Clone, PartialEq)]
pub enum FaceCheck {
    /// `VIDAX_FaceProbe`'s report for each probed picture, in order.
    Reports(Vec<FaceReport>),
    /// The check could not run (node missing, ComfyUI answered badly): why.
    Failed(String),
}

/// Runs the face check graph (`vidax_facecheck`: one `LoadImage → VIDAX_FaceProbe` pair per
/// picture in `probes`) and reads the node's `vidax_face` reports. `Err` only for a server
/// that is not there, the timeout (`comfyui.timeout_seconds`) and local I/O; what ComfyUI
/// answered badly is [`FaceCheck::Failed`]. Its prompts are recorded in the `faceprobe` phase.
pub fn face_check(input: &Input, probes: &[ProbeImage], m: &mut Manifest) -> Result<FaceCheck> {
    crate::comfy::off_runtime(|| face_check_blocking(input, probes, m))
}

fn face_check_blocking(
    input: &Input,
    probes: &[ProbeImage],
    m: &mut Manifest,
) -> Result<FaceCheck> {
    let rt = crate::comfy::runtime()?;
    let timeout = Duration::from_secs(input.job.comfyui.timeout_seconds.max(1));
    let deadline = Instant::now() + timeout;
    rt.block_on(async {
        let (mut runner, _, over) = connect(input, deadline).await?;
        if let Some(e) = over {
            return Ok(FaceCheck::Failed(e.message));
        }
        let waits = crate::interrupt::unless_stopped(runner.face_check(probes));
        let r = tokio::time::timeout_at(deadline, waits).await;
        let fields = &mut m.phases.faceprobe_mut().fields;
        fields.prompt_ids = Some(runner.prompt_ids.clone());
        fields.attempts = Some(runner.attempts.clone());
        match r {
            Ok(r) => r,
            Err(_) => Err(timeout_error(&runner, timeout)),
        }
    })
}

fn params(input: &Input, start: String, audio: String, staged: String) -> GraphParams {
    let job = input.job;
    let fps = input.prepared.frames.fps;
    let name = |v: Value| v.as_str().map(String::from).unwrap_or_default();
    GraphParams {
        start,
        staged,
        audio,
        frames: input.prepared.frames.main_frames(),
        fps: fps.num() as f64 / fps.den() as f64,
        width: input.prepared.render.0,
        height: input.prepared.render.1,
        seed: input.seed,
        prompt: job.prompt.clone().unwrap_or_default(),
        negative: job.negative.clone().unwrap_or_default(),
        wav2lip_mode: name(json!(job.comfyui.wav2lip.mode)),
        face_detect_batch: job.comfyui.wav2lip.face_detect_batch,
        on_no_face: name(json!(job.comfyui.wav2lip.on_no_face)),
        motion_mode: name(json!(job.motion.mode)),
        motion_strength: job.motion.strength,
        background: job.background.to_string(),
    }
}

/// The manifest's `comfyui` record, made when missing.
fn rec(m: &mut Manifest) -> &mut ComfyuiRecord {
    m.comfyui.get_or_insert_with(ComfyuiRecord::default)
}

impl Runner<'_> {
    /// The first usable endpoint's URL (the pool's first when none is).
    fn url(&self) -> String {
        self.endpoints
            .iter()
            .find(|e| e.usable())
            .or(self.endpoints.first())
            .map(|e| e.client.base.clone())
            .unwrap_or_default()
    }

    fn usable(&self) -> usize {
        self.endpoints.iter().filter(|e| e.usable()).count()
    }

    /// Withdraws every prompt of ours still on a ComfyUI (the stage ends with `why`: a stop,
    /// the timeout, a local failure), all at once, within a few seconds; each is recorded as
    /// an attempt that says whether its server took it back.
    async fn withdraw(&mut self, why: &str) {
        let left = std::mem::take(&mut *self.outstanding.lock().unwrap());
        let asks = left.into_iter().map(|o| async move {
            let taken = o
                .client
                .withdraw(&o.record.prompt_id, Duration::from_secs(3))
                .await;
            (o.record, taken)
        });
        for (mut a, taken) in futures_util::future::join_all(asks).await {
            let what = if taken {
                "withdrawn from ComfyUI"
            } else {
                "could not be withdrawn from ComfyUI (it may still run there)"
            };
            tracing::warn!(stage = "comfyui", endpoint = %a.endpoint, prompt_id = %a.prompt_id, "{what}: {why}");
            a.result = format!("{what}: {why}");
            self.attempts.push(a);
        }
    }

    fn record(&self, m: &mut Manifest) {
        let r = rec(m);
        r.url = self.url();
        r.prompt_ids = self.prompt_ids.clone();
        r.prompt_id = self.prompt_ids.last().cloned();
        r.attempts = self.attempts.clone();
        r.endpoints = self.endpoints.iter().map(|e| e.rec.clone()).collect();
    }

    async fn run_all(&mut self, workflows: &[Workflow], m: &mut Manifest) -> Result<Outcome> {
        let workdir = self.input.workdir;
        let mut outcome = Outcome::default();
        // No face found (on_no_face=passthrough): the lip-sync graphs are not sent at all.
        let no_face = self.input.face.is_some_and(|f| !f.found());
        let runs = |w: &Workflow| !(no_face && w.lipsync());
        // Resume: workflows completed earlier whose frames are all on disk are not asked again.
        let done_before = |w: &Workflow| -> Option<WorkflowRecord> {
            let rec = self.previous.get(&w.id)?;
            let n = rec.frames?;
            let dir = workdir.join(rec.dir.as_deref()?);
            (self.input.resume
                && rec.status == "completed"
                && count_frames(&dir) == n
                && n == self.input.prepared.frames.main_frames())
            .then(|| rec.clone())
        };
        let previous: Vec<Option<WorkflowRecord>> = workflows.iter().map(done_before).collect();
        let due = |(p, w): &(&Option<WorkflowRecord>, &Workflow)| p.is_none() && runs(w);
        if previous.iter().zip(workflows).any(|pw| due(&pw)) {
            // The start file itself goes to ComfyUI only when a graph due loads it (the
            // lip-sync graphs load the staged picture).
            let start = previous
                .iter()
                .zip(workflows)
                .any(|pw| due(&pw) && pw.1.loads_start());
            if let Err(d) = self.stage_inputs(m, start).await {
                return Ok(self.degrade(m, outcome, d));
            }
        }
        let mut skipped = Vec::new();
        for (w, prev) in workflows.iter().zip(previous) {
            if !runs(w) {
                tracing::warn!(stage = "comfyui", workflow = %w.id, "no face found: the lip-sync graph is not sent");
                rec(m).workflows.insert(
                    w.id.clone(),
                    WorkflowRecord {
                        status: "skipped".into(),
                        reason: Some(ErrorKind::ComfyuiFaceNotFound.code().into()),
                        message: Some(
                            "the face check found no face (comfyui.wav2lip.on_no_face=passthrough)"
                                .into(),
                        ),
                        ..WorkflowRecord::default()
                    },
                );
                skipped.push(w.id.clone());
                continue;
            }
            if let Some(mut r) = prev {
                tracing::info!(stage = "comfyui", workflow = %w.id, "resume: frames already fetched, ComfyUI not asked again");
                r.reused = true;
                rec(m).workflows.insert(w.id.clone(), r.clone());
                self.succeeded(w, &r, &mut outcome, m);
                continue;
            }
            let checked = match self.run_workflow(w, m).await {
                Ok(ran) if w.lipsync() => self.check_effect(w, ran, m),
                other => Ok(other),
            };
            match checked? {
                Ok(ran) => {
                    rec(m).workflows.insert(w.id.clone(), ran.rec.clone());
                    self.succeeded(w, &ran.rec, &mut outcome, m);
                    self.record(m);
                    m.save(workdir)?;
                }
                Err(d) => {
                    let status = if d.reason == LIPSYNC_NO_EFFECT {
                        "no_effect"
                    } else {
                        "failed"
                    };
                    let wr = rec(m).workflows.get_or_default(&w.id);
                    wr.status = status.into();
                    wr.reason = Some(d.reason.into());
                    wr.message = Some(d.message.clone());
                    self.record(m);
                    if let Some(e) = self.fatal.take() {
                        return Err(e);
                    }
                    return Ok(self.degrade(m, outcome, d));
                }
            }
        }
        if !skipped.is_empty() {
            let probes = self.input.face.map_or(String::new(), |f| {
                f.probes
                    .iter()
                    .map(|p| p.file.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            let d = Degraded {
                reason: ErrorKind::ComfyuiFaceNotFound.code(),
                message: format!(
                    "no face found in {probes}: lip-sync workflow {} not run (comfyui.wav2lip.on_no_face=passthrough)",
                    skipped.join(", ")
                ),
                details: Some(Box::new(FailureDetails::empty())),
            };
            return Ok(self.degrade(m, outcome, d));
        }
        Ok(outcome)
    }

    /// The face check over `probes` (see [`face_check`]).
    async fn face_check(&mut self, probes: &[ProbeImage]) -> Result<FaceCheck> {
        let mut names = Vec::new();
        for p in probes {
            let role = if p.frame.is_some() { "frame" } else { "still" };
            match self.stage_file(role, &p.path, None).await {
                Ok(n) => names.push(n.0),
                Err(d) => return Ok(FaceCheck::Failed(d.message)),
            }
        }
        let w = Workflow {
            id: FACECHECK.into(),
            kind: Kind::FaceCheck(graph::facecheck(&names)),
        };
        let entry = match self.run_graph(&w).await {
            Ok(e) => e,
            Err(d) => return Ok(FaceCheck::Failed(d.message)),
        };
        let (reports, bad) = report::face_reports(&entry);
        let mut out = Vec::new();
        for i in 0..probes.len() {
            let id = graph::facecheck_probe_id(i);
            match reports.iter().find(|(n, _)| *n == id) {
                Some((_, r)) => out.push(r.clone()),
                None => {
                    return Ok(FaceCheck::Failed(format!(
                        "VIDAX_FaceProbe (node {id}) sent no {} report{}: install the current nodes (va install) and restart ComfyUI",
                        report::FACE_KEY,
                        if bad.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", bad.join("; "))
                        }
                    )))
                }
            }
        }
        Ok(FaceCheck::Reports(out))
    }

    /// Preflights, submits and waits for a one-graph workflow (the face check) on an endpoint
    /// of the pool; its graph and history are saved under `comfyui/`.
    async fn run_graph(&mut self, w: &Workflow) -> std::result::Result<Value, Degraded> {
        let comfy_dir = self.input.workdir.join("comfyui");
        std::fs::create_dir_all(&comfy_dir).map_err(|e| Degraded {
            reason: ErrorKind::ComfyuiBadResponse.code(),
            message: format!("{}: {e}", comfy_dir.display()),
            details: None,
        })?;
        let (graphs, _) = self.graphs(w, self.seed_for(0));
        self.preflight(w, &graphs)?;
        let mut sink = Sink::new(self.input.workdir, "comfyui", &graphs);
        self.dispatch(w, &graphs, &mut sink, None).await?;
        sink.entry.ok_or_else(|| Degraded {
            reason: ErrorKind::ComfyuiBadResponse.code(),
            message: format!("{}: no history entry", w.id),
            details: None,
        })
    }

    /// Every graph of a workflow checked against each usable endpoint's `/object_info` before
    /// any is submitted. An endpoint that lacks something is left out (`missing_nodes`); when
    /// every one does, the workflow degrades with the problems of the first.
    fn preflight(
        &mut self,
        w: &Workflow,
        graphs: &[(Chunk, Value)],
    ) -> std::result::Result<(), Degraded> {
        let mut first: Option<Vec<String>> = None;
        let usable_before = self.usable();
        for ep in self.endpoints.iter_mut().filter(|e| e.usable()) {
            let mut problems = Vec::new();
            for (_, g) in graphs {
                for p in graph::preflight(g, &ep.info) {
                    if !problems.contains(&p) {
                        problems.push(p);
                    }
                }
            }
            if problems.is_empty() {
                continue;
            }
            if usable_before > 1 {
                ep.leave_out(
                    "missing_nodes",
                    format!("workflow {}: {}", w.id, problems.join("; ")),
                );
            } else {
                ep.rec.reason = Some(format!("workflow {}: {}", w.id, problems.join("; ")));
            }
            first.get_or_insert(problems);
        }
        match first {
            Some(problems) if self.usable() == 0 || usable_before == 1 => Err(Degraded {
                reason: ErrorKind::ComfyuiBadResponse.code(),
                message: format!("workflow {}: {}", w.id, problems.join("; ")),
                details: Some(Box::new(FailureDetails {
                    preflight: Some(problems),
                    ..FailureDetails::empty()
                })),
            }),
            _ => Ok(()),
        }
    }

    /// The effect check of a lip-sync workflow's frames (`stages::effect`): records
    /// `lipsync_meta`; a lip-sync that did not change the speech frames is degraded
    /// [`LIPSYNC_NO_EFFECT`]; frames the check cannot read degrade it as
    /// `COMFYUI_BAD_RESPONSE`. `Err` only for a local failure writing the record.
    fn check_effect(
        &self,
        w: &Workflow,
        ran: Ran,
        m: &mut Manifest,
    ) -> Result<std::result::Result<Ran, Degraded>> {
        let input = self.input;
        let workdir = input.workdir;
        let main = input.prepared.frames.main_frames();
        let mut problems = ran.report_problems.clone();
        let merged = (!ran.reports.is_empty()).then(|| Merged::new(&ran.reports, main));
        if let Some(mg) = &merged {
            let covered = mg.outcome.iter().filter(|o| o.is_some()).count() as u64;
            if covered != main {
                problems.push(format!("the reports cover {covered} of {main} frames"));
            }
        }
        let staged = input.staged;
        let still = staged.and_then(|s| s.still.as_ref()).map(|s| s.0.clone());
        let clip = staged.and_then(|s| s.clip.as_ref()).map(|c| c.0.clone());
        let reference = match (&w.kind, &still, &clip) {
            (Kind::Wav2LipImage, Some(p), _) => effect::Reference::Still(p),
            (Kind::Wav2LipVideo, _, Some(p)) => effect::Reference::Clip(p),
            _ => effect::Reference::Motion {
                centre: input
                    .face
                    .and_then(|f| f.centre_in(input.prepared.source_size)),
            },
        };
        let frames_dir = workdir.join(ran.rec.dir.as_deref().unwrap_or("frames"));
        let check = match effect::check(&effect::Input {
            job: input.job,
            prepared: input.prepared,
            frames_dir: &frames_dir,
            reference,
            merged: merged.as_ref(),
            face: input.face,
        }) {
            Ok(c) => c,
            // A frame that does not decode is ComfyUI's delivery problem: the fallback, as
            // the encode would do.
            Err(e) => {
                return Ok(Err(Degraded {
                    reason: ErrorKind::ComfyuiBadResponse.code(),
                    message: format!(
                        "workflow {}: its frames could not be checked: {}",
                        w.id, e.message
                    ),
                    details: None,
                }))
            }
        };
        let report_file = match &merged {
            Some(mg) => {
                let rel = format!("comfyui/{}.lipsync.json", w.id);
                effect::write_report(&workdir.join(&rel), mg)?;
                Some(rel)
            }
            None => None,
        };
        let meta = LipsyncMeta::new(
            &w.id,
            w.frames_dir(),
            main,
            merged.as_ref(),
            problems,
            report_file,
            check,
        );
        m.lipsync_meta = Some(LipsyncRecord::InsideComfy(Box::new(meta.clone())));
        tracing::info!(
            stage = "comfyui",
            workflow = %w.id,
            speech_frames = meta.check.speech_frames,
            frames_changed = meta.check.frames_changed,
            verdict = ?meta.verdict,
            "lip-sync effect checked"
        );
        if meta.verdict == Verdict::NoEffect {
            return Ok(Err(Degraded {
                reason: LIPSYNC_NO_EFFECT,
                message: meta.no_effect_message(),
                details: Some(Box::new(FailureDetails {
                    check: Some(meta.check.clone()),
                    ..FailureDetails::empty()
                })),
            }));
        }
        Ok(Ok(ran))
    }

    fn succeeded(
        &self,
        w: &Workflow,
        wr: &WorkflowRecord,
        outcome: &mut Outcome,
        m: &mut Manifest,
    ) {
        let workdir = self.input.workdir;
        let zoom = matches!(w.kind, Kind::Wav2LipImage).then(|| FrameZoom {
            centre: match (self.input.face, self.input.staged) {
                (Some(f), Some(s)) => f.centre_in(s.size),
                _ => None,
            },
        });
        let dir = wr.dir.clone().unwrap_or_else(|| "frames".into());
        let visual = match &wr.video {
            Some(v) => Visual::Video(workdir.join(v)),
            None => Visual::Frames {
                dir: workdir.join(&dir),
                count: wr.frames.unwrap_or(0),
                zoom,
                base: matches!(w.kind, Kind::Wav2LipImage)
                    .then(|| self.input.staged.and_then(|s| s.still.as_ref()))
                    .flatten()
                    .map(|s| s.0.clone()),
            },
        };
        let output = match visual {
            Visual::Video(_) => ComfyuiOutput::Video,
            Visual::Frames { .. } => ComfyuiOutput::Frames,
        };
        let r = rec(m);
        r.workflow_id = Some(w.id.clone());
        r.output = Some(output);
        r.frames_received = wr.frames;
        r.chunk_size = wr.chunk_size;
        r.chunk_count = wr.chunk_count;
        r.chunk_size_source = Some(
            if self.input.job.comfyui.chunk_size.is_some() {
                "job"
            } else {
                "default"
            }
            .into(),
        );
        r.outputs.insert(
            w.id.clone(),
            wr.video.clone().unwrap_or_else(|| dir.clone()),
        );
        if let Kind::Motion = w.kind {
            m.motion_meta = Some(MotionMeta::Comfyui {
                workflow_id: w.id.clone(),
                frames_dir: dir.clone(),
                frame_count: wr.frames,
                fps: self.input.prepared.frames.fps.to_string(),
                mode: self.input.job.motion.mode,
                strength: self.input.job.motion.strength,
                chunk_size: wr.chunk_size,
                chunk_count: wr.chunk_count,
            })
        }
        outcome.visual = Some(visual);
        outcome.workflow_id = Some(w.id.clone());
        outcome.output = Some(output);
        outcome.lipsync_inside = w.lipsync();
    }

    fn degrade(&mut self, m: &mut Manifest, mut outcome: Outcome, d: Degraded) -> Outcome {
        let none = FailureDetails::default();
        let details = d.details.as_deref().unwrap_or(&none);
        tracing::warn!(
            stage = "comfyui",
            code = d.reason,
            history_keys = ?details.history_keys,
            output_keys = ?details.output_keys,
            messages = ?details.messages,
            node_errors = %details.node_errors,
            "{}",
            d.message
        );
        let action = match &outcome.visual {
            Some(Visual::Frames { dir, .. }) => format!(
                "the main segment uses the frames that did arrive ({}), without what failed",
                dir.strip_prefix(self.input.workdir)
                    .unwrap_or(dir)
                    .display()
            ),
            Some(Visual::Video(_)) => "the main segment uses the video that did arrive".into(),
            None if self.input.job.start.is_image() => {
                "the main segment comes from the local motion fallback".into()
            }
            None => "the main segment comes from the start video".into(),
        };
        let r = rec(m);
        r.failure = Some(FailureRecord {
            code: d.reason.into(),
            message: d.message.clone(),
            details: d.details.map(|b| *b),
        });
        r.action = Some(action.clone());
        m.add_warning(format!("{}: {} ({action})", d.reason, d.message));
        outcome.degraded_reason = Some(d.reason.to_string());
        // A lip-sync that failed is not inside the picture.
        if outcome.visual.is_none() {
            outcome.lipsync_inside = false;
        }
        outcome
    }

    /// ComfyUI's input folder when inputs are copied there: a known local folder and a
    /// pool of one server on this machine (several servers each read their own folder, so
    /// each gets an upload).
    fn local_input_dir(&self) -> Option<PathBuf> {
        let one = match self.endpoints.as_slice() {
            [one] => one,
            _ => return None,
        };
        input_dir(self.input.job).filter(|d| d.is_dir() && is_local(&one.client.base))
    }

    /// Puts `path` where every usable endpoint reads it, as `vidax_<role>_<sha16><ext>`:
    /// copied into the input folder when there is a local one, else uploaded. An endpoint
    /// that refuses the upload (or names the file otherwise) is left out while another is
    /// usable. Returns the name the servers know and whether it was copied.
    /// `admitted`: for an input, the handle admission opened it with and the SHA-256 it took,
    /// so the file is neither hashed again for its name nor opened again to be sent. The
    /// file is read once however many endpoints get it.
    async fn stage_file(
        &mut self,
        role: &str,
        path: &Path,
        admitted: Option<(&std::fs::File, &str)>,
    ) -> std::result::Result<(String, bool), Degraded> {
        let local_err = |e: Error| Degraded {
            reason: ErrorKind::ComfyuiBadResponse.code(),
            message: e.message,
            details: None,
        };
        let (handle, known_sha) = admitted.unzip();
        let name = staged_name(role, path, known_sha).map_err(local_err)?;
        if let Some(d) = self.local_input_dir() {
            let copied = copy_into(path, handle, &d, &name).map_err(local_err)?;
            tracing::info!(stage = "comfyui", file = %name, copied, "staged into {}", d.display());
            return Ok((name, true));
        }
        let data = match handle {
            Some(f) => crate::files::from_start(f, path).and_then(|mut f| {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut v).at(ErrorKind::InputNotFound, path)?;
                Ok(v)
            }),
            None => std::fs::read(path).at(ErrorKind::InputNotFound, path),
        }
        .map_err(local_err)?;
        let mut first: Option<Degraded> = None;
        for i in 0..self.endpoints.len() {
            if !self.endpoints[i].usable() {
                continue;
            }
            let got = self.endpoints[i].client.upload(&data, &name).await;
            let why = match got {
                Ok(n) if n == name => continue,
                Ok(n) => format!("the upload of {name} was stored as {n}"),
                Err(f) => {
                    let d = Degraded::from_failure(f, None);
                    let why = d.message.clone();
                    first.get_or_insert(d);
                    why
                }
            };
            if self.usable() > 1 {
                self.endpoints[i].leave_out("unavailable", why);
            } else {
                return Err(first.unwrap_or(Degraded {
                    reason: ErrorKind::ComfyuiBadResponse.code(),
                    message: why,
                    details: None,
                }));
            }
        }
        Ok((name, false))
    }

    /// Stages the audio, the staged picture, and the start file itself when `start` (a graph
    /// loads it): a file no graph loads is not read or sent.
    async fn stage_inputs(
        &mut self,
        m: &mut Manifest,
        start: bool,
    ) -> std::result::Result<(), Degraded> {
        let input = self.input;
        let (audio, copied) = self.stage_file("audio", &input.prepared.wav, None).await?;
        let start = if start {
            // The start's hash is on record from admission: hashing it again would read it
            // again.
            let sha = m
                .inputs
                .get(input.job.start.field())
                .map(|r| r.sha256.clone())
                .unwrap_or_default();
            let path = input.job.start.path();
            let admitted = Some((input.start_file, sha.as_str()));
            Some(self.stage_file("start", path, admitted).await?.0)
        } else {
            None
        };
        let staged = match input.staged {
            Some(Staged {
                still: Some((p, _)),
                ..
            }) => Some(self.stage_file("still", p, None).await?.0),
            Some(Staged {
                clip: Some((p, _)), ..
            }) => Some(self.stage_file("clip", p, None).await?.0),
            _ => None,
        };
        let dir = self.local_input_dir();
        rec(m).inputs = Some(InputsRecord {
            audio: audio.clone(),
            start: start.clone(),
            staged: staged.clone(),
            staging: if copied { "copy" } else { "upload" }.into(),
            input_dir: dir.map(|d| d.display().to_string()),
        });
        self.params = params(
            input,
            start.unwrap_or_default(),
            audio,
            staged.unwrap_or_default(),
        );
        Ok(())
    }

    fn graphs(&self, w: &Workflow, seed: u64) -> (Vec<(Chunk, Value)>, u64) {
        let mut p = self.params.clone();
        p.seed = seed;
        let main = p.frames;
        // The motion and mouth-blend graphs work on the start image itself: the face's
        // geometry in its pixels.
        let src = self.input.prepared.source_size;
        let face = self.input.face.filter(|f| f.found());
        let centre = face.and_then(|f| f.centre_in(src));
        let blend = face.and_then(|f| {
            let r = f.rect_in(f.report.mouth_roi?, src);
            Some(FaceInputs {
                mouth: (r.x, r.y, r.w, r.h),
                centre: centre?,
            })
        });
        if let Kind::FaceCheck(g) = &w.kind {
            return (
                vec![(
                    Chunk {
                        start: 0,
                        frames: 1,
                    },
                    g.clone(),
                )],
                1,
            );
        }
        let size = if w.chunked() {
            let asked = self.input.job.comfyui.chunk_size.map_or_else(
                || {
                    let pixels = |(w, h): (u32, u32)| u64::from(w) * u64::from(h);
                    let p = self.input.prepared;
                    default_chunk_size(pixels(p.render).max(pixels(p.source_size)))
                },
                u64::from,
            );
            match w.kind {
                Kind::Template(_) => asked,
                _ => asked.min(graph::REPEAT_MAX),
            }
        } else {
            main
        };
        let plan = graph::chunks(main, size);
        let count = plan.len();
        let graphs = plan
            .into_iter()
            .map(|c| {
                // What the graph loads: the chunk and its context frames.
                let (before, after) = context(self.input.job, w, c, main, count);
                let loaded = Chunk {
                    start: c.start - before,
                    frames: c.frames + before + after,
                };
                let g = match &w.kind {
                    Kind::Motion => graph::motion_chunk(&p, c, centre),
                    Kind::MouthBlend => match &blend {
                        Some(f) => graph::mouthblend_chunk(&p, c, f),
                        None => Value::Null,
                    },
                    Kind::Wav2LipImage => graph::wav2lip_image(&p, c),
                    Kind::Wav2LipVideo => graph::wav2lip_video(&p, loaded),
                    Kind::Template(t) => t.graph.clone(),
                    Kind::FaceCheck(g) => g.clone(),
                };
                (c, graph::fill(&g, &p, c))
            })
            .collect();
        // The size used: never more than the main segment.
        (graphs, size.min(main.max(1)))
    }

    fn seed_for(&self, attempt: u32) -> u64 {
        match self.input.job.determinism.seed_policy {
            SeedPolicy::PerRetry if attempt > 0 => super::run::random_seed(),
            _ => self.input.seed,
        }
    }

    async fn run_workflow(
        &mut self,
        w: &Workflow,
        m: &mut Manifest,
    ) -> std::result::Result<Ran, Degraded> {
        let workdir = self.input.workdir;
        let comfy_dir = workdir.join("comfyui");
        let rel_dir = w.frames_dir();
        let dir = workdir.join(rel_dir);
        let io = |e: std::io::Error, p: &Path| Degraded {
            reason: ErrorKind::ComfyuiBadResponse.code(),
            message: format!("{}: {e}", p.display()),
            details: None,
        };
        std::fs::create_dir_all(&comfy_dir).map_err(|e| io(e, &comfy_dir))?;
        // Every graph is checked before any is submitted.
        let (graphs, size) = self.graphs(w, self.seed_for(0));
        self.preflight(w, &graphs)?;
        let mut sink = Sink::new(workdir, rel_dir, &graphs);
        // Resume: the earlier attempt's chunks whose frames are all on disk are kept.
        let reused = if self.input.resume {
            self.reuse_chunks(w, &graphs, &mut sink)
        } else {
            0
        };
        if reused > 0 {
            tracing::info!(stage = "comfyui", workflow = %w.id, reused, chunks = graphs.len(), "resume: chunks already fetched are not asked again");
        } else if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io(e, &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io(e, &dir))?;
        {
            let wr = rec(m).workflows.get_or_default(&w.id);
            wr.status = "running".into();
            wr.dir = Some(rel_dir.into());
            wr.chunk_size = Some(size);
            wr.chunk_count = Some(graphs.len() as u64);
        }
        let r = self.dispatch(w, &graphs, &mut sink, Some(m)).await;
        for warning in sink.warnings.drain(..) {
            m.add_warning(warning);
        }
        rec(m).workflows.get_or_default(&w.id).chunks = sink.chunks.clone();
        r?;
        let main = self.params.frames;
        if sink.video.is_none() && sink.received != main {
            return Err(Degraded {
                reason: ErrorKind::ComfyuiOutputsMissing.code(),
                message: format!(
                    "workflow {}: received {} of {main} frames",
                    w.id, sink.received
                ),
                details: None,
            });
        }
        Ok(Ran {
            rec: WorkflowRecord {
                status: "completed".into(),
                dir: Some(rel_dir.into()),
                frames: sink.video.is_none().then_some(sink.received),
                video: sink.video,
                chunk_size: Some(size),
                chunk_count: Some(graphs.len() as u64),
                chunks: sink.chunks,
                ..WorkflowRecord::default()
            },
            reports: sink.reports,
            report_problems: sink.report_problems,
        })
    }

    /// `--resume`: marks the chunks of the earlier attempt of `w` that completed with the same
    /// frames, and whose frames are all on disk, as done (their lip-sync reports read back
    /// from the history saved with them). Returns how many.
    fn reuse_chunks(&self, w: &Workflow, graphs: &[(Chunk, Value)], sink: &mut Sink) -> usize {
        let Some(prev) = self.previous.get(&w.id) else {
            return 0;
        };
        let comfy_dir = self.input.workdir.join("comfyui");
        let mut n = 0;
        for (ci, (c, _)) in graphs.iter().enumerate() {
            let Some(pc) = prev.chunks.get(ci) else {
                continue;
            };
            let on_disk = (0..c.frames).all(|k| {
                sink.dir
                    .join(format!("{:06}.png", c.start + k + 1))
                    .is_file()
            });
            if pc.status != "completed" || pc.start != c.start || pc.frames != c.frames || !on_disk
            {
                continue;
            }
            let label = chunk_label(&w.id, ci, graphs.len());
            let history = comfy_dir.join(format!("{label}.history.json"));
            let Some(entry) = std::fs::read(&history)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                continue;
            };
            let (found, bad) = report::lipsync_reports(&entry);
            sink.reports.extend(found);
            sink.report_problems
                .extend(bad.into_iter().map(|b| format!("{label}: {b}")));
            sink.received += c.frames;
            sink.chunks[ci] = ChunkRecord {
                reused: true,
                ..pc.clone()
            };
            n += 1;
        }
        n
    }

    /// Runs the chunks of `w` not yet done over the pool: each due chunk goes to the usable
    /// endpoint with the shortest `/queue` (running + pending) that holds fewer than
    /// [`MAX_IN_FLIGHT`] of ours, so several are in flight at once and a faster server takes
    /// more; each finished chunk is fetched at once ([`Runner::finish_chunk`]). A transient
    /// failure is retried after the backoff, on another endpoint where there is one (a new
    /// prompt id: never run twice on one server); an endpoint that stopped answering while
    /// another is usable is left out (`died`) and its chunks go elsewhere without counting
    /// as attempts. With `m`, the manifest is saved after each chunk (for `--resume`).
    async fn dispatch(
        &mut self,
        w: &Workflow,
        graphs: &[(Chunk, Value)],
        sink: &mut Sink,
        mut m: Option<&mut Manifest>,
    ) -> std::result::Result<(), Degraded> {
        let retry = self.input.job.comfyui.retry;
        let poll = Duration::from_millis(self.input.job.comfyui.poll_interval_ms.max(10));
        let n = graphs.len();
        let mut pending: VecDeque<usize> = (0..n)
            .filter(|&ci| sink.chunks[ci].status != "completed")
            .collect();
        let mut due = vec![Instant::now(); n];
        let mut failures = vec![0u32; n];
        let mut failed_on: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut flight = FuturesUnordered::new();
        loop {
            let now = Instant::now();
            if pending.iter().any(|&ci| due[ci] <= now) {
                let mut depths = self.depths().await;
                while let Some(pos) = pending.iter().position(|&ci| due[ci] <= now) {
                    let ci = pending[pos];
                    let Some(ep) = self.pick(&depths, &failed_on[ci]) else {
                        break;
                    };
                    pending.remove(pos);
                    if let Some(d) = depths[ep].as_mut() {
                        *d += 1;
                    }
                    flight.push(self.launch(w, graphs, ci, ep, sink, poll));
                }
                self.report_chunks(w, sink);
            }
            if flight.is_empty() {
                if pending.is_empty() {
                    return Ok(());
                }
                if self.usable() == 0 {
                    return Err(Degraded {
                        reason: ErrorKind::ComfyuiBadResponse.code(),
                        message: format!("workflow {}: no usable ComfyUI left", w.id),
                        details: None,
                    });
                }
                let next = pending.iter().map(|&ci| due[ci]).min().unwrap_or(now);
                tokio::time::sleep_until(next.max(now + Duration::from_millis(10))).await;
                continue;
            }
            let wake = pending.iter().map(|&ci| due[ci]).filter(|d| *d > now).min();
            let done = match wake {
                Some(t) => tokio::select! {
                    d = flight.next() => d,
                    _ = tokio::time::sleep_until(t) => None,
                },
                None => flight.next().await,
            };
            let Some(Done {
                ci,
                ep,
                prompt_id,
                seed,
                attempt,
                started,
                result,
            }) = done
            else {
                continue;
            };
            let label = chunk_label(&w.id, ci, n);
            let base = self.endpoints[ep].client.base.clone();
            self.endpoints[ep].in_flight -= 1;
            self.attempts.push(AttemptRecord {
                workflow_id: w.id.clone(),
                chunk: ci as u64,
                attempt,
                endpoint: base.clone(),
                prompt_id,
                seed,
                result: match &result {
                    Ok(_) => "finished".into(),
                    Err(f) => f.error.message.clone(),
                },
            });
            match result {
                Ok(entry) => {
                    sink.chunks[ci].run_seconds = Some(started.elapsed().as_secs_f64());
                    let fetch = Instant::now();
                    self.finish_chunk(w, &graphs[ci].0, ci, n, ep, entry, sink)
                        .await?;
                    let c = &mut sink.chunks[ci];
                    c.fetch_seconds = Some(fetch.elapsed().as_secs_f64());
                    c.status = "completed".into();
                    c.endpoint = Some(base);
                    let e = &mut self.endpoints[ep].rec;
                    e.chunks_completed += 1;
                    e.frames += graphs[ci].0.frames;
                    self.report_chunks(w, sink);
                    if let Some(m) = m.as_deref_mut() {
                        rec(m).workflows.get_or_default(&w.id).chunks = sink.chunks.clone();
                        self.record(m);
                        if let Err(e) = m.save(self.input.workdir) {
                            tracing::warn!(stage = "comfyui", "manifest not saved: {}", e.message);
                        }
                    }
                }
                Err(f) if f.transient => {
                    tracing::warn!(stage = "comfyui", workflow = %w.id, chunk = ci, endpoint = %base, attempt, "{}", f.error.message);
                    sink.chunks[ci].status = "pending".into();
                    // A dead endpoint's chunks go elsewhere without counting as attempts: the
                    // first that finds it dead leaves it out, and those it still held (it was
                    // left out meanwhile) follow, even when only one endpoint is left.
                    let dead = !self.endpoints[ep].usable()
                        || (self.usable() > 1
                            && !self.endpoints[ep]
                                .client
                                .answers(Duration::from_secs(5))
                                .await);
                    if dead {
                        if self.endpoints[ep].usable() {
                            self.endpoints[ep].leave_out("died", f.error.message.clone());
                        }
                        requeue(&mut pending, ci);
                        due[ci] = Instant::now();
                        continue;
                    }
                    failures[ci] += 1;
                    if failures[ci] >= retry.attempts.max(1) {
                        let mut d = Degraded::from_failure(f, None);
                        d.message = format!(
                            "workflow {} ({label}): gave up after {} attempts: {}",
                            w.id, retry.attempts, d.message
                        );
                        return Err(d);
                    }
                    failed_on[ci].push(ep);
                    let wait = retry
                        .backoff_ms
                        .saturating_mul(1 << (failures[ci] - 1).min(16));
                    due[ci] = Instant::now() + Duration::from_millis(wait);
                    requeue(&mut pending, ci);
                }
                Err(f) => return Err(Degraded::from_failure(f, None)),
            }
        }
    }

    /// Each endpoint's load for the next hand-out: `/queue`'s running + pending (at least our
    /// own prompts there); `None` for one not usable or full of ours. A `/queue` that does not
    /// answer counts our own prompts only (the submission will tell whether it is alive).
    async fn depths(&self) -> Vec<Option<u64>> {
        let several = self.usable() > 1;
        let asks = self.endpoints.iter().map(|e| async move {
            if !e.usable() || e.in_flight >= MAX_IN_FLIGHT {
                return None;
            }
            let ours = e.in_flight as u64;
            if !several {
                return Some(ours);
            }
            match tokio::time::timeout(Duration::from_secs(10), e.client.queue_depth()).await {
                Ok(Ok(d)) => Some(d.max(ours)),
                _ => Some(ours),
            }
        });
        futures_util::future::join_all(asks).await
    }

    /// The endpoint for a chunk: usable, room for one more of ours, the shortest queue,
    /// endpoints where the chunk failed last, the pool's order breaking ties.
    fn pick(&self, depths: &[Option<u64>], failed_on: &[usize]) -> Option<usize> {
        (0..self.endpoints.len())
            .filter(|&i| self.endpoints[i].usable() && self.endpoints[i].in_flight < MAX_IN_FLIGHT)
            .filter_map(|i| depths[i].map(|d| (failed_on.contains(&i), d, i)))
            .min()
            .map(|(_, _, i)| i)
    }

    /// Submits chunk `ci` to endpoint `ep`: the future owns what it needs, so several run at
    /// once. ComfyUI's step progress is reported only for a workflow of one chunk.
    fn launch(
        &mut self,
        w: &Workflow,
        graphs: &[(Chunk, Value)],
        ci: usize,
        ep: usize,
        sink: &mut Sink,
        poll: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Done>>> {
        let attempt = sink.chunks[ci].attempts;
        let seed = self.seed_for(attempt);
        let g = if seed == self.input.seed {
            graphs[ci].1.clone()
        } else {
            self.graphs(w, seed).0.swap_remove(ci).1
        };
        let label = chunk_label(&w.id, ci, graphs.len());
        let _ = crate::record::write_json_atomic(
            &self
                .input
                .workdir
                .join("comfyui")
                .join(format!("{label}.graph.json")),
            &g,
        );
        let prompt_id = new_uuid();
        self.prompt_ids.push(prompt_id.clone());
        let e = &mut self.endpoints[ep];
        e.in_flight += 1;
        let client = e.client.clone();
        let c = &mut sink.chunks[ci];
        c.attempts += 1;
        c.status = "running".into();
        c.prompt_id = Some(prompt_id.clone());
        c.endpoint = Some(client.base.clone());
        tracing::info!(stage = "comfyui", workflow = %w.id, chunk = ci, endpoint = %client.base, prompt_id, "chunk submitted");
        let progress = (graphs.len() == 1).then(|| self.input.progress.clone());
        let silence = (self.usable() > 1).then(|| silence_limit(poll));
        let outstanding = self.outstanding.clone();
        outstanding.lock().unwrap().push(Outstanding {
            client: client.clone(),
            record: AttemptRecord {
                workflow_id: w.id.clone(),
                chunk: ci as u64,
                attempt: attempt + 1,
                endpoint: client.base.clone(),
                prompt_id: prompt_id.clone(),
                seed,
                result: String::new(),
            },
        });
        Box::pin(async move {
            let started = Instant::now();
            let result =
                submit_and_wait(&client, &g, &prompt_id, poll, progress.as_ref(), silence).await;
            outstanding
                .lock()
                .unwrap()
                .retain(|o| o.record.prompt_id != prompt_id);
            Done {
                ci,
                ep,
                prompt_id,
                seed,
                attempt: attempt + 1,
                started,
                result,
            }
        })
    }

    /// Reports where the chunks of `w` stand (the run's progress).
    fn report_chunks(&self, w: &Workflow, sink: &Sink) {
        if let Kind::FaceCheck(_) = w.kind {
            return;
        }
        let done = |c: &&ChunkRecord| c.status == "completed";
        let mine = |url: &str, c: &&ChunkRecord| !c.reused && c.endpoint.as_deref() == Some(url);
        let p = ChunkProgress {
            workflow_id: w.id.clone(),
            chunks_done: sink.chunks.iter().filter(done).count() as u64,
            chunks_total: sink.chunks.len() as u64,
            frames_done: sink.chunks.iter().filter(done).map(|c| c.frames).sum(),
            frames_total: sink.chunks.iter().map(|c| c.frames).sum(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| {
                    let url = e.client.base.as_str();
                    let ended = || sink.chunks.iter().filter(done).filter(|c| mine(url, c));
                    EndpointProgress {
                        url: url.to_string(),
                        chunks_done: ended().count() as u64,
                        frames_done: ended().map(|c| c.frames).sum(),
                        in_flight: e.in_flight as u64,
                    }
                })
                .collect(),
        };
        self.input.progress.comfyui_chunks(&p);
    }

    /// A chunk's history entry came from endpoint `ep`: saved, checked for a run-time error,
    /// its reports kept, its frames fetched into the workflow's folder under their timeline
    /// numbers (the face check keeps the entry itself).
    #[allow(clippy::too_many_arguments)]
    async fn finish_chunk(
        &mut self,
        w: &Workflow,
        c: &Chunk,
        ci: usize,
        chunk_count: usize,
        ep: usize,
        entry: Value,
        sink: &mut Sink,
    ) -> std::result::Result<(), Degraded> {
        let workdir = self.input.workdir;
        let label = chunk_label(&w.id, ci, chunk_count);
        let path = workdir
            .join("comfyui")
            .join(format!("{label}.history.json"));
        crate::record::write_json_atomic(&path, &entry).map_err(|e| Degraded {
            reason: ErrorKind::ComfyuiBadResponse.code(),
            message: e.message,
            details: None,
        })?;
        if let Kind::FaceCheck(_) = w.kind {
            if let Some(d) = run_time_error(&entry, &w.id) {
                return Err(d);
            }
            sink.entry = Some(entry);
            return Ok(());
        }
        if let Some(d) = run_time_error(&entry, &format!("workflow {} ({label})", w.id)) {
            return Err(d);
        }
        let summary = outputs::summary(&entry, &Value::Null);
        let main = self.params.frames;
        let (before, after) = context(self.input.job, w, *c, main, chunk_count);
        let loaded = c.frames + before + after;
        let (found, bad) = report::lipsync_reports(&entry);
        sink.reports.extend(found.iter().map(|r| {
            if before + after > 0 {
                r.trimmed(before, c.frames)
            } else {
                r.clone()
            }
        }));
        sink.report_problems
            .extend(bad.into_iter().map(|b| format!("{label}: {b}")));
        let outs = outputs::collect(&entry);
        if outs.images.is_empty() {
            if let (Some(v), 1) = (outs.videos.first(), chunk_count) {
                let rel = "comfyui/comfyui_video.mp4";
                self.fetch(ep, v, &workdir.join(rel), None, &summary)
                    .await?;
                // Checked here, not in the encode: a short video is a delivery problem.
                if let Err(e) = super::compose::visual_video(
                    self.input.job,
                    self.input.prepared,
                    &workdir.join(rel),
                ) {
                    return Err(Degraded {
                        reason: ErrorKind::ComfyuiOutputsMissing.code(),
                        message: format!("workflow {} ({label}): video output {}", w.id, e.message),
                        details: Some(Box::new(summary)),
                    });
                }
                sink.video = Some(rel.into());
                return Ok(());
            }
            return Err(Degraded {
                reason: ErrorKind::ComfyuiOutputsMissing.code(),
                message: format!(
                    "workflow {} ({label}): the history lists no image or video output",
                    w.id
                ),
                details: Some(Box::new(summary)),
            });
        }
        let dir = sink.dir.clone();
        let own = outs
            .images
            .iter()
            .skip(before as usize)
            .take(c.frames as usize);
        for (k, f) in own.enumerate() {
            let dest = dir.join(format!("{:06}.png", c.start + k as u64 + 1));
            self.fetch(ep, f, &dest, Some(&dir), &summary).await?;
            sink.received += 1;
        }
        if (outs.images.len() as u64) < loaded {
            return Err(Degraded {
                reason: ErrorKind::ComfyuiOutputsMissing.code(),
                message: format!(
                    "workflow {} ({label}): received {} of {} frames for timeline frames {}..{}; frames are never stretched",
                    w.id, outs.images.len(), loaded, c.start - before, c.start + c.frames + after
                ),
                details: Some(Box::new(FailureDetails {
                    frames_asked: Some(loaded),
                    frames_received: Some(outs.images.len() as u64),
                    ..summary
                })),
            });
        }
        if outs.images.len() as u64 > loaded {
            sink.warnings.push(format!(
                "workflow {} ({label}): ComfyUI returned {} frames for {} asked; the first {} are used",
                w.id,
                outs.images.len(),
                loaded,
                loaded
            ));
        }
        Ok(())
    }

    /// Fetches one output file of endpoint `ep` to `dest` within the run's bounds: a frame
    /// (`frames_dir` given: an image, checked from its header) or a video. What the server
    /// sent wrong degrades the workflow; a local write failure (out of disk) also removes
    /// `frames_dir`, whose frames cannot be used without the missing ones, and is kept in
    /// [`Runner::fatal`] so the run ends with it.
    async fn fetch(
        &mut self,
        ep: usize,
        f: &outputs::OutputFile,
        dest: &Path,
        frames_dir: Option<&Path>,
        summary: &FailureDetails,
    ) -> std::result::Result<u64, Degraded> {
        let image = frames_dir.is_some();
        let client = &self.endpoints[ep].client;
        match client.view_to_file(f, dest, image, &mut self.budget).await {
            Ok(n) => Ok(n),
            Err(client::FetchError::Peer(failure)) => {
                Err(Degraded::from_failure(failure, Some(summary.clone())))
            }
            Err(client::FetchError::Local(e)) => {
                if let Some(dir) = frames_dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                let d = Degraded {
                    reason: e.kind.code(),
                    message: e.message.clone(),
                    details: None,
                };
                self.fatal = Some(e);
                Err(d)
            }
        }
    }
}

impl Sink {
    fn new(workdir: &Path, rel_dir: &'static str, graphs: &[(Chunk, Value)]) -> Sink {
        Sink {
            dir: workdir.join(rel_dir),
            received: 0,
            video: None,
            reports: Vec::new(),
            report_problems: Vec::new(),
            entry: None,
            warnings: Vec::new(),
            chunks: graphs
                .iter()
                .enumerate()
                .map(|(i, (c, _))| ChunkRecord {
                    index: i as u64,
                    start: c.start,
                    frames: c.frames,
                    status: "pending".into(),
                    ..ChunkRecord::default()
                })
                .collect(),
        }
    }
}

/// A chunk's name in `comfyui/`: the workflow id, with `_chunkNNN` when there are several.
fn chunk_label(id: &str, ci: usize, count: usize) -> String {
    if count > 1 {
        format!("{id}_chunk{:03}", ci + 1)
    } else {
        id.to_string()
    }
}

/// Posts `g` under `prompt_id` (the `/ws` socket opened first) and waits for its history
/// entry. A POST whose answer was lost is followed by a look at `/history` and `/queue` under
/// the same prompt id before it is posted again.
async fn submit_and_wait(
    client: &Client,
    g: &Value,
    prompt_id: &str,
    poll: Duration,
    progress: Option<&Reporter>,
    silence: Option<Duration>,
) -> Fallible<Value> {
    // The socket first: events go only to the client that submitted.
    let ws = client.open_ws().await;
    match client.post_prompt(g, prompt_id).await? {
        Posted::Accepted { number } => {
            tracing::info!(stage = "comfyui", prompt_id, number, endpoint = %client.base, "graph queued");
        }
        Posted::Lost(why) => {
            tracing::warn!(
                stage = "comfyui",
                prompt_id,
                "{why}; looking before posting again"
            );
            tokio::time::sleep(poll).await;
            if known(client, prompt_id).await {
                tracing::info!(
                    stage = "comfyui",
                    prompt_id,
                    "the server has the prompt: not posted again"
                );
            } else {
                match client.post_prompt(g, prompt_id).await? {
                    Posted::Accepted { .. } => {}
                    Posted::Lost(why) if known(client, prompt_id).await => {
                        tracing::warn!(
                            stage = "comfyui",
                            prompt_id,
                            "{why}; the server has the prompt"
                        );
                    }
                    Posted::Lost(why) => {
                        return Err(Failure {
                            error: Error::new(ErrorKind::ComfyuiBadResponse, why),
                            transient: true,
                            node_errors: Value::Null,
                        })
                    }
                }
            }
        }
    }
    wait(client, prompt_id, ws, poll, progress, silence).await
}

/// Whether the server knows `prompt_id` (queued, running or finished).
async fn known(client: &Client, prompt_id: &str) -> bool {
    matches!(client.history(prompt_id).await, Ok(Some(_)))
        || matches!(client.queued(prompt_id).await, Ok(true))
}

/// Waits for `prompt_id`'s history entry. Transient trouble is waited out (the deadline bounds
/// it) — except, with `silence`, a server that answers nothing at all for that long: the
/// caller then takes the chunk to another endpoint.
async fn wait(
    client: &Client,
    prompt_id: &str,
    mut ws: Option<client::WsStream>,
    poll: Duration,
    progress: Option<&Reporter>,
    silence: Option<Duration>,
) -> Fallible<Value> {
    let mut next_poll = Instant::now() + poll;
    let mut missing = 0;
    let mut answered = Instant::now();
    loop {
        let check = match ws.as_mut() {
            Some(sock) => tokio::select! {
                ev = client::next_event(sock, prompt_id) => match ev {
                    Some(WsEvent::Progress { value, max }) => {
                        if let (Some(p), true) = (progress, max > 0) {
                            p.comfyui(value, max);
                        }
                        false
                    }
                    Some(WsEvent::Finished) => true,
                    Some(WsEvent::Other) => false,
                    None => { ws = None; false }
                },
                _ = tokio::time::sleep_until(next_poll) => true,
            },
            None => {
                tokio::time::sleep_until(next_poll).await;
                true
            }
        };
        if !check {
            continue;
        }
        next_poll = Instant::now() + poll;
        // Transient trouble while waiting is waited out (the deadline bounds it): the
        // prompt may be running, and posting it again would run it twice.
        match client.history(prompt_id).await {
            Ok(Some(e)) => return Ok(e),
            Ok(None) => answered = Instant::now(),
            Err(f) if f.transient => {
                if let Some(limit) = silence.filter(|l| answered.elapsed() >= *l) {
                    return Err(Failure {
                        error: Error::new(
                            ErrorKind::ComfyuiBadResponse,
                            format!(
                                "ComfyUI at {} gave no answer for {} s while prompt {prompt_id} ran ({})",
                                client.base,
                                limit.as_secs(),
                                f.error.message
                            ),
                        ),
                        transient: true,
                        node_errors: Value::Null,
                    });
                }
                continue;
            }
            Err(f) => return Err(f),
        }
        match client.queued(prompt_id).await {
            Ok(true) => missing = 0,
            Ok(false) => {
                if let Ok(Some(e)) = client.history(prompt_id).await {
                    return Ok(e);
                }
                missing += 1;
                if missing >= 2 {
                    return Err(Failure {
                        error: Error::new(
                            ErrorKind::ComfyuiBadResponse,
                            format!(
                                "prompt {prompt_id} vanished: neither in /queue nor in /history"
                            ),
                        ),
                        transient: true,
                        node_errors: Value::Null,
                    });
                }
            }
            Err(_) => {}
        }
    }
}

/// Bytes one frame may take toward the run's bound for ComfyUI files: 8 bytes a pixel
/// (16-bit RGBA, stored uncompressed; room for 8-bit frames at twice the width and height) of
/// the larger of the render and the start picture, plus 1 MiB for the prompt and workflow
/// ComfyUI writes into each PNG.
fn frame_bytes(render: (u32, u32), source: (u32, u32)) -> u64 {
    let pixels = |(w, h): (u32, u32)| u64::from(w) * u64::from(h);
    8 * pixels(render).max(pixels(source)) + (1 << 20)
}

/// What the ComfyUI files of one run may add up to: [`frame_bytes`] for every frame each
/// workflow returns (a video counts against it too).
fn file_budget(input: &Input, workflows: usize) -> u64 {
    let p = input.prepared;
    frame_bytes(p.render, p.source_size)
        .saturating_mul(p.frames.main_frames())
        .saturating_mul(workflows as u64)
}

/// Records `e` as the stage's failure, with `action` (what the main segment comes from
/// instead), and warns.
fn failed_without_frames(m: &mut Manifest, e: &Error, action: &str) {
    let r = rec(m);
    r.failure = Some(FailureRecord {
        code: e.code().into(),
        message: e.message.clone(),
        details: None,
    });
    r.action = Some(action.into());
    m.add_warning(format!("{}: {} ({action})", e.code(), e.message));
}

/// The health check answered, but over a bound (`COMFYUI_BAD_RESPONSE`): the run goes on
/// from the fallback, degraded, with the limit named in the warning.
fn unusable_health(input: &Input, m: &mut Manifest, e: Error) -> Outcome {
    tracing::warn!(stage = "comfyui", code = e.code(), "{}", e.message);
    let action = if input.job.start.is_image() {
        "the main segment comes from the local motion fallback"
    } else {
        "the main segment comes from the start video"
    };
    failed_without_frames(m, &e, action);
    Outcome {
        degraded_reason: Some(e.code().to_string()),
        ..Outcome::default()
    }
}

/// Whether the encode failed on a frame ComfyUI sent (it decodes no further than its
/// header): the run then encodes from the fallback instead ([`fall_back_from_frames`]).
pub fn frames_unusable(e: &Error, visual: Option<&Visual>) -> bool {
    e.kind == ErrorKind::ComfyuiBadResponse && matches!(visual, Some(Visual::Frames { .. }))
}

/// Records that ComfyUI's frames could not be used (`e`) and that the main segment comes
/// from the fallback: the local motion (`motion_meta` given) or the start video.
pub fn fall_back_from_frames(m: &mut Manifest, e: &Error, motion_meta: Option<MotionMeta>) {
    let action = match &motion_meta {
        Some(_) => "the main segment comes from the local motion fallback",
        None => "the main segment comes from the start video",
    };
    tracing::warn!(stage = "encode", code = e.code(), "{}", e.message);
    failed_without_frames(m, e, action);
    m.motion_meta = motion_meta;
    if let Some(d) = &mut m.video_source_detail {
        d.comfyui_output = None;
        if d.lipsync == crate::record::manifest::LipsyncSource::InsideComfy {
            d.lipsync = crate::record::manifest::LipsyncSource::Off;
        }
        d.degraded = true;
        d.degraded_reason
            .get_or_insert_with(|| e.code().to_string());
    }
}

/// Frames `000001.png…` present in `dir` (counted up to the first gap).
pub fn count_frames(dir: &Path) -> u64 {
    let mut n = 0;
    while dir.join(format!("{:06}.png", n + 1)).is_file() {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_are_told_from_remote_ones() {
        assert!(is_local("http://127.0.0.1:8188"));
        assert!(is_local("http://localhost:8188/"));
        assert!(is_local("http://[::1]:8188"));
        assert!(!is_local("http://gpu-box:8188"));
        assert!(!is_local("https://10.0.0.5"));
    }

    #[test]
    fn the_default_chunk_keeps_four_float_copies_within_4_gib() {
        assert_eq!(default_chunk_size(512 * 512), 341);
        assert_eq!(default_chunk_size(1920 * 1080), 43);
        assert_eq!(default_chunk_size(64 * 48), graph::REPEAT_MAX);
        assert_eq!(default_chunk_size(8192 * 8192), 16);
        assert!(default_chunk_size(1920 * 1080) * 1920 * 1080 * 48 <= DEFAULT_CHUNK_BYTES);
    }

    #[test]
    fn prompt_ids_are_distinct_uuids() {
        let (a, b) = (new_uuid(), new_uuid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn staged_names_carry_the_content_hash_and_extension() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("Voice.WAV");
        std::fs::write(&p, b"abc").unwrap();
        // sha256("abc") = ba7816bf8f01cfea…
        assert_eq!(
            staged_name("audio", &p, None).unwrap(),
            "vidax_audio_ba7816bf8f01cfea.wav"
        );
        // A hash known from admission names the file without reading it.
        let known = format!("{:064x}", 0xabc_u32);
        assert_eq!(
            staged_name("start", &d.path().join("absent.png"), Some(&known)).unwrap(),
            "vidax_start_0000000000000000.png"
        );
        let dir = d.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        assert!(copy_into(&p, None, &dir, "x.wav").unwrap());
        assert!(
            !copy_into(&p, None, &dir, "x.wav").unwrap(),
            "same size: kept"
        );
        std::fs::write(&p, b"abcd").unwrap();
        assert!(
            copy_into(&p, None, &dir, "x.wav").unwrap(),
            "size differs: overwritten"
        );
        assert_eq!(std::fs::read(dir.join("x.wav")).unwrap(), b"abcd");
    }
}
