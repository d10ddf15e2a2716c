//! The compositor: chooses each output frame's picture from the timeline (main segment from
//! ComfyUI's frames, a video (ComfyUI's or a lip-sync provider's), the motion renderer over the
//! start image, or the start video's planned source frames; end hold from the end image) and
//! renders it. It is the [`FrameProducer`] the one-pass
//! encoder pulls from.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::job::{EndImageFit, Job};
use crate::media;
use crate::media::ahead::Ahead;
use crate::media::encode::FrameProducer;
use crate::media::picture::{self, ImageLoader, Picture, Planes, Yuv420, YuvColor};
use crate::media::render::Renderer;
use crate::media::video::{Delivered, VideoFrames};
use crate::timeline::{crop_window, CropWindow, FramePlan, FrameSource, ZoomCurve};

use super::comfyui::Visual;
use super::prepare::{Prepared, StartVideo};

pub struct Compositor {
    plan: FramePlan,
    main: Main,
    hold: Option<Yuv420>,
}

/// Where the main segment's pictures come from.
#[allow(
    clippy::large_enum_variant,
    reason = "one per run; boxing the image renderer buys nothing"
)]
enum Main {
    /// The start image through the zoom curve.
    Image {
        renderer: Renderer,
        curve: ZoomCurve,
        src: (u32, u32),
        out: (u32, u32),
        /// Zoom centre in source pixels (the face centre); `None`: the image centre.
        centre: Option<(f64, f64)>,
    },
    Video(Box<VideoMain>),
    Frames(Box<FramesMain>),
}

/// Renders `planes` fitted (contain, zoom 1) into `out` ([`render_window`]).
fn render_fitted(
    renderer: &mut Option<Renderer>,
    planes: &Planes,
    size: (u32, u32),
    bg: YuvColor,
    out: &mut Yuv420,
) {
    let win = crop_window(1.0, planes.width, planes.height, size.0, size.1, None);
    render_window(
        renderer,
        Picture::Planes(planes),
        size,
        [0; 3],
        bg,
        &win,
        win.w,
        out,
    );
}

/// Renders `pic` through `win` into `out` (`size`), the source shrunk once for windows of at
/// least `min_window_w` source pixels (as [`Renderer::new`]), creating the renderer with the
/// first picture and re-pointing it (buffers reused) at later ones. An 8-bit picture goes
/// into the renderer's working form straight from its rows (`bg`, the background as R'G'B',
/// under its alpha); one of the output's size seen whole (ComfyUI's frames at the render
/// size) needs no renderer at all. True when the renderer's source is now `pic`'s rows
/// (set with [`Renderer::set_source_rgb8`]).
#[allow(
    clippy::too_many_arguments,
    reason = "one call per frame, all of them needed"
)]
fn render_window(
    renderer: &mut Option<Renderer>,
    pic: Picture,
    size: (u32, u32),
    bg: [u8; 3],
    bgc: YuvColor,
    win: &CropWindow,
    min_window_w: f64,
    out: &mut Yuv420,
) -> bool {
    let r = renderer.get_or_insert_with(|| Renderer::empty(size.0, size.1, bgc));
    let rows = matches!(pic, Picture::Rgb8(_));
    match pic {
        Picture::Rgb8(px) => {
            let whole = CropWindow {
                x: 0.0,
                y: 0.0,
                w: f64::from(px.width),
                h: f64::from(px.height),
            };
            if (px.width, px.height) == size && *win == whole && min_window_w <= whole.w {
                Renderer::render_whole_rgb8(&px, bg, out);
                return false;
            }
            r.set_source_rgb8(&px, bg, min_window_w);
        }
        Picture::Planes(planes) => r.set_source(planes, min_window_w),
    }
    r.render(win, out);
    rows
}

