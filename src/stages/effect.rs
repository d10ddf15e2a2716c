//! The lip-sync's effect, checked on the pictures (`docs/COMFYUI_INTERFACE.md`, "The effect
//! check"): after a lip-sync workflow's frames are on disk, each **speech frame** that came
//! back is compared with the frame that was sent, inside the box the node reports it pasted
//! into. A record must never claim a lip-sync that did not change the picture.
//!
//! - A main frame is a speech frame when the padded programme has a sample louder than one
//!   16-bit step (`|x| > 2⁻¹⁵`) within the frame's own time, `[j/fps, (j+1)/fps)`: the pre and
//!   post buffers (digital silence) are never speech, nor are digitally silent pauses. This is
//!   the audio alone, not the node's word; the node's `silent` outcome uses the same threshold
//!   over its (wider) mel window, so every speech frame is one the node should have synced.
//! - A frame changed when at least [`MIN_CHANGED_FRACTION`] of the compared region's pixels
//!   (at least one) differ by more than [`LUMA_THRESHOLD`] in luma (8-bit scale) between the
//!   frame sent and the frame returned. The region is the node's reported box for that frame;
//!   where the node reports none (or gave no report), the detected face box; without either,
//!   the whole frame.
//! - Verdict: no speech frame → `no_speech`; no speech frame changed, or fewer than half of
//!   the speech frames the node claims it synced (all speech frames when it gave no report)
//!   → `no_effect` (the run is degraded, `LIPSYNC_NO_EFFECT`); otherwise `lip_synced`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::comfy::report::{BoxSummary, FrameOutcome, Merged, Rect};
use crate::error::{Context, ErrorKind, Result};
use crate::job::Job;
use crate::media::encode::FrameProducer;
use crate::media::picture::{self, ImageLoader, Yuv420};
use crate::timeline::{crop_window, ZoomCurve};

use super::compose::Compositor;
use super::faceprobe::FaceMeta;
use super::prepare::Prepared;

/// A pixel differs when its luma moved by more than this (8-bit scale): above the rounding of
/// two RGB↔Y'CbCr conversions and ComfyUI's float round trip, far below any pasted face.
pub const LUMA_THRESHOLD: f32 = 3.0;
/// A frame changed when at least this share of its region's pixels differ.
pub const MIN_CHANGED_FRACTION: f64 = 0.005;
/// One 16-bit step: a sample at or below it is digital silence.
pub const SILENCE: f32 = 1.0 / 32768.0;

/// What each returned frame is compared with.
pub enum Reference<'a> {
    /// Every frame was made from this one picture (the staged still); the report's boxes are
    /// in its pixels.
    Still(&'a Path),
    /// Frame `j` was the clip's frame `j` (the staged main-segment clip).
    Clip(&'a Path),
    /// The returned frames are motion frames with the mouth blended in (`vidax_lipsync_mouthblend`):
    /// frame `j` is compared with the local rendering of the start image's zoom about `centre`
    /// (source pixels), and the report's boxes (start-image pixels) are seen through frame
    /// `j`'s crop window.
    Motion { centre: Option<(f64, f64)> },
}

/// vidax's own check of the returned frames.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EffectCheck {
    /// Main frames with sound (see the module docs).
    pub speech_frames: u64,
    /// Speech frames whose region changed.
    pub frames_changed: u64,
    /// Speech frames whose region did not change.
    pub frames_unchanged: u64,
    /// Of those, frames the node reports `synced`.
    pub synced_unchanged: u64,
    /// The speech frames the node reports `synced` (all speech frames without a report).
    pub claimed: u64,
    /// Speech frames compared inside the node's box, the detected face box, the whole frame.
    pub regions: Regions,
    /// The first unchanged speech frames (main-frame indices), at most 20.
    pub unchanged_examples: Vec<u64>,
    pub luma_threshold: f32,
    pub min_changed_fraction: f64,
    /// Frames that could not be compared (e.g. another size than the frame sent).
    pub problems: Vec<String>,
}

