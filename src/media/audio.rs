//! Audio: decoding any libavformat input to interleaved f32, counting programme samples by
//! decoding (container durations lie), and writing the padded programme to a WAV file.
//!
//! Decoded frames are converted here (no swresample for plain format changes, so counts stay
//! exact); more than two channels are downmixed to stereo. Rates AAC cannot carry are
//! resampled to the nearest rate it can.

use std::path::Path;

use ffmpeg_next as av;

use crate::error::{Context, Error, ErrorKind, Result};

/// Sample rates the AAC encoder accepts (MPEG-4 sampling frequency table).
pub const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// The rate the programme is encoded at: the source rate when AAC takes it, else the nearest
/// AAC rate at or above it (capped at 96 kHz).
pub fn output_rate(source_rate: u32) -> u32 {
    if AAC_RATES.contains(&source_rate) {
        return source_rate;
    }
    AAC_RATES
        .iter()
        .rev()
        .copied()
        .find(|&r| r >= source_rate)
        .unwrap_or(96000)
}

/// What the audio stream says about itself before decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    pub codec: String,
    pub rate: u32,
    /// Channels in the source.
    pub channels: u16,
    /// Channels we deliver: the source's, downmixed to 2 when it has more.
    pub out_channels: u16,
    /// The container's claim, for the record only.
    pub container_duration_seconds: Option<f64>,
    /// The programme length the container states exactly (WAV/AIFF/FLAC headers, an MP4 edit
    /// list, Ogg's last granule), in samples at `rate`; `None` where it only estimates.
    pub declared_samples: Option<u64>,
}

/// Containers whose stated stream length is exact (not estimated from a bit rate).
const EXACT_LENGTH_FORMATS: [&str; 6] = ["wav", "w64", "aiff", "flac", "ogg", "mov"];

/// Containers whose decoders keep the encoder's end padding although the container states the
/// programme's end (FFmpeg 5.1 trims it for MP3 and Opus itself, not for AAC in MP4 or Vorbis):
/// decoding stops at the stated length there.
const CUT_AT_DECLARED_FORMATS: [&str; 2] = ["ogg", "mov"];

/// Corrupt packets are decoded past with a warning (and counted in the manifest) up to this
/// share of the stream's packets; beyond it the file is refused.
pub const MAX_CORRUPT_SHARE: f64 = 0.05;

/// Totals of a full decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeStats {
    /// Samples per channel delivered to the sink.
    pub samples: u64,
    /// Packets the decoder refused (decoded past with a warning).
    pub corrupt_packets: u64,
    /// Silence appended to reach the container's exactly stated length (at most 0.1 s).
    pub filled_samples: u64,
}

/// An opened audio input: the first (best) audio stream of a file.
pub struct AudioInput {
    path: std::path::PathBuf,
    input: super::FileInput,
    stream_index: usize,
    decoder: av::decoder::Audio,
    info: AudioInfo,
    cut_at_declared: bool,
}

impl AudioInput {
    pub fn open(path: &Path) -> Result<AudioInput> {
        AudioInput::open_file(path, super::open_input_file_checked(path)?)
    }

