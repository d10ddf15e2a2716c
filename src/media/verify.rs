//! `va verify`: decode a whole MP4 and report what a frame-drift regression test needs —
//! video frame count, whether every PTS step is equal (CFR), the audio samples the stream
//! declares and the samples its decoder emits, and the A/V delta in frames.

use std::path::Path;

use ffmpeg_next as av;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VideoReport {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub pix_fmt: String,
    pub color_space: String,
    /// The stream's time base, "num/den".
    pub time_base: String,
    /// Average frame rate the container declares, "num/den".
    pub frame_rate: String,
    /// Frames the decoder produced.
    pub frames: u64,
    /// The PTS step when every step is equal, in time-base ticks.
    pub pts_step: Option<i64>,
    pub cfr: bool,
    /// Distinct PTS steps seen (at most a few, for the report).
    pub pts_steps_seen: Vec<i64>,
    /// Declared stream duration in time-base ticks.
    pub duration_ts: i64,
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AudioReport {
    pub codec: String,
    pub rate: u32,
    pub channels: u16,
    pub time_base: String,
    /// Programme samples the stream declares (its duration in 1/rate ticks, edit list applied).
    pub declared_samples: i64,
    /// Samples FFmpeg's decoder emits: the programme plus the last frame's padding, which
    /// FFmpeg 5.1 does not trim.
    pub decoded_samples: u64,
    pub decoder_padding_samples: i64,
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    pub file: String,
    pub video: Option<VideoReport>,
    pub audio: Option<AudioReport>,
    /// (video duration − audio duration) in frames; positive when the picture is longer.
    pub av_delta_frames: Option<f64>,
    pub failures: Vec<String>,
    pub ok: bool,
}

/// What the caller expects; failures are collected, not thrown.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Expected fps as (num, den).
    pub fps: Option<(u64, u64)>,
    pub frames: Option<u64>,
    pub audio_seconds: Option<f64>,
    /// Count video frames from the demuxed packets instead of decoding them (the run's own
    /// read-back: one packet per frame in the MP4s the engine writes). Audio is decoded either way.
    pub video_packets_only: bool,
    /// The largest A/V delta (frames) that passes; `None` means half a frame.
    pub max_av_delta_frames: Option<f64>,
    /// A file without an audio stream fails.
    pub audio_required: bool,
}

fn rat(r: av::Rational) -> String {
    format!("{}/{}", r.numerator(), r.denominator())
}

fn secs(ticks: i64, tb: av::Rational) -> f64 {
    if tb.denominator() == 0 {
        return 0.0;
    }
    ticks as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator())
}

