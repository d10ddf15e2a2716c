//! The pictures the lip-sync graphs are given, made before the face check
//! (`docs/COMFYUI_INTERFACE.md`, "Staged pictures"):
//!
//! - start image: the still as the engine sees it (EXIF orientation applied, transparency over
//!   the background colour), no larger than the renderer's working size for this job
//!   ([`still_size`]) → `comfyui/staged/still.png`. ComfyUI repeats it once per frame as
//!   float32 (frames × W × H × 12 bytes), so a 12-megapixel photo is shrunk to what the
//!   render can use at all before it is repeated.
//! - start video: exactly the main segment's planned frames (SPEC §4: VFR→CFR, display
//!   rotation, `video.extend`), rendered at the render size as the final would show them,
//!   in a lossless constant-rate clip → `comfyui/staged/main.mov` (frame `k` is main frame `k`).
//!
//! The face check probes the still, or the first, middle and last main frame of the clip
//! (`faceprobe/frames/<frame>.png`).

use std::path::{Path, PathBuf};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::job::Job;
use crate::media::clip::LosslessClip;
use crate::media::encode::FrameProducer;
use crate::media::picture::{self, Yuv420};
use crate::timeline::crop_window;

use super::compose::Compositor;
use super::prepare::Prepared;

/// The still, relative to the workdir.
pub const STILL: &str = "comfyui/staged/still.png";
/// The start video's main-segment clip, relative to the workdir.
pub const CLIP: &str = "comfyui/staged/main.mov";

/// One picture the face check probes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeImage {
    /// The main-segment frame it shows (start video); `None` for the still.
    pub frame: Option<u64>,
    pub path: PathBuf,
}

/// What was staged.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    /// The still and its size (start image).
    pub still: Option<(PathBuf, (u32, u32))>,
    /// The main-segment clip and its frame count (start video).
    pub clip: Option<(PathBuf, u64)>,
    /// The size of the staged pictures (the still's, or the render size for a clip).
    pub size: (u32, u32),
    pub probes: Vec<ProbeImage>,
}

/// The size a `src` still is staged at: the source size, unless the renderer would shrink it
/// anyway (its working size for the tightest window of the zoom, `1 + motion.strength`, at
/// the render size `out`); then that size, keeping the aspect.
pub fn still_size(src: (u32, u32), out: (u32, u32), strength: f64) -> (u32, u32) {
    let tightest = crop_window(1.0 + strength, src.0, src.1, out.0, out.1, None).w;
    let factor = tightest / f64::from(out.0);
    if factor <= 1.0 {
        return src;
    }
    let scale = |v: u32| ((f64::from(v) / factor).round() as u32).max(1);
    (scale(src.0), scale(src.1))
}

/// The main frames the face check probes: first, middle and last (distinct).
pub fn probe_frames(main: u64) -> Vec<u64> {
    let mut v = vec![0, main / 2, main.saturating_sub(1)];
    v.dedup();
    v.retain(|&f| f < main.max(1));
    v
}

fn io(path: &Path) -> impl Fn(image::ImageError) -> Error + '_ {
    move |e| Error::at_path(ErrorKind::Internal, path, e)
}

/// Stages the job's start picture under `workdir`; a start image is decoded through
/// `start_file`, the handle admission opened it with. `reuse`: keep files an earlier attempt
/// left when they are complete (`--resume`).
pub fn stage(
    job: &Job,
    prepared: &Prepared,
    start_file: &std::fs::File,
    workdir: &Path,
    reuse: bool,
) -> Result<Staged> {
    let dir = workdir.join("comfyui").join("staged");
    std::fs::create_dir_all(&dir).at(ErrorKind::Internal, &dir)?;
    let bg = [job.background.r, job.background.g, job.background.b];
    match &prepared.start_video {
        None => {
            let path = workdir.join(STILL);
            let want = still_size(prepared.source_size, prepared.render, job.motion.strength);
            let have =
                reuse && crate::media::picture::image_dimensions(&path).is_ok_and(|s| s == want);
            if !have {
                write_still(job, start_file, &path, want, bg)?;
            }
            Ok(Staged {
                still: Some((path.clone(), want)),
                clip: None,
                size: want,
                probes: vec![ProbeImage { frame: None, path }],
            })
        }
        Some(_) => stage_clip(job, prepared, workdir, reuse),
    }
}

