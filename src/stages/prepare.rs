//! `prepare`: hashes the inputs, decodes and pads the audio into `prepare/audio_padded.wav`,
//! and fixes the timeline (samples, frames, hold, render size, and for a start video which
//! source frame each output frame shows). The plan ([`Prepared`]) is saved as
//! `prepare/plan.json`; `--resume` reads it back ([`resume`]) instead of preparing again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::files::path_json;
use crate::job::{Job, StartKind};
use crate::media;
use crate::media::video::VideoProbe;
use crate::record::manifest::{AudioRecord, BufferRecord, Manifest, RenderRecord};
use crate::record::phases::{PrepareFields, StartVideoRecord};
use crate::record::PhaseName;
use crate::stages::admit::Admitted;
use crate::timeline::{self, AudioPlan, Extend, FramePlan, Rounding};

/// The padded programme, relative to the workdir.
pub const AUDIO_PADDED: &str = "prepare/audio_padded.wav";
/// The saved plan, relative to the workdir.
pub const PLAN_FILE: &str = "prepare/plan.json";
/// The version of [`PLAN_FILE`]'s layout; a plan of another version is prepared again.
const PLAN_VERSION: u32 = 1;

/// What later phases need from `prepare`: its typed output, saved as [`PLAN_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    pub audio: AudioPlan,
    pub frames: FramePlan,
    pub render: (u32, u32),
    /// The start picture's size, upright (after a start video's rotation).
    pub source_size: (u32, u32),
    /// `<workdir>/prepare/audio_padded.wav` (not saved: the workdir may have moved).
    #[serde(skip)]
    pub wav: PathBuf,
    /// The start video's plan; `None` for a start image.
    pub start_video: Option<StartVideo>,
}

/// [`PLAN_FILE`]: the plan and the version of its layout.
#[derive(Serialize, Deserialize)]
struct PlanFile {
    version: u32,
    plan: Prepared,
}

/// Most memory the compositor may keep in rendered start-video frames for
/// `video.extend: pingpong` (which shows the clip backwards and cannot decode backwards):
/// 256 MiB, about 400 frames at 854×480 or 13 s of a 30 fps clip.
pub const PINGPONG_CACHE_BYTES: u64 = 256 << 20;

/// A start video and the source frame each main-segment output frame shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartVideo {
    #[serde(with = "path_json")]
    pub path: PathBuf,
    pub probe: VideoProbe,
    /// `sources[i]`: the probe's frame index for main frame `i` (`timeline::cfr_source_plan`).
    pub sources: Vec<usize>,
    /// Whether the main segment runs past the clip's end (`video.extend` applies).
    pub extended: bool,
    /// Keep every rendered frame for reuse: the plan runs backwards (pingpong).
    pub cache_frames: bool,
}

/// Plans a start video over the main segment: [`timeline::cfr_source_plan`] with the job's
/// `video.extend`, and the pingpong memory check (refused, naming the file, when turning back
/// would need more than [`PINGPONG_CACHE_BYTES`] of rendered frames).
pub fn plan_start_video(
    job: &Job,
    path: &Path,
    probe: VideoProbe,
    frames: &FramePlan,
    render: (u32, u32),
) -> Result<StartVideo> {
    let extend = job.video.extend;
    let sources = timeline::cfr_source_plan(
        &probe.pts,
        probe.time_base,
        probe.end_pts,
        frames.fps,
        frames.main_frames(),
        extend,
    )
    .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))?;
    // The last main frame's time, i/fps, at or past the clip's duration D, in exact integers
    // (cfr_source_plan has checked that end_pts >= every pts).
    let (tb, fps) = (probe.time_base, frames.fps);
    let d = probe.pts.first().map_or(0, |&first| {
        (i128::from(probe.end_pts) - i128::from(first)).unsigned_abs()
    });
    let last = u128::from(frames.main_frames().saturating_sub(1));
    let extended = frames.main_frames() > 0
        && match (
            last.checked_mul(u128::from(fps.den()) * u128::from(tb.den)),
            d.checked_mul(u128::from(fps.num()) * u128::from(tb.num)),
        ) {
            (Some(t), Some(d)) => t >= d,
            _ => true,
        };
    let backwards = sources.windows(2).any(|w| w[1] < w[0]);
    let cache_frames = extend == Extend::Pingpong && backwards;
    if cache_frames {
        let mut distinct = sources.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let frame_bytes = u64::from(render.0) * u64::from(render.1) * 3 / 2;
        let need = distinct.len() as u64 * frame_bytes;
        if need > PINGPONG_CACHE_BYTES {
            return Err(Error::at_path(
                ErrorKind::UnsupportedFormat,
                path,
                format!(
                    "is too long for video.extend pingpong: playing it back and forth keeps {} frames of {}x{} in memory ({} MiB, over the {} MiB limit); use video.extend loop or hold, or a shorter clip",
                    distinct.len(),
                    render.0,
                    render.1,
                    need.div_ceil(1 << 20),
                    PINGPONG_CACHE_BYTES >> 20
                ),
            ));
        }
    }
    Ok(StartVideo {
        path: path.to_path_buf(),
        probe,
        sources,
        extended,
        cache_frames,
    })
}

