//! API-format graphs: the inline ones (SPEC §6; node and input names as the recorded server
//! and `docs/COMFYUI_INTERFACE.md` give them), user templates with placeholders, and the
//! preflight of any graph against `/object_info` before it is submitted.
//!
//! A graph is `{"<node id>": {"class_type": …, "inputs": {…}}}`; a link input is
//! `["<node id>", <output index>]`. Nothing here talks to the server.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::error::{Error, ErrorKind, Result};

/// What the graphs are built from: the staged input names and the run's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphParams {
    /// The start image's or start video's name in ComfyUI's input folder.
    pub start: String,
    /// The staged picture the built-in Wav2Lip graphs read: the still (start image) or the
    /// main-segment clip (start video), by its name in ComfyUI's input folder.
    pub staged: String,
    /// The padded audio's name in ComfyUI's input folder.
    pub audio: String,
    /// Frames of the main segment (ComfyUI is never asked for the end hold).
    pub frames: u64,
    /// Exact fps as a float with full precision (30000/1001 as 29.97002997002997).
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub prompt: String,
    pub negative: String,
    pub wav2lip_mode: String,
    pub face_detect_batch: u32,
    pub on_no_face: String,
    pub motion_mode: String,
    pub motion_strength: f64,
    pub background: String,
}

/// One chunk: timeline frames `start..start + frames` (half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub start: u64,
    pub frames: u64,
}

/// Splits `total` frames into chunks of at most `size`.
pub fn chunks(total: u64, size: u64) -> Vec<Chunk> {
    let size = size.max(1);
    (0..total.div_ceil(size))
        .map(|c| Chunk {
            start: c * size,
            frames: size.min(total - c * size),
        })
        .collect()
}

/// `RepeatImageBatch` takes at most this many (its `amount` maximum on the recorded server):
/// the chunk size of the start-image graphs is capped to it.
pub const REPEAT_MAX: u64 = 4096;

/// The face box and mouth ROI the mouth-blend graph needs (from the local faceprobe).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceInputs {
    pub mouth: (u32, u32, u32, u32),
    pub centre: (f64, f64),
}

fn link(node: &str, output: u32) -> Value {
    json!([node, output])
}

fn load_audio() -> Value {
    json!({"class_type": "LoadAudio", "inputs": {"audio": "{{audio}}"}})
}

fn wav2lip(p: &GraphParams, images: Value, audio: Value, start_frame: u64) -> Value {
    json!({"class_type": "VIDAX_Wav2Lip", "inputs": {
        "images": images, "audio": audio, "fps": p.fps, "mode": p.wav2lip_mode,
        "face_detect_batch": p.face_detect_batch, "on_no_face": p.on_no_face,
        "start_frame": start_frame,
    }})
}

fn save(images: Value, prefix: &str) -> Value {
    json!({"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix}})
}

fn motion_inputs(p: &GraphParams, c: Chunk, centre: Option<(f64, f64)>) -> Map<String, Value> {
    let (cx, cy) = centre.unwrap_or((-1.0, -1.0));
    let v = json!({
        "mode": p.motion_mode, "strength": p.motion_strength, "frames": p.frames,
        "chunk_start": c.start, "centre_x": cx, "centre_y": cy, "background": p.background,
    });
    v.as_object().cloned().unwrap_or_default()
}

/// The face check (`vidax_facecheck`): one `LoadImage → VIDAX_FaceProbe` pair per picture,
/// the pair of picture `i` as nodes `2i+1` and `2i+2`.
pub fn facecheck(images: &[String]) -> Value {
    let mut g = Map::new();
    for (i, name) in images.iter().enumerate() {
        let (load, probe) = ((2 * i + 1).to_string(), (2 * i + 2).to_string());
        g.insert(
            load.clone(),
            json!({"class_type": "LoadImage", "inputs": {"image": name}}),
        );
        g.insert(
            probe,
            json!({"class_type": "VIDAX_FaceProbe", "inputs": {"image": link(&load, 0)}}),
        );
    }
    Value::Object(g)
}

/// The node id of picture `i`'s `VIDAX_FaceProbe` in [`facecheck`].
pub fn facecheck_probe_id(i: usize) -> String {
    (2 * i + 2).to_string()
}

/// Staged still → `LoadImage` → `RepeatImageBatch(amount)` + `LoadAudio` →
/// `VIDAX_Wav2Lip(on_no_face)` → `VIDAX_SavePatches(reference = the still,
/// filename_prefix=vidax_wav2lip)`, for one chunk: each frame comes back as the box that
/// differs from the still (the engine lays it over the still it staged).
pub fn wav2lip_image(p: &GraphParams, c: Chunk) -> Value {
    json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": p.staged}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": link("1", 0), "amount": c.frames}},
        "3": load_audio(),
        "4": wav2lip(p, link("2", 0), link("3", 0), c.start),
        "5": {"class_type": "VIDAX_SavePatches", "inputs": {
            "images": link("4", 0), "reference": link("1", 0), "filename_prefix": "vidax_wav2lip",
        }},
    })
}

