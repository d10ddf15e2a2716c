//! Admission: a job is validated once and each of its inputs probed once, into the one
//! [`Admitted`] value the run takes (ripgrep's low args resolved once into high args).
//!
//! Every front door ends here: `va run` (the job file), `va produce` and `POST /produce` (a
//! [`JobDraft`]), `POST /jobs` (a job document) and `--resume` (the job file or the run's
//! `job.json`). Each input file is opened once here and that one open serves everything
//! admission learns from it: its SHA-256 for the manifest, what it is (image or video, by
//! content), its size, and the checks that a run would otherwise fail late on (an image
//! decodes completely, a start video's timestamps plan, the audio has a stream and a rate).
//! The stages take these probes instead of opening the files again; the only other open of an
//! input is its decode (the audio in `prepare`, the pictures in the encode).
//!
//! Nothing is written here: a job refused at admission leaves no manifest, no registry entry
//! and no workdir. The server admits a job when it is posted and writes the admitted job as
//! `job.json`; the run itself happens in a child process (`va run --supervised`), which admits
//! that `job.json` again: probes do not cross processes, and the files may have changed
//! while the job waited in the queue.

use std::path::Path;
use std::sync::Arc;

use crate::comfy::graph;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{self, Job, JobDraft, StartKind};
use crate::media;
use crate::media::audio::AudioInfo;
use crate::media::video::VideoProbe;
use crate::record::manifest::InputRecord;

use super::comfyui::{
    workflow_ids, FACEPROBE, MOTION_CHUNKS, MOUTHBLEND, WAV2LIP_IMAGE, WAV2LIP_VIDEO,
};

/// A job admitted to run: validated, its workflows known, each input probed once.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub job: Job,
    /// `inputs.<role>` of the manifest, in [`Job::inputs`] order: each input's path, SHA-256
    /// and size, hashed over the same open as its probe.
    pub inputs: Vec<(&'static str, InputRecord)>,
    /// The audio's stream as opened (codec, rate, channels, declared length).
    pub audio: AudioInfo,
    pub start: Start,
    /// The start file as admission opened it: staging and the upload to ComfyUI read its
    /// bytes through this handle, so the file is not opened again for them.
    pub start_file: Arc<std::fs::File>,
    /// The end image's upright size.
    pub end_size: Option<(u32, u32)>,
}

/// What the start file is, as probed.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A still image, upright size (EXIF orientation applied); it decodes completely.
    Image { size: (u32, u32) },
    /// A start video: stream, orientation and every frame's timestamp.
    Video(VideoProbe),
}

impl Admitted {
    /// The start picture's upright size: what the render size is derived from.
    pub fn source_size(&self) -> (u32, u32) {
        match &self.start {
            Start::Image { size } => *size,
            Start::Video(p) => p.display_size(),
        }
    }

    /// The start video's probe; `None` for a start image.
    pub fn start_video(&self) -> Option<&VideoProbe> {
        match &self.start {
            Start::Video(p) => Some(p),
            Start::Image { .. } => None,
        }
    }
}

/// One input file probed over one open: its record (hash) and what it is.
#[derive(Debug, Clone)]
pub struct Probed {
    pub record: InputRecord,
    pub what: Media,
    /// The handle it was probed through (kept for the start file: see [`Admitted::start_file`]).
    pub file: Arc<std::fs::File>,
}

/// What a probed file holds.
#[derive(Debug, Clone)]
pub enum Media {
    Image((u32, u32)),
    Video(VideoProbe),
    Audio(AudioInfo),
}

impl Probed {
    pub fn is_image(&self) -> bool {
        matches!(self.what, Media::Image(_))
    }
}

/// Opens `path` once (the checks of [`media::check_input_file`]) and hashes it; the handle
/// is then read from its start again by the probe.
fn open_hashed(path: &Path) -> Result<(std::fs::File, InputRecord)> {
    let file = media::open_input_file_checked(path)?;
    let bytes = file
        .metadata()
        .map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?
        .len();
    let sha256 = crate::files::sha256_read(&file, path)?;
    let record = InputRecord {
        path: path.to_path_buf(),
        sha256,
        bytes: Some(bytes),
    };
    Ok((file, record))
}

/// A still image: its upright size, within `max_pixels`, and it decodes completely (a
/// truncated or corrupt picture is refused here, before ComfyUI or the encode could draw it
/// as grey).
fn check_image(path: &Path, file: &std::fs::File, max_pixels: u64) -> Result<(u32, u32)> {
    let size = media::picture::image_dimensions_file(path, file)?;
    media::picture::check_pixels(path, "image", size, max_pixels)?;
    media::picture::decode_image_file(path, file, max_pixels)?;
    Ok(size)
}