/// Frames fetched from ComfyUI: main frame `k` is `<dir>/<k+1 as 000001>.png`, fitted into the
/// render size (frames at another size, e.g. the start image's, are scaled like it). Frames
/// that show the still itself (the lip-synced still) get the start image's zoom instead:
/// frame `k` through the crop window of `curve.zoom(k)` about the face centre, shrunk once for
/// the curve's tightest window, as the start image is rendered. The frames are decoded and
/// rendered ahead, in parallel, by a pool of workers ([`Ahead`]), each with its own loader and
/// renderer; the render thread takes them in order.
struct FramesMain {
    count: u64,
    ahead: Ahead<Yuv420>,
}

/// Decode workers for a frames folder: at most this many (each holds a renderer, ~10 MB at
/// 854x480).
const FRAME_WORKERS: usize = 4;

impl FramesMain {
    fn new(
        dir: &Path,
        count: u64,
        out: (u32, u32),
        bg: [u8; 3],
        max_pixels: u64,
        zoom: Option<(ZoomCurve, Option<(f64, f64)>)>,
        base: Option<&Path>,
    ) -> Result<Self> {
        let bgc = YuvColor::from_rgb(f32::from(bg[0]), f32::from(bg[1]), f32::from(bg[2]));
        let dir = dir.to_path_buf();
        let base = base.map(Path::to_path_buf);
        let workers = media::ahead::workers_for(FRAME_WORKERS);
        let ahead = Ahead::start(
            "frames",
            count,
            workers,
            2 * workers + 2,
            move || {
                let loader = match &base {
                    Some(b) => ImageLoader::with_base(b, max_pixels, bg)?,
                    None => ImageLoader::default(),
                };
                Ok((loader, None::<Renderer>, false))
            },
            // `synced`: the renderer's source is this worker's last picture, so that a patch
            // (a frame that differs from it only in a box) updates just that box.
            move |(loader, renderer, synced), i, reused: Option<Yuv420>| {
                let path = dir.join(format!("{:06}.png", i + 1));
                // A frame that cannot be used is ComfyUI's fault: the run falls back
                // (`comfyui::frames_unusable`).
                let (pic, changed) = loader.decode_frame(&path, max_pixels, bg).map_err(|e| {
                    Error::new(
                        ErrorKind::ComfyuiBadResponse,
                        format!("ComfyUI frame {}", e.message),
                    )
                })?;
                let mut frame = reused.unwrap_or_else(|| Yuv420::new(out.0, out.1));
                let (w, h) = pic.size();
                match zoom {
                    None => {
                        let win = crop_window(1.0, w, h, out.0, out.1, None);
                        *synced =
                            render_window(renderer, pic, out, bg, bgc, &win, win.w, &mut frame);
                    }
                    Some((curve, centre)) => {
                        let tightest =
                            crop_window(1.0 + curve.strength, w, h, out.0, out.1, None).w;
                        let win = crop_window(curve.zoom(i), w, h, out.0, out.1, centre);
                        if let (true, Some(rect), Picture::Rgb8(px), Some(r)) =
                            (*synced, changed, &pic, renderer.as_mut())
                        {
                            if r.update_rgb8(px, bg, tightest, rect) {
                                r.render(&win, &mut frame);
                                return Ok(frame);
                            }
                        }
                        *synced =
                            render_window(renderer, pic, out, bg, bgc, &win, tightest, &mut frame);
                    }
                }
                Ok(frame)
            },
        )?;
        Ok(FramesMain { count, ahead })
    }

    fn render(&mut self, k: u64, out: &mut Yuv420) -> Result<()> {
        let i = k.min(self.count.saturating_sub(1));
        out.clone_from(self.ahead.get(i)?);
        Ok(())
    }
}

/// The start video: each main frame shows its planned source frame, fitted (contain, like the
/// start image at zoom 1; no motion) into the render size by the same sub-pixel renderer.
///
/// The source frames to render are known from the plan ([`render_order`]): a thread of its
/// own ([`Ahead`] with one worker) decodes them (libavcodec's frame threads on), scales them
/// to the render size while converting and renders them, ahead of the render thread, which
/// takes them in order.
struct VideoMain {
    sources: Vec<usize>,
    ahead: Ahead<Yuv420>,
    /// The next job of `ahead`: the next entry of the render order.
    next_job: u64,
    /// The source frame shown last, and its rendering: consecutive output frames that show
    /// the same source frame are copies.
    shown: Option<(usize, Yuv420)>,
    /// With pingpong, every rendered source frame (bounded by
    /// [`super::prepare::PINGPONG_CACHE_BYTES`] in `prepare`), so the backward passes need no
    /// decoding.
    cache: Option<HashMap<usize, Yuv420>>,
}