/// The staged main-segment clip → `VHS_LoadVideo` (all seven required inputs: every frame
/// at the clip's own rate (`force_rate` 0), its own size (`custom_width`/`custom_height` 0),
/// the chunk's frames (`skip_first_frames` = chunk start, `frame_load_cap` = chunk frames),
/// `format` None so nothing is rounded) + `LoadAudio` → `VIDAX_Wav2Lip(start_frame)` →
/// `SaveImage`, for one chunk.
pub fn wav2lip_video(p: &GraphParams, c: Chunk) -> Value {
    json!({
        "1": {"class_type": "VHS_LoadVideo", "inputs": {
            "video": p.staged, "force_rate": 0, "custom_width": 0,
            "custom_height": 0, "frame_load_cap": c.frames, "skip_first_frames": c.start,
            "select_every_nth": 1, "format": "None",
        }},
        "3": load_audio(),
        "4": wav2lip(p, link("1", 0), link("3", 0), c.start),
        "5": save(link("4", 0), "vidax_wav2lip"),
    })
}

/// `vidax_motion_chunks`: `LoadImage` → `VIDAX_MotionChunk` (render size, face centre) →
/// `SaveImage(filename_prefix=vidax_motion)`, for one chunk.
pub fn motion_chunk(p: &GraphParams, c: Chunk, centre: Option<(f64, f64)>) -> Value {
    let mut inputs = motion_inputs(p, c, centre);
    inputs.insert("image".into(), link("1", 0));
    inputs.insert("chunk_frames".into(), c.frames.into());
    inputs.insert("width".into(), p.width.into());
    inputs.insert("height".into(), p.height.into());
    json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "{{start_image}}"}},
        "2": {"class_type": "VIDAX_MotionChunk", "inputs": inputs},
        "3": save(link("2", 0), "vidax_motion"),
    })
}

/// `vidax_lipsync_mouthblend`: the lip-synced still (`LoadImage` → `RepeatImageBatch` →
/// `VIDAX_Wav2Lip`) blended into the motion frames (`VIDAX_MotionChunk`) by
/// `VIDAX_MouthBlend` → `SaveImage(filename_prefix=vidax_mouthblend)`. The blend follows the
/// box Wav2Lip reports for each frame (its `report` output into `lipsync_report`); the mouth
/// ROI inputs are what a MouthBlend without that input uses.
pub fn mouthblend_chunk(p: &GraphParams, c: Chunk, face: &FaceInputs) -> Value {
    let mut graph = motion_chunk(p, c, Some(face.centre));
    let mut blend = motion_inputs(p, c, Some(face.centre));
    let (mx, my, mw, mh) = face.mouth;
    for (k, v) in [
        ("motion_frames", link("2", 0)),
        ("lipsync_frames", link("6", 0)),
        ("lipsync_report", link("6", 1)),
        ("mouth_x", mx.into()),
        ("mouth_y", my.into()),
        ("mouth_w", mw.into()),
        ("mouth_h", mh.into()),
        ("feather", (-1).into()),
    ] {
        blend.insert(k.into(), v);
    }
    let g = graph.as_object_mut().expect("graph literal is an object");
    g.insert(
        "4".into(),
        json!({"class_type": "RepeatImageBatch", "inputs": {"image": link("1", 0), "amount": c.frames}}),
    );
    g.insert("5".into(), load_audio());
    g.insert("6".into(), wav2lip(p, link("4", 0), link("5", 0), c.start));
    g.insert(
        "7".into(),
        json!({"class_type": "VIDAX_MouthBlend", "inputs": blend}),
    );
    g.insert("3".into(), save(link("7", 0), "vidax_mouthblend"));
    graph
}