/// Probes a start file, told apart by its content: an image (see [`check_image`]) or a
/// start video (its timestamps; a frame within `max_pixels`).
pub fn probe_start(path: &Path, max_pixels: u64) -> Result<Probed> {
    let (file, record) = open_hashed(path)?;
    if media::picture::is_meant_as_image_file(path, &file)? {
        let size = check_image(path, &file, max_pixels)?;
        return Ok(Probed {
            record,
            what: Media::Image(size),
            file: Arc::new(file),
        });
    }
    // The probe takes a handle of its own: the same open file, duplicated, not reopened.
    let kept = file
        .try_clone()
        .map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?;
    let probe = media::video::probe_video_file(path, file)?;
    media::picture::check_pixels(path, "video frame", probe.display_size(), max_pixels)?;
    Ok(Probed {
        record,
        what: Media::Video(probe),
        file: Arc::new(kept),
    })
}

/// Probes an end image (see [`check_image`]).
pub fn probe_image(path: &Path, max_pixels: u64) -> Result<Probed> {
    let (file, record) = open_hashed(path)?;
    let size = check_image(path, &file, max_pixels)?;
    Ok(Probed {
        record,
        what: Media::Image(size),
        file: Arc::new(file),
    })
}

/// Probes the audio: a stream FFmpeg decodes, at a usable rate.
pub fn probe_audio(path: &Path) -> Result<Probed> {
    let (file, record) = open_hashed(path)?;
    let kept = file
        .try_clone()
        .map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?;
    let input = media::audio::AudioInput::open_file(path, file)?;
    Ok(Probed {
        record,
        what: Media::Audio(input.info().clone()),
        file: Arc::new(kept),
    })
}