/// The source frames a start video's plan renders, in order: each change of source frame,
/// except (with the pingpong cache) frames rendered before.
fn render_order(sources: &[usize], cache: bool) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut shown = None;
    let mut order = Vec::new();
    for &s in sources {
        if shown == Some(s) {
            continue;
        }
        shown = Some(s);
        if cache && !seen.insert(s) {
            continue;
        }
        order.push(s);
    }
    order
}

impl VideoMain {
    fn new(v: &StartVideo, bg: [u8; 3], bgc: YuvColor, out: (u32, u32)) -> Result<VideoMain> {
        let order = render_order(&v.sources, v.cache_frames);
        let (path, probe) = (v.path.clone(), v.probe.clone());
        // Opened here, so that a file that cannot be decoded fails the build of the
        // compositor; the decoder thread takes this one open over (the file is opened once
        // to decode it: issue 12).
        let first = std::sync::Mutex::new(Some(VideoFrames::open(&path, &probe, bg, Some(out))?));
        let count = order.len() as u64;
        let ahead = Ahead::start(
            "vdecode",
            count,
            1,
            6,
            move || {
                let opened = first.lock().ok().and_then(|mut f| f.take());
                let frames = match opened {
                    Some(f) => f,
                    None => VideoFrames::open(&path, &probe, bg, Some(out))?,
                };
                Ok((frames, None::<Renderer>))
            },
            move |(frames, renderer), j, reused: Option<Yuv420>| {
                let s = order[j as usize];
                let mut frame = reused.unwrap_or_else(|| Yuv420::new(out.0, out.1));
                if let Delivered::Planes(planes) = frames.frame_into(s, &mut frame)? {
                    render_fitted(renderer, planes, out, bgc, &mut frame);
                }
                Ok(frame)
            },
        )?;
        Ok(VideoMain {
            sources: v.sources.clone(),
            ahead,
            next_job: 0,
            shown: None,
            cache: v.cache_frames.then(HashMap::new),
        })
    }

    /// Renders main frame `k` (past the plan: its last frame).
    fn render(&mut self, k: u64, out: &mut Yuv420) -> Result<()> {
        let i = usize::try_from(k)
            .unwrap_or(usize::MAX)
            .min(self.sources.len().saturating_sub(1));
        let Some(&s) = self.sources.get(i) else {
            return Err(crate::error::Error::internal("start video plan is empty"));
        };
        if let Some((shown, frame)) = &self.shown {
            if *shown == s {
                out.clone_from(frame);
                return Ok(());
            }
        }
        if let Some(frame) = self.cache.as_ref().and_then(|c| c.get(&s)) {
            out.clone_from(frame);
        } else {
            out.clone_from(self.ahead.get(self.next_job)?);
            self.next_job += 1;
            if let Some(cache) = &mut self.cache {
                cache.insert(s, out.clone());
            }
        }
        match &mut self.shown {
            Some((shown, frame)) => {
                *shown = s;
                frame.clone_from(out);
            }
            None => self.shown = Some((s, out.clone())),
        }
        Ok(())
    }
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
    /// The compositor for what `prepare` planned: the start video when there is one, else
    /// the start image.
    pub fn for_prepared(job: &Job, prepared: &Prepared) -> Result<Compositor> {
        Compositor::build(
            job,
            prepared.frames,
            prepared.render,
            prepared.start_video.as_ref(),
            None,
        )
    }