/// The start image decoded as the engine decodes it, over the background, shrunk to `size`.
fn write_still(
    job: &Job,
    start_file: &std::fs::File,
    path: &Path,
    size: (u32, u32),
    bg: [u8; 3],
) -> Result<()> {
    let rgba = picture::load_rgba8_file(job.start.path(), start_file, job.limits.max_image_pixels)?;
    let mut rgb = image::RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in rgb.pixels_mut().zip(rgba.pixels()) {
        let a = f32::from(p[3]) / 255.0;
        let mix = |c: u8, b: u8| (f32::from(c) * a + f32::from(b) * (1.0 - a)).round() as u8;
        *o = image::Rgb([mix(p[0], bg[0]), mix(p[1], bg[1]), mix(p[2], bg[2])]);
    }
    if (rgb.width(), rgb.height()) != size {
        rgb = image::imageops::resize(&rgb, size.0, size.1, image::imageops::FilterType::Triangle);
    }
    let tmp = path.with_extension("png.partial");
    rgb.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).at(ErrorKind::Internal, path)
}

fn stage_clip(job: &Job, prepared: &Prepared, workdir: &Path, reuse: bool) -> Result<Staged> {
    let main = prepared.frames.main_frames();
    let path = workdir.join(CLIP);
    let frames_dir = workdir.join("faceprobe").join("frames");
    std::fs::create_dir_all(&frames_dir).at(ErrorKind::Internal, &frames_dir)?;
    let probes: Vec<ProbeImage> = probe_frames(main)
        .into_iter()
        .map(|f| ProbeImage {
            frame: Some(f),
            path: frames_dir.join(format!("{:06}.png", f + 1)),
        })
        .collect();
    let (w, h) = prepared.render;
    let complete = reuse
        && probes.iter().all(|p| p.path.is_file())
        && crate::media::video::probe_video(&path).is_ok_and(|p| p.frame_count() as u64 == main);
    if !complete {
        let fps = prepared.frames.fps;
        let (Ok(num), Ok(den)) = (u32::try_from(fps.num()), u32::try_from(fps.den())) else {
            return Err(Error::new(
                ErrorKind::FfmpegFailed,
                format!("fps {fps} does not fit FFmpeg's 32-bit rationals"),
            ));
        };
        let tmp = path.with_extension("partial.mov");
        let mut clip = LosslessClip::create(&tmp, w, h, num, den)?;
        let mut compositor = Compositor::for_prepared(job, prepared)?;
        let mut frame = Yuv420::new(w, h);
        let mut rgb = Vec::new();
        for k in 0..main {
            compositor.render(k, &mut frame)?;
            frame.to_rgb8(&mut rgb);
            clip.push_rgb(&rgb)?;
            if let Some(p) = probes.iter().find(|p| p.frame == Some(k)) {
                image::save_buffer_with_format(
                    &p.path,
                    &rgb,
                    w,
                    h,
                    image::ExtendedColorType::Rgb8,
                    image::ImageFormat::Png,
                )
                .map_err(io(&p.path))?;
            }
        }
        let written = clip.finish()?;
        std::fs::rename(&tmp, &path).at(ErrorKind::Internal, &path)?;
        // The count is checked before anything is submitted: ComfyUI must get exactly the
        // main segment.
        let probe = crate::media::video::probe_video(&path)?;
        if written != main || probe.frame_count() as u64 != main {
            return Err(Error::at_path(
                ErrorKind::FfmpegFailed,
                &path,
                format!(
                    "the staged clip has {} frames, the main segment {main}",
                    probe.frame_count()
                ),
            ));
        }
    }
    Ok(Staged {
        still: None,
        clip: Some((path, main)),
        size: (w, h),
        probes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_still_is_staged_at_the_renderers_working_size_or_its_own() {
        // The astronaut (512×512) into 480×480 with a 10 % zoom: the tightest window is
        // 512/1.1 = 465 source pixels for 480 output pixels, so nothing is shrunk.
        assert_eq!(still_size((512, 512), (480, 480), 0.1), (512, 512));
        // A 12-megapixel photo into 854×480 (4000×3000 fits 640×480): its tightest window is
        // 4000/1.1 = 3636 pixels for 640, so it is staged 5.68× smaller, at 704×528.
        assert_eq!(still_size((4000, 3000), (640, 480), 0.1), (704, 528));
        // No zoom: the render's own scale. 854×480 is a little wider than 16:9, so the window
        // that holds 1920×1080 is 1921.5 pixels wide (2.25 per output pixel): 853×480.
        assert_eq!(still_size((1920, 1080), (854, 480), 0.0), (853, 480));
    }

    #[test]
    fn the_face_check_probes_first_middle_and_last_frame() {
        assert_eq!(probe_frames(40), [0, 20, 39]);
        assert_eq!(probe_frames(2), [0, 1]);
        assert_eq!(probe_frames(1), [0]);
    }
}