/// The job's ComfyUI workflows are known ones: a user template (`<id>.json`, which must be
/// valid), or a built-in workflow for the job's start kind. Refused as `VALIDATION_FAILED`
/// otherwise, naming the id (docs/COMFYUI_INTERFACE.md).
pub fn check_workflows(job: &Job, state_dir: &Path) -> Result<()> {
    if !job.comfyui.enable {
        return Ok(());
    }
    let dirs = graph::template_dirs(state_dir);
    let start_image = job.start.is_image();
    for (i, id) in workflow_ids(job).iter().enumerate() {
        if id == FACEPROBE || graph::find_template(id, &dirs)?.is_some() {
            continue;
        }
        let needs_image = match id.as_str() {
            MOTION_CHUNKS | MOUTHBLEND | WAV2LIP_IMAGE => true,
            WAV2LIP_VIDEO => false,
            _ => {
                return Err(Error::new(
                    ErrorKind::ValidationFailed,
                    format!(
                        "comfyui.workflow_ids[{i}]: no workflow {id:?}: not built in, and no {id}.json in {}",
                        dirs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ))
            }
        };
        if needs_image != start_image {
            return Err(Error::new(
                ErrorKind::ValidationFailed,
                format!(
                    "comfyui.workflow_ids[{i}]: {id} needs a {}",
                    if needs_image {
                        "start_image"
                    } else {
                        "start_video"
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Admits a validated `job`: its inputs exist, its workflows are known, each input is probed
/// once (`earlier`: probes already taken of its files, by path, e.g. the start file a draft
/// was probed for), and the audio's rate and the frame rate fit one timescale.
pub fn admit(job: Job, state_dir: &Path, earlier: Vec<Probed>) -> Result<Admitted> {
    job.check_inputs()?;
    check_workflows(&job, state_dir)?;
    let max = job.limits.max_image_pixels;
    let mut earlier = earlier;
    let mut take = |path: &Path| {
        earlier
            .iter()
            .position(|p| p.record.path == path)
            .map(|i| earlier.swap_remove(i))
    };
    let start = match take(job.start.path()) {
        Some(p) => p,
        None => probe_start(job.start.path(), max)?,
    };
    let start_file = start.file.clone();
    let start = match (start.what, &job.start) {
        (Media::Image(size), StartKind::Image(p)) => {
            media::picture::check_pixels(p, "image", size, max)?;
            (start.record, Start::Image { size })
        }
        (Media::Video(probe), StartKind::Video(p)) => {
            media::picture::check_pixels(p, "video frame", probe.display_size(), max)?;
            (start.record, Start::Video(probe))
        }
        (what, _) => {
            let kind = match what {
                Media::Image(_) => "image",
                _ => "video",
            };
            return Err(Error::at_path(
                ErrorKind::UnsupportedFormat,
                job.start.path(),
                format!(
                    "is a {kind} file, but the job gives it as {}",
                    job.start.field()
                ),
            ));
        }
    };
    let end = match &job.end_image {
        None => None,
        // The same file as the start image: probed once.
        Some(e) if e.as_path() == job.start.path() && matches!(start.1, Start::Image { .. }) => {
            Some((start.0.clone(), start.1.clone()))
        }
        Some(e) => match take(e.as_path()) {
            Some(Probed {
                record,
                what: Media::Image(size),
                ..
            }) => {
                media::picture::check_pixels(e, "image", size, max)?;
                Some((record, Start::Image { size }))
            }
            _ => {
                let p = probe_image(e, max)?;
                let Media::Image(size) = p.what else {
                    return Err(Error::internal("an end image probed as something else"));
                };
                Some((p.record, Start::Image { size }))
            }
        },
    };
    let audio = match take(job.audio.as_path()) {
        Some(
            p @ Probed {
                what: Media::Audio(_),
                ..
            },
        ) => p,
        _ => probe_audio(&job.audio)?,
    };
    let Media::Audio(info) = audio.what else {
        return Err(Error::internal("the audio probed as something else"));
    };
    // With `encode.audio_rate: "source"` the delivery rate is known only now.
    let rate = job.encode.audio_rate.output_rate(info.rate);
    if let Some(why) = crate::timeline::timescale_problem(rate, job.fps()) {
        return Err(Error::new(
            ErrorKind::ValidationFailed,
            format!("determinism.fps: {why}"),
        ));
    }
    let mut inputs = vec![("audio", audio.record), (job.start.field(), start.0)];
    let end_size = end.map(|(record, e)| {
        inputs.push(("end_image", record));
        match e {
            Start::Image { size } => size,
            Start::Video(p) => p.display_size(),
        }
    });
    Ok(Admitted {
        job,
        inputs,
        audio: info,
        start: start.1,
        start_file,
        end_size,
    })
}

/// Admits the job a draft describes (`va produce`): the start file is probed first (its kind
/// picks `start_image` or `start_video` and the lip-sync default) and that probe is kept;
/// the document is validated once against `base`, its problems told by `problems`.
pub fn admit_draft(
    draft: &JobDraft,
    base: &Path,
    state_dir: &Path,
    problems: impl FnOnce(&[job::Problem]) -> Error,
) -> Result<Admitted> {
    let (job, start) = draft_job(draft, base, problems, |e| e)?;
    admit(job, state_dir, vec![start])
}

/// The validated job of a draft and the probe of its start file (see [`admit_draft`]); the
/// server adjusts the job (its roots, its ComfyUI) before admitting it with that probe.
/// Schema problems are told by `problems`, other errors by `other` (each front door in its
/// own words and error type).
pub fn draft_job<E>(
    draft: &JobDraft,
    base: &Path,
    problems: impl FnOnce(&[job::Problem]) -> E,
    other: impl Fn(Error) -> E,
) -> std::result::Result<(Job, Probed), E> {
    draft.check().map_err(&other)?;
    // A draft cannot set limits: the defaults apply to the start file as to the job.
    let max = crate::job::Limits::default().max_image_pixels;
    // Probed under the absolute path the job will name, so that admission finds the probe.
    let path = std::path::absolute(&draft.start).unwrap_or_else(|_| draft.start.clone());
    let start = probe_start(&path, max).map_err(&other)?;
    let doc = draft.document(start.is_image());
    let job = job::from_value(doc, base).map_err(|p| problems(&p))?;
    Ok((job, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(extra: serde_json::Value) -> Job {
        let mut doc = serde_json::json!({
            "audio": "/in/voice.wav",
            "start_image": "/in/face.png",
            "comfyui": {"enable": true},
        });
        for (k, v) in extra.as_object().unwrap() {
            doc["comfyui"][k] = v.clone();
        }
        job::from_value(doc, Path::new("/")).unwrap()
    }

    #[test]
    fn unknown_workflow_ids_are_refused_naming_the_id() {
        let state = tempfile::tempdir().unwrap();
        let j = job(serde_json::json!({"workflow_ids": ["vidax_faceprobe", "no_such_flow"]}));
        let e = check_workflows(&j, state.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ValidationFailed);
        assert!(
            e.message
                .starts_with("comfyui.workflow_ids[1]: no workflow \"no_such_flow\""),
            "{}",
            e.message
        );
        let j = job(serde_json::json!({"workflow_ids": [WAV2LIP_VIDEO]}));
        let e = check_workflows(&j, state.path()).unwrap_err();
        assert_eq!(
            e.message,
            "comfyui.workflow_ids[0]: vidax_wav2lip_video_audio needs a start_video"
        );
        let j = job(serde_json::json!({"workflow_ids": [MOTION_CHUNKS, FACEPROBE]}));
        check_workflows(&j, state.path()).unwrap();
        // A template of that name makes it known.
        let dir = state.path().join("config").join("workflows");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("no_such_flow.json"),
            r#"{"1": {"class_type": "X", "inputs": {}}}"#,
        )
        .unwrap();
        let j = job(serde_json::json!({"workflow_ids": ["no_such_flow"]}));
        check_workflows(&j, state.path()).unwrap();
    }

    #[test]
    fn workflows_are_not_checked_when_comfyui_is_off() {
        let state = tempfile::tempdir().unwrap();
        let mut j = job(serde_json::json!({"workflow_ids": ["no_such_flow"]}));
        j.comfyui.enable = false;
        check_workflows(&j, state.path()).unwrap();
    }
}
