//! The reports the project's nodes hand back through ComfyUI's `ui` channel
//! (`docs/COMFYUI_INTERFACE.md`, "What the nodes report"): `VIDAX_Wav2Lip`'s per-frame lip-sync
//! outcome under the key `vidax_lipsync`, `VIDAX_FaceProbe`'s face geometry under `vidax_face`.
//! ComfyUI stores a node's `ui` dict in `/history/<id>` → `outputs[<node id>]`; reports are
//! found by key, never by node id, in the order the history lists the nodes (execution order).
//!
//! Parsing is strict about the shape (a report that does not parse is no report, and says
//! why) and tolerant of additions (unknown keys are ignored).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `ui` key of `VIDAX_Wav2Lip`'s report.
pub const LIPSYNC_KEY: &str = "vidax_lipsync";
/// The `ui` key of `VIDAX_FaceProbe`'s report.
pub const FACE_KEY: &str = "vidax_face";

/// A box `(x, y, w, h)` in pixels of the picture it belongs to (half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    /// From the half-open corners `[x1, y1, x2, y2]`; `None` when empty.
    pub fn from_corners(c: [u32; 4]) -> Option<Rect> {
        (c[2] > c[0] && c[3] > c[1]).then(|| Rect {
            x: c[0],
            y: c[1],
            w: c[2] - c[0],
            h: c[3] - c[1],
        })
    }

    pub fn centre(&self) -> (f64, f64) {
        (
            f64::from(self.x) + f64::from(self.w) / 2.0,
            f64::from(self.y) + f64::from(self.h) / 2.0,
        )
    }
}

/// A picture size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Size {
    pub w: u32,
    pub h: u32,
}

/// What `VIDAX_Wav2Lip` did with one input frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameOutcome {
    /// The network's face was pasted into the frame's box.
    Synced,
    /// The frame's audio window is digital silence: the frame passed through unchanged.
    Silent,
    /// No face was found: the frame passed through unchanged.
    NoFace,
}

/// The range `[min, max]` of one box coordinate.
pub type Range = [u32; 2];

/// `box_summary`: the ranges of the non-null boxes' corners.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BoxSummary {
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x1: Option<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y1: Option<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x2: Option<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y2: Option<Range>,
}

impl BoxSummary {
    /// The summary of `boxes` (corners `[x1, y1, x2, y2]`).
    pub fn of<'a>(boxes: impl IntoIterator<Item = &'a [u32; 4]>) -> BoxSummary {
        let mut s = BoxSummary::default();
        let widen = |r: &mut Option<Range>, v: u32| {
            *r = Some(match *r {
                Some([lo, hi]) => [lo.min(v), hi.max(v)],
                None => [v, v],
            })
        };
        for b in boxes {
            s.count += 1;
            widen(&mut s.x1, b[0]);
            widen(&mut s.y1, b[1]);
            widen(&mut s.x2, b[2]);
            widen(&mut s.y2, b[3]);
        }
        s
    }
}

/// `VIDAX_Wav2Lip`'s report of one run over a batch of frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LipsyncReport {
    pub version: u32,
    #[serde(default)]
    pub node: String,
    /// Frames that came in (= frames that went out).
    pub frames: u64,
    /// Timeline index of the first frame.
    #[serde(default)]
    pub start_frame: u64,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    pub synced: u64,
    pub silent: u64,
    pub no_face: u64,
    #[serde(default)]
    pub detector: Option<String>,
    #[serde(default)]
    pub detected_unique: Option<u64>,
    /// One per input frame, in order.
    pub outcome: Vec<FrameOutcome>,
    /// One per input frame: the box the face was pasted into, `[x1, y1, x2, y2]` half-open
    /// in the input frame's pixels; `None` where nothing was pasted.
    pub boxes: Vec<Option<[u32; 4]>>,
    #[serde(default)]
    pub box_summary: BoxSummary,
}

impl LipsyncReport {
    /// The report of frames `skip .. skip + take` of this one (a chunk's context frames
    /// thrown away): outcomes, boxes and counts of those frames only.
    pub fn trimmed(&self, skip: u64, take: u64) -> LipsyncReport {
        let range = |v: usize| (skip as usize).min(v)..((skip + take) as usize).min(v);
        let outcome = self.outcome[range(self.outcome.len())].to_vec();
        let boxes = self.boxes[range(self.boxes.len())].to_vec();
        let count = |o: FrameOutcome| outcome.iter().filter(|x| **x == o).count() as u64;
        LipsyncReport {
            frames: outcome.len() as u64,
            start_frame: self.start_frame + skip,
            synced: count(FrameOutcome::Synced),
            silent: count(FrameOutcome::Silent),
            no_face: count(FrameOutcome::NoFace),
            box_summary: BoxSummary::of(boxes.iter().flatten()),
            outcome,
            boxes,
            ..self.clone()
        }
    }

