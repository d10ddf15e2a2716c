//! The job draft: what `va produce`'s flags and `POST /produce`'s body can say, typed, and the
//! one function that turns it into a job document.
//!
//! Both front doors fill a [`JobDraft`] (the command line from its clap flags, the server from
//! its JSON body) and call [`JobDraft::document`]; neither builds job JSON by hand, and the
//! server does not reach into the command line for it. The draft does not probe anything:
//! whether `start` is an image or a video is told to it by the caller (see
//! [`crate::stages::admit::admit_draft`], which probes the start file once and keeps the probe).

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::files::path_json;

/// What a `va produce` call says about the job, before validation. Numbers stay as given
/// (negative or too large ones included): validation names what is wrong with them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobDraft {
    /// The speech audio.
    pub audio: PathBuf,
    /// A start image or start video (told apart by probing the file).
    pub start: PathBuf,
    /// An end image, held over the silence after the speech.
    pub end: Option<PathBuf>,
    /// Silence before the speech, seconds (default 0).
    pub pre: Option<f64>,
    /// Silence after the speech, seconds (default 0).
    pub post: Option<f64>,
    /// Frame rate as written: `25`, `30000/1001`, `29.97`.
    pub fps: Option<String>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub max_width: Option<i64>,
    pub max_height: Option<i64>,
    /// Lip-sync on or off; `None`: on for a start image unless ComfyUI is skipped.
    pub lipsync: Option<bool>,
    pub lipsync_provider: Option<String>,
    pub comfyui_chunk_size: Option<i64>,
    pub comfyui_url: Option<String>,
    pub no_comfyui: bool,
    /// A fixed seed; `None`: a random one per run.
    pub seed: Option<i64>,
    pub prompt: Option<String>,
    pub negative: Option<String>,
    /// `encode.loudness.target_lufs`.
    pub loudness: Option<f64>,
}

/// The final file a produced job writes.
pub const PRODUCE_FINAL_NAME: &str = "fertig.mp4";

/// `on`/`off` as `--lipsync` takes it (and `POST /produce`'s `lipsync` as text).
pub fn on_off(text: &str) -> Result<bool> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(Error::new(
            ErrorKind::Usage,
            format!("--lipsync: expected on or off, got {other:?}"),
        )),
    }
}

impl JobDraft {
    /// Checks what validation cannot tell in the user's words: a decimal comma in the frame
    /// rate ("use a dot").
    pub fn check(&self) -> Result<()> {
        if let Some(f) = &self.fps {
            if f.contains(',') {
                let dotted = f.trim().replace(',', ".");
                return Err(Error::new(
                    ErrorKind::Usage,
                    format!("--fps: use a dot: {dotted}"),
                ));
            }
        }
        Ok(())
    }

    /// The job document (not yet validated): `start` under `start_image` or `start_video`
    /// as `start_is_image` says, paths made absolute against the current directory, the final
    /// `fertig.mp4`.
    pub fn document(&self, start_is_image: bool) -> Value {
        let path = |p: &Path| path_json::to_value(&absolute(p));
        let lipsync = self.lipsync.unwrap_or(start_is_image && !self.no_comfyui);
        let mut doc = Map::new();
        doc.insert("audio".into(), path(&self.audio));
        let start_field = if start_is_image {
            "start_image"
        } else {
            "start_video"
        };
        doc.insert(start_field.into(), path(&self.start));
        if let Some(e) = &self.end {
            doc.insert("end_image".into(), path(e));
        }
        doc.insert(
            "buffer".into(),
            json!({"pre_seconds": self.pre.unwrap_or(0.0), "post_seconds": self.post.unwrap_or(0.0)}),
        );
        let policy = if self.seed.is_some() {
            "fixed"
        } else {
            "random"
        };
        let mut det = json!({ "seed_policy": policy });
        if let Some(f) = &self.fps {
            det["fps"] = f.clone().into();
        }
        if let Some(s) = self.seed {
            det["seed"] = s.into();
        }
        doc.insert("determinism".into(), det);
        let mut render = Map::new();
        for (k, v) in [
            ("width", self.width),
            ("height", self.height),
            ("max_width", self.max_width),
            ("max_height", self.max_height),
        ] {
            if let Some(v) = v {
                render.insert(k.into(), v.into());
            }
        }
        doc.insert("render".into(), Value::Object(render));
        let mut comfy = json!({ "enable": !self.no_comfyui });
        if let Some(url) = &self.comfyui_url {
            comfy["url"] = url.clone().into();
        }
        if let Some(c) = self.comfyui_chunk_size {
            comfy["chunk_size"] = c.into();
        }
        doc.insert("comfyui".into(), comfy);
        doc.insert(
            "lipsync".into(),
            json!({"enable": lipsync, "provider": self.lipsync_provider}),
        );
        if let Some(p) = &self.prompt {
            doc.insert("prompt".into(), p.clone().into());
        }
        if let Some(n) = &self.negative {
            doc.insert("negative".into(), n.clone().into());
        }
        let mut encode = json!({});
        if let Some(l) = self.loudness {
            encode["loudness"] = json!({ "target_lufs": l });
        }
        doc.insert("encode".into(), encode);
        doc.insert("output".into(), json!({"final_name": PRODUCE_FINAL_NAME}));
        Value::Object(doc)
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> JobDraft {
        JobDraft {
            audio: "/in/voice.wav".into(),
            start: "/in/face.png".into(),
            ..JobDraft::default()
        }
    }

    #[test]
    fn a_draft_validates_into_the_job_it_says() {
        let d = JobDraft {
            end: Some("/in/end.png".into()),
            pre: Some(0.5),
            fps: Some("30000/1001".into()),
            seed: Some(7),
            max_width: Some(320),
            loudness: Some(-16.0),
            ..draft()
        };
        let j = crate::job::from_value(d.document(true), Path::new("/")).unwrap();
        assert_eq!(j.start, crate::job::StartKind::Image("/in/face.png".into()));
        assert_eq!(j.end_image.as_deref(), Some(Path::new("/in/end.png")));
        assert_eq!(j.fps().to_string(), "30000/1001");
        assert_eq!(j.determinism.seed, Some(7));
        assert_eq!(j.render.max_width, 320);
        assert!(j.lipsync.enable, "lip-sync defaults on for a start image");
        assert_eq!(j.output.final_name, PRODUCE_FINAL_NAME);
        assert_eq!(j.encode.loudness.map(|l| l.target_lufs), Some(-16.0));
        let v = crate::job::from_value(d.document(false), Path::new("/")).unwrap();
        assert_eq!(v.start, crate::job::StartKind::Video("/in/face.png".into()));
        assert!(!v.lipsync.enable, "lip-sync defaults off for a start video");
    }

    #[test]
    fn lipsync_defaults_off_without_comfyui_and_follows_the_flag() {
        let d = JobDraft {
            no_comfyui: true,
            ..draft()
        };
        assert_eq!(d.document(true)["lipsync"]["enable"], false);
        let d = JobDraft {
            lipsync: Some(true),
            ..draft()
        };
        assert_eq!(d.document(false)["lipsync"]["enable"], true);
        assert!(on_off("on").unwrap());
        assert!(!on_off("off").unwrap());
        let e = on_off("maybe").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert_eq!(e.message, "--lipsync: expected on or off, got \"maybe\"");
    }

    #[test]
    fn a_decimal_comma_in_the_frame_rate_gets_use_a_dot() {
        let d = JobDraft {
            fps: Some("29,97".into()),
            ..draft()
        };
        assert_eq!(d.check().unwrap_err().message, "--fps: use a dot: 29.97");
    }
}