    /// The compositor for a run: the main segment from `visual` (ComfyUI's frames or a video)
    /// when there is one, else what `prepare` planned, zoomed about `centre` for a start image.
    pub fn for_run(
        job: &Job,
        prepared: &Prepared,
        visual: Option<&Visual>,
        centre: Option<(f64, f64)>,
    ) -> Result<Compositor> {
        let bg = [job.background.r, job.background.g, job.background.b];
        let bgc = YuvColor::from_rgb(f32::from(bg[0]), f32::from(bg[1]), f32::from(bg[2]));
        let out = prepared.render;
        let main = match visual {
            None => {
                return Compositor::build(
                    job,
                    prepared.frames,
                    out,
                    prepared.start_video.as_ref(),
                    centre,
                )
            }
            Some(Visual::Frames {
                dir,
                count,
                zoom,
                base,
            }) => {
                let zoom = zoom.map(|z| {
                    let curve = ZoomCurve {
                        mode: job.motion.mode,
                        strength: job.motion.strength,
                        frames: prepared.frames.main_frames(),
                    };
                    (curve, z.centre)
                });
                Main::Frames(Box::new(FramesMain::new(
                    dir,
                    *count,
                    out,
                    bg,
                    job.limits.max_image_pixels,
                    zoom,
                    base.as_deref(),
                )?))
            }
            Some(Visual::Video(path)) => {
                let v = visual_video(job, prepared, path)?;
                Main::Video(Box::new(VideoMain::new(&v, bg, bgc, out)?))
            }
        };
        let hold = end_hold(job, prepared.frames, out, bg, bgc)?;
        Ok(Compositor {
            plan: prepared.frames,
            main,
            hold,
        })
    }

    /// What `prepare` planned for the main segment only, zoomed about `centre` for a start
    /// image: the end image is not decoded (for a check that looks at main frames).
    pub fn main_only(
        job: &Job,
        prepared: &Prepared,
        centre: Option<(f64, f64)>,
    ) -> Result<Compositor> {
        let mut plan = prepared.frames;
        plan.target_frames = plan.main_frames();
        plan.hold_frames = 0;
        let video = prepared.start_video.as_ref();
        Compositor::build(job, plan, prepared.render, video, centre)
    }

    /// The compositor for a start image (the job's `start_image`) over `plan` at size `out`.
    pub fn new(job: &Job, plan: FramePlan, out: (u32, u32)) -> Result<Compositor> {
        Compositor::build(job, plan, out, None, None)
    }

    fn build(
        job: &Job,
        plan: FramePlan,
        out: (u32, u32),
        start_video: Option<&StartVideo>,
        centre: Option<(f64, f64)>,
    ) -> Result<Compositor> {
        let bg = [job.background.r, job.background.g, job.background.b];
        let bgc = YuvColor::from_rgb(f32::from(bg[0]), f32::from(bg[1]), f32::from(bg[2]));
        let main = match start_video {
            Some(v) => Main::Video(Box::new(VideoMain::new(v, bg, bgc, out)?)),
            None => {
                // Decoded once and shrunk row by row: a big start image is never held as
                // full-size planes.
                let start = picture::decode_image(job.start.path(), job.limits.max_image_pixels)?;
                let src = start.size();
                let curve = ZoomCurve {
                    mode: job.motion.mode,
                    strength: job.motion.strength,
                    frames: plan.main_frames(),
                };
                let tightest =
                    crop_window(1.0 + job.motion.strength, src.0, src.1, out.0, out.1, None).w;
                let renderer = Renderer::from_decoded(&start, bg, out.0, out.1, bgc, tightest)
                    .map_err(|e| e.for_path(job.start.path()))?;
                Main::Image {
                    renderer,
                    curve,
                    src,
                    out,
                    centre,
                }
            }
        };
        let hold = end_hold(job, plan, out, bg, bgc)?;
        Ok(Compositor { plan, main, hold })
    }

    /// Renders main frame `k`.
    fn render_main(&mut self, k: u64, out: &mut Yuv420) -> Result<()> {
        match &mut self.main {
            Main::Image {
                renderer,
                curve,
                src,
                out: size,
                centre,
            } => {
                let win = crop_window(curve.zoom(k), src.0, src.1, size.0, size.1, *centre);
                renderer.render(&win, out);
                Ok(())
            }
            Main::Video(v) => v.render(k, out),
            Main::Frames(f) => f.render(k, out),
        }
    }
}