    /// The contract's invariants; `Err` names the first one broken.
    pub fn check(&self) -> Result<(), String> {
        let n = self.frames;
        if self.outcome.len() as u64 != n || self.boxes.len() as u64 != n {
            return Err(format!(
                "{} frames but {} outcomes and {} boxes",
                n,
                self.outcome.len(),
                self.boxes.len()
            ));
        }
        if self.synced + self.silent + self.no_face != n {
            return Err(format!(
                "synced {} + silent {} + no_face {} is not {n} frames",
                self.synced, self.silent, self.no_face
            ));
        }
        let count = |o: FrameOutcome| self.outcome.iter().filter(|&&x| x == o).count() as u64;
        if count(FrameOutcome::Synced) != self.synced
            || count(FrameOutcome::Silent) != self.silent
            || count(FrameOutcome::NoFace) != self.no_face
        {
            return Err("the per-frame outcomes do not add up to the counts".into());
        }
        if let Some(k) = self
            .outcome
            .iter()
            .zip(&self.boxes)
            .position(|(o, b)| (*o == FrameOutcome::Synced) != b.is_some())
        {
            return Err(format!(
                "frame {k}: a box must be given exactly for a synced frame"
            ));
        }
        Ok(())
    }
}

/// One probed picture of `VIDAX_FaceProbe`'s report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceEntry {
    pub found: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_box: Option<Rect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mouth_roi: Option<Rect>,
    /// S3FD's score; `null` for the size heuristic.
    #[serde(default)]
    pub score: Option<f64>,
}

/// `VIDAX_FaceProbe`'s report (the node's `face_meta`): geometry in the probed picture's pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceReport {
    pub version: u32,
    /// `s3fd` (the detector Wav2Lip uses) or `size_heuristic` (no detector available).
    pub method: String,
    #[serde(default)]
    pub fallback_reason: Option<String>,
    pub image: Size,
    pub found: bool,
    #[serde(default)]
    pub faces: Vec<FaceEntry>,
    #[serde(default)]
    pub face_box: Option<Rect>,
    #[serde(default)]
    pub mouth_roi: Option<Rect>,
    #[serde(default)]
    pub feather: u32,
    #[serde(default)]
    pub centre: Option<[f64; 2]>,
}

/// Every report under `key` in a history entry, in the order the history lists the nodes;
/// each node's list is taken whole (ComfyUI concatenates lists across batches).
fn raw_reports<'a>(entry: &'a Value, key: &str) -> Vec<&'a Value> {
    let mut out = Vec::new();
    if let Some(outputs) = entry.get("outputs").and_then(Value::as_object) {
        for node in outputs.values() {
            match node.get(key) {
                Some(Value::Array(items)) => out.extend(items.iter()),
                Some(v @ Value::Object(_)) => out.push(v),
                _ => {}
            }
        }
    }
    out
}

/// The lip-sync reports of a history entry, with the reason for each one that does not parse
/// or breaks the contract's invariants.
pub fn lipsync_reports(entry: &Value) -> (Vec<LipsyncReport>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for v in raw_reports(entry, LIPSYNC_KEY) {
        match serde_json::from_value::<LipsyncReport>(v.clone()) {
            Ok(r) => match r.check() {
                Ok(()) => ok.push(r),
                Err(why) => bad.push(format!("{LIPSYNC_KEY}: {why}")),
            },
            Err(e) => bad.push(format!("{LIPSYNC_KEY}: {e}")),
        }
    }
    (ok, bad)
}

/// The face reports of a history entry, by the node id that reported each, in history order.
pub fn face_reports(entry: &Value) -> (Vec<(String, FaceReport)>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    if let Some(outputs) = entry.get("outputs").and_then(Value::as_object) {
        for (id, node) in outputs {
            let items: Vec<&Value> = match node.get(FACE_KEY) {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(v @ Value::Object(_)) => vec![v],
                _ => continue,
            };
            for v in items {
                match serde_json::from_value::<FaceReport>(v.clone()) {
                    Ok(r) => ok.push((id.clone(), r)),
                    Err(e) => bad.push(format!("{FACE_KEY} of node {id}: {e}")),
                }
            }
        }
    }
    (ok, bad)
}

/// The per-timeline-frame view of the reports of one workflow (all its chunks): frame `j`'s
/// outcome and box, from the report whose `start_frame..start_frame + frames` holds `j`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    pub outcome: Vec<Option<FrameOutcome>>,
    pub boxes: Vec<Option<[u32; 4]>>,
    /// The reports' own counts, summed.
    pub synced: u64,
    pub silent: u64,
    pub no_face: u64,
    pub frames: u64,
    pub detector: Option<String>,
    pub detected_unique: Option<u64>,
    pub node: String,
}

