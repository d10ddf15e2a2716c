//! `va verify`: the read-back for frame-drift regression tests.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, ErrorKind, Result};
use crate::media::verify::{verify, Expect};
use crate::timeline;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The MP4 (or any video file) to read back.
    pub file: PathBuf,
    /// Expected frame rate (25, 30000/1001, 29.97 …).
    #[arg(long)]
    pub fps: Option<String>,
    /// Expected number of video frames.
    #[arg(long, value_name = "N")]
    pub expect_frames: Option<u64>,
    /// Expected audio programme duration in seconds (within half a sample).
    #[arg(long, value_name = "SECONDS")]
    pub expect_audio: Option<f64>,
    /// Largest A/V delta in frames that passes (default 0.5).
    #[arg(long, value_name = "FRAMES")]
    pub max_av_delta: Option<f64>,
    /// Pass a file without an audio stream (by default that fails).
    #[arg(long)]
    pub allow_no_audio: bool,
    /// The report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Exit code when the file decodes but an expectation fails.
pub const EXPECTATION_FAILED: i32 = 1;

pub fn run(a: VerifyArgs) -> Result<i32> {
    let fps = match &a.fps {
        Some(s) => {
            let r = timeline::parse_fps(s)
                .map_err(|e| Error::new(ErrorKind::Usage, format!("--fps: {e}")))?;
            Some((r.num(), r.den()))
        }
        None => None,
    };
    let report = verify(
        &a.file,
        &Expect {
            fps,
            frames: a.expect_frames,
            audio_seconds: a.expect_audio,
            video_packets_only: false,
            max_av_delta_frames: a.max_av_delta,
            audio_required: !a.allow_no_audio,
        },
    )?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!("file        {}", report.file);
        if let Some(v) = &report.video {
            println!(
                "video       {} {}x{} {} frames, time base {}, rate {}, {} ({:.6} s)",
                v.codec,
                v.width,
                v.height,
                v.frames,
                v.time_base,
                v.frame_rate,
                if v.cfr { "CFR" } else { "not CFR" },
                v.duration_seconds
            );
        }
        if let Some(x) = &report.audio {
            println!(
                "audio       {} {} Hz {} ch, {} samples declared ({:.6} s), {} decoded (+{} decoder padding)",
                x.codec, x.rate, x.channels, x.declared_samples, x.duration_seconds, x.decoded_samples, x.decoder_padding_samples
            );
        }
        if let Some(d) = report.av_delta_frames {
            println!("a/v delta   {d:+.4} frames");
        }
        for f in &report.failures {
            println!("FAIL        {f}");
        }
        println!("{}", if report.ok { "ok" } else { "failed" });
    }
    Ok(if report.ok { 0 } else { EXPECTATION_FAILED })
}