/// The end image rendered once, when the plan has a hold.
fn end_hold(
    job: &Job,
    plan: FramePlan,
    out: (u32, u32),
    bg: [u8; 3],
    bgc: YuvColor,
) -> Result<Option<Yuv420>> {
    Ok(match &job.end_image {
        Some(path) if plan.hold_frames > 0 => {
            let end = picture::decode_image(path, job.limits.max_image_pixels)?;
            let win = fit_window(job.end_image_fit, end.size(), out);
            let mut r = Renderer::from_decoded(&end, bg, out.0, out.1, bgc, win.w)
                .map_err(|e| e.for_path(path))?;
            let mut frame = Yuv420::new(out.0, out.1);
            r.render(&win, &mut frame);
            Some(frame)
        }
        _ => None,
    })
}

/// Plans a video that stands for the main segment (ComfyUI's video output, a lip-sync
/// provider's `output.mp4`): frame `k` is the frame shown at `k/fps`. One with fewer frames
/// than the main segment is refused (never stretched).
pub fn visual_video(job: &Job, prepared: &Prepared, path: &std::path::Path) -> Result<StartVideo> {
    let probe = crate::media::video::probe_video(path)?;
    let main = prepared.frames.main_frames();
    if (probe.frame_count() as u64) < main {
        return Err(crate::error::Error::at_path(
            crate::error::ErrorKind::FfmpegFailed,
            path,
            format!(
                "has {} video frames, the main segment needs {main}",
                probe.frame_count()
            ),
        ));
    }
    super::prepare::plan_start_video(job, path, probe, &prepared.frames, prepared.render)
}

