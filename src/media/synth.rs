//! Writes audio files in any format the linked FFmpeg can encode: the test suite builds its
//! input matrix (WAV of every sample width, MP3 with and without a Xing header, AAC/M4A, Opus,
//! Vorbis, FLAC, multichannel, 8–96 kHz, a delayed start) with the engine itself instead of
//! shipping files or running a CLI.

use std::path::Path;

use ffmpeg_next as av;

use crate::error::{Error, ErrorKind, Result};

/// What to write: interleaved `f32` samples (`channels` wide) through `codec` into the container
/// the file name's extension picks.
#[derive(Debug, Clone)]
pub struct AudioSpec<'a> {
    /// Encoder name as FFmpeg knows it (`pcm_s16le`, `libmp3lame`, `aac`, `libopus`, `flac`…).
    pub codec: &'a str,
    /// The encoder's sample format; `None` takes the encoder's first.
    pub sample_format: Option<av::format::Sample>,
    pub rate: u32,
    pub channels: u16,
    /// Bits per second for lossy encoders (0: the encoder's default).
    pub bit_rate: usize,
    /// Muxer options, e.g. `("write_xing", "0")` for an MP3 without a Xing header.
    pub muxer_options: &'a [(&'a str, &'a str)],
    /// Timestamp of the first sample, in samples: a stream that starts late.
    pub start_samples: i64,
}

impl AudioSpec<'_> {
    pub fn new(codec: &str, rate: u32, channels: u16) -> AudioSpec<'_> {
        AudioSpec {
            codec,
            sample_format: None,
            rate,
            channels,
            bit_rate: 0,
            muxer_options: &[],
            start_samples: 0,
        }
    }
}

fn failed<'a>(path: &'a Path, what: &str) -> impl Fn(av::Error) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::at_path(ErrorKind::FfmpegFailed, path, format!("{what}: {e}"))
}

/// Encodes `samples` (interleaved, `spec.channels` wide, nominally in −1..1) to `path`.
pub fn write_audio(path: &Path, spec: &AudioSpec, samples: &[f32]) -> Result<()> {
    super::init();
    let ch = usize::from(spec.channels.max(1));
    let codec = av::encoder::find_by_name(spec.codec).ok_or_else(|| {
        Error::new(
            ErrorKind::FfmpegFailed,
            format!("the linked FFmpeg has no {} encoder", spec.codec),
        )
    })?;
    let format = match spec.sample_format {
        Some(f) => f,
        None => codec
            .audio()
            .ok()
            .and_then(|a| a.formats().and_then(|mut f| f.next()))
            .unwrap_or(av::format::Sample::F32(av::format::sample::Type::Planar)),
    };
    let mut octx = super::open_output(path, None).map_err(failed(path, "choosing a container"))?;
    let global_header = octx
        .format()
        .flags()
        .contains(av::format::Flags::GLOBAL_HEADER);
    let layout = av::ChannelLayout::default(i32::from(spec.channels));
    let tb = av::Rational::new(1, spec.rate as i32);
    let mut enc = av::codec::context::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(failed(path, "encoder context"))?;
    enc.set_rate(spec.rate as i32);
    enc.set_channel_layout(layout);
    enc.set_channels(i32::from(spec.channels));
    enc.set_format(format);
    enc.set_time_base(tb);
    if spec.bit_rate > 0 {
        enc.set_bit_rate(spec.bit_rate);
    }
    if global_header {
        enc.set_flags(av::codec::Flags::GLOBAL_HEADER);
    }
    let mut enc = enc
        .open_as(codec)
        .map_err(failed(path, "opening the encoder"))?;
    {
        let mut ost = octx
            .add_stream(codec)
            .map_err(failed(path, "adding the stream"))?;
        ost.set_parameters(&enc);
        ost.set_time_base(tb);
    }
    let mut mopts = av::Dictionary::new();
    for (k, v) in spec.muxer_options {
        mopts.set(k, v);
    }
    octx.write_header_with(mopts)
        .map_err(failed(path, "writing the header"))?;
    let ost_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(tb);
    let frame_size = match enc.frame_size() as usize {
        0 => 1024,
        n => n,
    };
    let write_packets = |enc: &mut av::encoder::Audio, octx: &mut av::format::context::Output| {
        let mut pkt = av::Packet::empty();
        while enc.receive_packet(&mut pkt).is_ok() {
            pkt.set_stream(0);
            pkt.rescale_ts(tb, ost_tb);
            pkt.write_interleaved(octx)
                .map_err(failed(path, "writing a packet"))?;
        }
        Ok::<(), Error>(())
    };
    let total = samples.len() / ch;
    let mut pos = 0usize;
    while pos < total {
        let n = frame_size.min(total - pos);
        let mut frame = av::frame::Audio::new(format, n, layout);
        frame.set_rate(spec.rate);
        fill_frame(&mut frame, format, &samples[pos * ch..(pos + n) * ch], ch);
        frame.set_pts(Some(spec.start_samples + pos as i64));
        enc.send_frame(&frame).map_err(failed(path, "encoding"))?;
        write_packets(&mut enc, &mut octx)?;
        pos += n;
    }
    enc.send_eof()
        .map_err(failed(path, "flushing the encoder"))?;
    write_packets(&mut enc, &mut octx)?;
    octx.write_trailer()
        .map_err(failed(path, "writing the trailer"))?;
    Ok(())
}

/// Converts interleaved `f32` into the frame's sample format (packed or planar).
fn fill_frame(frame: &mut av::frame::Audio, format: av::format::Sample, src: &[f32], ch: usize) {
    use av::format::Sample as S;
    let n = src.len() / ch;
    let planar = format.is_planar();
    // (plane, index within the plane) of sample i of channel c.
    let at = |i: usize, c: usize| if planar { (c, i) } else { (0, i * ch + c) };
    let clip = |v: f32| f64::from(v.clamp(-1.0, 1.0));
    let width = format.bytes();
    let mut put = |i: usize, c: usize, bytes: &[u8]| {
        let (p, k) = at(i, c);
        frame.data_mut(p)[k * width..(k + 1) * width].copy_from_slice(bytes);
    };
    for i in 0..n {
        for c in 0..ch {
            let v = clip(src[i * ch + c]);
            match format {
                S::U8(_) => put(i, c, &[(v * 127.0 + 128.0).round() as u8]),
                S::I16(_) => put(i, c, &((v * 32767.0).round() as i16).to_ne_bytes()),
                S::I32(_) => put(i, c, &((v * 2_147_483_647.0).round() as i32).to_ne_bytes()),
                S::I64(_) => put(i, c, &((v * 9.2e18).round() as i64).to_ne_bytes()),
                S::F32(_) => put(i, c, &(v as f32).to_ne_bytes()),
                S::F64(_) => put(i, c, &v.to_ne_bytes()),
                S::None => {}
            }
        }
    }
}

/// A test signal: a 220 Hz tone with a little per-channel offset, `n` samples × `ch`.
pub fn tone(n: usize, ch: usize, rate: u32) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * ch);
    for i in 0..n {
        for c in 0..ch {
            let t = i as f64 / f64::from(rate);
            let f = 220.0 * (1.0 + c as f64 * 0.25);
            out.push((0.4 * (2.0 * std::f64::consts::PI * f * t).sin()) as f32);
        }
    }
    out
}