/// The placeholders a template may use (SPEC §6).
pub const PLACEHOLDERS: [&str; 11] = [
    "start_image",
    "audio",
    "frames",
    "fps",
    "width",
    "height",
    "seed",
    "prompt",
    "negative",
    "chunk_start",
    "chunk_frames",
];

fn placeholder_value(name: &str, p: &GraphParams, c: Chunk) -> Option<Value> {
    Some(match name {
        "start_image" => p.start.clone().into(),
        "audio" => p.audio.clone().into(),
        "frames" => p.frames.into(),
        "fps" => p.fps.into(),
        "width" => p.width.into(),
        "height" => p.height.into(),
        "seed" => p.seed.into(),
        "prompt" => p.prompt.clone().into(),
        "negative" => p.negative.clone().into(),
        "chunk_start" => c.start.into(),
        "chunk_frames" => c.frames.into(),
        _ => return None,
    })
}

/// The `{{name}}` placeholders in `s`, in order.
fn names_in(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else { break };
        out.push(after[..j].trim());
        rest = &after[j + 2..];
    }
    out
}

/// Every placeholder a graph uses (unknown ones too).
pub fn placeholders_used(graph: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_strings(graph, &mut |s| {
        for n in names_in(s) {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
    });
    out
}

fn walk_strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| walk_strings(x, f)),
        Value::Object(o) => o.values().for_each(|x| walk_strings(x, f)),
        _ => {}
    }
}

/// Fills the placeholders: a string that is exactly one placeholder becomes the typed value
/// (`"{{frames}}"` → `120`), placeholders inside longer strings are replaced as text.
pub fn fill(graph: &Value, p: &GraphParams, c: Chunk) -> Value {
    match graph {
        Value::String(s) => {
            let names = names_in(s);
            let t = s.trim();
            if names.len() == 1 && t.starts_with("{{") && t.ends_with("}}") && t.len() > 4 {
                if let Some(v) = placeholder_value(names[0], p, c) {
                    return v;
                }
            }
            let mut out = s.clone();
            for n in names {
                if let Some(v) = placeholder_value(n, p, c) {
                    let text = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out = out.replace(&format!("{{{{{n}}}}}", n = n), &text);
                }
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, p, c)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), fill(v, p, c))).collect())
        }
        other => other.clone(),
    }
}

/// A user template: `<id>.json` in the state dir's `config/workflows/`, else the project's
/// `config/workflows/` (the current directory's).
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub id: String,
    pub path: PathBuf,
    pub graph: Value,
}

impl Template {
    /// Whether the template is run once per chunk (it uses `{{chunk_start}}`/`{{chunk_frames}}`).
    pub fn chunked(&self) -> bool {
        placeholders_used(&self.graph)
            .iter()
            .any(|n| n == "chunk_start" || n == "chunk_frames")
    }
}

/// The folders searched for `<id>.json`, in order.
pub fn template_dirs(state_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![state_dir.join("config").join("workflows")];
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd.join("config").join("workflows"));
    }
    dirs
}

/// Loads template `id`, or `None` when no folder has it. A template that is not an API-format
/// graph, or uses an unknown placeholder, is `VALIDATION_FAILED` naming the file.
pub fn find_template(id: &str, dirs: &[PathBuf]) -> Result<Option<Template>> {
    let Some(path) = dirs
        .iter()
        .map(|d| d.join(format!("{id}.json")))
        .find(|p| p.is_file())
    else {
        return Ok(None);
    };
    let bad = |why: String| Error::at_path(ErrorKind::ValidationFailed, &path, why);
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let mut graph: Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    // `{"prompt": {...}}` (a saved request) is accepted as well as the bare graph.
    if graph.get("prompt").is_some_and(Value::is_object) {
        graph = graph["prompt"].take();
    }
    let nodes = graph.as_object().filter(|o| !o.is_empty()).ok_or_else(|| {
        bad("must be an API-format graph: {\"<id>\": {\"class_type\", \"inputs\"}}".into())
    })?;
    for (id, node) in nodes {
        if !node.get("class_type").is_some_and(Value::is_string)
            || !node.get("inputs").is_some_and(Value::is_object)
        {
            return Err(bad(format!(
                "node \"{id}\" needs \"class_type\" (a string) and \"inputs\" (an object); export the workflow in API format"
            )));
        }
    }
    for n in placeholders_used(&graph) {
        if !PLACEHOLDERS.contains(&n.as_str()) {
            return Err(bad(format!(
                "unknown placeholder {{{{{n}}}}} (known: {})",
                PLACEHOLDERS.map(|p| format!("{{{{{p}}}}}")).join(", ")
            )));
        }
    }
    Ok(Some(Template {
        id: id.to_string(),
        path,
        graph,
    }))
}

