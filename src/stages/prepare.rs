//! `prepare`: hashes the inputs, decodes and pads the audio into `prepare/audio_padded.wav`,
//! and fixes the timeline (samples, frames, hold, render size).

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::job::{Job, StartKind};
use crate::media;
use crate::record::manifest::{AudioRecord, BufferRecord, Manifest, RenderRecord};
use crate::timeline::{self, AudioPlan, FramePlan, Rounding};

/// What later phases need from `prepare`.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub audio: AudioPlan,
    pub frames: FramePlan,
    pub render: (u32, u32),
    pub source_size: (u32, u32),
    pub wav: PathBuf,
}

pub fn prepare(job: &Job, workdir: &Path, manifest: &mut Manifest) -> Result<Prepared> {
    for (role, path) in job.inputs() {
        manifest.record_input(role, path)?;
    }
    job.check_inputs()?;
    let start = match &job.start {
        StartKind::Image(p) => media::probe::probe_start(p)?,
        StartKind::Video(p) => {
            return Err(Error::at_path(
                ErrorKind::UnsupportedFormat,
                p,
                "start videos are not supported by this build yet (use a start image)",
            ))
        }
    };
    if start.kind != media::probe::StartKind::Image {
        return Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            job.start.path(),
            "start_image is not an image",
        ));
    }
    let pixels = u64::from(start.width) * u64::from(start.height);
    if pixels > job.limits.max_image_pixels {
        return Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            job.start.path(),
            format!(
                "image is {}x{} = {pixels} pixels, over the limit of {} (limits.max_image_pixels)",
                start.width, start.height, job.limits.max_image_pixels
            ),
        ));
    }
    if let Some(end) = &job.end_image {
        media::picture::image_dimensions(end)?;
    }

    let dir = workdir.join("prepare");
    std::fs::create_dir_all(&dir).map_err(|e| Error::at_path(ErrorKind::Internal, &dir, e))?;
    let wav = dir.join("audio_padded.wav");
    let (pre_s, post_s) = (job.pre_seconds(), job.post_seconds());
    let padded = media::audio::write_padded_wav(
        &job.audio,
        &wav,
        |r| timeline::samples_for(pre_s, r, Rounding::Round),
        |r| timeline::samples_for(post_s, r, Rounding::Round),
    )?;
    let audio = AudioPlan::new(padded.rate, padded.input_samples, pre_s, post_s);
    let frames = FramePlan::new(
        &audio,
        job.fps(),
        job.determinism.rounding,
        post_s,
        job.end_image.is_some(),
    )
    .map_err(|e| {
        Error::new(
            ErrorKind::FfmpegFailed,
            format!("{}: {e}", job.audio.display()),
        )
    })?;
    let render = timeline::render_size(
        start.width,
        start.height,
        job.render.width,
        job.render.height,
        job.render.max_width,
        job.render.max_height,
    )
    .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, job.start.path(), e))?;

    if padded.corrupt_packets > 0 {
        manifest.add_warning(format!(
            "{}: {} corrupt audio packets were skipped",
            job.audio.display(),
            padded.corrupt_packets
        ));
    }
    let secs = |r: timeline::Rational| r.to_f64();
    manifest.audio_input_duration_seconds = Some(secs(audio.input_duration()));
    manifest.audio_duration_seconds = Some(secs(audio.duration()));
    manifest.visual_target_duration_seconds = Some(secs(audio.duration()));
    manifest.audio = Some(AudioRecord {
        rate: padded.info.rate,
        input_samples: audio.input_samples,
        pre_samples: audio.pre_samples,
        post_samples: audio.post_samples,
        total_samples: audio.total_samples(),
        output_rate: padded.rate,
    });
    manifest.buffer = Some(BufferRecord {
        pre_seconds: job.buffer.pre_seconds.value(),
        post_seconds: job.buffer.post_seconds.value(),
    });
    manifest.fps = Some(frames.fps.to_string());
    manifest.fps_value = Some(frames.fps.to_f64());
    manifest.target_frames = Some(frames.target_frames);
    manifest.hold_frames = Some(frames.hold_frames);
    manifest.render = Some(RenderRecord {
        width: render.0,
        height: render.1,
        source_width: start.width,
        source_height: start.height,
    });
    manifest.phase_field("prepare", "audio_codec", padded.info.codec.clone());
    manifest.phase_field("prepare", "audio_channels", padded.info.channels);
    manifest.phase_field("prepare", "corrupt_packets", padded.corrupt_packets);
    manifest.phase_field("prepare", "audio_padded", "prepare/audio_padded.wav");
    Ok(Prepared {
        audio,
        frames,
        render,
        source_size: (start.width, start.height),
        wav,
    })
}