/// How many frames were compared in which region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Regions {
    pub reported_box: u64,
    pub face_box: u64,
    pub whole_frame: u64,
}

/// The verdict on the lip-sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    LipSynced,
    NoEffect,
    NoSpeech,
}

impl EffectCheck {
    pub fn verdict(&self) -> Verdict {
        if self.speech_frames == 0 {
            Verdict::NoSpeech
        } else if self.frames_changed == 0 || self.frames_changed * 2 < self.claimed {
            Verdict::NoEffect
        } else {
            Verdict::LipSynced
        }
    }
}

/// `lipsync_meta` for a lip-sync inside ComfyUI: the node's report (counts `null` when the
/// node gave none) and vidax's check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LipsyncMeta {
    /// `inside_comfy`.
    #[serde(rename = "where")]
    pub place: String,
    pub workflow_id: String,
    /// The returned frames, relative to the workdir.
    pub frames_dir: String,
    /// Frames sent to (and returned by) the workflow: the main segment.
    pub frames_sent: u64,
    /// `node` (VIDAX_Wav2Lip reported) or `missing` (no usable report).
    pub report: String,
    /// Why a report was not used.
    pub report_problems: Vec<String>,
    pub node: Option<String>,
    pub synced: Option<u64>,
    pub silent: Option<u64>,
    pub no_face: Option<u64>,
    pub detector: Option<String>,
    pub detected_unique: Option<u64>,
    pub box_summary: Option<BoxSummary>,
    /// The per-frame outcomes and boxes, relative to the workdir.
    pub report_file: Option<String>,
    pub check: EffectCheck,
    pub verdict: Verdict,
}

impl LipsyncMeta {
    /// The record for `workflow_id`'s frames in `frames_dir` with the merged report (if any).
    pub fn new(
        workflow_id: &str,
        frames_dir: &str,
        frames_sent: u64,
        merged: Option<&Merged>,
        report_problems: Vec<String>,
        report_file: Option<String>,
        check: EffectCheck,
    ) -> LipsyncMeta {
        LipsyncMeta {
            place: "inside_comfy".into(),
            workflow_id: workflow_id.into(),
            frames_dir: frames_dir.into(),
            frames_sent,
            report: if merged.is_some() { "node" } else { "missing" }.into(),
            report_problems,
            node: merged.map(|m| m.node.clone()),
            synced: merged.map(|m| m.synced),
            silent: merged.map(|m| m.silent),
            no_face: merged.map(|m| m.no_face),
            detector: merged.and_then(|m| m.detector.clone()),
            detected_unique: merged.and_then(|m| m.detected_unique),
            box_summary: merged.map(Merged::box_summary),
            report_file,
            verdict: check.verdict(),
            check,
        }
    }

    /// The one-line reason of a `no_effect` verdict, naming the counts.
    pub fn no_effect_message(&self) -> String {
        let c = &self.check;
        let claim = match self.synced {
            Some(s) => format!(
                "the node reports {s} of {} frames lip-synced",
                self.frames_sent
            ),
            None => "the node gave no report".into(),
        };
        format!(
            "workflow {}: the lip-sync changed the face region in {} of {} speech frames ({claim}; {} speech frames it claims unchanged)",
            self.workflow_id, c.frames_changed, c.speech_frames, c.synced_unchanged
        )
    }
}

/// Which main frames are speech frames (see the module docs), from the padded programme.
pub fn speech_frames(prepared: &Prepared) -> Result<Vec<bool>> {
    let wav = &prepared.wav;
    let mut reader = hound::WavReader::open(wav).at(ErrorKind::Internal, wav)?;
    let spec = reader.spec();
    let ch = u64::from(spec.channels.max(1));
    let main = prepared.frames.main_frames();
    let mut out = Vec::with_capacity(usize::try_from(main).unwrap_or(0));
    let mut samples = reader.samples::<f32>();
    // The frames' ranges tile the programme from sample 0: read them in order.
    for j in 0..main {
        let range = prepared.frames.frame_samples(j, spec.sample_rate);
        let mut loud = false;
        'frame: for _ in range {
            for _ in 0..ch {
                let Some(s) = samples.next() else {
                    break 'frame;
                };
                loud |= s.at(ErrorKind::Internal, wav)?.abs() > SILENCE;
            }
        }
        out.push(loud);
    }
    Ok(out)
}

