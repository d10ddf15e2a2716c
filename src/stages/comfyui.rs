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

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::comfy::client::{self, Client, Failure, Fallible, Posted, WsEvent};
use crate::comfy::graph::{self, Chunk, FaceInputs, GraphParams, Template};
use crate::comfy::outputs;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::job::{Job, SeedPolicy, StartKind};
use crate::record::manifest::{ComfyuiOutput, Manifest};

use super::faceprobe::FaceMeta;
use super::prepare::Prepared;

/// Built-in workflow ids (SPEC §6). `vidax_faceprobe` is the local probe (no graph).
pub const FACEPROBE: &str = "vidax_faceprobe";
pub const MOTION_CHUNKS: &str = "vidax_motion_chunks";
pub const MOUTHBLEND: &str = "vidax_lipsync_mouthblend";
pub const WAV2LIP_IMAGE: &str = "vidax_wav2lip_image_audio";
pub const WAV2LIP_VIDEO: &str = "vidax_wav2lip_video_audio";

/// The workflows a job runs: its `comfyui.workflow_ids`, else the defaults by start kind
/// (start image with lip-sync: faceprobe, motion chunks, mouth blend; start image without
/// lip-sync: motion chunks; start video: the Wav2Lip video graph, with lip-sync only).
/// A job whose lip-sync is an external provider gets no lip-sync graph by default.
pub fn workflow_ids(job: &Job) -> Vec<String> {
    if let Some(ids) = &job.comfyui.workflow_ids {
        return ids.clone();
    }
    let comfy_lipsync = job.lipsync.enable && job.lipsync.provider.is_none();
    let ids: &[&str] = match (&job.start, comfy_lipsync) {
        (StartKind::Image(_), true) => &[FACEPROBE, MOTION_CHUNKS, MOUTHBLEND],
        (StartKind::Image(_), false) => &[MOTION_CHUNKS],
        (StartKind::Video(_), true) => &[WAV2LIP_VIDEO],
        (StartKind::Video(_), false) => &[],
    };
    ids.iter().map(|s| s.to_string()).collect()
}

/// What the main segment shows after this stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Visual {
    /// `count` PNG frames `000001.png…` in `dir`, frame `k` for main frame `k`.
    Frames { dir: PathBuf, count: u64 },
    /// A video whose frame `k` (CFR at the job's fps) is main frame `k`.
    Video(PathBuf),
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
    pub prepared: &'a Prepared,
    pub workdir: &'a Path,
    pub state_dir: &'a Path,
    pub face: Option<FaceMeta>,
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
fn staged_name(role: &str, path: &Path) -> Result<String> {
    let sha = crate::record::sha256_file(path)?;
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy().to_lowercase()))
        .unwrap_or_default();
    Ok(format!("vidax_{role}_{}{ext}", &sha[..16]))
}

/// Copies `src` into `dir` as `name`, unless a file of the same size is there already.
fn copy_into(src: &Path, dir: &Path, name: &str) -> Result<bool> {
    let dest = dir.join(name);
    let size = std::fs::metadata(src)
        .at(ErrorKind::InputNotFound, src)?
        .len();
    if std::fs::metadata(&dest).is_ok_and(|m| m.len() == size) {
        return Ok(false);
    }
    let tmp = dir.join(format!(".{name}.partial"));
    if let Err(e) = std::fs::copy(src, &tmp) {
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
    reason: ErrorKind,
    message: String,
    details: Value,
}

impl Degraded {
    fn from_failure(f: Failure, summary: Value) -> Degraded {
        let mut details = summary;
        if details.is_null() {
            details = outputs::summary(&Value::Null, &f.node_errors);
        }
        Degraded {
            reason: match f.error.kind {
                ErrorKind::ComfyuiOutputsMissing => ErrorKind::ComfyuiOutputsMissing,
                _ => ErrorKind::ComfyuiBadResponse,
            },
            message: f.error.message,
            details,
        }
    }
}

struct Runner<'a> {
    input: &'a Input<'a>,
    client: Client,
    info: Value,
    /// `comfyui.workflows` of the earlier attempt (for `--resume`).
    previous: Value,
    params: GraphParams,
    prompt_ids: Vec<String>,
    attempts: Vec<Value>,
    /// What ComfyUI's files may still add up to in this run ([`file_budget`]).
    budget: u64,
    /// A local failure while fetching (out of disk): the run ends with it.
    fatal: Option<Error>,
}

