//! `faceprobe`: where the face is, from the detector the lip-sync uses, before the long GPU
//! job. The face check graph (`vidax_facecheck`: `LoadImage → VIDAX_FaceProbe` per probed
//! picture) runs on ComfyUI over the staged still, or the first, middle and last main frame of
//! a start video; the node's `vidax_face` report becomes `face_meta` (manifest and
//! `faceprobe/face_meta.json`), its `method` carried through.
//!
//! When the check cannot run (the node is missing, ComfyUI answered badly), the seed's size
//! heuristic stands in, recorded as such (`method: size_heuristic`, `fallback_reason`, a
//! warning) — never silently. No face: `on_no_face=error` fails the run at once
//! (`COMFYUI_FACE_NOT_FOUND`); `passthrough` lets the run go on without its lip-sync graph.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::comfy::report::{FaceEntry, FaceReport, Rect, Size};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::job::{Job, OnNoFace};
use crate::record::atomic::write_json_atomic;
use crate::record::{Manifest, PhaseName};

use super::comfyui;
use super::prepare::Prepared;
use super::run::{phase, skip, RunOptions};
use super::staging::{self, ProbeImage, Staged};

/// One probed picture and what was found on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The file, relative to the workdir.
    pub file: String,
    /// The main-segment frame it shows (start video); `null` for the still.
    pub frame: Option<u64>,
    pub found: bool,
    pub face_box: Option<Rect>,
}

/// `face_meta`: the node's report (geometry in the probed pictures' pixels, `image`), where it
/// came from, and every picture probed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceMeta {
    #[serde(flatten)]
    pub report: FaceReport,
    /// `comfyui` (`VIDAX_FaceProbe` ran) or `local` (the size heuristic, computed here).
    pub source: String,
    pub probes: Vec<Probe>,
}

impl FaceMeta {
    /// The seed's size heuristic for a `w`×`h` picture (normative integers, see
    /// docs/COMFYUI_INTERFACE.md): `None` when `min(w, h) < 3` (no usable mouth ROI).
    pub fn from_size(w: u32, h: u32, fallback_reason: &str) -> Option<FaceMeta> {
        let m = w.min(h);
        if m < 3 {
            return None;
        }
        let face = Rect {
            x: (w - m) / 2,
            y: 0,
            w: m,
            h: m,
        };
        let (mouth_w, mouth_h) = (m / 2, m / 3);
        let mouth = Rect {
            x: face.x + (m - mouth_w) / 2,
            y: face.y + m - mouth_h,
            w: mouth_w,
            h: mouth_h,
        };
        let (cx, cy) = face.centre();
        Some(FaceMeta {
            report: FaceReport {
                version: 2,
                method: "size_heuristic".into(),
                fallback_reason: Some(fallback_reason.to_string()),
                image: Size { w, h },
                found: true,
                faces: vec![FaceEntry {
                    found: true,
                    face_box: Some(face),
                    mouth_roi: Some(mouth),
                    score: None,
                }],
                face_box: Some(face),
                mouth_roi: Some(mouth),
                feather: (mouth_w.min(mouth_h) / 8).max(1),
                centre: Some([cx, cy]),
            },
            source: "local".into(),
            probes: Vec::new(),
        })
    }

    pub fn found(&self) -> bool {
        self.report.found
    }

    fn scale(&self, size: (u32, u32)) -> (f64, f64) {
        let img = self.report.image;
        if img.w == 0 || img.h == 0 {
            return (1.0, 1.0);
        }
        (
            f64::from(size.0) / f64::from(img.w),
            f64::from(size.1) / f64::from(img.h),
        )
    }

    /// The face centre in the pixels of a `size` picture of the same content (the probed
    /// picture scaled): the zoom centre.
    pub fn centre_in(&self, size: (u32, u32)) -> Option<(f64, f64)> {
        let [cx, cy] = self.report.centre?;
        let (sx, sy) = self.scale(size);
        Some((cx * sx, cy * sy))
    }

    /// A box of the report in the pixels of a `size` picture of the same content (rounded
    /// outwards, kept inside).
    pub fn rect_in(&self, r: Rect, size: (u32, u32)) -> Rect {
        let (sx, sy) = self.scale(size);
        let x1 = (f64::from(r.x) * sx).floor().min(f64::from(size.0)) as u32;
        let y1 = (f64::from(r.y) * sy).floor().min(f64::from(size.1)) as u32;
        let x2 = (f64::from(r.x + r.w) * sx).ceil().min(f64::from(size.0)) as u32;
        let y2 = (f64::from(r.y + r.h) * sy).ceil().min(f64::from(size.1)) as u32;
        Rect {
            x: x1,
            y: y1,
            w: x2.saturating_sub(x1).max(1),
            h: y2.saturating_sub(y1).max(1),
        }
    }
}