/// The job's frame plan over `audio`.
fn frame_plan(
    job: &Job,
    audio: &AudioPlan,
) -> std::result::Result<FramePlan, timeline::TimelineError> {
    FramePlan::new(
        audio,
        job.fps(),
        job.determinism.rounding,
        job.post_seconds(),
        job.end_image.is_some(),
    )
}

/// The job's render size for a start picture of `source` (upright) size.
fn render_size(
    job: &Job,
    source: (u32, u32),
) -> std::result::Result<(u32, u32), timeline::TimelineError> {
    timeline::render_size(
        source.0,
        source.1,
        job.render.width,
        job.render.height,
        job.render.max_width,
        job.render.max_height,
    )
}

/// Prepares the admitted job: its inputs' hashes and the start's probe come from admission
/// ([`Admitted`]); the audio is decoded here (its second open, after the probe).
pub fn prepare(admitted: &Admitted, workdir: &Path, manifest: &mut Manifest) -> Result<Prepared> {
    let job = &admitted.job;
    for (role, record) in &admitted.inputs {
        manifest.inputs.insert(role.to_string(), record.clone());
    }
    let source_size = admitted.source_size();
    let video = admitted.start_video().cloned();
    let (src_w, src_h) = source_size;

    let dir = workdir.join("prepare");
    std::fs::create_dir_all(&dir).map_err(|e| Error::at_path(ErrorKind::Internal, &dir, e))?;
    let wav = dir.join("audio_padded.wav");
    let (pre_s, post_s) = (job.pre_seconds(), job.post_seconds());
    let delivery = job.encode.audio_rate;
    let padded = media::audio::write_padded_wav(
        &job.audio,
        &wav,
        |r| delivery.output_rate(r),
        |r| timeline::samples_for(pre_s, r, Rounding::Round),
        |r| timeline::samples_for(post_s, r, Rounding::Round),
    )?;
    // Loudness is set on the padded programme, before the encoder: a gain and a limiter
    // that keep every sample where it is (the silence padding reads as gated-out blocks).
    manifest.loudness = match job.encode.loudness {
        Some(l) => Some(media::loudness::normalize_wav(
            &wav,
            l.target_lufs,
            l.true_peak_db,
        )?),
        None => None,
    };
    let audio = AudioPlan::new(padded.rate, padded.input_samples, pre_s, post_s);
    let frames = frame_plan(job, &audio).map_err(|e| {
        Error::new(
            ErrorKind::FfmpegFailed,
            format!("{}: {e}", job.audio.display()),
        )
    })?;
    let render = render_size(job, source_size)
        .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, job.start.path(), e))?;
    let start_video = match video {
        Some(probe) => Some(plan_start_video(
            job,
            job.start.path(),
            probe,
            &frames,
            render,
        )?),
        None => None,
    };

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
        source_width: src_w,
        source_height: src_h,
    });
    manifest.phases.prepare_mut().fields = PrepareFields {
        audio_codec: Some(padded.info.codec.clone()),
        audio_channels: Some(padded.info.channels),
        corrupt_packets: Some(padded.corrupt_packets),
        audio_padded: Some(AUDIO_PADDED.into()),
        start_video: Some(start_video.as_ref().map(|v| start_video_record(job, v))),
    };
    let plan = Prepared {
        audio,
        frames,
        render,
        source_size,
        wav,
        start_video,
    };
    crate::files::write_json_atomic(
        &workdir.join(PLAN_FILE),
        &PlanFile {
            version: PLAN_VERSION,
            plan: plan.clone(),
        },
    )?;
    Ok(plan)
}

