//! A ComfyUI test server (axum on 127.0.0.1, an ephemeral port) that answers as the recorded
//! ComfyUI 0.3.64 does (`tests/data/comfyui/`, copied from `shared/comfyui/transcripts/`):
//! the same bodies and status codes, `{}` history until a prompt has finished, websocket events
//! in the recorded order to the submitting client only, 400 bodies for bad graphs, SaveImage
//! counters that continue across runs, cached resubmission of an identical graph.
//!
//! It "executes" a graph by counting frames through the nodes the project's graphs use and
//! writes real PNG frames that carry their own timeline index (an 8-bit barcode, see
//! [`frame_png`]) and the producing node (a colour tag), so a test can prove that frame `i` of a
//! final came from ComfyUI frame `i`.
//!
//! Our nodes report through ComfyUI's `ui` channel as the recorded real ones do
//! (`history_facecheck_*.json`, `history_wav2lip_*.json`): `VIDAX_FaceProbe` finds a face in the
//! middle of every picture (a fake detector: the centre half), `VIDAX_Wav2Lip` pastes into that
//! box on every frame and says so. `LoadImage` and `VHS_LoadVideo` read the real pictures staged
//! for them (the video decoded with the ffmpeg CLI, its barcodes recorded in
//! [`ServerState::video_frames`]), so a lip-sync that changes nothing can return them as sent.
//!
//! Scenarios ([`Config`]): missing node classes, a run-time error, no outputs, too few frames,
//! a job that vanishes from the queue, a slow `/view`, a job that never finishes, a dropped
//! connection on the first POST, a lip-sync that returns its input unchanged while claiming
//! it synced, no face in the picture, nodes that send no reports; one prompt at a time (as one
//! ComfyUI runs them, the rest `queue_pending`), a server that dies after a number of POSTs
//! ([`Server::kill`]: the port refuses, connections drop). It counts POST /prompt submissions and executions per prompt
//! id, so a test can prove that a retry does not run a job twice.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as AxPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

/// The recorded bodies.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/comfyui")
}

pub fn recorded(name: &str) -> Value {
    let text = std::fs::read_to_string(data_dir().join(name)).expect("recorded body");
    serde_json::from_str(&text).expect("recorded JSON")
}

/// What the server does wrong, if anything.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Classes left out of `/object_info` (and refused by POST /prompt, as ComfyUI does).
    pub missing_classes: Vec<String>,
    /// The first POST /prompt queues the prompt and then drops the connection unanswered.
    pub drop_first_post: bool,
    /// This many accepted prompts vanish: answered 200, never queued, never in the history.
    pub vanish: u32,
    /// A graph containing this class fails at run time (the recorded execution_error).
    pub runtime_error_class: Option<String>,
    /// Finished prompts report success with `"outputs": {}`.
    pub no_outputs: bool,
    /// SaveImage writes this many frames fewer than it is given.
    pub frame_shortfall: u64,
    /// `/view` waits this long before answering.
    pub view_delay_ms: u64,
    /// How long a prompt runs before its history appears.
    pub run_ms: u64,
    /// `run_ms` holds only graphs with a node of this class (`None`: every graph); the others
    /// (e.g. the face check before a held lip-sync) finish at once.
    pub hold_class: Option<String>,
    /// SaveImage counters start here (files of earlier runs with the same prefix).
    pub counter_start: u64,
    /// ComfyUI's input folder, for graphs that name files copied there instead of uploaded.
    pub input_dir: Option<PathBuf>,
    /// `VIDAX_Wav2Lip` returns its frames unchanged but reports every frame synced (the bug
    /// of issue 11: a lip-sync that claims what it did not do).
    pub wav2lip_identity: bool,
    /// The pictures have no face: `VIDAX_FaceProbe` finds none, `VIDAX_Wav2Lip` passes every
    /// frame through as `no_face`.
    pub no_face: bool,
    /// The nodes send no `ui` reports (nodes from before the reports).
    pub no_reports: bool,
    /// `VIDAX_FaceProbe` has no detector (the pack is missing) and reports its size
    /// fallback, as recorded (`history_facecheck_fallback.json`, a 512×512 picture, as it is).
    pub face_fallback: bool,
    /// The server dies (its process gone: the port refuses, open connections drop) just
    /// after it accepted this many POST /prompt (that last prompt never finishes).
    pub die_after_posts: Option<u64>,
    /// One prompt executes at a time, as in ComfyUI (one GPU): the others wait in the queue
    /// (`queue_pending`). Off: every prompt runs at once.
    pub serial: bool,
    /// `/queue` lists this many prompts of another client as pending (other users' load;
    /// they never run).
    pub foreign_queue: u64,
}

#[derive(Debug, Clone)]
struct Job {
    number: i64,
    graph: Value,
    client_id: String,
    done: bool,
    entry: Value,
}

