//! `faceprobe`: the face box and mouth ROI of the start image, computed locally and
//! deterministically from the image size alone, with exactly the integers of
//! `docs/COMFYUI_INTERFACE.md` ("Face box and mouth ROI", the same as `VIDAX_FaceProbe`).
//! Writes `faceprobe/face_meta.json` and the crop as `faceprobe/debug/face_crop.png`.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::record::atomic::write_json_atomic;

/// The face box and mouth ROI in source pixels (boxes are `(x, y, w, h)`, half-open).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceMeta {
    pub image: (u32, u32),
    pub face: (u32, u32, u32),
    pub mouth: (u32, u32, u32, u32),
    pub feather: u32,
    pub centre: (f64, f64),
}

impl FaceMeta {
    /// The normative size heuristic; `None` when `min(W, H) < 3` (no usable mouth ROI).
    pub fn from_size(w: u32, h: u32) -> Option<FaceMeta> {
        let m = w.min(h);
        if m < 3 {
            return None;
        }
        let (face_x, face_y) = ((w - m) / 2, 0);
        let (mouth_w, mouth_h) = (m / 2, m / 3);
        let mouth_x = face_x + (m - mouth_w) / 2;
        let mouth_y = face_y + m - mouth_h;
        Some(FaceMeta {
            image: (w, h),
            face: (face_x, face_y, m),
            mouth: (mouth_x, mouth_y, mouth_w, mouth_h),
            feather: (mouth_w.min(mouth_h) / 8).max(1),
            centre: (
                f64::from(face_x) + f64::from(m) / 2.0,
                f64::from(face_y) + f64::from(m) / 2.0,
            ),
        })
    }

    /// `face_meta` as the node writes it (same keys, same order).
    pub fn to_json(&self) -> Value {
        let (fx, fy, m) = self.face;
        let (mx, my, mw, mh) = self.mouth;
        json!({
            "version": 1, "method": "size_heuristic",
            "image": {"w": self.image.0, "h": self.image.1},
            "face_box": {"x": fx, "y": fy, "w": m, "h": m},
            "mouth_roi": {"x": mx, "y": my, "w": mw, "h": mh},
            "feather": self.feather, "centre": [self.centre.0, self.centre.1],
        })
    }
}

/// Runs the probe on `start` (an image) into `<workdir>/faceprobe/`.
pub fn faceprobe(start: &Path, max_pixels: u64, workdir: &Path) -> Result<FaceMeta> {
    let (w, h) = crate::media::picture::image_dimensions(start)?;
    crate::media::picture::check_pixels(start, "image", (w, h), max_pixels)?;
    let meta = FaceMeta::from_size(w, h).ok_or_else(|| {
        Error::at_path(
            ErrorKind::ComfyuiFaceNotFound,
            start,
            format!("image {w}x{h} is too small for a face box (no crop can be made)"),
        )
    })?;
    let dir = workdir.join("faceprobe");
    let debug = dir.join("debug");
    std::fs::create_dir_all(&debug).at(ErrorKind::Internal, &debug)?;
    write_json_atomic(&dir.join("face_meta.json"), &meta.to_json())?;
    let img = image::open(start).map_err(|e| {
        Error::at_path(
            ErrorKind::ComfyuiFaceNotFound,
            start,
            format!("cannot decode for the face crop: {e}"),
        )
    })?;
    let (fx, fy, m) = meta.face;
    let crop = img.crop_imm(fx, fy, m, m).to_rgb8();
    let out = debug.join("face_crop.png");
    crop.save(&out).at(ErrorKind::Internal, &out)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples_give_the_documented_integers() {
        let a = FaceMeta::from_size(1920, 1080).unwrap();
        assert_eq!(
            (a.face, a.mouth, a.feather),
            ((420, 0, 1080), (690, 720, 540, 360), 45)
        );
        let b = FaceMeta::from_size(1024, 1024).unwrap();
        assert_eq!(
            (b.face, b.mouth, b.feather),
            ((0, 0, 1024), (256, 683, 512, 341), 42)
        );
        let c = FaceMeta::from_size(768, 1024).unwrap();
        assert_eq!(
            (c.face, c.mouth, c.feather),
            ((0, 0, 768), (192, 512, 384, 256), 32)
        );
        assert_eq!(a.centre, (960.0, 540.0));
        assert_eq!(
            a.to_json().to_string(),
            r#"{"version":1,"method":"size_heuristic","image":{"w":1920,"h":1080},"face_box":{"x":420,"y":0,"w":1080,"h":1080},"mouth_roi":{"x":690,"y":720,"w":540,"h":360},"feather":45,"centre":[960.0,540.0]}"#
        );
    }

    #[test]
    fn tiny_images_have_no_face_box() {
        assert!(FaceMeta::from_size(2, 100).is_none());
        assert!(FaceMeta::from_size(3, 3).is_some());
    }

    #[test]
    fn box_and_roi_stay_inside_the_image_for_every_small_size() {
        for w in 3..60 {
            for h in 3..60 {
                let f = FaceMeta::from_size(w, h).unwrap();
                let (fx, fy, m) = f.face;
                let (mx, my, mw, mh) = f.mouth;
                assert!(fx + m <= w && fy + m <= h);
                assert!(mx >= fx && my >= fy && mx + mw <= fx + m && my + mh <= fy + m);
                assert!(mw >= 1 && mh >= 1);
            }
        }
    }
}