/// Builds `face_meta` from the node's reports, one per probed picture in `probes`' order.
pub fn from_reports(reports: Vec<FaceReport>, probes: &[ProbeImage], workdir: &Path) -> FaceMeta {
    let rel = |p: &Path| p.strip_prefix(workdir).unwrap_or(p).display().to_string();
    let list: Vec<Probe> = probes
        .iter()
        .zip(&reports)
        .map(|(p, r)| Probe {
            file: rel(&p.path),
            frame: p.frame,
            found: r.found,
            face_box: r.face_box,
        })
        .collect();
    // The first picture with a face gives the geometry; none: the first report (found false).
    let pick = reports.iter().position(|r| r.found).unwrap_or(0);
    let report = reports.into_iter().nth(pick).unwrap_or(FaceReport {
        version: 2,
        method: "s3fd".into(),
        fallback_reason: None,
        image: Size::default(),
        found: false,
        faces: Vec::new(),
        face_box: None,
        mouth_roi: None,
        feather: 1,
        centre: None,
    });
    FaceMeta {
        report,
        source: "comfyui".into(),
        probes: list,
    }
}

/// The size heuristic over the staged picture, as the recorded fallback.
pub fn fallback(staged: &Staged, workdir: &Path, why: &str) -> Option<FaceMeta> {
    let (w, h) = staged.size;
    let mut meta = FaceMeta::from_size(w, h, why)?;
    meta.probes = staged
        .probes
        .iter()
        .map(|p| Probe {
            file: p
                .path
                .strip_prefix(workdir)
                .unwrap_or(&p.path)
                .display()
                .to_string(),
            frame: p.frame,
            found: true,
            face_box: meta.report.face_box,
        })
        .collect();
    Some(meta)
}

