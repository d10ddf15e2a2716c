//! The compositor: chooses each output frame's picture from the timeline (main segment from
//! the motion renderer, end hold from the end image) and renders it. It is the
//! [`FrameProducer`] the one-pass encoder pulls from.

use crate::error::Result;
use crate::job::{EndImageFit, Job};
use crate::media::encode::FrameProducer;
use crate::media::picture::{self, Yuv420, YuvColor};
use crate::media::render::Renderer;
use crate::timeline::{crop_window, CropWindow, FramePlan, FrameSource, ZoomCurve};

pub struct Compositor {
    plan: FramePlan,
    main: Renderer,
    curve: ZoomCurve,
    src: (u32, u32),
    out: (u32, u32),
    hold: Option<Yuv420>,
}

/// The window that shows a `src` picture in an `out` frame with the given fit.
pub fn fit_window(fit: EndImageFit, src: (u32, u32), out: (u32, u32)) -> CropWindow {
    let (sw, sh) = (f64::from(src.0), f64::from(src.1));
    let aspect = f64::from(out.0) / f64::from(out.1);
    match fit {
        EndImageFit::Contain => crop_window(1.0, src.0, src.1, out.0, out.1, None),
        EndImageFit::Stretch => CropWindow {
            x: 0.0,
            y: 0.0,
            w: sw,
            h: sh,
        },
        EndImageFit::Cover => {
            if sw / sh > aspect {
                let w = sh * aspect;
                CropWindow {
                    x: (sw - w) / 2.0,
                    y: 0.0,
                    w,
                    h: sh,
                }
            } else {
                let h = sw / aspect;
                CropWindow {
                    x: 0.0,
                    y: (sh - h) / 2.0,
                    w: sw,
                    h,
                }
            }
        }
    }
}

impl Compositor {
    pub fn new(job: &Job, plan: FramePlan, out: (u32, u32)) -> Result<Compositor> {
        let bg = [job.background.r, job.background.g, job.background.b];
        let bgc = YuvColor::from_rgb(f32::from(bg[0]), f32::from(bg[1]), f32::from(bg[2]));
        let start = picture::load_image(job.start.path(), job.limits.max_image_pixels, bg)?;
        let src = (start.width, start.height);
        let curve = ZoomCurve {
            mode: job.motion.mode,
            strength: job.motion.strength,
            frames: plan.main_frames(),
        };
        let tightest = crop_window(1.0 + job.motion.strength, src.0, src.1, out.0, out.1, None).w;
        let main = Renderer::new(start, out.0, out.1, bgc, tightest);
        let hold = match &job.end_image {
            Some(path) if plan.hold_frames > 0 => {
                let end = picture::load_image(path, job.limits.max_image_pixels, bg)?;
                let size = (end.width, end.height);
                let win = fit_window(job.end_image_fit, size, out);
                let mut r = Renderer::new(end, out.0, out.1, bgc, win.w);
                let mut frame = Yuv420::new(out.0, out.1);
                r.render(&win, &mut frame);
                Some(frame)
            }
            _ => None,
        };
        Ok(Compositor {
            plan,
            main,
            curve,
            src,
            out,
            hold,
        })
    }

    /// The window the main segment shows at main frame `k`.
    pub fn main_window(&self, k: u64) -> CropWindow {
        crop_window(
            self.curve.zoom(k),
            self.src.0,
            self.src.1,
            self.out.0,
            self.out.1,
            None,
        )
    }
}

impl FrameProducer for Compositor {
    fn render(&mut self, index: u64, out: &mut Yuv420) -> Result<()> {
        match (self.plan.source(index), &self.hold) {
            (FrameSource::EndHold, Some(hold)) => out.clone_from(hold),
            (FrameSource::Main(k), _) => {
                let win = self.main_window(k);
                self.main.render(&win, out);
            }
            (FrameSource::EndHold, None) => {
                let win = self.main_window(self.plan.main_frames().saturating_sub(1));
                self.main.render(&win, out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_image_fits_keep_or_fill_the_frame_as_named() {
        // A 16:9 end image into a square frame.
        let (src, out) = ((640, 360), (480, 480));
        let c = fit_window(EndImageFit::Contain, src, out);
        assert_eq!((c.x, c.w), (0.0, 640.0));
        assert!(
            (c.h - 640.0).abs() < 1e-9 && (c.y + 140.0).abs() < 1e-9,
            "letterboxed: {c:?}"
        );
        let v = fit_window(EndImageFit::Cover, src, out);
        assert_eq!((v.y, v.h, v.w), (0.0, 360.0, 360.0));
        assert!((v.x - 140.0).abs() < 1e-9, "centre-cropped: {v:?}");
        let s = fit_window(EndImageFit::Stretch, src, out);
        assert_eq!((s.x, s.y, s.w, s.h), (0.0, 0.0, 640.0, 360.0));
    }
}