    /// [`AudioInput::open`] over `file`, the input at `path` already opened (and checked by
    /// [`super::open_input_file_checked`]): nothing opens the path again.
    pub fn open_file(path: &Path, file: std::fs::File) -> Result<AudioInput> {
        super::init();
        let wav_sizes = wav_data_sizes(&file);
        let input = super::open_input_file(file, path).map_err(|e| {
            Error::at_path(
                ErrorKind::UnsupportedFormat,
                path,
                format!("not a readable media file ({e})"),
            )
        })?;
        let stream = input
            .streams()
            .best(av::media::Type::Audio)
            .ok_or_else(|| {
                Error::at_path(ErrorKind::UnsupportedFormat, path, "has no audio stream")
            })?;
        let stream_index = stream.index();
        let tb = stream.time_base();
        let format_name = input.format().name().to_string();
        // A demuxer's name lists the formats it reads ("mov,mp4,m4a,3gp,3g2,mj2").
        let one_of = |list: &[&str]| format_name.split(',').any(|n| list.contains(&n));
        let exact_length = one_of(&EXACT_LENGTH_FORMATS);
        if format_name == "wav" {
            if let Some((declared, present)) = wav_sizes {
                // 0xFFFFFFFF: a streamed WAV that never learnt its size.
                if declared != u64::from(u32::MAX) && declared > present + 1 {
                    return Err(Error::at_path(
                        ErrorKind::UnsupportedFormat,
                        path,
                        format!("is truncated: its header declares {declared} bytes of samples, the file holds {present}"),
                    ));
                }
            }
        }
        let cut_at_declared = one_of(&CUT_AT_DECLARED_FORMATS);
        let container_duration_seconds =
            (stream.duration() > 0 && tb.denominator() != 0).then(|| {
                stream.duration() as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator())
            });
        let ctx = av::codec::context::Context::from_parameters(stream.parameters())
            .at(ErrorKind::UnsupportedFormat, path)?;
        let decoder = ctx.decoder().audio().map_err(|e| {
            Error::at_path(
                ErrorKind::UnsupportedFormat,
                path,
                format!("no decoder for its audio ({e})"),
            )
        })?;
        let rate = decoder.rate();
        let channels = decoder.channels();
        if rate == 0 || channels == 0 {
            return Err(Error::at_path(
                ErrorKind::UnsupportedFormat,
                path,
                format!("audio stream has rate {rate} Hz and {channels} channels"),
            ));
        }
        if !(1000..=768_000).contains(&rate) {
            return Err(Error::at_path(
                ErrorKind::UnsupportedFormat,
                path,
                format!("audio sample rate {rate} Hz is out of range"),
            ));
        }
        let codec = decoder
            .codec()
            .map(|c| c.name().to_string())
            .unwrap_or_default();
        let info = AudioInfo {
            codec,
            rate,
            channels,
            out_channels: channels.min(2),
            container_duration_seconds,
            declared_samples: (exact_length && stream.duration() > 0 && tb.denominator() > 0).then(
                || {
                    let n = i128::from(stream.duration())
                        * i128::from(tb.numerator())
                        * i128::from(rate);
                    let d = i128::from(tb.denominator());
                    u64::try_from((n + d / 2) / d).unwrap_or(0)
                },
            ),
        };
        Ok(AudioInput {
            path: path.to_path_buf(),
            input,
            stream_index,
            decoder,
            info,
            cut_at_declared,
        })
    }

    pub fn info(&self) -> &AudioInfo {
        &self.info
    }

    /// Decodes the whole stream, handing interleaved f32 chunks (`out_channels` wide) to `sink`.
    ///
    /// The programme is what the decoder delivers after the container's priming skip; where the
    /// container states an exact end ([`CUT_AT_DECLARED_FORMATS`]) decoding stops there. A file
    /// that yields clearly less than its header states is truncated and refused; corrupt
    /// packets are skipped with a warning up to [`MAX_CORRUPT_SHARE`] of the stream.
    pub fn decode(mut self, mut sink: impl FnMut(&[f32]) -> Result<()>) -> Result<DecodeStats> {
        let mut stats = DecodeStats::default();
        let mut frame = av::frame::Audio::empty();
        let mut buf: Vec<f32> = Vec::new();
        let out_ch = usize::from(self.info.out_channels);
        let path = self.path.clone();
        let limit = self
            .info
            .declared_samples
            .filter(|_| self.cut_at_declared)
            .unwrap_or(u64::MAX);
        let mut drain = |decoder: &mut av::decoder::Audio,
                         stats: &mut DecodeStats,
                         buf: &mut Vec<f32>|
         -> Result<()> {
            while decoder.receive_frame(&mut frame).is_ok() {
                buf.clear();
                to_interleaved_f32(&frame, out_ch, buf)
                    .map_err(|m| Error::at_path(ErrorKind::UnsupportedFormat, &path, m))?;
                let room = limit.saturating_sub(stats.samples);
                let take = ((buf.len() / out_ch) as u64).min(room) as usize;
                if take > 0 {
                    stats.samples += take as u64;
                    sink(&buf[..take * out_ch])?;
                }
            }
            Ok(())
        };
        let mut packets: u64 = 0;
        for (stream, packet) in super::packets(&mut self.input) {
            if stream != self.stream_index {
                continue;
            }
            packets += 1;
            match self.decoder.send_packet(&packet) {
                Ok(()) => {}
                Err(av::Error::Other { errno }) if errno == av::util::error::EAGAIN => {}
                Err(e) => {
                    stats.corrupt_packets += 1;
                    tracing::warn!(stage = "prepare", path = %self.path.display(), "skipped a corrupt audio packet: {e}");
                    continue;
                }
            }
            drain(&mut self.decoder, &mut stats, &mut buf)?;
        }
        self.decoder.send_eof().ok();
        drain(&mut self.decoder, &mut stats, &mut buf)?;
        if stats.corrupt_packets > 0
            && stats.corrupt_packets as f64 > MAX_CORRUPT_SHARE * packets as f64
        {
            return Err(Error::at_path(
                ErrorKind::UnsupportedFormat,
                &self.path,
                format!(
                    "{} of its {packets} audio packets are corrupt (more than {}% is refused)",
                    stats.corrupt_packets,
                    MAX_CORRUPT_SHARE * 100.0
                ),
            ));
        }
        if let Some(declared) = self.info.declared_samples {
            // A tenth of a second of slack: lossy codecs may end a frame early.
            if stats.samples + u64::from(self.info.rate / 10) < declared {
                let rate = f64::from(self.info.rate);
                return Err(Error::at_path(
                    ErrorKind::UnsupportedFormat,
                    &self.path,
                    format!(
                        "is truncated: its header declares {:.3} s of audio, only {:.3} s decode",
                        declared as f64 / rate,
                        stats.samples as f64 / rate
                    ),
                ));
            }
            // The container states the programme's length exactly but the decoder delivered a
            // few samples less (FFmpeg drops Vorbis' first half block): the programme keeps
            // its stated length, the missing samples as silence at the end.
            if self.info.codec == "vorbis" && self.cut_at_declared && stats.samples < declared {
                let missing = declared - stats.samples;
                sink(&vec![0.0; missing as usize * out_ch])?;
                stats.samples = declared;
                stats.filled_samples = missing;
            }
        }
        Ok(stats)
    }
}