impl Merged {
    /// Merges `reports` over `main` timeline frames; frames no report covers stay `None`.
    pub fn new(reports: &[LipsyncReport], main: u64) -> Merged {
        let n = usize::try_from(main).unwrap_or(0);
        let mut m = Merged {
            outcome: vec![None; n],
            boxes: vec![None; n],
            ..Merged::default()
        };
        // Reports of one node over consecutive batches: a report without its own start
        // continues where the previous one ended.
        for r in reports {
            m.synced += r.synced;
            m.silent += r.silent;
            m.no_face += r.no_face;
            m.frames += r.frames;
            if m.detector.is_none() {
                m.detector.clone_from(&r.detector);
            }
            if let Some(d) = r.detected_unique {
                *m.detected_unique.get_or_insert(0) += d;
            }
            if m.node.is_empty() {
                m.node.clone_from(&r.node);
            }
            for (k, (o, b)) in r.outcome.iter().zip(&r.boxes).enumerate() {
                let j = r.start_frame as usize + k;
                if j < n {
                    m.outcome[j] = Some(*o);
                    m.boxes[j] = *b;
                }
            }
        }
        m
    }

    /// The summary of the boxes frames were pasted into.
    pub fn box_summary(&self) -> BoxSummary {
        BoxSummary::of(self.boxes.iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(start: u64, outcome: &[&str], boxes: Value) -> Value {
        let count = |o: &str| outcome.iter().filter(|x| **x == o).count();
        json!({"version": 1, "node": "VIDAX_Wav2Lip", "frames": outcome.len(), "start_frame": start,
               "width": 64, "height": 48, "synced": count("synced"), "silent": count("silent"),
               "no_face": count("no_face"), "detector": "s3fd", "detected_unique": 1,
               "outcome": outcome, "boxes": boxes,
               "box_summary": {"count": count("synced")}})
    }

    #[test]
    fn a_trimmed_report_keeps_only_the_chunks_own_frames() {
        let r: LipsyncReport = serde_json::from_value(report(
            6,
            &["synced", "silent", "synced", "no_face", "synced"],
            json!([[1, 2, 3, 4], null, [5, 6, 7, 8], null, [9, 9, 10, 10]]),
        ))
        .unwrap();
        let t = r.trimmed(1, 3);
        assert_eq!(t.start_frame, 7);
        assert_eq!(t.frames, 3);
        assert_eq!(
            t.outcome,
            [
                FrameOutcome::Silent,
                FrameOutcome::Synced,
                FrameOutcome::NoFace
            ]
        );
        assert_eq!(t.boxes, [None, Some([5, 6, 7, 8]), None]);
        assert_eq!((t.synced, t.silent, t.no_face), (1, 1, 1));
        assert_eq!(t.box_summary, BoxSummary::of([[5, 6, 7, 8]].iter()));
        let m = Merged::new(&[t], 12);
        assert_eq!(m.outcome[7], Some(FrameOutcome::Silent));
        assert_eq!(m.outcome[6], None);
        assert_eq!(m.outcome[10], None);
    }

    #[test]
    fn reports_are_found_by_key_and_merged_over_chunks() {
        let entry = json!({"outputs": {
            "5": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]},
            "4": {"vidax_lipsync": [report(2, &["synced", "no_face"], json!([[1, 2, 11, 12], null]))]},
            "9": {"vidax_lipsync": [report(0, &["silent", "synced"], json!([null, [0, 0, 4, 4]]))]},
        }});
        let (rs, bad) = lipsync_reports(&entry);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rs.len(), 2);
        let m = Merged::new(&rs, 5);
        assert_eq!(
            m.outcome,
            [
                Some(FrameOutcome::Silent),
                Some(FrameOutcome::Synced),
                Some(FrameOutcome::Synced),
                Some(FrameOutcome::NoFace),
                None
            ]
        );
        assert_eq!(m.boxes[2], Some([1, 2, 11, 12]));
        assert_eq!((m.synced, m.silent, m.no_face, m.frames), (2, 1, 1, 4));
        let s = m.box_summary();
        assert_eq!((s.count, s.x1, s.y2), (2, Some([0, 1]), Some([4, 12])));
    }

    #[test]
    fn a_report_that_breaks_the_invariants_is_refused_with_the_reason() {
        let mut r = report(0, &["synced", "silent"], json!([null, null]));
        let entry = json!({"outputs": {"4": {"vidax_lipsync": [r.clone()]}}});
        let (ok, bad) = lipsync_reports(&entry);
        assert!(ok.is_empty());
        assert!(
            bad[0].contains("frame 0: a box must be given exactly for a synced frame"),
            "{bad:?}"
        );
        r["boxes"] = json!([[0, 0, 1, 1]]);
        let (_, bad) = lipsync_reports(&json!({"outputs": {"4": {"vidax_lipsync": [r]}}}));
        assert!(
            bad[0].contains("2 frames but 2 outcomes and 1 boxes"),
            "{bad:?}"
        );
        let (_, bad) =
            lipsync_reports(&json!({"outputs": {"4": {"vidax_lipsync": [{"version": 1}]}}}));
        assert!(
            bad[0].starts_with("vidax_lipsync: missing field"),
            "{bad:?}"
        );
    }

    // Recorded `/history/<id>` bodies of a real ComfyUI 0.3.64 with our nodes.
    use crate::comfy::outputs::recorded_entry as recorded;

    #[test]
    fn the_recorded_reports_of_the_real_nodes_parse() {
        let (rs, bad) = lipsync_reports(&recorded("history_wav2lip_image.json"));
        assert!(bad.is_empty(), "{bad:?}");
        let r = &rs[0];
        assert_eq!(
            (r.frames, r.start_frame, r.synced, r.silent),
            (12, 40, 9, 3)
        );
        assert_eq!(r.boxes[0], Some([317, 437, 350, 478]));
        let m = Merged::new(&rs, 52);
        assert_eq!(m.outcome[46], Some(FrameOutcome::Silent));
        assert_eq!(m.outcome[39], None);
        // A cached resubmission carries the same report.
        let (again, _) = lipsync_reports(&recorded("history_wav2lip_image.cached.json"));
        assert_eq!(again, rs);
        let (rs, _) = lipsync_reports(&recorded("history_wav2lip_image_noface.json"));
        assert_eq!((rs[0].no_face, rs[0].box_summary.count), (4, 0));
        let (rs, _) = lipsync_reports(&recorded("history_wav2lip_video.json"));
        assert_eq!(rs[0].detected_unique, Some(4));
        let (rs, _) = lipsync_reports(&recorded("history_mouthblend.json"));
        assert_eq!(rs[0].synced, 6);
        // Three probes, listed in execution order: found by node id.
        let (faces, bad) = face_reports(&recorded("history_facecheck_video3.json"));
        assert!(bad.is_empty(), "{bad:?}");
        let by = |id: &str| &faces.iter().find(|(n, _)| n == id).unwrap().1;
        assert_eq!(faces[0].0, "6");
        assert!(by("2").found && by("4").found && !by("6").found);
        assert_eq!(
            by("2").face_box,
            Some(Rect {
                x: 317,
                y: 437,
                w: 33,
                h: 41
            })
        );
        let (faces, _) = face_reports(&recorded("history_facecheck_noface.json"));
        assert_eq!((faces[0].1.found, faces[0].1.centre), (false, None));
        // The node's own fallback when the pack's detector is missing, said as such.
        let (faces, _) = face_reports(&recorded("history_facecheck_fallback.json"));
        let f = &faces[0].1;
        assert_eq!(f.method, "size_heuristic");
        assert!(f
            .fallback_reason
            .as_deref()
            .unwrap()
            .starts_with("VIDAX_PACK_MISSING"));
        assert_eq!((f.faces[0].score, f.feather), (None, 21));
    }

    #[test]
    fn face_reports_parse_found_and_not_found() {
        let entry = json!({"outputs": {
            "2": {"vidax_face": [{"version": 2, "method": "s3fd", "fallback_reason": null,
                  "image": {"w": 512, "h": 512}, "found": true,
                  "faces": [{"found": true, "face_box": {"x": 250, "y": 60, "w": 80, "h": 110},
                             "mouth_roi": {"x": 250, "y": 115, "w": 80, "h": 55}, "score": 0.99}],
                  "face_box": {"x": 250, "y": 60, "w": 80, "h": 110},
                  "mouth_roi": {"x": 250, "y": 115, "w": 80, "h": 55}, "feather": 6,
                  "centre": [290.0, 115.0]}]},
            "4": {"vidax_face": [{"version": 2, "method": "s3fd", "fallback_reason": null,
                  "image": {"w": 512, "h": 512}, "found": false, "faces": [{"found": false}],
                  "face_box": null, "mouth_roi": null, "feather": 1, "centre": null}]},
        }});
        let (rs, bad) = face_reports(&entry);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(rs[0].0, "2");
        assert!(rs[0].1.found && !rs[1].1.found);
        assert_eq!(rs[0].1.face_box.unwrap().centre(), (290.0, 115.0));
        assert_eq!(Rect::from_corners([3, 4, 3, 9]), None);
    }
}