#[derive(Default)]
pub struct ServerState {
    pub cfg: Config,
    /// POST /prompt requests received (answered or not).
    pub posts: AtomicU64,
    /// Of those, the ones whose client had no `/ws` socket open at that moment (it would miss
    /// the events: ComfyUI sends them only to the submitting client).
    pub posts_without_socket: AtomicU64,
    /// Prompt id -> how many times it was executed.
    pub executions: Mutex<HashMap<String, u32>>,
    /// The graphs submitted, in order.
    pub graphs: Mutex<Vec<Value>>,
    /// Names uploaded through /upload/image.
    pub uploads: Mutex<HashMap<String, Vec<u8>>>,
    jobs: Mutex<HashMap<String, Job>>,
    files: Mutex<HashMap<String, Vec<u8>>>,
    counters: Mutex<HashMap<String, u64>>,
    cache: Mutex<HashMap<String, Value>>,
    sockets: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
    number: AtomicU64,
    /// Bodies POSTed to `/lipsync` (the HTTP lip-sync provider stand-in).
    pub lipsync_posts: AtomicU64,
    /// For each `VHS_LoadVideo` executed: the barcode of every frame it loaded, in order.
    pub video_frames: Mutex<Vec<Vec<u64>>>,
    /// Held by the executing prompt when [`Config::serial`].
    gpu: tokio::sync::Mutex<()>,
    /// The prompt executing now.
    running: Mutex<Option<String>>,
    /// Ends the server (see [`Server::kill`]).
    kill: tokio::sync::Notify,
    pub killed: std::sync::atomic::AtomicBool,
    /// The most prompts it held at once (running + pending), seen at each POST.
    pub max_queued: AtomicU64,
    /// Prompt ids named by `POST /queue {"delete": [...]}`, in order.
    pub deleted: Mutex<Vec<String>>,
    /// Prompt ids named by `POST /interrupt {"prompt_id": ...}`, in order.
    pub interrupted: Mutex<Vec<String>>,
}

pub struct Server {
    pub url: String,
    pub state: Arc<ServerState>,
}

impl Server {
    /// Starts a server on an ephemeral port in its own thread and runtime.
    pub fn start(cfg: Config) -> Server {
        Server::start_wrapped(cfg, |r| r)
    }

    /// [`Server::start`] with its router passed through `wrap` (a test's own misbehaviour
    /// layered over the recorded answers).
    pub fn start_wrapped(cfg: Config, wrap: impl FnOnce(Router) -> Router) -> Server {
        let state = Arc::new(ServerState {
            cfg,
            ..ServerState::default()
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = wrap(router(state.clone()));
        let st = state.clone();
        // Killed: the serving future and then the runtime end, which drops the listener and
        // every connection and task (a process that died).
        in_thread(move || async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::select! {
                _ = axum::serve(l, app) => {}
                _ = st.kill.notified() => {}
            }
        });
        Server { url, state }
    }

    /// Ends the server as a killed process would end.
    pub fn kill(&self) {
        self.state.killed.store(true, Ordering::SeqCst);
        self.state.kill.notify_one();
    }

    /// Graphs submitted that run `class` (a chunk of a workflow, not the face check).
    pub fn graphs_with(&self, class: &str) -> Vec<Value> {
        self.graphs()
            .into_iter()
            .filter(|g| {
                g.as_object()
                    .unwrap()
                    .values()
                    .any(|n| n["class_type"] == class)
            })
            .collect()
    }

    pub fn posts(&self) -> u64 {
        self.state.posts.load(Ordering::SeqCst)
    }

    /// The most times any one prompt id was executed.
    pub fn max_executions(&self) -> u32 {
        self.state
            .executions
            .lock()
            .unwrap()
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    pub fn graphs(&self) -> Vec<Value> {
        self.state.graphs.lock().unwrap().clone()
    }
}

/// Runs the future `serve` makes on a two-worker tokio runtime in a thread of its own (a test
/// server's life: until the test process ends).
pub fn in_thread<F>(serve: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(serve());
    });
}

fn router(state: Arc<ServerState>) -> Router {
    let api = Router::new()
        .route(
            "/system_stats",
            get(|| async { Json(recorded("system_stats.json")) }),
        )
        .route("/object_info", get(object_info_all))
        .route("/object_info/:class", get(object_info_one))
        .route("/prompt", post(post_prompt))
        .route("/history/:id", get(history))
        .route("/queue", get(queue).post(queue_edit))
        .route("/interrupt", post(interrupt))
        .route("/view", get(view))
        .route("/upload/image", post(upload))
        .route("/ws", get(ws))
        .route("/lipsync", post(lipsync));
    Router::new()
        .nest("/api", api.clone())
        .merge(api)
        .with_state(state)
}

/// The recorded `/object_info` plus the project's nodes and VHS_LoadVideo, less the
/// configured missing classes.
fn object_info(cfg: &Config) -> Map<String, Value> {
    static BASE: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let mut all = BASE
        .get_or_init(|| {
            let gz = std::fs::read(data_dir().join("object_info.json.gz")).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate_gunzip(&gz), &mut text).unwrap();
            let mut all: Map<String, Value> = serde_json::from_str(&text).unwrap();
            for f in [
                "object_info_vidax.json",
                "object_info_VHS_LoadVideo.json",
                "object_info_VHS_VideoCombine.json",
            ] {
                all.extend(recorded(f).as_object().unwrap().clone());
            }
            all
        })
        .clone();
    for c in &cfg.missing_classes {
        all.remove(c);
    }
    all
}

/// gzip without a crate: the test data is decompressed once with the system's `gzip -dc`
/// (tests may use system tools; the engine never does).
fn flate_gunzip(gz: &[u8]) -> std::io::Cursor<Vec<u8>> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = gz.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    std::io::Cursor::new(out.stdout)
}

async fn object_info_all(State(s): State<Arc<ServerState>>) -> Json<Value> {
    Json(Value::Object(object_info(&s.cfg)))
}

async fn object_info_one(
    State(s): State<Arc<ServerState>>,
    AxPath(class): AxPath<String>,
) -> Json<Value> {
    let all = object_info(&s.cfg);
    // An unknown class is 200 with {} (recorded: object_info_NoSuchNode.json).
    Json(match all.get(&class) {
        Some(d) => json!({ class: d }),
        None => json!({}),
    })
}