/// The `prepare.start_video` record (docs/OUTPUT_CONTRACT.md).
pub fn start_video_record(job: &Job, v: &StartVideo) -> StartVideoRecord {
    let p = &v.probe;
    let tb = p.time_base;
    StartVideoRecord {
        codec: p.codec.clone(),
        coded_width: p.width,
        coded_height: p.height,
        rotation: p.orientation.rotation,
        mirrored: p.orientation.mirror,
        display_matrix_degrees: p.display_matrix_degrees,
        frames: p.frame_count() as u64,
        vfr: p.vfr,
        time_base: format!("{}/{}", tb.num, tb.den),
        duration_seconds: p.duration_seconds(),
        timestamps: p.timestamps,
        extend: job.video.extend,
        extended: v.extended,
        cached_frames: v.cache_frames,
    }
}

/// On `--resume`, the plan of the earlier attempt's completed `prepare`, read from
/// [`PLAN_FILE`] (nothing probed or decoded again), when its padded WAV is intact, the inputs
/// are the files it prepared (same paths and sizes) and the job still asks for the same
/// programme and timeline; otherwise why not (then `prepare` runs again).
pub fn resume(job: &Job, workdir: &Path, m: &Manifest) -> std::result::Result<Prepared, String> {
    if !m.phase_completed(PhaseName::Prepare) {
        return Err("prepare did not complete".into());
    }
    let path = workdir.join(PLAN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{PLAN_FILE}: {e}"))?;
    let file: PlanFile =
        serde_json::from_str(&text).map_err(|e| format!("{PLAN_FILE}: not a plan: {e}"))?;
    if file.version != PLAN_VERSION {
        return Err(format!("{PLAN_FILE}: version {}", file.version));
    }
    let mut plan = file.plan;
    plan.wav = workdir.join(AUDIO_PADDED);
    let (Some(a), Some(r)) = (m.audio, m.render) else {
        return Err("the manifest lacks audio or render".into());
    };
    same_inputs(job, m)?;
    // The same delivery rate and loudness as the job asks for now.
    let rate = plan.audio.rate;
    let loudness = |l: &crate::job::Loudness| (l.target_lufs, l.true_peak_db);
    if rate != job.encode.audio_rate.output_rate(a.rate) || rate != a.output_rate {
        return Err("encode.audio_rate changed".into());
    }
    if job.encode.loudness.as_ref().map(loudness)
        != m.loudness.map(|r| (r.target_lufs, r.true_peak_ceiling_db))
    {
        return Err("encode.loudness changed".into());
    }
    let (pre_s, post_s) = (job.pre_seconds(), job.post_seconds());
    if timeline::samples_for(pre_s, rate, Rounding::Round) != plan.audio.pre_samples
        || timeline::samples_for(post_s, rate, Rounding::Round) != plan.audio.post_samples
    {
        return Err("the buffers changed".into());
    }
    let reader = hound::WavReader::open(&plan.wav).map_err(|e| format!("{AUDIO_PADDED}: {e}"))?;
    if reader.spec().sample_rate != rate
        || u64::from(reader.duration()) != plan.audio.total_samples()
        || plan.audio.total_samples() != a.total_samples
    {
        return Err(format!("{AUDIO_PADDED} is not the planned programme"));
    }
    let frames = frame_plan(job, &plan.audio).map_err(|e| e.to_string())?;
    if frames != plan.frames {
        return Err("the frame plan changed (fps, rounding or end image)".into());
    }
    let (src_w, src_h) = plan.source_size;
    let render = render_size(job, plan.source_size).map_err(|e| e.to_string())?;
    if render != plan.render
        || (r.width, r.height, r.source_width, r.source_height)
            != (render.0, render.1, src_w, src_h)
    {
        return Err("the render size changed".into());
    }
    // A start video's mapping, planned again from the saved probe (no file read).
    match (&job.start, &plan.start_video) {
        (StartKind::Image(_), None) => {}
        (StartKind::Video(p), Some(v)) if *p == v.path => {
            let again = plan_start_video(job, p, v.probe.clone(), &frames, render)
                .map_err(|e| e.message)?;
            if again != *v {
                return Err("the start video's plan changed (video.extend)".into());
            }
        }
        _ => return Err("the start input changed".into()),
    }
    Ok(plan)
}

/// Whether the job's inputs are the files the manifest recorded: same roles, paths and sizes.
fn same_inputs(job: &Job, m: &Manifest) -> std::result::Result<(), String> {
    let inputs = job.inputs();
    if inputs.len() != m.inputs.len() {
        return Err("the inputs changed".into());
    }
    for (role, path) in inputs {
        let rec = m
            .inputs
            .get(role)
            .ok_or_else(|| format!("input {role} was not prepared"))?;
        let bytes = std::fs::metadata(path).ok().map(|md| md.len());
        if rec.path != path || rec.bytes != bytes || bytes.is_none() {
            return Err(format!("input {role} changed: {}", path.display()));
        }
    }
    Ok(())
}
