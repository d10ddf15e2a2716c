//! `encode`: the one-pass encode of the final file into `.<final_name>.partial`, straight from
//! the compositor's frames and the padded WAV. Before it, the run records where the main
//! segment's pictures come from ([`record_sources`]: `motion_meta`, `video_source_detail`).
//! ComfyUI frames that turn out not to decode are replaced by the fallback, degraded.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::job::Job;
use crate::media;
use crate::media::encode::EncodeReport;
use crate::record::manifest::{Manifest, StartSource, VideoSourceDetail};
use crate::record::meta::{MotionMeta, LOCAL_RENDERER};
use crate::record::PhaseName;

use super::comfyui::{self, Visual};
use super::compose::Compositor;
use super::lipsync;
use super::prepare::Prepared;
use super::run::{phase, RunOptions};

/// `motion_meta` of a start image rendered by the local motion fallback.
pub fn local_motion_meta(job: &Job, prepared: &Prepared, centre: Option<(f64, f64)>) -> MotionMeta {
    MotionMeta::Local {
        over: None,
        workflow_id: None,
        mode: job.motion.mode,
        strength: job.motion.strength,
        frame_count: prepared.frames.main_frames(),
        fps: prepared.frames.fps.to_string(),
        centre: centre.map(|c| [c.0, c.1]),
        renderer: LOCAL_RENDERER.into(),
    }
}

/// Records where the main segment's pictures come from, before the encode: `motion_meta`
/// (the local motion over a start image or over ComfyUI's stills; ComfyUI's own record
/// stands for its motion frames; `null` for a start video, shown without zoom) and
/// `video_source_detail`.
pub fn record_sources(
    job: &Job,
    prepared: &Prepared,
    comfy: &comfyui::Outcome,
    shown: &lipsync::Outcome,
    centre: Option<(f64, f64)>,
    m: &mut Manifest,
) {
    let is_image = job.start.is_image();
    let visual = shown.visual.as_ref();
    // Frames of the lip-synced still get the same zoom in the render.
    if let Some(Visual::Frames {
        zoom: Some(z),
        count,
        ..
    }) = visual
    {
        m.motion_meta = Some(MotionMeta::Local {
            over: Some("comfyui frames".into()),
            workflow_id: comfy.workflow_id.clone(),
            mode: job.motion.mode,
            strength: job.motion.strength,
            frame_count: *count,
            fps: prepared.frames.fps.to_string(),
            centre: z.centre.map(|c| [c.0, c.1]),
            renderer: LOCAL_RENDERER.into(),
        });
    } else if is_image && visual.is_none() {
        m.motion_meta = Some(local_motion_meta(job, prepared, centre));
    } else if !is_image {
        m.motion_meta = None;
    }
    m.video_source_detail = Some(VideoSourceDetail {
        start_source: if is_image {
            StartSource::StartImage
        } else {
            StartSource::StartVideo
        },
        comfyui_workflow_id: comfy.workflow_id.clone(),
        comfyui_output: comfy.output,
        lipsync: shown.source,
        degraded: shown.degraded_reason.is_some(),
        degraded_reason: shown.degraded_reason.clone(),
    });
}

/// The `encode` phase: the timeline from `visual` (else the fallback) into `partial`. A
/// ComfyUI frame that does not decode makes it start again from the fallback, degraded. The
/// report goes to `phases.encode.report`.
pub fn run_phase(
    job: &Job,
    opts: &RunOptions,
    prepared: &Prepared,
    visual: Option<&Visual>,
    centre: Option<(f64, f64)>,
    partial: &Path,
    manifest: &mut Manifest,
) -> Result<EncodeReport> {
    let is_image = job.start.is_image();
    phase(manifest, opts, PhaseName::Encode, |m| {
        let encode = |visual: Option<&Visual>| {
            let compositor = Compositor::for_run(job, prepared, visual, centre)?;
            encode_with(job, prepared, compositor, partial, &*opts.progress).inspect_err(|_| {
                let _ = std::fs::remove_file(partial);
            })
        };
        let report = match encode(visual) {
            // A ComfyUI frame that does not decode: the fallback instead, degraded.
            Err(e) if comfyui::frames_unusable(&e, visual) => {
                let fallback = is_image.then(|| local_motion_meta(job, prepared, centre));
                comfyui::fall_back_from_frames(m, &e, fallback);
                encode(None)?
            }
            r => r?,
        };
        let fields = &mut m.phases.encode_mut().fields;
        fields.report = Some(report.clone());
        fields.passes = Some(1);
        Ok(report)
    })
}

/// Encodes the whole timeline from `compositor` with the padded audio into `out`.
pub fn encode_with(
    job: &Job,
    prepared: &Prepared,
    compositor: Compositor,
    out: &Path,
    progress: &dyn crate::progress::Progress,
) -> Result<EncodeReport> {
    let (w, h) = prepared.render;
    let fps = prepared.frames.fps;
    let to_i32 = |v: u64| u32::try_from(v).ok().filter(|&x| x <= i32::MAX as u32);
    let (Some(fps_num), Some(fps_den)) = (to_i32(fps.num()), to_i32(fps.den())) else {
        return Err(Error::new(
            ErrorKind::FfmpegFailed,
            format!("fps {fps} does not fit FFmpeg's 32-bit rationals"),
        ));
    };
    let video = media::encode::VideoSettings {
        width: w,
        height: h,
        fps_num,
        fps_den,
        frames: prepared.frames.target_frames,
        preset: job.encode.preset.as_str().to_string(),
        crf: job.encode.crf,
        threads: job.encode.threads,
    };
    let audio = media::encode::AudioSettings {
        wav: prepared.wav.clone(),
        bitrate: job.encode.audio_bitrate,
    };
    let producer = Box::new(StopAware(compositor));
    media::encode::encode_mp4(out, &video, producer, &audio, progress)
}

/// The compositor, ending the encode at the next frame once a stop is requested (the encode
/// then fails with the stop's error and its partial file is removed).
struct StopAware(Compositor);

impl media::encode::FrameProducer for StopAware {
    fn render(&mut self, index: u64, out: &mut media::picture::Yuv420) -> Result<()> {
        crate::interrupt::check()?;
        self.0.render(index, out)
    }
}