pub fn verify(path: &Path, expect: &Expect) -> Result<VerifyReport> {
    super::init();
    super::check_input_file(path)?;
    let mut input = super::open_input(path).map_err(|e| {
        Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("not a readable media file ({e})"),
        )
    })?;
    // A still picture (PNG, JPEG … read by an image demuxer) is not a video.
    let format_name = input.format().name().to_string();
    let still_image = format_name == "image2" || format_name.ends_with("_pipe");
    let vidx = input
        .streams()
        .best(av::media::Type::Video)
        .filter(|_| !still_image)
        .map(|s| s.index());
    let aidx = input
        .streams()
        .best(av::media::Type::Audio)
        .map(|s| s.index());
    let ctx =
        |idx: usize, input: &av::format::context::Input| -> Result<av::codec::context::Context> {
            let st = input
                .stream(idx)
                .ok_or_else(|| Error::internal("stream vanished"))?;
            av::codec::context::Context::from_parameters(st.parameters()).map_err(|e| {
                Error::at_path(
                    ErrorKind::UnsupportedFormat,
                    path,
                    format!("stream {idx}: {e}"),
                )
            })
        };
    let bad = |e: av::Error| {
        Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("cannot decode ({e})"),
        )
    };
    let mut vdec = match vidx {
        Some(i) => Some(ctx(i, &input)?.decoder().video().map_err(bad)?),
        None => None,
    };
    let mut adec = match aidx {
        Some(i) => Some(ctx(i, &input)?.decoder().audio().map_err(bad)?),
        None => None,
    };
    let mut vpts: Vec<i64> = Vec::new();
    let mut asamples: u64 = 0;
    let mut vframe = av::frame::Video::empty();
    let mut aframe = av::frame::Audio::empty();
    for (st, pkt) in super::packets(&mut input) {
        if Some(st) == vidx {
            if expect.video_packets_only {
                vpts.push(pkt.pts().unwrap_or(i64::MIN));
            } else if let Some(d) = vdec.as_mut() {
                d.send_packet(&pkt).ok();
                while d.receive_frame(&mut vframe).is_ok() {
                    vpts.push(vframe.timestamp().or(vframe.pts()).unwrap_or(i64::MIN));
                }
            }
        } else if Some(st) == aidx {
            if let Some(d) = adec.as_mut() {
                d.send_packet(&pkt).ok();
                while d.receive_frame(&mut aframe).is_ok() {
                    asamples += aframe.samples() as u64;
                }
            }
        }
    }
    if let Some(d) = vdec.as_mut() {
        d.send_eof().ok();
        while d.receive_frame(&mut vframe).is_ok() {
            vpts.push(vframe.timestamp().or(vframe.pts()).unwrap_or(i64::MIN));
        }
    }
    if let Some(d) = adec.as_mut() {
        d.send_eof().ok();
        while d.receive_frame(&mut aframe).is_ok() {
            asamples += aframe.samples() as u64;
        }
    }

    let mut failures = Vec::new();
    let video = match (vidx, vdec.as_ref()) {
        (Some(i), Some(d)) => {
            let st = input
                .stream(i)
                .ok_or_else(|| Error::internal("stream vanished"))?;
            vpts.sort_unstable();
            let mut steps: Vec<i64> = vpts.windows(2).map(|w| w[1] - w[0]).collect();
            steps.sort_unstable();
            steps.dedup();
            let cfr = steps.len() <= 1;
            let tb = st.time_base();
            let frames = vpts.len() as u64;
            let duration_ts = st.duration();
            Some(VideoReport {
                codec: d.codec().map(|c| c.name().to_string()).unwrap_or_default(),
                width: d.width(),
                height: d.height(),
                pix_fmt: format!("{:?}", d.format()).to_lowercase(),
                color_space: format!("{:?}", d.color_space()).to_lowercase(),
                time_base: rat(tb),
                frame_rate: rat(st.avg_frame_rate()),
                frames,
                pts_step: if cfr { steps.first().copied() } else { None },
                cfr,
                pts_steps_seen: steps.iter().take(8).copied().collect(),
                duration_ts,
                duration_seconds: secs(duration_ts, tb),
            })
        }
        _ => None,
    };
    let audio = match (aidx, adec.as_ref()) {
        (Some(i), Some(d)) => {
            let st = input
                .stream(i)
                .ok_or_else(|| Error::internal("stream vanished"))?;
            let tb = st.time_base();
            let rate = d.rate();
            // The declared programme in samples: the stream duration, in 1/rate ticks.
            let declared = if tb.numerator() == 1 && tb.denominator() as u32 == rate {
                st.duration()
            } else {
                (secs(st.duration(), tb) * f64::from(rate)).round() as i64
            };
            Some(AudioReport {
                codec: d.codec().map(|c| c.name().to_string()).unwrap_or_default(),
                rate,
                channels: d.channels(),
                time_base: rat(tb),
                declared_samples: declared,
                decoded_samples: asamples,
                decoder_padding_samples: asamples as i64 - declared,
                duration_seconds: if rate > 0 {
                    declared as f64 / f64::from(rate)
                } else {
                    0.0
                },
            })
        }
        _ => None,
    };

    let av_delta_frames = match (&video, &audio) {
        (Some(v), Some(a)) => {
            let fps = if v.duration_seconds > 0.0 {
                v.frames as f64 / v.duration_seconds
            } else {
                0.0
            };
            Some((v.duration_seconds - a.duration_seconds) * fps)
        }
        _ => None,
    };

    match &video {
        None if still_image => failures.push(format!(
            "no video stream: a still image ({format_name}), not a video"
        )),
        None => failures.push("no video stream".to_string()),
        Some(v) => {
            if !v.cfr {
                failures.push(format!(
                    "video is not constant frame rate: PTS steps {:?}",
                    v.pts_steps_seen
                ));
            }
            if let Some(n) = expect.frames {
                if v.frames != n {
                    failures.push(format!("expected {n} video frames, found {}", v.frames));
                }
            }
            if let Some((num, den)) = expect.fps {
                let declared = v
                    .frame_rate
                    .split_once('/')
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
                let same = declared.is_some_and(|(a, b)| {
                    u128::from(a) * u128::from(den) == u128::from(num) * u128::from(b)
                });
                if !same {
                    failures.push(format!(
                        "expected {num}/{den} fps, file declares {}",
                        v.frame_rate
                    ));
                }
            }
        }
    }
    if audio.is_none() && expect.audio_required && expect.audio_seconds.is_none() {
        failures.push("no audio stream (--allow-no-audio accepts a file without sound)".into());
    }
    if let Some(s) = expect.audio_seconds {
        match &audio {
            None => failures.push("no audio stream".to_string()),
            Some(a) => {
                let half_sample = 0.5 / f64::from(a.rate.max(1));
                if (a.duration_seconds - s).abs() > half_sample + 1e-9 {
                    failures.push(format!(
                        "expected {s} s of audio, stream declares {} s",
                        a.duration_seconds
                    ));
                }
            }
        }
    }
    if let Some(d) = av_delta_frames {
        let max = expect.max_av_delta_frames.unwrap_or(0.5);
        if d.abs() > max + 1e-9 {
            failures.push(format!(
                "picture and sound differ by {d:.3} frames (more than {max} frames)"
            ));
        }
    }
    Ok(VerifyReport {
        file: path.display().to_string(),
        ok: failures.is_empty(),
        video,
        audio,
        av_delta_frames,
        failures,
    })
}