/// Checks `graph` against `/object_info` (`info`) as ComfyUI's own validation would, before
/// anything is submitted: every class exists (a missing `VIDAX_*` node names the install and
/// restart hint), every required input is given, links point at existing nodes, numbers are
/// within their min/max, and choices are among the listed ones. All problems are returned.
pub fn preflight(graph: &Value, info: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(nodes) = graph.as_object() else {
        return vec!["the graph is not an object".into()];
    };
    let mut has_output = false;
    for (id, node) in nodes {
        let class = node["class_type"].as_str().unwrap_or("");
        let Some(def) = info.get(class).filter(|d| d.is_object()) else {
            problems.push(missing_class(class));
            continue;
        };
        has_output |= def["output_node"].as_bool() == Some(true);
        let inputs = node["inputs"].as_object().cloned().unwrap_or_default();
        for section in ["required", "optional"] {
            let Some(spec) = def["input"][section].as_object() else {
                continue;
            };
            for (name, s) in spec {
                match inputs.get(name) {
                    None if section == "required" => problems.push(format!(
                        "node {id} ({class}): required input \"{name}\" is missing"
                    )),
                    None => {}
                    Some(v) => {
                        if let Some(p) = check_value(name, v, s, nodes) {
                            problems.push(format!("node {id} ({class}) input \"{name}\": {p}"));
                        }
                    }
                }
            }
        }
    }
    if problems.is_empty() && !has_output {
        problems.push("the graph has no output node (e.g. SaveImage)".into());
    }
    problems
}

/// The message for a class `/object_info` does not list.
pub fn missing_class(class: &str) -> String {
    if class.starts_with("VIDAX_") {
        format!("{class} not installed: run va install, then restart ComfyUI")
    } else if class.starts_with("VHS_") {
        format!("{class} not installed (ComfyUI-VideoHelperSuite): run va install, then restart ComfyUI")
    } else {
        format!("node class {class:?} does not exist in this ComfyUI")
    }
}

/// Inputs whose choices are the files in ComfyUI's input folder: `/object_info` lists them as
/// they were when it was read, so a file staged since then is missing from the list
/// (VHS_LoadVideo's `video` has no upload flag to tell).
const FILE_INPUTS: [&str; 4] = ["image", "audio", "video", "file"];

