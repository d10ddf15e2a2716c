//! `finalize`: reads the encoded `.partial` file back, checks it against the timeline, and
//! links it to the final name, which never replaces a file already there. The read-back is
//! the manifest's `verify` (the report of `va verify --json`), kept also when it fails the run.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::media;
use crate::record::manifest::Manifest;
use crate::record::PhaseName;
use crate::timeline::Rounding;

use super::prepare::Prepared;
use super::run::{phase, RunOptions};

/// The `finalize` phase; the partial file is removed when it fails.
pub fn run_phase(
    opts: &RunOptions,
    prepared: &Prepared,
    rounding: Rounding,
    partial: &Path,
    final_path: &Path,
    manifest: &mut Manifest,
) -> Result<()> {
    phase(manifest, opts, PhaseName::Finalize, |m| {
        let result = finalize(partial, final_path, prepared, rounding, m);
        if result.is_err() {
            let _ = std::fs::remove_file(partial);
        }
        result
    })
}

/// The A/V delta the rounding allows: half a frame for `round`, under one frame otherwise.
fn max_delta(rounding: Rounding) -> f64 {
    match rounding {
        Rounding::Round => 0.5,
        Rounding::Floor | Rounding::Ceil => 1.0,
    }
}

/// Reads the encoded file back, checks it against the timeline, and renames it into place.
fn finalize(
    partial: &Path,
    final_path: &Path,
    prepared: &Prepared,
    rounding: Rounding,
    m: &mut Manifest,
) -> Result<()> {
    let fps = prepared.frames.fps;
    let expect = media::verify::Expect {
        fps: Some((fps.num(), fps.den())),
        frames: Some(prepared.frames.target_frames),
        audio_seconds: Some(prepared.audio.duration().to_f64()),
        video_packets_only: true,
        max_av_delta_frames: Some(max_delta(rounding)),
        audio_required: true,
    };
    let report = media::verify::verify(partial, &expect)?;
    let declared = report.audio.as_ref().map(|a| a.declared_samples);
    let ok = report.ok;
    let failures = report.failures.join("; ");
    let verify = m.verify.insert(report);
    if declared != i64::try_from(prepared.audio.total_samples()).ok() {
        return Err(Error::new(
            ErrorKind::FfmpegFailed,
            format!(
                "read-back: audio declares {declared:?} samples, the programme has {}",
                prepared.audio.total_samples()
            ),
        ));
    }
    if !ok {
        return Err(Error::new(
            ErrorKind::FfmpegFailed,
            format!("read-back failed: {failures}"),
        ));
    }
    // A hard link never replaces an existing file: a final that appeared meanwhile (another
    // run in the same workdir) is left untouched.
    std::fs::hard_link(partial, final_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::at_path(
            ErrorKind::OutputExists,
            final_path,
            "appeared during the run; left untouched",
        ),
        _ => Error::at_path(ErrorKind::Internal, final_path, e),
    })?;
    let _ = std::fs::remove_file(partial);
    // The read-back was of the temporary file; the record names the file it now is.
    verify.file = final_path.display().to_string();
    m.final_path = Some(final_path.to_path_buf());
    Ok(())
}