/// Reads luma planes of the frames sent.
enum Sent {
    Still(Vec<f32>, (u32, u32)),
    Clip(Box<crate::media::video::VideoFrames>),
    Motion(Box<Compositor>, Yuv420),
}

/// A luma plane (8-bit scale) and its size.
type Luma<'a> = (std::borrow::Cow<'a, [f32]>, (u32, u32));

impl Sent {
    fn luma(&mut self, j: u64) -> Result<Luma<'_>> {
        use std::borrow::Cow;
        Ok(match self {
            Sent::Still(y, size) => (Cow::Borrowed(y.as_slice()), *size),
            Sent::Clip(frames) => {
                let p = frames.picture(usize::try_from(j).unwrap_or(usize::MAX))?;
                (Cow::Borrowed(p.y.as_slice()), (p.width, p.height))
            }
            Sent::Motion(c, buf) => {
                c.render(j, buf)?;
                (
                    Cow::Owned(buf.y.iter().map(|&v| f32::from(v)).collect()),
                    (buf.width, buf.height),
                )
            }
        })
    }
}

/// What the check compares.
pub struct Input<'a> {
    pub job: &'a Job,
    pub prepared: &'a Prepared,
    /// The returned frames `000001.png…`, main frame `j` as `j+1`.
    pub frames_dir: &'a Path,
    pub reference: Reference<'a>,
    pub merged: Option<&'a Merged>,
    pub face: Option<&'a FaceMeta>,
}