/// The error for a start picture without a face (`on_no_face=error`, or a picture too small
/// for the size heuristic).
pub fn no_face_error(meta: Option<&FaceMeta>, staged: &Staged, job_start: &Path) -> Error {
    let what = match meta {
        Some(m) => format!(
            "no face found by VIDAX_FaceProbe ({}) in {}",
            m.report.method,
            m.probes
                .iter()
                .map(|p| match p.frame {
                    Some(f) => format!("main frame {f}"),
                    None => p.file.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!(
            "image {}x{} is too small for a face box (no crop can be made)",
            staged.size.0, staged.size.1
        ),
    };
    Error::at_path(ErrorKind::ComfyuiFaceNotFound, job_start, what).with_hint(
        "use a picture with a visible face, or comfyui.wav2lip.on_no_face \"passthrough\" to go on without lip-sync",
    )
}

/// Writes `faceprobe/face_meta.json` and the crop of the face found
/// (`faceprobe/debug/face_crop.png`).
pub fn write(meta: &FaceMeta, workdir: &Path) -> Result<()> {
    let dir = workdir.join("faceprobe");
    let debug = dir.join("debug");
    std::fs::create_dir_all(&debug).at(ErrorKind::Internal, &debug)?;
    write_json_atomic(&dir.join("face_meta.json"), meta)?;
    let Some(face) = meta.report.face_box else {
        return Ok(());
    };
    let Some(probe) = meta.probes.iter().find(|p| p.found) else {
        return Ok(());
    };
    let src = workdir.join(&probe.file);
    let img = image::open(&src).map_err(|e| Error::at_path(ErrorKind::Internal, &src, e))?;
    let crop = img.crop_imm(face.x, face.y, face.w, face.h).to_rgb8();
    let out = debug.join("face_crop.png");
    crop.save(&out).at(ErrorKind::Internal, &out)?;
    Ok(())
}

/// The `faceprobe` phase (SPEC §6): when the job's ComfyUI workflows lip-sync or zoom (or
/// name `vidax_faceprobe`), stages the pictures the Wav2Lip graphs get and runs the face check on
/// them; skipped otherwise. No face with `on_no_face=error` fails the run here
/// (`COMFYUI_FACE_NOT_FOUND`), before the long GPU job. `--resume` reuses a completed check
/// whose staged pictures are intact.
pub fn run_phase(
    job: &Job,
    start_file: &std::fs::File,
    opts: &RunOptions,
    prepared: &Prepared,
    seed: u64,
    manifest: &mut Manifest,
) -> Result<(Option<FaceMeta>, Option<Staged>)> {
    let workdir = &opts.workdir;
    if !comfyui::needs_face_check(job, &opts.state_dir) {
        skip(
            manifest,
            opts,
            PhaseName::Faceprobe,
            "no lip-sync or motion workflow in ComfyUI (the face check runs only before one)",
        )?;
        return Ok((None, None));
    }
    let earlier = (opts.resume && manifest.phase_completed(PhaseName::Faceprobe))
        .then(|| manifest.face_meta.clone())
        .flatten();
    let (meta, staged) = phase(manifest, opts, PhaseName::Faceprobe, |m| {
        let staged = staging::stage(job, prepared, start_file, workdir, opts.resume)?;
        let rel = |p: &Path| p.strip_prefix(workdir).unwrap_or(p).display().to_string();
        let staged_file = staged
            .still
            .as_ref()
            .map(|s| &s.0)
            .or(staged.clip.as_ref().map(|c| &c.0));
        m.phases.faceprobe_mut().fields.staged = Some(staged_file.map(|p| rel(p)));
        if let Some(meta) = earlier {
            tracing::info!(stage = "faceprobe", "resume: the face check already ran");
            m.phases.faceprobe_mut().fields.reused = Some(true);
            return Ok((meta, staged));
        }
        let input = comfyui::Input {
            job,
            start_file,
            prepared,
            workdir,
            state_dir: &opts.state_dir,
            face: None,
            staged: Some(&staged),
            seed,
            run_id: &m.run_id.clone(),
            progress: opts.progress.clone(),
            resume: opts.resume,
        };
        let meta = match comfyui::face_check(&input, &staged.probes, m)? {
            comfyui::FaceCheck::Reports(r) => from_reports(r, &staged.probes, workdir),
            comfyui::FaceCheck::Failed(why) => {
                tracing::warn!(stage = "faceprobe", "face check failed: {why}");
                m.add_warning(format!(
                    "face check: {why}; the size heuristic stands in (face_meta.method: size_heuristic)"
                ));
                fallback(&staged, workdir, &why)
                    .ok_or_else(|| no_face_error(None, &staged, job.start.path()))?
            }
        };
        if meta.source == "comfyui" && meta.report.method != "s3fd" {
            // The node had no detector and said so: recorded, and said again here.
            m.add_warning(format!(
                "face check: VIDAX_FaceProbe used {} ({}): the face box is not a detected face",
                meta.report.method,
                meta.report
                    .fallback_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ));
        }
        m.face_meta = Some(meta.clone());
        let fields = &mut m.phases.faceprobe_mut().fields;
        fields.method = Some(meta.report.method.clone());
        fields.found = Some(meta.found());
        write(&meta, workdir)?;
        m.phases.faceprobe_mut().fields.face_meta = Some("faceprobe/face_meta.json".into());
        // No face fails the run only where a lip-sync was asked for; the zoom alone then
        // centres on the picture.
        if !meta.found()
            && job.comfyui.wav2lip.on_no_face == OnNoFace::Error
            && comfyui::lipsyncs(job, &opts.state_dir)
        {
            return Err(no_face_error(Some(&meta), &staged, job.start.path()));
        }
        Ok((meta, staged))
    })?;
    Ok((Some(meta), Some(staged)))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parts = ((u32, u32, u32), (u32, u32, u32, u32), u32);

    fn parts(m: &FaceMeta) -> Parts {
        let f = m.report.face_box.unwrap();
        let r = m.report.mouth_roi.unwrap();
        ((f.x, f.y, f.w), (r.x, r.y, r.w, r.h), m.report.feather)
    }

    #[test]
    fn the_documented_examples_give_the_documented_integers() {
        let a = FaceMeta::from_size(1920, 1080, "why").unwrap();
        assert_eq!(parts(&a), ((420, 0, 1080), (690, 720, 540, 360), 45));
        let b = FaceMeta::from_size(1024, 1024, "why").unwrap();
        assert_eq!(parts(&b), ((0, 0, 1024), (256, 683, 512, 341), 42));
        let c = FaceMeta::from_size(768, 1024, "why").unwrap();
        assert_eq!(parts(&c), ((0, 0, 768), (192, 512, 384, 256), 32));
        assert_eq!(a.report.centre, Some([960.0, 540.0]));
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["method"], "size_heuristic");
        assert_eq!(v["fallback_reason"], "why");
        assert_eq!(v["source"], "local");
        assert_eq!(
            v["face_box"],
            serde_json::json!({"x": 420, "y": 0, "w": 1080, "h": 1080})
        );
        let back: FaceMeta = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn tiny_images_have_no_face_box() {
        assert!(FaceMeta::from_size(2, 100, "").is_none());
        assert!(FaceMeta::from_size(3, 3, "").is_some());
    }

    #[test]
    fn box_and_roi_stay_inside_the_image_for_every_small_size() {
        for w in 3..60 {
            for h in 3..60 {
                let f = FaceMeta::from_size(w, h, "").unwrap();
                let ((fx, fy, m), (mx, my, mw, mh), _) = parts(&f);
                assert!(fx + m <= w && fy + m <= h);
                assert!(mx >= fx && my >= fy && mx + mw <= fx + m && my + mh <= fy + m);
                assert!(mw >= 1 && mh >= 1);
            }
        }
    }

    #[test]
    fn geometry_scales_to_a_picture_of_another_size() {
        let m = FaceMeta::from_size(100, 50, "").unwrap();
        assert_eq!(m.centre_in((200, 100)), Some((100.0, 50.0)));
        let r = Rect {
            x: 10,
            y: 5,
            w: 3,
            h: 3,
        };
        assert_eq!(
            m.rect_in(r, (150, 75)),
            Rect {
                x: 15,
                y: 7,
                w: 5,
                h: 5
            }
        );
    }
}
