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
use crate::record::atomic::write_json_atomic;

use super::staging::{ProbeImage, Staged};

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