/// Runs the stage. `Err` only for a server that is not there (`COMFYUI_UNAVAILABLE`), the
/// overall timeout (`COMFYUI_TIMEOUT`), a job naming a workflow that does not exist
/// (`VALIDATION_FAILED`) and local I/O; everything ComfyUI answered badly is a degraded
/// [`Outcome`].
pub fn run(input: &Input, m: &mut Manifest) -> Result<Outcome> {
    crate::comfy::off_runtime(|| run_blocking(input, m))
}

fn run_blocking(input: &Input, m: &mut Manifest) -> Result<Outcome> {
    let ids = workflow_ids(input.job);
    let workflows = resolve(&ids, input)?;
    let rt = crate::comfy::runtime()?;
    let timeout = Duration::from_secs(input.job.comfyui.timeout_seconds.max(1));
    let deadline = Instant::now() + timeout;
    let client = Client::new(
        &input.job.comfyui.url,
        &format!("vidax-{}", input.run_id),
        client::Bounds::of(&input.job.limits),
    )?;
    let result = rt.block_on(async {
        let health = tokio::time::timeout_at(
            deadline.min(Instant::now() + client::REQUEST_TIMEOUT),
            crate::interrupt::unless_stopped(client.health()),
        )
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::ComfyuiUnavailable,
                format!("ComfyUI at {}: no answer to the health check", client.base),
            )
        })?;
        // An answer over a bound: the server answered, the run degrades (after the record).
        let (stats, info, over) = match health {
            Ok((stats, info)) => (stats, info, None),
            Err(e) if e.kind == ErrorKind::ComfyuiBadResponse => (Value::Null, Value::Null, Some(e)),
            Err(e) => return Err(e),
        };
        m.phase_field("comfyui", "system_stats", stats["system"].clone());
        let previous = m.comfyui["workflows"].clone();
        // A resumed run keeps the earlier attempt's prompts (a reused workflow's prompt id
        // stays on record).
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        let (prompt_ids, attempts) = if input.resume {
            (
                strings(&m.comfyui["prompt_ids"]),
                m.comfyui["attempts"].as_array().cloned().unwrap_or_default(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        m.comfyui = json!({
            "url": client.base, "client_id": client.client_id, "workflow_ids": ids,
            "workflow_id": null, "prompt_id": null, "prompt_ids": [],
            "chunk_size": null, "chunk_count": null, "frames_expected": input.prepared.frames.main_frames(),
            "frames_received": null, "output": null, "outputs": {}, "workflows": {},
            "attempts": [], "failure": null, "action": null,
        });
        if let Some(e) = over {
            return Ok(unusable_health(input, m, e));
        }
        if workflows.is_empty() {
            m.comfyui["action"] = "no workflow for this job: nothing asked of ComfyUI".into();
            return Ok(Outcome::default());
        }
        let mut runner = Runner {
            input,
            params: params(input, String::new(), String::new()),
            client,
            info,
            previous,
            prompt_ids,
            attempts,
            budget: file_budget(input, workflows.len()),
            fatal: None,
        };
        // A stop (SIGINT/SIGTERM, the supervisor) ends every wait of the stage at once.
        let waits = crate::interrupt::unless_stopped(runner.run_all(&workflows, m));
        match tokio::time::timeout_at(deadline, waits).await {
            Ok(r) => {
                runner.record(m);
                r
            }
            Err(_) => {
                runner.record(m);
                Err(Error::new(
                    ErrorKind::ComfyuiTimeout,
                    format!(
                        "ComfyUI at {} did not finish within comfyui.timeout_seconds={}",
                        runner.client.base,
                        timeout.as_secs()
                    ),
                )
                .with_hint("raise comfyui.timeout_seconds, or check the ComfyUI console"))
            }
        }
    });
    result
}