impl FrameProducer for Compositor {
    fn render(&mut self, index: u64, out: &mut Yuv420) -> Result<()> {
        match (self.plan.source(index), &self.hold) {
            (FrameSource::EndHold, Some(hold)) => {
                out.clone_from(hold);
                Ok(())
            }
            (FrameSource::Main(k), _) => self.render_main(k, out),
            (FrameSource::EndHold, None) => {
                let last = self.plan.main_frames().saturating_sub(1);
                self.render_main(last, out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bt709_clip_at_the_render_size_is_scaled_straight_into_the_frame_like_the_renderer() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/video");
        let mean_diff = |a: &[u8], b: &[u8]| {
            let sum: u64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| u64::from(x.abs_diff(*y)))
                .sum();
            sum as f64 / a.len() as f64
        };
        // BT.709 full-range 4:2:0 and 10-bit 4:4:4: straight into the frame, as the renderer
        // would draw them (within rounding: swscale shrinks the chroma, not the renderer).
        for name in ["823bf371c6014040.mp4", "4f95aa821e87f975.mkv"] {
            let path = dir.join(name);
            let probe = crate::media::video::probe_video(&path).unwrap();
            let size = probe.display_size();
            let mut direct = VideoFrames::open(&path, &probe, [0; 3], Some(size)).unwrap();
            let mut planes = VideoFrames::open(&path, &probe, [0; 3], Some(size)).unwrap();
            let mut renderer = None;
            for k in 0..probe.pts.len().min(5) {
                let mut a = Yuv420::new(size.0, size.1);
                let filled = matches!(direct.frame_into(k, &mut a).unwrap(), Delivered::Filled);
                assert!(filled, "{name} frame {k}: not straight into the frame");
                let mut b = Yuv420::new(size.0, size.1);
                let p = planes.picture(k).unwrap();
                render_fitted(&mut renderer, p, size, YuvColor::BLACK, &mut b);
                let (y, u, v) = (
                    mean_diff(&a.y, &b.y),
                    mean_diff(&a.u, &b.u),
                    mean_diff(&a.v, &b.v),
                );
                assert!(
                    y < 1.0 && u < 2.0 && v < 2.0,
                    "{name} frame {k}: {y} {u} {v}"
                );
            }
        }
        // An untagged SD clip (BT.601 assumed) goes through the conversion and the renderer.
        let path = dir.join("d7a3bd3815c03965.mp4");
        let probe = crate::media::video::probe_video(&path).unwrap();
        let size = probe.display_size();
        let mut frames = VideoFrames::open(&path, &probe, [0; 3], Some(size)).unwrap();
        let mut out = Yuv420::new(size.0, size.1);
        let got = frames.frame_into(0, &mut out).unwrap();
        assert!(matches!(got, Delivered::Planes(_)));
    }

    #[test]
    fn patches_under_the_zoom_render_as_the_same_frames_saved_whole() {
        use crate::timeline::MotionMode;
        // A noisy still (odd size) and frames that differ from it in boxes that move, grow,
        // touch every edge, vanish (1x1 at the origin) and come back: laid over the still and
        // updated box by box, they must give the very frames a folder of whole frames gives.
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (67u32, 45u32);
        let mut seed = 7u32;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let still = image::RgbImage::from_fn(w, h, |_, _| {
            let v = rnd();
            image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        });
        let still_path = dir.path().join("still.png");
        still.save(&still_path).unwrap();
        let boxes = [
            (20, 10, 9, 7),
            (21, 11, 9, 8),
            (0, 0, 1, 1),
            (0, 0, 5, 6),
            (60, 39, 7, 6),
            (33, 0, 4, 45),
            (0, 20, 67, 3),
            (0, 0, 1, 1),
            (13, 27, 2, 2),
            (14, 28, 1, 1),
            (40, 12, 11, 13),
            (41, 13, 10, 11),
        ];
        let (pdir, wdir) = (dir.path().join("patches"), dir.path().join("whole"));
        std::fs::create_dir_all(&pdir).unwrap();
        std::fs::create_dir_all(&wdir).unwrap();
        for (k, &(x, y, bw, bh)) in boxes.iter().enumerate() {
            let mut frame = still.clone();
            let unchanged = (x, y, bw, bh) == (0, 0, 1, 1);
            let patch = image::RgbImage::from_fn(bw, bh, |i, j| {
                if unchanged {
                    *still.get_pixel(0, 0)
                } else {
                    image::Rgb([(i * 40 + k as u32 * 9) as u8, (j * 30) as u8, 200])
                }
            });
            image::imageops::replace(&mut frame, &patch, i64::from(x), i64::from(y));
            let name = format!("{:06}.png", k + 1);
            frame.save(wdir.join(&name)).unwrap();
            let mut png = std::io::Cursor::new(Vec::new());
            patch.write_to(&mut png, image::ImageFormat::Png).unwrap();
            let bytes = media::pngread::with_offset(&png.into_inner(), x, y);
            std::fs::write(pdir.join(&name), bytes).unwrap();
        }
        let n = boxes.len() as u64;
        let curve = ZoomCurve {
            mode: MotionMode::ZoomIn,
            strength: 0.1,
            frames: n,
        };
        // The render size the still is staged for: its tightest window seen 1:1, so the
        // renderer works on the still's own pixels (as for a lip-synced still).
        let out = (62u32, 42u32);
        let zoom = Some((curve, Some((30.0, 20.0))));
        let mut a =
            FramesMain::new(&pdir, n, out, [0; 3], 1 << 20, zoom, Some(&still_path)).unwrap();
        let mut b = FramesMain::new(&wdir, n, out, [0; 3], 1 << 20, zoom, None).unwrap();
        for k in 0..n {
            let (mut fa, mut fb) = (Yuv420::new(out.0, out.1), Yuv420::new(out.0, out.1));
            a.render(k, &mut fa).unwrap();
            b.render(k, &mut fb).unwrap();
            assert!(
                fa.y == fb.y && fa.u == fb.u && fa.v == fb.v,
                "frame {k} differs"
            );
        }
    }

    #[test]
    fn render_order_lists_each_change_of_source_frame() {
        // A 30 fps clip at 25 fps: some source frames skipped, none repeated in a row.
        assert_eq!(
            render_order(&[0, 1, 2, 3, 4, 6], false),
            vec![0, 1, 2, 3, 4, 6]
        );
        // A slower clip: repeats are copies, not renders.
        assert_eq!(render_order(&[0, 0, 1, 1, 1, 2], false), vec![0, 1, 2]);
        // Loop: the start comes round again and is decoded again.
        assert_eq!(
            render_order(&[0, 1, 2, 0, 1, 2], false),
            vec![0, 1, 2, 0, 1, 2]
        );
        // Pingpong with the cache: the way back is served from it.
        assert_eq!(render_order(&[0, 1, 2, 1, 0, 1, 2], true), vec![0, 1, 2]);
    }

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

#[cfg(test)]
mod timing {
    use super::*;

    /// The decode workers' cost per ComfyUI frame (decode, convert, render, as `FramesMain`'s
    /// workers do it), on one thread: `cargo test --release --lib -- --ignored frames_cost
    /// --nocapture`. The frames are the bench's (`va bench --source frames`), generated at
    /// `VIDAX_BENCH_SIZE` (`WxH`, default 854x480) unless `VIDAX_BENCH_FRAMES` names a folder;
    /// `VIDAX_BENCH_ZOOM` (e.g. 0.1) renders them under a zoom to `1 + zoom` (the lip-synced
    /// still's path), else fitted. A measurement only (callgrind: instructions per frame).
    #[test]
    #[ignore]
    fn frames_cost() {
        let env = |k: &str| std::env::var(k).ok();
        let tmp = tempfile::tempdir().unwrap();
        let (dir, count) = match env("VIDAX_BENCH_FRAMES") {
            Some(d) => {
                let d = std::path::PathBuf::from(d);
                let n = (1u64..)
                    .take_while(|i| d.join(format!("{i:06}.png")).is_file())
                    .count() as u64;
                (d, n)
            }
            None => {
                let size = env("VIDAX_BENCH_SIZE").unwrap_or_else(|| "854x480".into());
                let (w, h) = size.split_once('x').unwrap();
                crate::cli::bench::write_frames(
                    tmp.path(),
                    w.parse().unwrap(),
                    h.parse().unwrap(),
                    12,
                    None,
                )
                .unwrap();
                (tmp.path().to_path_buf(), 12)
            }
        };
        let zoom: Option<f64> = env("VIDAX_BENCH_ZOOM").map(|z| z.parse().unwrap());
        let out = (854u32, 480u32);
        let bg = [0u8; 3];
        let bgc = YuvColor::BLACK;
        let (mut loader, mut renderer) = (ImageLoader::default(), None::<Renderer>);
        let mut frame = Yuv420::new(out.0, out.1);
        // VIDAX_BENCH_OLD=1: the previous path (the whole picture converted to float Y'CbCr
        // 4:4:4 by the loader, then the renderer's shrink), for comparison.
        let old = env("VIDAX_BENCH_OLD").is_some();
        let t = std::time::Instant::now();
        for i in 0..count {
            let path = dir.join(format!("{:06}.png", i + 1));
            let pic = if old {
                Picture::Planes(loader.load(&path, 1 << 28, bg).unwrap())
            } else {
                loader.decode(&path, 1 << 28, bg).unwrap()
            };
            let (w, h) = pic.size();
            let (win, min_w) = match zoom {
                None => {
                    let win = crop_window(1.0, w, h, out.0, out.1, None);
                    (win, win.w)
                }
                Some(s) => {
                    let tightest = crop_window(1.0 + s, w, h, out.0, out.1, None).w;
                    let z = 1.0 + s * i as f64 / count as f64;
                    (crop_window(z, w, h, out.0, out.1, None), tightest)
                }
            };
            render_window(&mut renderer, pic, out, bg, bgc, &win, min_w, &mut frame);
        }
        eprintln!(
            "frames: {count}, {:.3} ms/frame (wall, one thread)",
            t.elapsed().as_secs_f64() * 1000.0 / count as f64
        );
    }
}