/// Runs the check over the speech frames.
pub fn check(input: &Input) -> Result<EffectCheck> {
    let job = input.job;
    let bg = [job.background.r, job.background.g, job.background.b];
    let max = job.limits.max_image_pixels;
    let speech = speech_frames(input.prepared)?;
    let mut sent = match &input.reference {
        Reference::Still(p) => {
            let planes = picture::load_image(p, max, bg)?;
            Sent::Still(planes.y, (planes.width, planes.height))
        }
        Reference::Clip(p) => {
            let probe = crate::media::video::probe_video(p)?;
            Sent::Clip(Box::new(crate::media::video::VideoFrames::open(
                p, &probe, bg, None,
            )?))
        }
        Reference::Motion { centre } => {
            let c = Compositor::main_only(job, input.prepared, *centre)?;
            let (w, h) = input.prepared.render;
            Sent::Motion(Box::new(c), Yuv420::new(w, h))
        }
    };
    let curve = ZoomCurve {
        mode: job.motion.mode,
        strength: job.motion.strength,
        frames: input.prepared.frames.main_frames(),
    };
    // Frames of a still may be patches laid over it (`VIDAX_SavePatches`).
    let mut loader = match &input.reference {
        Reference::Still(p) => ImageLoader::with_base(p, max, bg)?,
        _ => ImageLoader::default(),
    };
    let mut out = EffectCheck {
        luma_threshold: LUMA_THRESHOLD,
        min_changed_fraction: MIN_CHANGED_FRACTION,
        ..EffectCheck::default()
    };
    for (j, &is_speech) in speech.iter().enumerate() {
        if !is_speech {
            continue;
        }
        let j = j as u64;
        out.speech_frames += 1;
        let outcome = input
            .merged
            .and_then(|m| m.outcome.get(j as usize).copied().flatten());
        let claimed = match input.merged {
            Some(_) => outcome == Some(FrameOutcome::Synced),
            None => true,
        };
        if claimed {
            out.claimed += 1;
        }
        let path = frame_path(input.frames_dir, j);
        let got = loader.load(&path, max, bg)?;
        let (want, size) = sent.luma(j)?;
        let changed = if size != (got.width, got.height) {
            out.problems.push(format!(
                "main frame {j}: returned {}x{}, sent {}x{}",
                got.width, got.height, size.0, size.1
            ));
            false
        } else {
            let reported = input
                .merged
                .and_then(|m| m.boxes.get(j as usize).copied().flatten())
                .and_then(Rect::from_corners);
            let (region, rect) = match (reported, input.face.and_then(|f| f.report.face_box)) {
                (Some(r), _) => (0, r),
                (None, Some(f)) => (1, f),
                (None, None) => (
                    2,
                    Rect {
                        x: 0,
                        y: 0,
                        w: size.0,
                        h: size.1,
                    },
                ),
            };
            match region {
                0 => out.regions.reported_box += 1,
                1 => out.regions.face_box += 1,
                _ => out.regions.whole_frame += 1,
            }
            // Into the returned frame's pixels: boxes are in the pixels of the picture the
            // node saw (the still or clip frame; for the mouth blend, the start image seen
            // through frame j's window).
            let rect = match (&input.reference, region) {
                (_, 2) => rect,
                (Reference::Motion { centre }, _) => {
                    let src = input.prepared.source_size;
                    let src_rect = match (region, input.face) {
                        (1, Some(f)) => f.rect_in(rect, src),
                        _ => rect,
                    };
                    let win = crop_window(curve.zoom(j), src.0, src.1, size.0, size.1, *centre);
                    through_window(src_rect, &win, size)
                }
                (_, 1) => match input.face {
                    Some(f) => f.rect_in(rect, size),
                    None => rect,
                },
                _ => rect,
            };
            region_changed(&want, &got.y, size.0, rect)
        };
        if changed {
            out.frames_changed += 1;
        } else {
            out.frames_unchanged += 1;
            if outcome == Some(FrameOutcome::Synced) {
                out.synced_unchanged += 1;
            }
            if out.unchanged_examples.len() < 20 {
                out.unchanged_examples.push(j);
            }
        }
    }
    Ok(out)
}

fn frame_path(dir: &Path, j: u64) -> PathBuf {
    dir.join(format!("{:06}.png", j + 1))
}

/// `r` (source pixels) as seen through `win` in a `size` frame, clamped to the frame.
fn through_window(r: Rect, win: &crate::timeline::CropWindow, size: (u32, u32)) -> Rect {
    let sx = f64::from(size.0) / win.w;
    let sy = f64::from(size.1) / win.h;
    let clamp = |v: f64, hi: u32| v.clamp(0.0, f64::from(hi));
    let x1 = clamp((f64::from(r.x) - win.x) * sx, size.0).floor() as u32;
    let y1 = clamp((f64::from(r.y) - win.y) * sy, size.1).floor() as u32;
    let x2 = clamp((f64::from(r.x + r.w) - win.x) * sx, size.0).ceil() as u32;
    let y2 = clamp((f64::from(r.y + r.h) - win.y) * sy, size.1).ceil() as u32;
    Rect {
        x: x1,
        y: y1,
        w: x2.saturating_sub(x1),
        h: y2.saturating_sub(y1),
    }
}

/// Whether enough of `rect`'s pixels differ between two luma planes of width `w`.
fn region_changed(a: &[f32], b: &[f32], w: u32, rect: Rect) -> bool {
    let w = w as usize;
    let rows = a.len().min(b.len()) / w.max(1);
    let (x1, y1) = (rect.x as usize, rect.y as usize);
    let x2 = (x1 + rect.w as usize).min(w);
    let y2 = (y1 + rect.h as usize).min(rows);
    if x2 <= x1 || y2 <= y1 {
        return false;
    }
    let area = ((x2 - x1) * (y2 - y1)) as f64;
    let need = ((area * MIN_CHANGED_FRACTION).ceil() as u64).max(1);
    let mut n = 0u64;
    for y in y1..y2 {
        for x in x1..x2 {
            if (a[y * w + x] - b[y * w + x]).abs() > LUMA_THRESHOLD {
                n += 1;
                if n >= need {
                    return true;
                }
            }
        }
    }
    false
}