fn params(input: &Input, start: String, audio: String) -> GraphParams {
    let job = input.job;
    let fps = input.prepared.frames.fps;
    let name = |v: Value| v.as_str().map(String::from).unwrap_or_default();
    GraphParams {
        start,
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

impl Runner<'_> {
    fn record(&self, m: &mut Manifest) {
        m.comfyui["prompt_ids"] = json!(self.prompt_ids);
        m.comfyui["prompt_id"] = json!(self.prompt_ids.last());
        m.comfyui["attempts"] = json!(self.attempts);
    }

    async fn run_all(&mut self, workflows: &[Workflow], m: &mut Manifest) -> Result<Outcome> {
        let workdir = self.input.workdir;
        let mut outcome = Outcome::default();
        // Resume: workflows completed earlier whose frames are all on disk are not asked again.
        let done_before = |w: &Workflow| -> Option<Value> {
            let rec = &self.previous[w.id.as_str()];
            let n = rec["frames"].as_u64()?;
            let dir = workdir.join(rec["dir"].as_str()?);
            (self.input.resume
                && rec["status"] == "completed"
                && count_frames(&dir) == n
                && n == self.input.prepared.frames.main_frames())
            .then(|| rec.clone())
        };
        let previous: Vec<Option<Value>> = workflows.iter().map(done_before).collect();
        if previous.iter().any(Option::is_none) {
            if let Err(d) = self.stage_inputs(m).await {
                return Ok(self.degrade(m, outcome, d));
            }
        }
        for (w, prev) in workflows.iter().zip(previous) {
            if let Some(rec) = prev {
                tracing::info!(stage = "comfyui", workflow = %w.id, "resume: frames already fetched, ComfyUI not asked again");
                m.comfyui["workflows"][w.id.as_str()] = rec.clone();
                m.comfyui["workflows"][w.id.as_str()]["reused"] = true.into();
                self.succeeded(w, &rec, &mut outcome, m);
                continue;
            }
            match self.run_workflow(w, m).await {
                Ok(rec) => {
                    m.comfyui["workflows"][w.id.as_str()] = rec.clone();
                    self.succeeded(w, &rec, &mut outcome, m);
                    self.record(m);
                    m.save(workdir)?;
                }
                Err(d) => {
                    m.comfyui["workflows"][w.id.as_str()] = json!({"status": "failed", "reason": d.reason.code(), "message": d.message});
                    if let Some(e) = self.fatal.take() {
                        return Err(e);
                    }
                    return Ok(self.degrade(m, outcome, d));
                }
            }
        }
        Ok(outcome)
    }

    fn succeeded(&self, w: &Workflow, rec: &Value, outcome: &mut Outcome, m: &mut Manifest) {
        let workdir = self.input.workdir;
        let visual = match rec["video"].as_str() {
            Some(v) => Visual::Video(workdir.join(v)),
            None => Visual::Frames {
                dir: workdir.join(rec["dir"].as_str().unwrap_or("frames")),
                count: rec["frames"].as_u64().unwrap_or(0),
            },
        };
        let output = match visual {
            Visual::Video(_) => ComfyuiOutput::Video,
            Visual::Frames { .. } => ComfyuiOutput::Frames,
        };
        m.comfyui["workflow_id"] = w.id.clone().into();
        m.comfyui["output"] = json!(output);
        m.comfyui["frames_received"] = rec["frames"].clone();
        m.comfyui["chunk_size"] = rec["chunk_size"].clone();
        m.comfyui["chunk_count"] = rec["chunk_count"].clone();
        m.comfyui["outputs"][w.id.as_str()] = rec["video"]
            .as_str()
            .map_or_else(|| rec["dir"].clone(), Value::from);
        match w.kind {
            Kind::Motion => {
                m.motion_meta = json!({
                    "source": "comfyui", "workflow_id": w.id, "frames_dir": rec["dir"],
                    "frame_count": rec["frames"], "fps": self.input.prepared.frames.fps.to_string(),
                    "mode": self.input.job.motion.mode, "strength": self.input.job.motion.strength,
                    "chunk_size": rec["chunk_size"], "chunk_count": rec["chunk_count"],
                })
            }
            Kind::MouthBlend => {
                m.lipsync_meta = json!({
                    "where": "inside_comfy", "workflow_id": w.id, "frames_dir": rec["dir"],
                    "frame_count": rec["frames"], "mouth_roi": m.face_meta["mouth_roi"],
                    "feather": m.face_meta["feather"],
                })
            }
            _ => {}
        }
        outcome.visual = Some(visual);
        outcome.workflow_id = Some(w.id.clone());
        outcome.output = Some(output);
        outcome.lipsync_inside = w.lipsync();
    }

    fn degrade(&mut self, m: &mut Manifest, mut outcome: Outcome, d: Degraded) -> Outcome {
        tracing::warn!(
            stage = "comfyui",
            code = d.reason.code(),
            history_keys = %d.details["history_keys"],
            output_keys = %d.details["output_keys"],
            messages = %d.details["messages"],
            node_errors = %d.details["node_errors"],
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
        m.comfyui["failure"] = json!({
            "code": d.reason.code(), "message": d.message, "details": d.details,
        });
        m.comfyui["action"] = action.clone().into();
        m.add_warning(format!("{}: {} ({action})", d.reason.code(), d.message));
        outcome.degraded_reason = Some(d.reason.code().to_string());
        // A lip-sync that failed is not inside the picture.
        if outcome.visual.is_none() {
            outcome.lipsync_inside = false;
        }
        outcome
    }

    async fn stage_inputs(&mut self, m: &mut Manifest) -> std::result::Result<(), Degraded> {
        let input = self.input;
        let local_err = |e: Error| Degraded {
            reason: ErrorKind::ComfyuiBadResponse,
            message: e.message,
            details: Value::Null,
        };
        let files = [
            ("audio", input.prepared.wav.clone()),
            ("start", input.job.start.path().to_path_buf()),
        ];
        let dir = input_dir(input.job).filter(|d| d.is_dir() && is_local(&self.client.base));
        let mut names = Vec::new();
        for (role, path) in files {
            let name = staged_name(role, &path).map_err(local_err)?;
            let stored = match &dir {
                Some(d) => {
                    let copied = copy_into(&path, d, &name).map_err(local_err)?;
                    tracing::info!(stage = "comfyui", file = %name, copied, "staged into {}", d.display());
                    name
                }
                None => self
                    .client
                    .upload(&path, &name)
                    .await
                    .map_err(|f| Degraded::from_failure(f, Value::Null))?,
            };
            names.push(stored);
        }
        m.comfyui["inputs"] = json!({
            "audio": names[0], "start": names[1],
            "staging": if dir.is_some() { "copy" } else { "upload" },
            "input_dir": dir.map(|d| d.display().to_string()),
        });
        let (start, audio) = (names.remove(1), names.remove(0));
        self.params = params(input, start, audio);
        Ok(())
    }

    fn graphs(&self, w: &Workflow, seed: u64) -> (Vec<(Chunk, Value)>, u64) {
        let mut p = self.params.clone();
        p.seed = seed;
        let main = p.frames;
        let face = self.input.face.map(|f| FaceInputs {
            mouth: f.mouth,
            centre: f.centre,
        });
        let chunked = match &w.kind {
            Kind::Template(t) => t.chunked(),
            Kind::Wav2LipVideo => false,
            _ => true,
        };
        let size = if chunked {
            let asked = self.input.job.comfyui.chunk_size.map_or(main, u64::from);
            match w.kind {
                Kind::Template(_) => asked,
                _ => asked.min(graph::REPEAT_MAX),
            }
        } else {
            main
        };
        let graphs = graph::chunks(main, size)
            .into_iter()
            .map(|c| {
                let g = match &w.kind {
                    Kind::Motion => graph::motion_chunk(&p, c, face.map(|f| f.centre)),
                    Kind::MouthBlend => match &face {
                        Some(f) => graph::mouthblend_chunk(&p, c, f),
                        None => Value::Null,
                    },
                    Kind::Wav2LipImage => graph::wav2lip_image(&p, c),
                    Kind::Wav2LipVideo => graph::wav2lip_video(&p),
                    Kind::Template(t) => t.graph.clone(),
                };
                (c, graph::fill(&g, &p, c))
            })
            .collect();
        (graphs, size)
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
    ) -> std::result::Result<Value, Degraded> {
        let workdir = self.input.workdir;
        let comfy_dir = workdir.join("comfyui");
        let rel_dir = w.frames_dir();
        let dir = workdir.join(rel_dir);
        let io = |e: std::io::Error, p: &Path| Degraded {
            reason: ErrorKind::ComfyuiBadResponse,
            message: format!("{}: {e}", p.display()),
            details: Value::Null,
        };
        std::fs::create_dir_all(&comfy_dir).map_err(|e| io(e, &comfy_dir))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io(e, &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io(e, &dir))?;
        // Every graph is checked before any is submitted.
        let (graphs, size) = self.graphs(w, self.seed_for(0));
        let mut problems = Vec::new();
        for (_, g) in &graphs {
            for p in graph::preflight(g, &self.info) {
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
        }
        if !problems.is_empty() {
            return Err(Degraded {
                reason: ErrorKind::ComfyuiBadResponse,
                message: format!("workflow {}: {}", w.id, problems.join("; ")),
                details: json!({"history_keys": [], "output_keys": [], "messages": [], "node_errors": {}, "preflight": problems}),
            });
        }
        let chunk_count = graphs.len();
        let main = self.params.frames;
        let mut received = 0u64;
        let mut video: Option<String> = None;
        for (ci, (c, _)) in graphs.iter().enumerate() {
            let label = if chunk_count > 1 {
                format!("{}_chunk{:03}", w.id, ci + 1)
            } else {
                w.id.clone()
            };
            let entry = self.execute(w, ci, &label).await?;
            let write = |name: &str, v: &Value| {
                let p = comfy_dir.join(name);
                crate::record::write_json_atomic(&p, v).map_err(|e| Degraded {
                    reason: ErrorKind::ComfyuiBadResponse,
                    message: e.message,
                    details: Value::Null,
                })
            };
            write(&format!("{label}.history.json"), &entry)?;
            let summary = outputs::summary(&entry, &Value::Null);
            if outputs::failed(&entry) {
                let why = outputs::execution_error(&entry)
                    .map(|(node, ty, msg)| format!("{node} failed: {ty}: {msg}"))
                    .unwrap_or_else(|| "status error".into());
                return Err(Degraded {
                    reason: ErrorKind::ComfyuiBadResponse,
                    message: format!("workflow {} ({label}): run-time error: {why}", w.id),
                    details: summary,
                });
            }
            let outs = outputs::collect(&entry);
            if outs.images.is_empty() {
                if let (Some(v), true) = (outs.videos.first(), chunk_count == 1) {
                    let rel = "comfyui/comfyui_video.mp4";
                    self.fetch(v, &workdir.join(rel), None, &summary).await?;
                    // Checked here, not in the encode: a short video is a delivery problem.
                    if let Err(e) = super::compose::visual_video(
                        self.input.job,
                        self.input.prepared,
                        &workdir.join(rel),
                    ) {
                        return Err(Degraded {
                            reason: ErrorKind::ComfyuiOutputsMissing,
                            message: format!(
                                "workflow {} ({label}): video output {}",
                                w.id, e.message
                            ),
                            details: summary,
                        });
                    }
                    video = Some(rel.into());
                    break;
                }
                return Err(Degraded {
                    reason: ErrorKind::ComfyuiOutputsMissing,
                    message: format!(
                        "workflow {} ({label}): the history lists no image or video output",
                        w.id
                    ),
                    details: summary,
                });
            }
            let take = outs.images.len().min(c.frames as usize);
            for (k, f) in outs.images.iter().take(take).enumerate() {
                let dest = dir.join(format!("{:06}.png", c.start + k as u64 + 1));
                self.fetch(f, &dest, Some(&dir), &summary).await?;
                received += 1;
            }
            if (outs.images.len() as u64) < c.frames {
                return Err(Degraded {
                    reason: ErrorKind::ComfyuiOutputsMissing,
                    message: format!(
                        "workflow {} ({label}): received {} of {} frames for timeline frames {}..{}; frames are never stretched",
                        w.id, outs.images.len(), c.frames, c.start, c.start + c.frames
                    ),
                    details: {
                        let mut d = summary;
                        d["frames_asked"] = c.frames.into();
                        d["frames_received"] = (outs.images.len() as u64).into();
                        d
                    },
                });
            }
            if outs.images.len() as u64 > c.frames {
                m.add_warning(format!(
                    "workflow {} ({label}): ComfyUI returned {} frames for {} asked; the first {} are used",
                    w.id,
                    outs.images.len(),
                    c.frames,
                    c.frames
                ));
            }
        }
        if video.is_none() && received != main {
            return Err(Degraded {
                reason: ErrorKind::ComfyuiOutputsMissing,
                message: format!("workflow {}: received {received} of {main} frames", w.id),
                details: Value::Null,
            });
        }
        Ok(json!({
            "status": "completed", "dir": rel_dir, "frames": if video.is_some() { Value::Null } else { received.into() },
            "video": video, "chunk_size": size, "chunk_count": chunk_count,
        }))
    }

    /// Fetches one output file to `dest` within the run's bounds: a frame (`frames_dir` given:
    /// an image, checked from its header) or a video. What the server sent wrong degrades the
    /// workflow; a local write failure (out of disk) also removes `frames_dir`, whose frames
    /// cannot be used without the missing ones, and is kept in [`Runner::fatal`] so the run
    /// ends with it.
    async fn fetch(
        &mut self,
        f: &outputs::OutputFile,
        dest: &Path,
        frames_dir: Option<&Path>,
        summary: &Value,
    ) -> std::result::Result<u64, Degraded> {
        let image = frames_dir.is_some();
        match self
            .client
            .view_to_file(f, dest, image, &mut self.budget)
            .await
        {
            Ok(n) => Ok(n),
            Err(client::FetchError::Peer(failure)) => {
                Err(Degraded::from_failure(failure, summary.clone()))
            }
            Err(client::FetchError::Local(e)) => {
                if let Some(dir) = frames_dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                let d = Degraded {
                    reason: e.kind,
                    message: e.message.clone(),
                    details: Value::Null,
                };
                self.fatal = Some(e);
                Err(d)
            }
        }
    }

    /// Submits chunk `ci` of `w` and waits for its history entry, with retries of transient
    /// failures. A POST whose answer was lost is followed by a look at `/history` and
    /// `/queue` under the same prompt id before anything is posted again.
    async fn execute(
        &mut self,
        w: &Workflow,
        ci: usize,
        label: &str,
    ) -> std::result::Result<Value, Degraded> {
        let retry = self.input.job.comfyui.retry;
        let comfy_dir = self.input.workdir.join("comfyui");
        let mut last: Option<Failure> = None;
        for attempt in 0..retry.attempts.max(1) {
            if attempt > 0 {
                let wait = retry.backoff_ms.saturating_mul(1 << (attempt - 1).min(16));
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            let seed = self.seed_for(attempt);
            let (graphs, _) = self.graphs(w, seed);
            let g = graphs[ci].1.clone();
            let _ = crate::record::write_json_atomic(
                &comfy_dir.join(format!("{label}.graph.json")),
                &g,
            );
            let prompt_id = new_uuid();
            self.prompt_ids.push(prompt_id.clone());
            let result = self.submit_and_wait(&g, &prompt_id).await;
            self.attempts.push(json!({
                "workflow_id": w.id, "chunk": ci, "attempt": attempt + 1, "prompt_id": prompt_id,
                "seed": seed, "result": match &result { Ok(_) => "finished".to_string(), Err(f) => f.error.message.clone() },
            }));
            match result {
                Ok(entry) => return Ok(entry),
                Err(f) if f.transient => {
                    tracing::warn!(
                        stage = "comfyui",
                        attempt = attempt + 1,
                        "{}",
                        f.error.message
                    );
                    last = Some(f);
                }
                Err(f) => return Err(Degraded::from_failure(f, Value::Null)),
            }
        }
        let f = last.unwrap_or_else(|| Failure {
            error: Error::new(ErrorKind::ComfyuiBadResponse, "no attempt was made"),
            transient: true,
            node_errors: Value::Null,
        });
        let mut d = Degraded::from_failure(f, Value::Null);
        d.message = format!(
            "workflow {} ({label}): gave up after {} attempts: {}",
            w.id, retry.attempts, d.message
        );
        Err(d)
    }

    async fn submit_and_wait(&mut self, g: &Value, prompt_id: &str) -> Fallible<Value> {
        let poll = Duration::from_millis(self.input.job.comfyui.poll_interval_ms.max(10));
        // The socket first: events go only to the client that submitted.
        let ws = self.client.open_ws().await;
        match self.client.post_prompt(g, prompt_id).await? {
            Posted::Accepted { number } => {
                tracing::info!(stage = "comfyui", prompt_id, number, "graph queued");
            }
            Posted::Lost(why) => {
                tracing::warn!(
                    stage = "comfyui",
                    prompt_id,
                    "{why}; looking before posting again"
                );
                tokio::time::sleep(poll).await;
                if self.known(prompt_id).await {
                    tracing::info!(
                        stage = "comfyui",
                        prompt_id,
                        "the server has the prompt: not posted again"
                    );
                } else {
                    match self.client.post_prompt(g, prompt_id).await? {
                        Posted::Accepted { .. } => {}
                        Posted::Lost(why) if self.known(prompt_id).await => {
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
        self.wait(prompt_id, ws, poll).await
    }

    /// Whether the server knows `prompt_id` (queued, running or finished).
    async fn known(&self, prompt_id: &str) -> bool {
        matches!(self.client.history(prompt_id).await, Ok(Some(_)))
            || matches!(self.client.queued(prompt_id).await, Ok(true))
    }

    async fn wait(
        &mut self,
        prompt_id: &str,
        mut ws: Option<client::WsStream>,
        poll: Duration,
    ) -> Fallible<Value> {
        let mut next_poll = Instant::now() + poll;
        let mut missing = 0;
        loop {
            let check = match ws.as_mut() {
                Some(sock) => tokio::select! {
                    ev = client::next_event(sock, prompt_id) => match ev {
                        Some(WsEvent::Progress { value, max }) => { self.progress(value, max); false }
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
            match self.client.history(prompt_id).await {
                Ok(Some(e)) => return Ok(e),
                Ok(None) => {}
                Err(f) if f.transient => continue,
                Err(f) => return Err(f),
            }
            match self.client.queued(prompt_id).await {
                Ok(true) => missing = 0,
                Ok(false) => {
                    if let Ok(Some(e)) = self.client.history(prompt_id).await {
                        return Ok(e);
                    }
                    missing += 1;
                    if missing >= 2 {
                        return Err(Failure {
                            error: Error::new(
                                ErrorKind::ComfyuiBadResponse,
                                format!("prompt {prompt_id} vanished: neither in /queue nor in /history"),
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

    fn progress(&mut self, value: u64, max: u64) {
        if max > 0 {
            self.input.progress.comfyui(value, max);
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

/// The health check answered, but over a bound (`COMFYUI_BAD_RESPONSE`): the run goes on
/// from the fallback, degraded, with the limit named in the warning.
fn unusable_health(input: &Input, m: &mut Manifest, e: Error) -> Outcome {
    tracing::warn!(stage = "comfyui", code = e.code(), "{}", e.message);
    let action = if input.job.start.is_image() {
        "the main segment comes from the local motion fallback"
    } else {
        "the main segment comes from the start video"
    };
    m.comfyui["failure"] = json!({"code": e.code(), "message": e.message});
    m.comfyui["action"] = action.into();
    m.add_warning(format!("{}: {} ({action})", e.code(), e.message));
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
pub fn fall_back_from_frames(m: &mut Manifest, e: &Error, motion_meta: Option<Value>) {
    let action = match &motion_meta {
        Some(_) => "the main segment comes from the local motion fallback",
        None => "the main segment comes from the start video",
    };
    tracing::warn!(stage = "encode", code = e.code(), "{}", e.message);
    m.comfyui["failure"] = json!({"code": e.code(), "message": e.message});
    m.comfyui["action"] = action.into();
    m.add_warning(format!("{}: {} ({action})", e.code(), e.message));
    m.motion_meta = motion_meta.unwrap_or(Value::Null);
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
            staged_name("audio", &p).unwrap(),
            "vidax_audio_ba7816bf8f01cfea.wav"
        );
        let dir = d.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        assert!(copy_into(&p, &dir, "x.wav").unwrap());
        assert!(!copy_into(&p, &dir, "x.wav").unwrap(), "same size: kept");
        std::fs::write(&p, b"abcd").unwrap();
        assert!(
            copy_into(&p, &dir, "x.wav").unwrap(),
            "size differs: overwritten"
        );
        assert_eq!(std::fs::read(dir.join("x.wav")).unwrap(), b"abcd");
    }
}