fn bad_request(body: Value) -> Response {
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// The first error of node `node` in a recorded 400 body.
fn recorded_error(file: &str, node: &str) -> Value {
    recorded(file)["node_errors"][node]["errors"][0].clone()
}

/// ComfyUI's validation, in the shapes of the recorded 400 bodies.
fn validate(
    s: &ServerState,
    graph: &Map<String, Value>,
    info: &Map<String, Value>,
) -> Option<Value> {
    for (id, node) in graph {
        let class = node["class_type"].as_str().unwrap_or("");
        if !info.contains_key(class) {
            let mut b = recorded("prompt_invalid_unknown_class.json");
            b["error"]["message"] =
                format!("Cannot execute because node {class} does not exist.").into();
            b["error"]["details"] = format!("Node ID '#{id}'").into();
            return Some(b);
        }
    }
    let mut node_errors = Map::new();
    let mut has_output = false;
    for (id, node) in graph {
        let def = &info[node["class_type"].as_str().unwrap_or("")];
        has_output |= def["output_node"] == true;
        let mut errors = Vec::new();
        if let Some(req) = def["input"]["required"].as_object() {
            for (name, spec) in req {
                match node["inputs"].get(name) {
                    None => {
                        let mut e =
                            recorded_error("prompt_invalid_missing_required_input.json", "2");
                        e["details"] = name.clone().into();
                        e["extra_info"]["input_name"] = name.clone().into();
                        errors.push(e);
                    }
                    Some(v) => {
                        if let (Some(x), Some(min)) = (v.as_f64(), spec[1]["min"].as_f64()) {
                            if x < min {
                                let mut e =
                                    recorded_error("prompt_invalid_value_below_min.json", "2");
                                e["message"] =
                                    format!("Value {v} smaller than min of {min}").into();
                                e["details"] = name.clone().into();
                                e["extra_info"] = json!({"input_name": name, "input_config": spec, "received_value": v});
                                errors.push(e);
                            }
                        }
                    }
                }
            }
        }
        // LoadImage's validation: the file must be in the input folder.
        if node["class_type"] == "LoadImage" {
            let name = node["inputs"]["image"].as_str().unwrap_or("");
            let known = s.uploads.lock().unwrap().contains_key(name)
                || s.cfg
                    .input_dir
                    .as_ref()
                    .is_some_and(|d| d.join(name).is_file());
            if !known {
                let mut e = recorded_error("prompt_invalid_missing_image_file.json", "1");
                e["details"] = format!("image - Invalid image file: {name}").into();
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            node_errors.insert(
                id.clone(),
                json!({"errors": errors, "dependent_outputs": [], "class_type": node["class_type"]}),
            );
        }
    }
    if !node_errors.is_empty() {
        let mut b = recorded("prompt_invalid_missing_required_input.json");
        b["node_errors"] = Value::Object(node_errors);
        return Some(b);
    }
    (!has_output).then(|| recorded("prompt_invalid_no_output_node.json"))
}

async fn post_prompt(State(s): State<Arc<ServerState>>, body: Bytes) -> Response {
    let n = s.posts.fetch_add(1, Ordering::SeqCst) + 1;
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request(recorded("prompt_invalid_no_prompt_key.json"));
    };
    let Some(graph) = body["prompt"].as_object().cloned() else {
        return bad_request(recorded("prompt_invalid_no_prompt_key.json"));
    };
    if let Some(b) = validate(&s, &graph, &object_info(&s.cfg)) {
        return bad_request(b);
    }
    let prompt_id = body["prompt_id"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| format!("{:08x}-0000-4000-8000-000000000000", n));
    let client_id = body["client_id"].as_str().unwrap_or("").to_string();
    if !s.sockets.lock().unwrap().contains_key(&client_id) {
        s.posts_without_socket.fetch_add(1, Ordering::SeqCst);
    }
    let number = s.number.fetch_add(1, Ordering::SeqCst) as i64;
    s.graphs.lock().unwrap().push(Value::Object(graph.clone()));
    let vanish = {
        // Decrement the vanish budget atomically through the counters map.
        let mut c = s.counters.lock().unwrap();
        let used = c.entry("__vanished".into()).or_insert(0);
        if *used < u64::from(s.cfg.vanish) {
            *used += 1;
            true
        } else {
            false
        }
    };
    if !vanish {
        *s.executions
            .lock()
            .unwrap()
            .entry(prompt_id.clone())
            .or_insert(0) += 1;
        s.jobs.lock().unwrap().insert(
            prompt_id.clone(),
            Job {
                number,
                graph: Value::Object(graph),
                client_id: client_id.clone(),
                done: false,
                entry: Value::Null,
            },
        );
        let queued = s.jobs.lock().unwrap().values().filter(|j| !j.done).count() as u64;
        s.max_queued.fetch_max(queued, Ordering::SeqCst);
        tokio::spawn(execute(s.clone(), prompt_id.clone()));
    }
    if s.cfg.die_after_posts == Some(n) {
        let st = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            st.killed.store(true, Ordering::SeqCst);
            st.kill.notify_one();
        });
    }
    if s.cfg.drop_first_post && n == 1 {
        // The prompt is queued, the answer never comes: unwinding the connection's task closes
        // the socket without a response (and without a panic message).
        std::panic::resume_unwind(Box::new("dropped connection"));
    }
    Json(json!({"prompt_id": prompt_id, "number": number, "node_errors": {}})).into_response()
}