/// Writes the merged per-frame report to `path` (for inspection; the manifest keeps the counts).
pub fn write_report(path: &Path, merged: &Merged) -> Result<()> {
    let v = serde_json::json!({"outcome": merged.outcome, "boxes": merged.boxes});
    crate::record::write_json_atomic(path, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_changes_only_past_the_threshold_and_the_share() {
        let w = 20u32;
        let a = vec![100.0f32; 400];
        let mut b = a.clone();
        let all = Rect {
            x: 0,
            y: 0,
            w: 20,
            h: 20,
        };
        // Rounding noise everywhere: unchanged.
        b.iter_mut().for_each(|v| *v += 2.5);
        assert!(!region_changed(&a, &b, w, all));
        // Two pixels far off: 0.5 % of 400 is 2 pixels.
        b[0] = 200.0;
        assert!(!region_changed(&a, &b, w, all));
        b[399] = 0.0;
        assert!(region_changed(&a, &b, w, all));
        // ... but not inside a box that holds neither.
        let inner = Rect {
            x: 5,
            y: 5,
            w: 10,
            h: 10,
        };
        assert!(!region_changed(&a, &b, w, inner));
    }

    #[test]
    fn a_clip_frame_reads_back_with_the_luma_of_the_picture_sent() {
        // An unchanged frame must look unchanged: the staged clip decoded for the check and the
        // returned PNG converted to luma give the same numbers, in colour too.
        let (w, h) = (48u32, 32u32);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 5) as u8, (y * 7 + 40) as u8, ((x * y) % 251) as u8]
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.mov");
        let mut clip = crate::media::clip::LosslessClip::create(&path, w, h, 25, 1).unwrap();
        clip.push_rgb(&rgb).unwrap();
        clip.finish().unwrap();
        let probe = crate::media::video::probe_video(&path).unwrap();
        let mut frames =
            crate::media::video::VideoFrames::open(&path, &probe, [0, 0, 0], None).unwrap();
        let got = frames.picture(0).unwrap().y.clone();
        let rgba: Vec<u8> = rgb
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        let want = crate::media::picture::Planes::from_rgba8(w, h, &rgba, [0, 0, 0]).y;
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.05, "luma differs by {worst}");
        let all = Rect { x: 0, y: 0, w, h };
        assert!(!region_changed(&got, &want, w, all));
    }

    #[test]
    fn verdicts_follow_the_counts() {
        let c = |speech, changed, claimed| EffectCheck {
            speech_frames: speech,
            frames_changed: changed,
            frames_unchanged: speech - changed,
            claimed,
            ..EffectCheck::default()
        };
        assert_eq!(c(0, 0, 0).verdict(), Verdict::NoSpeech);
        assert_eq!(c(100, 0, 0).verdict(), Verdict::NoEffect);
        assert_eq!(c(100, 0, 100).verdict(), Verdict::NoEffect);
        assert_eq!(
            c(100, 40, 100).verdict(),
            Verdict::NoEffect,
            "far fewer than claimed"
        );
        assert_eq!(
            c(100, 40, 40).verdict(),
            Verdict::LipSynced,
            "the rest had no face"
        );
        assert_eq!(c(100, 99, 100).verdict(), Verdict::LipSynced);
    }

    #[test]
    fn a_box_is_seen_through_the_crop_window() {
        let win = crate::timeline::CropWindow {
            x: 10.0,
            y: 20.0,
            w: 50.0,
            h: 25.0,
        };
        let r = Rect {
            x: 20,
            y: 25,
            w: 10,
            h: 5,
        };
        assert_eq!(
            through_window(r, &win, (100, 50)),
            Rect {
                x: 20,
                y: 10,
                w: 20,
                h: 10
            }
        );
    }
}