fn check_value(name: &str, v: &Value, spec: &Value, nodes: &Map<String, Value>) -> Option<String> {
    if let Some(l) = v.as_array() {
        let target = l.first().and_then(Value::as_str)?;
        return (l.len() == 2 && !nodes.contains_key(target))
            .then(|| format!("links to node {target}, which is not in the graph"));
    }
    let kind = &spec[0];
    let opts = &spec[1];
    match kind {
        Value::String(t) if t == "INT" || t == "FLOAT" => {
            let Some(x) = v.as_f64() else {
                return Some(format!("expected a number ({t}), got {v}"));
            };
            if t == "INT" && v.as_i64().is_none() && v.as_u64().is_none() {
                return Some(format!("expected an integer, got {v}"));
            }
            if let Some(min) = opts["min"].as_f64().filter(|m| x < *m) {
                return Some(format!("value {v} is smaller than the minimum {min}"));
            }
            if let Some(max) = opts["max"].as_f64().filter(|m| x > *m) {
                return Some(format!("value {v} is bigger than the maximum {max}"));
            }
            None
        }
        // A choice; file lists (image/audio/video uploads) change as files arrive, so only
        // fixed lists are checked.
        Value::Array(choices) => {
            let upload = ["image_upload", "audio_upload", "video_upload"]
                .iter()
                .any(|k| opts.get(*k).is_some())
                || FILE_INPUTS.contains(&name)
                || choices.is_empty();
            if upload {
                return None;
            }
            (!choices.contains(v))
                .then(|| format!("{v} is not one of {}", Value::Array(choices.clone())))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GraphParams {
        GraphParams {
            start: "vidax_start_0123456789abcdef.png".into(),
            staged: "vidax_still_0123456789abcdef.png".into(),
            audio: "vidax_audio_fedcba9876543210.wav".into(),
            frames: 40,
            fps: 25.0,
            width: 64,
            height: 48,
            seed: 7,
            prompt: "a face".into(),
            negative: String::new(),
            wav2lip_mode: "sequential".into(),
            face_detect_batch: 8,
            on_no_face: "passthrough".into(),
            motion_mode: "zoom_in".into(),
            motion_strength: 0.1,
            background: "#000000".into(),
        }
    }

    fn info() -> Value {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/comfyui");
        let mut all: Map<String, Value> = Map::new();
        for f in ["object_info_vidax.json", "object_info_VHS_LoadVideo.json"] {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
            all.extend(v.as_object().unwrap().clone());
        }
        for (c, s) in [
            (
                "LoadImage",
                r#"{"input":{"required":{"image":[["example.png"],{"image_upload":true}]}},"output_node":false}"#,
            ),
            (
                "LoadAudio",
                r#"{"input":{"required":{"audio":[[],{"audio_upload":true}]}},"output_node":false}"#,
            ),
            (
                "RepeatImageBatch",
                r#"{"input":{"required":{"image":["IMAGE"],"amount":["INT",{"default":1,"min":1,"max":4096}]}},"output_node":false}"#,
            ),
            (
                "SaveImage",
                r#"{"input":{"required":{"images":["IMAGE"],"filename_prefix":["STRING",{"default":"ComfyUI"}]}},"output_node":true}"#,
            ),
        ] {
            all.insert(c.into(), serde_json::from_str(s).unwrap());
        }
        Value::Object(all)
    }

    #[test]
    fn inline_graphs_pass_the_preflight_with_every_required_input() {
        let p = params();
        let c = Chunk {
            start: 0,
            frames: 40,
        };
        let face = FaceInputs {
            mouth: (16, 32, 24, 16),
            centre: (32.0, 24.0),
        };
        for g in [
            wav2lip_image(&p, c),
            wav2lip_video(&p, c),
            facecheck(&["a.png".into(), "b.png".into()]),
            motion_chunk(&p, c, None),
            mouthblend_chunk(&p, c, &face),
        ] {
            let g = fill(&g, &p, c);
            assert_eq!(preflight(&g, &info()), Vec::<String>::new(), "{g}");
        }
    }

    #[test]
    fn preflight_names_a_missing_node_missing_inputs_and_out_of_range_values() {
        let p = params();
        let c = Chunk {
            start: 0,
            frames: 5000,
        };
        let mut info = info();
        info.as_object_mut().unwrap().remove("VIDAX_Wav2Lip");
        let mut g = fill(&wav2lip_image(&p, c), &p, c);
        g["1"]["inputs"].as_object_mut().unwrap().remove("image");
        g["4"]["inputs"]["mode"] = json!("sideways");
        let probs = preflight(&g, &info);
        assert!(
            probs
                .iter()
                .any(|s| s == "VIDAX_Wav2Lip not installed: run va install, then restart ComfyUI"),
            "{probs:?}"
        );
        assert!(probs
            .iter()
            .any(|s| s.contains("required input \"image\" is missing")));
        assert!(probs
            .iter()
            .any(|s| s.contains("5000 is bigger than the maximum 4096")));
        let g = fill(
            &wav2lip_image(
                &p,
                Chunk {
                    start: 0,
                    frames: 3,
                },
            ),
            &p,
            c,
        );
        let mut info2 = self::info();
        info2["VIDAX_Wav2Lip"]["input"]["required"]["mode"] = json!([["sequential"]]);
        let mut g2 = g.clone();
        g2["4"]["inputs"]["mode"] = json!("repetitive");
        assert!(preflight(&g2, &info2)[0].contains("is not one of"));
        // A file staged after /object_info was read is not in its (recorded) file list.
        let mut info3 = self::info();
        info3["VHS_LoadVideo"]["input"]["required"]["video"] = json!([["vidax_clip.mp4"]]);
        let p = params();
        let v = fill(
            &wav2lip_video(
                &p,
                Chunk {
                    start: 0,
                    frames: 40,
                },
            ),
            &p,
            Chunk {
                start: 0,
                frames: 40,
            },
        );
        assert_eq!(preflight(&v, &info3), Vec::<String>::new());
    }

    #[test]
    fn vhs_loadvideo_gets_all_seven_required_inputs() {
        let g = wav2lip_video(
            &params(),
            Chunk {
                start: 10,
                frames: 30,
            },
        );
        let need = [
            "video",
            "force_rate",
            "custom_width",
            "custom_height",
            "frame_load_cap",
            "skip_first_frames",
            "select_every_nth",
        ];
        for n in need {
            assert!(g["1"]["inputs"].get(n).is_some(), "{n}");
        }
        // The chunk of the clip, at its own rate and size; Wav2Lip counts from the chunk.
        let i = &g["1"]["inputs"];
        assert_eq!(
            (
                &i["frame_load_cap"],
                &i["skip_first_frames"],
                &i["force_rate"]
            ),
            (&json!(30), &json!(10), &json!(0))
        );
        assert_eq!(
            (&i["custom_width"], &i["custom_height"]),
            (&json!(0), &json!(0))
        );
        assert_eq!(i["video"], "vidax_still_0123456789abcdef.png");
        assert_eq!(g["4"]["inputs"]["start_frame"], 10);
    }

    #[test]
    fn the_face_check_pairs_each_picture_with_a_probe() {
        let g = facecheck(&["a.png".into(), "b.png".into()]);
        assert_eq!(g["3"]["inputs"]["image"], "b.png");
        assert_eq!(g[facecheck_probe_id(1)]["inputs"]["image"], json!(["3", 0]));
        assert_eq!(g[facecheck_probe_id(0)]["class_type"], "VIDAX_FaceProbe");
    }

    #[test]
    fn a_lone_placeholder_becomes_the_typed_value_and_text_is_replaced_inside_strings() {
        let p = params();
        let c = Chunk {
            start: 10,
            frames: 5,
        };
        let t = json!({"1": {"class_type": "X", "inputs": {
            "n": "{{frames}}", "f": "{{fps}}", "s": "{{ seed }}", "cs": "{{chunk_start}}",
            "text": "portrait, {{prompt}}, {{width}}x{{height}}", "img": "{{start_image}}"}}});
        let g = fill(&t, &p, c);
        let i = &g["1"]["inputs"];
        assert_eq!(i["n"], json!(40));
        assert_eq!(i["f"], json!(25.0));
        assert_eq!(i["s"], json!(7));
        assert_eq!(i["cs"], json!(10));
        assert_eq!(i["text"], json!("portrait, a face, 64x48"));
        assert_eq!(i["img"], json!("vidax_start_0123456789abcdef.png"));
    }

    #[test]
    fn templates_are_found_in_order_and_checked() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let dirs = vec![d1.path().to_path_buf(), d2.path().to_path_buf()];
        assert!(find_template("mine", &dirs).unwrap().is_none());
        std::fs::write(d2.path().join("mine.json"), r#"{"prompt": {"1": {"class_type": "SaveImage", "inputs": {"x": "{{chunk_frames}}"}}}}"#).unwrap();
        let t = find_template("mine", &dirs).unwrap().unwrap();
        assert!(t.chunked());
        std::fs::write(
            d1.path().join("mine.json"),
            r#"{"1": {"class_type": "SaveImage", "inputs": {"x": "{{frame}}"}}}"#,
        )
        .unwrap();
        let e = find_template("mine", &dirs).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ValidationFailed);
        assert!(
            e.message.contains("unknown placeholder {{frame}}"),
            "{}",
            e.message
        );
        std::fs::write(d1.path().join("mine.json"), r#"{"nodes": [], "links": []}"#).unwrap();
        assert!(find_template("mine", &dirs)
            .unwrap_err()
            .message
            .contains("API format"));
    }

    #[test]
    fn chunks_cover_the_frames_half_open() {
        assert_eq!(
            chunks(10, 4),
            [
                Chunk {
                    start: 0,
                    frames: 4
                },
                Chunk {
                    start: 4,
                    frames: 4
                },
                Chunk {
                    start: 8,
                    frames: 2
                }
            ]
        );
        assert_eq!(
            chunks(3, 100),
            [Chunk {
                start: 0,
                frames: 3
            }]
        );
    }
}
