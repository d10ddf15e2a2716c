//! Probing: what a start file is (image or video, by content, not by name), its size, and
//! the linked FFmpeg's capabilities for `va doctor`.

use std::path::Path;

use ffmpeg_next as av;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartKind {
    Image,
    Video,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartProbe {
    pub kind: StartKind,
    pub width: u32,
    pub height: u32,
}

/// Classifies a start file by its content: a still image (see
/// [`super::picture::is_meant_as_image`]: its errors are image errors), else a file with a
/// video stream libavformat reads.
pub fn probe_start(path: &Path) -> Result<StartProbe> {
    let file = super::open_input_file_checked(path)?;
    if super::picture::is_meant_as_image_file(path, &file)? {
        let (width, height) = super::picture::image_dimensions_file(path, &file)?;
        return Ok(StartProbe {
            kind: StartKind::Image,
            width,
            height,
        });
    }
    super::init();
    let input = super::open_input_file(file, path).map_err(|e| {
        Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("neither an image nor a video vidax reads ({e})"),
        )
    })?;
    let st = input
        .streams()
        .best(av::media::Type::Video)
        .ok_or_else(|| Error::at_path(ErrorKind::UnsupportedFormat, path, "has no video stream"))?;
    let p = st.parameters();
    let dec = av::codec::context::Context::from_parameters(p)
        .and_then(|c| c.decoder().video())
        .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))?;
    Ok(StartProbe {
        kind: StartKind::Video,
        width: dec.width(),
        height: dec.height(),
    })
}

/// One linked FFmpeg library and its version.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LibVersion {
    pub name: &'static str,
    pub version: String,
}

fn ver(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// The versions of the FFmpeg libraries this binary is linked against.
pub fn library_versions() -> Vec<LibVersion> {
    super::init();
    vec![
        LibVersion {
            name: "libavutil",
            version: ver(av::util::version()),
        },
        LibVersion {
            name: "libavcodec",
            version: ver(av::codec::version()),
        },
        LibVersion {
            name: "libavformat",
            version: ver(av::format::version()),
        },
        LibVersion {
            name: "libswscale",
            version: ver(av::software::scaling::version()),
        },
        LibVersion {
            name: "libswresample",
            version: ver(av::software::resampling::version()),
        },
    ]
}

/// Whether an encoder (by name) is present.
pub fn has_encoder(name: &str) -> bool {
    super::init();
    av::encoder::find_by_name(name).is_some()
}

/// Whether a decoder (by name) is present.
pub fn has_decoder(name: &str) -> bool {
    super::init();
    av::decoder::find_by_name(name).is_some()
}