/// For a RIFF/WAVE file: the size its `data` chunk declares and the bytes the file really has
/// after the chunk header (FFmpeg quietly reads a cut WAV to its end).
fn wav_data_sizes(mut f: &std::fs::File) -> Option<(u64, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(0)).ok()?;
    let len = f.metadata().ok()?.len();
    let mut head = [0u8; 12];
    f.read_exact(&mut head).ok()?;
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12u64;
    for _ in 0..64 {
        let mut chunk = [0u8; 8];
        f.read_exact(&mut chunk).ok()?;
        let size = u64::from(u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]));
        pos += 8;
        if &chunk[0..4] == b"data" {
            return Some((size, len.saturating_sub(pos)));
        }
        pos += size + (size & 1);
        f.seek(SeekFrom::Start(pos)).ok()?;
    }
    None
}

/// Converts one decoded frame to interleaved f32 with `out_ch` channels.
fn to_interleaved_f32(
    frame: &av::frame::Audio,
    out_ch: usize,
    out: &mut Vec<f32>,
) -> std::result::Result<(), String> {
    use av::format::sample::Sample;
    let n = frame.samples();
    let ch = usize::from(frame.channels()).max(1);
    let planar = frame.is_planar();
    let fmt = frame.format();
    if matches!(fmt, Sample::None) {
        return Err("decoder produced no sample format".into());
    }
    // Bounds: a frame's planes hold at least n samples per channel.
    let bytes = fmt.bytes();
    let need = if planar { n * bytes } else { n * ch * bytes };
    let planes: Vec<&[u8]> = (0..if planar { ch } else { 1 })
        .map(|p| frame.data(p))
        .collect();
    if planes.iter().any(|d| d.len() < need) {
        return Err("decoder produced a short audio frame".into());
    }
    // The format is matched once per frame, not per sample: this runs over every sample of
    // the programme before the encode can start.
    match fmt {
        Sample::U8(_) => interleave_as(&planes, planar, ch, n, out_ch, out, |b: [u8; 1]| {
            (f32::from(b[0]) - 128.0) / 128.0
        }),
        Sample::I16(_) => interleave_as(&planes, planar, ch, n, out_ch, out, |b| {
            f32::from(i16::from_ne_bytes(b)) / 32768.0
        }),
        Sample::I32(_) => interleave_as(&planes, planar, ch, n, out_ch, out, |b| {
            (f64::from(i32::from_ne_bytes(b)) / 2_147_483_648.0) as f32
        }),
        Sample::I64(_) => interleave_as(&planes, planar, ch, n, out_ch, out, |b| {
            (i64::from_ne_bytes(b) as f64 / 9_223_372_036_854_775_808.0) as f32
        }),
        Sample::F32(_) => interleave_as(&planes, planar, ch, n, out_ch, out, f32::from_ne_bytes),
        Sample::F64(_) => interleave_as(&planes, planar, ch, n, out_ch, out, |b| {
            f64::from_ne_bytes(b) as f32
        }),
        Sample::None => {}
    }
    Ok(())
}

