//! Reading a `/history/<id>` entry: which files ComfyUI produced, and a compact summary of
//! the entry for the log when it produced nothing usable.
//!
//! Parsing is tolerant (SPEC §6): media lists are found under `images`, `gifs` (the key
//! VideoHelperSuite uses for MP4 too) and `videos`, inside `outputs` or anywhere else in the
//! entry; `audio` outputs and `temp` previews are not pictures of the result.

use crate::record::comfyui::FailureDetails;
use serde_json::{Map, Value};

/// One file ComfyUI wrote, as `/view` wants it named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub filename: String,
    pub subfolder: String,
    /// `output` (or `temp` for previews).
    pub kind: String,
    /// The node that wrote it; empty when found outside `outputs`.
    pub node: String,
}

/// The pictures of one history entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    /// Still frames, sorted by file name (SaveImage's counter continues across runs, so the
    /// names, not the list order or `00001`, give the order).
    pub images: Vec<OutputFile>,
    /// Video files (`video/*` formats or video extensions), in history order.
    pub videos: Vec<OutputFile>,
}

const VIDEO_EXT: [&str; 5] = [".mp4", ".webm", ".mov", ".mkv", ".m4v"];

fn file_of(v: &Value, node: &str) -> Option<OutputFile> {
    let o = v.as_object()?;
    let filename = o.get("filename")?.as_str()?.to_string();
    Some(OutputFile {
        filename,
        subfolder: o
            .get("subfolder")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        kind: o
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("output")
            .into(),
        node: node.into(),
    })
}

fn is_video(v: &Value, f: &OutputFile) -> bool {
    let fmt = v.get("format").and_then(Value::as_str).unwrap_or("");
    let lower = f.filename.to_ascii_lowercase();
    fmt.starts_with("video/") || VIDEO_EXT.iter().any(|e| lower.ends_with(e))
}

fn scan(v: &Value, node: &str, out: &mut Outputs, depth: u32) {
    let Some(o) = v.as_object() else { return };
    if depth > 6 {
        return;
    }
    for (key, val) in o {
        match (key.as_str(), val) {
            ("images" | "gifs" | "videos", Value::Array(items)) => {
                for item in items {
                    let Some(f) = file_of(item, node) else {
                        continue;
                    };
                    if is_video(item, &f) {
                        out.videos.push(f);
                    } else if key == "images" {
                        out.images.push(f);
                    }
                    // An animated GIF preview is neither a frame sequence nor a video we decode.
                }
            }
            // The graph we sent and the status messages are not outputs.
            ("prompt" | "status" | "meta" | "audio", _) => {}
            (k, Value::Object(_)) => {
                let node = if depth <= 1 { k } else { node };
                scan(val, node, out, depth + 1)
            }
            _ => {}
        }
    }
}

/// The files of history entry `entry` (the value under the prompt id).
pub fn collect(entry: &Value) -> Outputs {
    let mut out = Outputs::default();
    if let Some(outputs) = entry.get("outputs") {
        scan(outputs, "", &mut out, 1);
    }
    // Entries that keep media outside `outputs` (older servers, custom nodes).
    if out.images.is_empty() && out.videos.is_empty() {
        if let Some(o) = entry.as_object() {
            let rest: Map<String, Value> = o
                .iter()
                .filter(|(k, _)| k.as_str() != "outputs")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            scan(&Value::Object(rest), "", &mut out, 2);
        }
    }
    let saved = |f: &OutputFile| f.kind != "temp";
    if out.images.iter().any(saved) {
        out.images.retain(saved);
    }
    out.images.sort_by(|a, b| {
        (a.subfolder.as_str(), a.filename.as_str()).cmp(&(b.subfolder.as_str(), &b.filename))
    });
    out
}

/// Whether the entry reports a failed execution (`status_str: "error"`).
pub fn failed(entry: &Value) -> bool {
    entry["status"]["status_str"].as_str() == Some("error")
}

/// The `execution_error` message of a failed entry: `(node_type, exception_type,
/// exception_message)`.
pub fn execution_error(entry: &Value) -> Option<(String, String, String)> {
    let msgs = entry["status"]["messages"].as_array()?;
    msgs.iter().find_map(|m| {
        if m.get(0)?.as_str()? != "execution_error" {
            return None;
        }
        let d = m.get(1)?;
        let s = |k: &str| {
            d.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .to_string()
        };
        Some((s("node_type"), s("exception_type"), s("exception_message")))
    })
}

/// A compact summary of an entry for the log (SPEC §6): `history_keys`, `output_keys`,
/// `messages` (event names, with the error's text), `node_errors`.
pub fn summary(entry: &Value, node_errors: &Value) -> FailureDetails {
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let messages = entry["status"]["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let name = m[0].as_str().unwrap_or("?");
                    match m[1].get("exception_message").and_then(Value::as_str) {
                        Some(e) => format!(
                            "{name}: {} {}: {}",
                            m[1]["node_type"].as_str().unwrap_or(""),
                            m[1]["exception_type"].as_str().unwrap_or(""),
                            e.trim()
                        ),
                        None => name.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    FailureDetails {
        history_keys: keys(entry),
        output_keys: keys(&entry["outputs"]),
        messages,
        node_errors: node_errors.clone(),
        ..FailureDetails::default()
    }
}

/// The entry of a recorded `/history/<id>` body in `tests/data/comfyui/` (for unit tests).
#[cfg(test)]
pub(crate) fn recorded_entry(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/comfyui")
        .join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v.as_object().unwrap().values().next().unwrap().clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use recorded_entry as recorded;

    #[test]
    fn recorded_saveimage_history_gives_its_frames_in_name_order() {
        let o = collect(&recorded("history_repeat_n_plus_1.json"));
        let names: Vec<_> = o.images.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(names.len(), 5);
        assert_eq!(names[0], "vidax_test_00005_.png");
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        assert!(o.videos.is_empty());
    }

    #[test]
    fn recorded_videocombine_history_gives_the_mp4_under_gifs_not_the_gif_or_audio() {
        let o = collect(&recorded("history_vhs_videocombine.json"));
        assert!(o.images.is_empty());
        let v: Vec<_> = o.videos.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(v, ["vidax_combine_00001-audio.mp4"]);
    }

    #[test]
    fn recorded_runtime_error_is_failed_with_its_message_and_summary() {
        let e = recorded("history_runtime_error.json");
        assert!(failed(&e));
        let (node, ty, msg) = execution_error(&e).unwrap();
        assert_eq!(
            (node.as_str(), ty.as_str(), msg.as_str()),
            (
                "LoadAudio",
                "ValueError",
                "No audio stream found in the file."
            )
        );
        let s = summary(&e, &json!({}));
        assert!(s.output_keys.is_empty());
        assert_eq!(s.history_keys, ["prompt", "outputs", "status", "meta"]);
        assert!(s.messages[2].contains("No audio stream"));
        assert!(collect(&e).images.is_empty());
    }

    #[test]
    fn media_outside_outputs_and_previews_are_tolerated() {
        let e = json!({"outputs": {}, "extra": {"9": {"images": [
            {"filename": "b.png", "subfolder": "", "type": "output"},
            {"filename": "a.png", "subfolder": "", "type": "output"}]}}});
        let o = collect(&e);
        assert_eq!(o.images[0].filename, "a.png");
        let p = json!({"outputs": {"1": {"images": [
            {"filename": "p.png", "type": "temp"}, {"filename": "s.png", "type": "output"}]}}});
        assert_eq!(collect(&p).images.len(), 1);
    }
}