/// A batch of frames flowing through the graph.
#[derive(Debug, Clone)]
struct Batch {
    count: u64,
    w: u32,
    h: u32,
    /// Timeline index of the first frame.
    base: u64,
    /// Which node made the pictures (a colour tag in the PNG).
    tag: Tag,
    /// The real pictures loaded (one per frame). Saved frames are drawn as barcodes of
    /// `base + k` with `tag` (that is how a test proves the order), except frames
    /// `VIDAX_Wav2Lip` passed through unchanged: those are saved as the pictures it was given.
    pixels: Option<Arc<Vec<image::RgbImage>>>,
}

impl Batch {
    fn png(&self, k: u64) -> Vec<u8> {
        match &self.pixels {
            Some(p) if self.tag == Tag::Wav2Lip => {
                let mut out = std::io::Cursor::new(Vec::new());
                p[(k as usize).min(p.len() - 1)]
                    .write_to(&mut out, image::ImageFormat::Png)
                    .unwrap();
                out.into_inner()
            }
            _ => frame_png(self.base + k, self.w, self.h, self.tag),
        }
    }
}

/// The fake detector: a face in the centre half of a `w×h` picture, as `[x1, y1, x2, y2]`;
/// none in a picture smaller than 8×8.
pub fn fake_face_box(w: u32, h: u32) -> Option<[u32; 4]> {
    (w >= 8 && h >= 8).then(|| [w / 4, h / 4, 3 * w / 4, 3 * h / 4])
}

/// The first `ui` report under `key` in a recorded history body.
fn recorded_ui(file: &str, key: &str) -> Value {
    let h = recorded(file);
    let entry = h.as_object().unwrap().values().next().unwrap().clone();
    entry["outputs"]
        .as_object()
        .unwrap()
        .values()
        .find_map(|n| n.get(key))
        .unwrap()[0]
        .clone()
}

/// `VIDAX_FaceProbe`'s report for a `w×h` picture, shaped as the recorded ones.
fn face_report(w: u32, h: u32, found: bool) -> Value {
    let Some([x1, y1, x2, y2]) = fake_face_box(w, h).filter(|_| found) else {
        let mut r = recorded_ui("history_facecheck_noface.json", "vidax_face");
        r["image"] = json!({"w": w, "h": h});
        return r;
    };
    let mut r = recorded_ui("history_facecheck_image.json", "vidax_face");
    let face = json!({"x": x1, "y": y1, "w": x2 - x1, "h": y2 - y1});
    let off = (y2 - y1) / 2;
    let mouth = json!({"x": x1, "y": y1 + off, "w": x2 - x1, "h": y2 - y1 - off});
    r["image"] = json!({"w": w, "h": h});
    r["faces"][0]["face_box"] = face.clone();
    r["faces"][0]["mouth_roi"] = mouth.clone();
    r["face_box"] = face;
    r["mouth_roi"] = mouth;
    r["feather"] = (((x2 - x1).min(y2 - y1 - off)) / 8).max(1).into();
    r["centre"] = json!([f64::from(x1 + x2) / 2.0, f64::from(y1 + y2) / 2.0]);
    r
}

/// `VIDAX_Wav2Lip`'s report for a batch, shaped as the recorded one.
fn lipsync_report(b: &Batch, start_frame: u64, found: bool) -> Value {
    let mut r = recorded_ui("history_wav2lip_image.json", "vidax_lipsync");
    let n = b.count;
    let face = fake_face_box(b.w, b.h).filter(|_| found);
    let bx = face.unwrap_or_default();
    let (outcome, boxes, synced) = if face.is_some() {
        (
            vec![json!("synced"); n as usize],
            vec![json!(bx); n as usize],
            n,
        )
    } else {
        (
            vec![json!("no_face"); n as usize],
            vec![Value::Null; n as usize],
            0,
        )
    };
    r["frames"] = n.into();
    r["start_frame"] = start_frame.into();
    r["width"] = b.w.into();
    r["height"] = b.h.into();
    r["synced"] = synced.into();
    r["silent"] = 0.into();
    r["no_face"] = (n - synced).into();
    r["detected_unique"] = u64::from(face.is_some()).into();
    r["outcome"] = outcome.into();
    r["boxes"] = boxes.into();
    r["box_summary"] = if synced > 0 {
        json!({"count": synced, "x1": [bx[0], bx[0]], "y1": [bx[1], bx[1]], "x2": [bx[2], bx[2]], "y2": [bx[3], bx[3]]})
    } else {
        json!({"count": 0})
    };
    r
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Still,
    Motion,
    Wav2Lip,
    MouthBlend,
    Video,
}

impl Tag {
    pub fn colour(self) -> [u8; 3] {
        match self {
            Tag::Still => [128, 128, 128],
            Tag::Motion => [0, 0, 255],
            Tag::Wav2Lip => [255, 255, 0],
            Tag::MouthBlend => [255, 0, 255],
            Tag::Video => [0, 255, 0],
        }
    }
}

/// A file of ComfyUI's input folder: uploaded, or copied into the configured folder.
fn input_file(s: &ServerState, name: &str) -> Option<Vec<u8>> {
    s.uploads.lock().unwrap().get(name).cloned().or_else(|| {
        let dir = s.cfg.input_dir.as_ref()?;
        std::fs::read(dir.join(name)).ok()
    })
}