/// Appends `n` samples of `ch` channels, stored as `B`-byte values that `value` converts, to
/// `out` as interleaved f32 of `out_ch` channels (the same channels, a mono mix, or a stereo
/// downmix). `planes`: one per channel when `planar`, else the one interleaved plane; each
/// holds at least `n` samples (checked by the caller).
fn interleave_as<const B: usize>(
    planes: &[&[u8]],
    planar: bool,
    ch: usize,
    n: usize,
    out_ch: usize,
    out: &mut Vec<f32>,
    value: impl Fn([u8; B]) -> f32,
) {
    let read = |c: usize, s: usize| -> f32 {
        let (plane, idx) = if planar { (c, s) } else { (0, s * ch + c) };
        let mut b = [0u8; B];
        b.copy_from_slice(&planes[plane][idx * B..idx * B + B]);
        value(b)
    };
    out.reserve(n * out_ch);
    if ch == out_ch && !planar {
        out.extend(
            planes[0][..n * ch * B]
                .chunks_exact(B)
                .map(|b| value(b.try_into().unwrap_or([0; B]))),
        );
        return;
    }
    for s in 0..n {
        if ch == out_ch {
            for c in 0..ch {
                out.push(read(c, s));
            }
        } else if out_ch == 1 {
            let sum: f32 = (0..ch).map(|c| read(c, s)).sum();
            out.push(sum / ch as f32);
        } else {
            let (l, r) = downmix_stereo(ch, |c| read(c, s));
            out.push(l);
            out.push(r);
        }
    }
}

/// Downmixes `ch` channels in FFmpeg's default order (FL FR FC LFE BL BR SL SR …) to stereo
/// with the ITU-R BS.775 coefficients (centre and surrounds at -3 dB, LFE dropped),
/// normalised so a full-scale signal cannot clip.
fn downmix_stereo(ch: usize, read: impl Fn(usize) -> f32) -> (f32, f32) {
    const K: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let (mut l, mut r, mut norm) = (read(0), if ch > 1 { read(1) } else { read(0) }, 1.0f32);
    if ch > 2 {
        let c = read(2) * K;
        l += c;
        r += c;
        norm += K;
    }
    let mut i = 4;
    while i + 1 < ch {
        l += read(i) * K;
        r += read(i + 1) * K;
        norm += K;
        i += 2;
    }
    (l / norm, r / norm)
}

/// The result of writing the padded programme.
#[derive(Debug, Clone, PartialEq)]
pub struct PaddedAudio {
    pub info: AudioInfo,
    /// Programme samples per channel (before padding), at `rate`.
    pub input_samples: u64,
    /// The rate of the padded WAV (the delivery rate the job asked for).
    pub rate: u32,
    pub corrupt_packets: u64,
}

/// Decodes `src`, resamples it (once) to `out_rate(source rate)` where that differs, pads it
/// with `pre(rate)` and `post(rate)` samples of digital silence and writes the programme as
/// 32-bit float WAV to `dst`. The rate-dependent parts are functions because the source rate
/// is only known after opening the input.
pub fn write_padded_wav(
    src: &Path,
    dst: &Path,
    out_rate: impl Fn(u32) -> u32,
    pre: impl Fn(u32) -> u64,
    post: impl Fn(u32) -> u64,
) -> Result<PaddedAudio> {
    let input = AudioInput::open(src)?;
    let info = input.info().clone();
    let rate = out_rate(info.rate);
    let ch = info.out_channels;
    let spec = hound::WavSpec {
        channels: ch,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(dst, spec).at(ErrorKind::Internal, dst)?;
    let silence = |w: &mut hound::WavWriter<_>, n: u64| -> Result<()> {
        for _ in 0..n * u64::from(ch) {
            w.write_sample(0.0f32).at(ErrorKind::Internal, dst)?;
        }
        Ok(())
    };
    silence(&mut writer, pre(rate))?;
    let mut resampler = (rate != info.rate)
        .then(|| super::resample::Resampler::new(info.rate, rate, usize::from(ch)));
    let mut written: u64 = 0;
    let mut put = |w: &mut hound::WavWriter<_>, chunk: &[f32]| -> Result<()> {
        for &s in chunk {
            w.write_sample(s).at(ErrorKind::Internal, dst)?;
        }
        written += (chunk.len() / usize::from(ch)) as u64;
        Ok(())
    };
    let stats = input.decode(|chunk| match resampler.as_mut() {
        Some(r) => {
            let out = r.process(chunk);
            put(&mut writer, &out)
        }
        None => put(&mut writer, chunk),
    })?;
    if let Some(mut r) = resampler.take() {
        let tail = r.finish();
        put(&mut writer, &tail)?;
    }
    if stats.samples == 0 {
        return Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            src,
            "contains 0 samples of audio",
        ));
    }
    silence(&mut writer, post(rate))?;
    writer.finalize().at(ErrorKind::Internal, dst)?;
    Ok(PaddedAudio {
        info,
        input_samples: written,
        rate,
        corrupt_packets: stats.corrupt_packets,
    })
}