/// Every frame of a video file, decoded to RGB with the ffmpeg CLI (tests only).
fn decode_video(bytes: &[u8]) -> Vec<image::RgbImage> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.mov");
    std::fs::write(&path, bytes).unwrap();
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=width,height", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout);
    let mut it = text.trim().split(',').map(|v| v.parse::<u32>().unwrap());
    let (w, h) = (it.next().unwrap(), it.next().unwrap());
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(&path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg");
    out.stdout
        .chunks_exact((w * h * 3) as usize)
        .map(|f| image::RgbImage::from_raw(w, h, f.to_vec()).unwrap())
        .collect()
}

fn eval(s: &ServerState, graph: &Value, id: &str, memo: &mut HashMap<String, Batch>) -> Batch {
    if let Some(b) = memo.get(id) {
        return b.clone();
    }
    let node = &graph[id];
    let i = &node["inputs"];
    let input = |name: &str, memo: &mut HashMap<String, Batch>| -> Batch {
        let src = i[name][0].as_str().unwrap_or("");
        eval(s, graph, src, memo)
    };
    let u = |name: &str| i[name].as_u64().unwrap_or(0);
    let b = match node["class_type"].as_str().unwrap_or("") {
        "LoadImage" => {
            let img = input_file(s, i["image"].as_str().unwrap_or(""))
                .and_then(|b| image::load_from_memory(&b).ok())
                .map(|i| i.to_rgb8());
            let (w, h) = img.as_ref().map_or((64, 48), |i| (i.width(), i.height()));
            Batch {
                count: 1,
                w,
                h,
                base: 0,
                tag: Tag::Still,
                pixels: img.map(|i| Arc::new(vec![i])),
            }
        }
        "RepeatImageBatch" => {
            let src = input("image", memo);
            let n = u("amount");
            Batch {
                count: n,
                pixels: src
                    .pixels
                    .as_ref()
                    .map(|p| Arc::new(vec![p[0].clone(); n as usize])),
                ..src
            }
        }
        // The real VHS_LoadVideo with force_rate 0 reads every frame; the server does what
        // the graph asks of the staged file (skip, cap) and records the barcodes it read.
        "VHS_LoadVideo" => match input_file(s, i["video"].as_str().unwrap_or("")) {
            Some(bytes) if i["force_rate"].as_f64() == Some(0.0) => {
                let all = decode_video(&bytes);
                let skip = u("skip_first_frames") as usize;
                let cap = u("frame_load_cap") as usize;
                let frames: Vec<image::RgbImage> = all
                    .into_iter()
                    .skip(skip)
                    .take(if cap == 0 { usize::MAX } else { cap })
                    .collect();
                s.video_frames.lock().unwrap().push(
                    frames
                        .iter()
                        .map(|f| read_frame(f.as_raw(), f.width(), f.height()).0)
                        .collect(),
                );
                let (w, h) = frames.first().map_or((64, 48), |f| (f.width(), f.height()));
                Batch {
                    count: frames.len() as u64,
                    w,
                    h,
                    base: skip as u64,
                    tag: Tag::Video,
                    pixels: Some(Arc::new(frames)),
                }
            }
            // A graph that asks VHS to resample or cap (the old way): frames counted only.
            _ => Batch {
                count: u("frame_load_cap"),
                w: u("custom_width") as u32,
                h: u("custom_height") as u32,
                base: 0,
                tag: Tag::Video,
                pixels: None,
            },
        },
        "VIDAX_MotionChunk" => {
            let src = input("image", memo);
            let (w, h) = match (u("width"), u("height")) {
                (0, _) | (_, 0) => (src.w, src.h),
                (w, h) => (w as u32, h as u32),
            };
            Batch {
                count: u("chunk_frames"),
                w,
                h,
                base: u("chunk_start"),
                tag: Tag::Motion,
                pixels: None,
            }
        }
        "VIDAX_Wav2Lip" => {
            let src = input("images", memo);
            let passthrough =
                s.cfg.wav2lip_identity || s.cfg.no_face || fake_face_box(src.w, src.h).is_none();
            Batch {
                base: u("start_frame"),
                tag: Tag::Wav2Lip,
                pixels: if passthrough {
                    src.pixels.clone()
                } else {
                    None
                },
                ..src
            }
        }
        "VIDAX_MouthBlend" => Batch {
            tag: Tag::MouthBlend,
            ..input("motion_frames", memo)
        },
        _ => Batch {
            count: 0,
            w: 64,
            h: 48,
            base: 0,
            tag: Tag::Still,
            pixels: None,
        },
    };
    memo.insert(id.to_string(), b.clone());
    b
}

/// A `w×h` RGB PNG whose top two thirds carry `index` as 8 vertical bars (bit 7 on the left;
/// white = 1, black = 0) and whose bottom third is `tag`'s colour.
pub fn frame_png(index: u64, w: u32, h: u32, tag: Tag) -> Vec<u8> {
    let mut img = image::RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let px = if y < h * 2 / 3 {
                let bit = 7 - (x * 8 / w).min(7);
                if (index >> bit) & 1 == 1 {
                    [235, 235, 235]
                } else {
                    [16, 16, 16]
                }
            } else {
                tag.colour()
            };
            img.put_pixel(x, y, image::Rgb(px));
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// What `VIDAX_SavePatches` saves for a frame (`png`): the box of pixels that differ from
/// `reference` (a 1×1 box at the origin when none does; the whole frame when there is no
/// reference of its size), as an RGB PNG with an `oFFs` chunk after `IHDR`.
pub fn patch_png(png: &[u8], reference: Option<&image::RgbImage>) -> Vec<u8> {
    let frame = image::load_from_memory(png).unwrap().to_rgb8();
    let (w, h) = frame.dimensions();
    match reference.filter(|r| r.dimensions() == (w, h)) {
        Some(r) => vidax::media::picture::patch_png(&frame, r).unwrap(),
        // No reference of the frame's size: the whole frame, at the origin.
        None => vidax::media::picture::patch_png(&frame, &image::RgbImage::new(0, 0)).unwrap(),
    }
}

/// Reads the barcode back from an RGB frame (`w×h`, as [`frame_png`] drew it): the index, and
/// the colour of the bottom band's centre.
pub fn read_frame(rgb: &[u8], w: u32, h: u32) -> (u64, [u8; 3]) {
    let y = h / 3;
    let mut index = 0;
    for bit in 0..8u32 {
        let x = (w * (2 * bit + 1)) / 16;
        let o = ((y * w + x) * 3) as usize;
        let luma = (u32::from(rgb[o]) + u32::from(rgb[o + 1]) + u32::from(rgb[o + 2])) / 3;
        index = (index << 1) | u64::from(luma > 128);
    }
    let o = (((h * 5 / 6) * w + w / 2) * 3) as usize;
    (index, [rgb[o], rgb[o + 1], rgb[o + 2]])
}

fn send(s: &ServerState, client_id: &str, ty: &str, data: Value) {
    if let Some(tx) = s.sockets.lock().unwrap().get(client_id) {
        let _ = tx.send(json!({"type": ty, "data": data}).to_string());
    }
}

async fn execute(s: Arc<ServerState>, prompt_id: String) {
    let _gpu = match s.cfg.serial {
        true => Some(s.gpu.lock().await),
        false => None,
    };
    *s.running.lock().unwrap() = Some(prompt_id.clone());
    let job = s.jobs.lock().unwrap().get(&prompt_id).cloned().unwrap();
    let c = job.client_id.as_str();
    let graph = job.graph.clone();
    let key = graph.to_string();
    let cached = s.cache.lock().unwrap().get(&key).cloned();
    let ids: Vec<String> = graph.as_object().unwrap().keys().cloned().collect();
    let ts = 1_795_244_316_224u64;
    // The recorded order (ws_messages.json): status, execution_start, execution_cached,
    // executing/progress/executed per node, execution_success, status, executing null.
    send(
        &s,
        c,
        "status",
        json!({"status": {"exec_info": {"queue_remaining": 1}}}),
    );
    send(
        &s,
        c,
        "execution_start",
        json!({"prompt_id": prompt_id, "timestamp": ts}),
    );
    let cached_nodes: Vec<String> = if cached.is_some() {
        ids.clone()
    } else {
        vec![]
    };
    send(
        &s,
        c,
        "execution_cached",
        json!({"nodes": cached_nodes, "prompt_id": prompt_id, "timestamp": ts}),
    );
    let held = s
        .cfg
        .hold_class
        .as_deref()
        .is_none_or(|cls| ids.iter().any(|id| graph[id.as_str()]["class_type"] == cls));
    if held {
        tokio::time::sleep(Duration::from_millis(s.cfg.run_ms)).await;
    }
    let failing = s.cfg.runtime_error_class.as_deref().and_then(|cls| {
        ids.iter()
            .find(|id| graph[id.as_str()]["class_type"] == cls)
            .cloned()
    });
    let mut messages = vec![
        json!(["execution_start", {"prompt_id": prompt_id, "timestamp": ts}]),
        json!(["execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id, "timestamp": ts}]),
    ];
    let (outputs, status_str) = if let Some(bad) = failing {
        let rec = recorded("history_runtime_error.json");
        let mut err =
            rec.as_object().unwrap().values().next().unwrap()["status"]["messages"][2][1].clone();
        err["prompt_id"] = prompt_id.clone().into();
        err["node_id"] = bad.clone().into();
        err["node_type"] = graph[&bad]["class_type"].clone();
        err["exception_message"] =
            "VIDAX_WEIGHTS_MISSING: Wav2Lip/checkpoints/wav2lip_gan.pth not found\n".into();
        err["exception_type"] = "vidax_wav2lip.core.errors.PackMissingError".into();
        send(
            &s,
            c,
            "executing",
            json!({"node": bad, "display_node": bad, "prompt_id": prompt_id}),
        );
        send(&s, c, "execution_error", err.clone());
        messages.push(json!(["execution_error", err]));
        (json!({}), "error")
    } else if s.cfg.no_outputs {
        messages.push(json!(["execution_success", {"prompt_id": prompt_id, "timestamp": ts}]));
        (json!({}), "success")
    } else {
        let outputs = match cached {
            Some(o) => o,
            None => {
                let mut memo = HashMap::new();
                let mut outputs = Map::new();
                for id in &ids {
                    send(
                        &s,
                        c,
                        "executing",
                        json!({"node": id, "display_node": id, "prompt_id": prompt_id}),
                    );
                    if graph[id]["class_type"] == "VHS_VideoCombine" {
                        let src = graph[id]["inputs"]["images"][0].as_str().unwrap_or("");
                        let b = eval(&s, &graph, src, &mut memo);
                        let prefix = graph[id]["inputs"]["filename_prefix"]
                            .as_str()
                            .unwrap_or("AnimateDiff");
                        let rate = graph[id]["inputs"]["frame_rate"].as_f64().unwrap_or(8.0);
                        let pngs: Vec<Vec<u8>> = (0..b.count).map(|k| b.png(k)).collect();
                        let name = format!("{prefix}_00001.mp4");
                        s.files
                            .lock()
                            .unwrap()
                            .insert(name.clone(), mp4_of(&pngs, rate));
                        let out = json!({"gifs": [{"filename": name, "subfolder": "", "type": "output",
                            "format": "video/h264-mp4", "frame_rate": rate, "workflow": format!("{prefix}_00001.png"),
                            "fullpath": format!("/opt/ComfyUI/output/{name}")}]});
                        outputs.insert(id.clone(), out);
                        continue;
                    }
                    // Our nodes' reports, in their `ui` dicts (as the recorded histories).
                    let class = graph[id]["class_type"].as_str().unwrap_or("");
                    if !s.cfg.no_reports && class == "VIDAX_FaceProbe" {
                        let src = graph[id]["inputs"]["image"][0].as_str().unwrap_or("");
                        let b = eval(&s, &graph, src, &mut memo);
                        let report = if s.cfg.face_fallback {
                            recorded_ui("history_facecheck_fallback.json", "vidax_face")
                        } else {
                            face_report(b.w, b.h, !s.cfg.no_face)
                        };
                        outputs.insert(id.clone(), json!({"vidax_face": [report]}));
                        continue;
                    }
                    if !s.cfg.no_reports && class == "VIDAX_Wav2Lip" {
                        let b = eval(&s, &graph, id, &mut memo);
                        let start = graph[id]["inputs"]["start_frame"].as_u64().unwrap_or(0);
                        outputs.insert(
                            id.clone(),
                            json!({"vidax_lipsync": [lipsync_report(&b, start, !s.cfg.no_face)]}),
                        );
                        continue;
                    }
                    if class != "SaveImage" && class != "VIDAX_SavePatches" {
                        continue;
                    }
                    let src = graph[id]["inputs"]["images"][0].as_str().unwrap_or("");
                    let b = eval(&s, &graph, src, &mut memo);
                    // VIDAX_SavePatches: each frame as the box that differs from the reference.
                    let reference = (class == "VIDAX_SavePatches").then(|| {
                        let r = graph[id]["inputs"]["reference"][0].as_str().unwrap_or("");
                        eval(&s, &graph, r, &mut memo).pixels.map(|p| p[0].clone())
                    });
                    let prefix = graph[id]["inputs"]["filename_prefix"]
                        .as_str()
                        .unwrap_or("ComfyUI");
                    let n = b.count.saturating_sub(s.cfg.frame_shortfall);
                    let mut images = Vec::new();
                    for k in 0..n {
                        send(
                            &s,
                            c,
                            "progress",
                            json!({"value": k + 1, "max": n, "prompt_id": prompt_id, "node": id}),
                        );
                        let counter = {
                            let mut cs = s.counters.lock().unwrap();
                            let e = cs.entry(prefix.to_string()).or_insert(s.cfg.counter_start);
                            *e += 1;
                            *e
                        };
                        let name = format!("{prefix}_{counter:05}_.png");
                        let png = match &reference {
                            Some(r) => patch_png(&b.png(k), r.as_ref()),
                            None => b.png(k),
                        };
                        s.files.lock().unwrap().insert(name.clone(), png);
                        images.push(json!({"filename": name, "subfolder": "", "type": "output"}));
                    }
                    // The history lists them in a shuffled order: the client must sort by name.
                    images.reverse();
                    let out = json!({"images": images});
                    send(
                        &s,
                        c,
                        "executed",
                        json!({"node": id, "display_node": id, "output": out, "prompt_id": prompt_id}),
                    );
                    outputs.insert(id.clone(), out);
                }
                let o = Value::Object(outputs);
                s.cache.lock().unwrap().insert(key, o.clone());
                o
            }
        };
        messages.push(json!(["execution_success", {"prompt_id": prompt_id, "timestamp": ts}]));
        (outputs, "success")
    };
    let out_ids: Vec<&String> = ids
        .iter()
        .filter(|id| {
            let class = &graph[id.as_str()]["class_type"];
            class == "SaveImage" || class == "VIDAX_SavePatches"
        })
        .collect();
    let entry = json!({
        "prompt": [job.number, prompt_id, graph, {"client_id": c}, out_ids],
        "outputs": outputs,
        "status": {"status_str": status_str, "completed": status_str == "success", "messages": messages},
        "meta": {},
    });
    if let Some(j) = s.jobs.lock().unwrap().get_mut(&prompt_id) {
        j.entry = entry;
        j.done = true;
    }
    if status_str == "success" {
        send(
            &s,
            c,
            "execution_success",
            json!({"prompt_id": prompt_id, "timestamp": ts}),
        );
    }
    send(
        &s,
        c,
        "status",
        json!({"status": {"exec_info": {"queue_remaining": 0}}}),
    );
    send(
        &s,
        c,
        "executing",
        json!({"node": null, "prompt_id": prompt_id}),
    );
}

async fn history(State(s): State<Arc<ServerState>>, AxPath(id): AxPath<String>) -> Json<Value> {
    let jobs = s.jobs.lock().unwrap();
    Json(match jobs.get(&id) {
        Some(j) if j.done => json!({ id: j.entry }),
        _ => json!({}),
    })
}

/// `POST /queue {"delete": [ids]}` (recorded): ComfyUI drops those prompts from its pending
/// queue; here a prompt not yet finished is dropped from the queue listing.
async fn queue_edit(State(s): State<Arc<ServerState>>, Json(body): Json<Value>) -> StatusCode {
    for id in body["delete"].as_array().into_iter().flatten() {
        let Some(id) = id.as_str() else { continue };
        s.deleted.lock().unwrap().push(id.to_string());
        let running = s.running.lock().unwrap().as_deref() == Some(id);
        let mut jobs = s.jobs.lock().unwrap();
        if !running && jobs.get(id).is_some_and(|j| !j.done) {
            jobs.remove(id);
        }
    }
    StatusCode::OK
}

/// `POST /interrupt {"prompt_id": id}` (recorded): ComfyUI stops that prompt if it is the
/// one running.
async fn interrupt(State(s): State<Arc<ServerState>>, Json(body): Json<Value>) -> StatusCode {
    if let Some(id) = body["prompt_id"].as_str() {
        s.interrupted.lock().unwrap().push(id.to_string());
    }
    StatusCode::OK
}

async fn queue(State(s): State<Arc<ServerState>>) -> Json<Value> {
    let now = s.running.lock().unwrap().clone();
    let jobs = s.jobs.lock().unwrap();
    let item =
        |(id, j): (&String, &Job)| json!([j.number, id, j.graph, {"client_id": j.client_id}, []]);
    let waiting = jobs.iter().filter(|(_, j)| !j.done);
    // Serial: the one executing runs, the others wait; otherwise all run.
    let (running, pending): (Vec<_>, Vec<_>) =
        waiting.partition(|(id, _)| !s.cfg.serial || now.as_deref() == Some(id.as_str()));
    let mut pending: Vec<Value> = pending.into_iter().map(item).collect();
    for k in 0..s.cfg.foreign_queue {
        let id = format!("{k:08x}-f0f0-4000-8000-000000000000");
        pending.push(json!([1000 + k, id, {}, {"client_id": "someone-else"}, []]));
    }
    Json(json!({
        "queue_running": running.into_iter().map(item).collect::<Vec<_>>(),
        "queue_pending": pending,
    }))
}

async fn view(
    State(s): State<Arc<ServerState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    tokio::time::sleep(Duration::from_millis(s.cfg.view_delay_ms)).await;
    let name = q.get("filename").cloned().unwrap_or_default();
    match s.files.lock().unwrap().get(&name) {
        Some(b) => ([("content-type", "image/png")], b.clone()).into_response(),
        // Recorded: a missing file is 404 with an empty body.
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The `name="…"; filename="…"` parts of a multipart body: (field, filename, bytes).
pub fn multipart_parts(headers: &HeaderMap, body: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(boundary) = ct.split("boundary=").nth(1) else {
        return vec![];
    };
    let delim = format!("--{}", boundary.trim_matches('"'));
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(i) = find(rest, delim.as_bytes()) {
        rest = &rest[i + delim.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(h_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..h_end]).to_string();
        let data_start = h_end + 4;
        let Some(next) = find(&rest[data_start..], delim.as_bytes()) else {
            break;
        };
        let data = rest[data_start..data_start + next]
            .strip_suffix(b"\r\n")
            .unwrap_or(&rest[data_start..data_start + next]);
        let attr = |k: &str| {
            head.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        parts.push((attr("name"), attr("filename"), data.to_vec()));
        rest = &rest[data_start + next..];
    }
    parts
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn upload(State(s): State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
    let parts = multipart_parts(&headers, &body);
    let Some((_, filename, data)) = parts.into_iter().find(|(n, _, _)| n == "image") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    s.uploads.lock().unwrap().insert(filename.clone(), data);
    let mut v = recorded("upload_image_response.json");
    v["name"] = filename.into();
    Json(v).into_response()
}

/// The HTTP lip-sync provider stand-in: answers with the `video` part it was sent.
async fn lipsync(State(s): State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
    s.lipsync_posts.fetch_add(1, Ordering::SeqCst);
    let parts = multipart_parts(&headers, &body);
    match parts.into_iter().find(|(n, _, _)| n == "video") {
        Some((_, _, data)) => ([("content-type", "video/mp4")], data).into_response(),
        None => (StatusCode::BAD_REQUEST, "no video part").into_response(),
    }
}

async fn ws(
    State(s): State<Arc<ServerState>>,
    Query(q): Query<HashMap<String, String>>,
    up: WebSocketUpgrade,
) -> Response {
    let client_id = q.get("clientId").cloned().unwrap_or_default();
    // Registered before the 101 answer goes out, so a POST that follows the handshake always
    // finds the socket.
    let (tx, rx) = mpsc::unbounded_channel();
    s.sockets.lock().unwrap().insert(client_id.clone(), tx);
    up.on_upgrade(move |sock| socket(client_id, rx, sock))
}

async fn socket(client_id: String, mut rx: mpsc::UnboundedReceiver<String>, mut sock: WebSocket) {
    let hello = json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}});
    if sock.send(Message::Text(hello.to_string())).await.is_err() {
        return;
    }
    while let Some(m) = rx.recv().await {
        if sock.send(Message::Text(m)).await.is_err() {
            break;
        }
    }
}

/// An H.264 MP4 of `pngs` at `rate` fps, made with the ffmpeg CLI (tests only).
pub fn mp4_of(pngs: &[Vec<u8>], rate: f64) -> Vec<u8> {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let mut child = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-f",
            "image2pipe",
            "-framerate",
            &rate.to_string(),
            "-i",
            "-",
        ])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "10", "-y"])
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ffmpeg (the tests' clip maker) must be installed");
    let mut stdin = child.stdin.take().unwrap();
    for p in pngs {
        stdin.write_all(p).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success(), "ffmpeg failed");
    std::fs::read(out).unwrap()
}

/// Writes a test PNG (for inputs).
pub fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}
