//! One-pass encode of the final MP4: CFR H.264 (libx264, yuv420p, BT.709 tagged) plus AAC,
//! muxed with `+faststart`.
//!
//! Four threads: the caller's producer renders frames in index order (bounded channel), a
//! video thread drives x264, an audio thread encodes the padded WAV to AAC concurrently, and
//! this thread muxes: it takes the packets in decode-time order, waiting for the stream that is
//! behind, so the file's bytes depend on the packets only, never on thread timing (two runs of
//! a job give the same file), and neither encoder gets far ahead of the other. Video PTS = frame index in time base 1/fps, so
//! the output is constant-frame-rate by construction. The movie timescale is the least common
//! multiple of the audio rate and the fps numerator, so both tracks' edit lists and durations
//! are exact (FFmpeg's default of 1000 rounds them to milliseconds).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use ffmpeg_next as av;

use super::picture::Yuv420;
use super::threads;
use crate::error::{Context, Error, ErrorKind, Result};

/// Renders output frame `index` into `out` (the frame's size is the render size).
pub trait FrameProducer: Send {
    fn render(&mut self, index: u64, out: &mut Yuv420) -> Result<()>;
}

/// Video settings of the final file.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoSettings {
    pub width: u32,
    pub height: u32,
    pub fps_num: u32,
    pub fps_den: u32,
    pub frames: u64,
    pub preset: String,
    pub crf: u8,
    /// 0 = x264's automatic choice.
    pub threads: u32,
}

/// Audio settings: the padded programme WAV and the AAC bit rate.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioSettings {
    pub wav: PathBuf,
    pub bitrate: u32,
}

/// What the encode did, with stage timings for `va bench`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EncodeReport {
    pub video_frames: u64,
    pub audio_samples: u64,
    pub audio_rate: u32,
    pub movie_timescale: u64,
    pub bytes: u64,
    pub wall_seconds: f64,
    pub render_seconds: f64,
    pub video_encode_seconds: f64,
    pub audio_encode_seconds: f64,
    /// CPU time of every thread that took part (render, decode workers, x264's pool, audio,
    /// the muxer), largest first.
    pub threads: Vec<threads::ThreadBusy>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A movie timescale in which both `1/rate` and `fps_den/fps_num` are whole ticks.
pub fn movie_timescale(rate: u32, fps_num: u32) -> u64 {
    let (a, b) = (u64::from(rate), u64::from(fps_num));
    a / gcd(a, b) * b
}

fn ff(what: &str) -> impl Fn(av::Error) -> Error + '_ {
    move |e| Error::new(ErrorKind::FfmpegFailed, format!("{what}: {e}"))
}

/// Encodes `video.frames` frames from `producer` and the WAV programme into `out`.
pub fn encode_mp4(
    out: &Path,
    video: &VideoSettings,
    producer: Box<dyn FrameProducer>,
    audio: &AudioSettings,
    progress: &dyn crate::progress::Progress,
) -> Result<EncodeReport> {
    super::init();
    let started = Instant::now();
    let reader = hound::WavReader::open(&audio.wav).at(ErrorKind::FfmpegFailed, &audio.wav)?;
    let spec = reader.spec();
    let rate = spec.sample_rate;
    let channels = spec.channels;
    if spec.sample_format != hound::SampleFormat::Float
        || spec.bits_per_sample != 32
        || !(1..=2).contains(&channels)
    {
        return Err(Error::at_path(
            ErrorKind::FfmpegFailed,
            &audio.wav,
            "expected the engine's 32-bit float mono/stereo WAV",
        ));
    }
    let mut octx = super::open_output(out, Some("mp4"))
        .map_err(|e| Error::at_path(ErrorKind::FfmpegFailed, out, e))?;
    let global_header = octx
        .format()
        .flags()
        .contains(av::format::Flags::GLOBAL_HEADER);

    // Video encoder.
    let x264 = av::encoder::find_by_name("libx264").ok_or_else(|| {
        Error::new(
            ErrorKind::FfmpegFailed,
            "the linked FFmpeg has no libx264 encoder",
        )
        .with_hint("run va doctor")
    })?;
    let vtb = av::Rational::new(video.fps_den as i32, video.fps_num as i32);
    let mut venc = av::codec::context::Context::new_with_codec(x264)
        .encoder()
        .video()
        .map_err(ff("libx264 context"))?;
    venc.set_width(video.width);
    venc.set_height(video.height);
    venc.set_format(av::format::Pixel::YUV420P);
    venc.set_time_base(vtb);
    venc.set_frame_rate(Some(av::Rational::new(
        video.fps_num as i32,
        video.fps_den as i32,
    )));
    venc.set_colorspace(av::color::Space::BT709);
    venc.set_color_range(av::color::Range::MPEG);
    venc.set_color_primaries(av::color::Primaries::BT709);
    venc.set_color_transfer_characteristic(av::color::TransferCharacteristic::BT709);
    // `set_flags` replaces the context's flags, and libx264's defaults include closed GOPs
    // (`+cgop`), so they are set again: every keyframe is an IDR that no later frame reaches
    // across, as the ffmpeg CLI writes it, and a player can start at any keyframe.
    venc.set_flags(if global_header {
        av::codec::Flags::GLOBAL_HEADER | av::codec::Flags::CLOSED_GOP
    } else {
        av::codec::Flags::CLOSED_GOP
    });
    let mut vopts = av::Dictionary::new();
    vopts.set("preset", &video.preset);
    vopts.set("crf", &video.crf.to_string());
    vopts.set("threads", &video.threads.to_string());
    let before = threads::thread_ids();
    let venc = venc.open_with(vopts).map_err(ff("opening libx264"))?;
    // x264's pool (started by the open) named, for profiles and the report.
    for tid in threads::thread_ids() {
        if before.binary_search(&tid).is_err() {
            threads::name_thread(tid, "x264");
        }
    }
    {
        let mut ost = octx
            .add_stream(x264)
            .map_err(ff("adding the video stream"))?;
        ost.set_parameters(&venc);
        ost.set_time_base(vtb);
        ost.set_avg_frame_rate(av::Rational::new(
            video.fps_num as i32,
            video.fps_den as i32,
        ));
    }

    // Audio encoder.
    let aac = av::encoder::find(av::codec::Id::AAC).ok_or_else(|| {
        Error::new(
            ErrorKind::FfmpegFailed,
            "the linked FFmpeg has no AAC encoder",
        )
        .with_hint("run va doctor")
    })?;
    let atb = av::Rational::new(1, rate as i32);
    let layout = if channels == 1 {
        av::ChannelLayout::MONO
    } else {
        av::ChannelLayout::STEREO
    };
    let mut aenc = av::codec::context::Context::new_with_codec(aac)
        .encoder()
        .audio()
        .map_err(ff("AAC context"))?;
    aenc.set_rate(rate as i32);
    aenc.set_channel_layout(layout);
    aenc.set_channels(i32::from(channels));
    aenc.set_format(av::format::Sample::F32(av::format::sample::Type::Planar));
    // AAC carries at most 6144 bits per channel per 1024-sample frame.
    let max_bitrate = 6 * u64::from(rate) * u64::from(channels);
    aenc.set_bit_rate(u64::from(audio.bitrate).min(max_bitrate) as usize);
    aenc.set_time_base(atb);
    if global_header {
        aenc.set_flags(av::codec::Flags::GLOBAL_HEADER);
    }
    let aenc = aenc.open_as(aac).map_err(ff("opening the AAC encoder"))?;
    let frame_size = (aenc.frame_size() as usize).max(1);
    {
        let mut ost = octx
            .add_stream(aac)
            .map_err(ff("adding the audio stream"))?;
        ost.set_parameters(&aenc);
        ost.set_time_base(atb);
    }

    let timescale = movie_timescale(rate, video.fps_num);
    let mut mopts = av::Dictionary::new();
    mopts.set("movflags", "+faststart");
    mopts.set("movie_timescale", &timescale.to_string());
    octx.write_header_with(mopts)
        .map_err(ff("writing the MP4 header"))?;
    let v_ost_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(vtb);
    let a_ost_tb = octx.stream(1).map(|s| s.time_base()).unwrap_or(atb);

    let mut report = EncodeReport {
        audio_rate: rate,
        movie_timescale: timescale,
        ..Default::default()
    };
    let frames = video.frames;
    let (w, h) = (video.width, video.height);
    // Both tracks count: the file is done when the last audio packet is muxed and the
    // trailer written, not with the last video frame.
    let done = std::cell::Cell::new(crate::progress::EncodeProgress {
        frames_total: frames,
        samples_total: u64::from(reader.duration()),
        ..Default::default()
    });

    // Set when the producer fails (a bad frame, a stop request): the muxer then gives up at
    // once instead of muxing the rest of the audio into a file that will be removed.
    let producer_failed = &std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|scope| -> Result<()> {
        // Frames in index order; the bound (about 7 MB at 854x480) keeps memory flat while
        // absorbing scheduling hiccups between the render thread and the encoder threads.
        let (ftx, frx) = mpsc::sync_channel::<Yuv420>(12);
        let (pool_tx, pool_rx) = mpsc::channel::<Yuv420>();
        let render = std::thread::Builder::new()
            .name("render".into())
            .spawn_scoped(scope, move || -> Result<(f64, Snapshot)> {
                let mut producer = producer;
                let mut busy = 0.0;
                for i in 0..frames {
                    let mut buf = pool_rx.try_recv().unwrap_or_else(|_| Yuv420::new(w, h));
                    let t = Instant::now();
                    producer.render(i, &mut buf).inspect_err(|_| {
                        producer_failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    })?;
                    busy += t.elapsed().as_secs_f64();
                    if ftx.send(buf).is_err() {
                        break; // the encoder stopped; its error is reported there
                    }
                }
                // The producer's own threads (decode workers) are still alive here.
                Ok((busy, threads::snapshot()))
            })
            .ctx(ErrorKind::Internal, "starting the render thread")?;

        let (vtx, vrx) = mpsc::sync_channel::<av::Packet>(PACKETS_AHEAD);
        let video_thread = std::thread::Builder::new()
            .name("video".into())
            .spawn_scoped(scope, move || -> Result<(f64, Snapshot)> {
                let started = Instant::now();
                let mut venc = venc;
                // Sends what x264 has ready; false when the muxer has stopped.
                let drain = |venc: &mut av::encoder::Video| -> bool {
                    let mut pkt = av::Packet::empty();
                    while venc.receive_packet(&mut pkt).is_ok() {
                        let p = std::mem::replace(&mut pkt, av::Packet::empty());
                        if vtx.send(p).is_err() {
                            return false;
                        }
                    }
                    true
                };
                let mut frame = av::frame::Video::new(av::format::Pixel::YUV420P, w, h);
                for i in 0..frames {
                    let Ok(buf) = frx.recv() else { break };
                    // The encoder may still refer to the last picture: reused only when not.
                    if !super::ffi::make_frame_writable(&mut frame) {
                        frame = av::frame::Video::new(av::format::Pixel::YUV420P, w, h);
                    }
                    copy_into(&buf, &mut frame);
                    let _ = pool_tx.send(buf);
                    frame.set_pts(Some(i as i64));
                    venc.send_frame(&frame)
                        .map_err(ff("encoding a video frame"))?;
                    if !drain(&mut venc) {
                        return Err(Error::internal("the muxer stopped"));
                    }
                }
                drop(frx);
                venc.send_eof().map_err(ff("flushing libx264"))?;
                drain(&mut venc);
                // x264's pool is alive until `venc` is dropped.
                let snap = threads::snapshot();
                Ok((started.elapsed().as_secs_f64(), snap))
            })
            .ctx(ErrorKind::Internal, "starting the video thread")?;

        let (atx, arx) = mpsc::sync_channel::<av::Packet>(PACKETS_AHEAD);
        let audio_thread = std::thread::Builder::new()
            .name("audio".into())
            .spawn_scoped(scope, move || {
                encode_audio(reader, aenc, frame_size, layout, atx)
                    .map(|(samples, busy)| (samples, busy, threads::snapshot()))
            })
            .ctx(ErrorKind::Internal, "starting the audio thread")?;

        // The muxer: packets in decode-time order, blocking on the stream that is behind, so
        // the file's interleave is a function of the packets alone (never of thread timing)
        // and neither encoder runs more than PACKETS_AHEAD packets ahead of the other.
        let order = DtsOrder {
            fps_num: video.fps_num,
            fps_den: video.fps_den,
            rate,
        };
        let mut next_v = vrx.recv().ok();
        let mut next_a = arx.recv().ok();
        let muxed = (|| -> Result<()> {
            loop {
                if producer_failed.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(Error::internal("the frame producer failed"));
                }
                let video_first = match (&next_v, &next_a) {
                    (None, None) => return Ok(()),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some(v), Some(a)) => !order.audio_before(v, a),
                };
                if video_first {
                    let Some(mut p) = next_v.take() else { continue };
                    p.set_stream(0);
                    p.rescale_ts(vtb, v_ost_tb);
                    p.write_interleaved(&mut octx)
                        .map_err(ff("writing a video packet"))?;
                    next_v = vrx.recv().ok();
                    // One packet per frame.
                    let mut d = done.get();
                    d.frames_done = (d.frames_done + 1).min(d.frames_total);
                    done.set(d);
                    progress.encode(d);
                } else {
                    let Some(mut p) = next_a.take() else { continue };
                    let end = p.pts().unwrap_or(0).saturating_add(p.duration());
                    p.set_stream(1);
                    p.rescale_ts(atb, a_ost_tb);
                    p.write_interleaved(&mut octx)
                        .map_err(ff("writing an audio packet"))?;
                    next_a = arx.recv().ok();
                    let mut d = done.get();
                    d.samples_done = u64::try_from(end).unwrap_or(0).min(d.samples_total);
                    done.set(d);
                    progress.encode(d);
                }
            }
        })();
        // On a muxer error the encoders see their channels close and stop.
        drop((vrx, arx));
        let rendered = render
            .join()
            .map_err(|_| Error::internal("render thread panicked"))?;
        let encoded = video_thread
            .join()
            .map_err(|_| Error::internal("video thread panicked"))?;
        let audio = audio_thread
            .join()
            .map_err(|_| Error::internal("audio thread panicked"))?;
        // The producer's own error first: a failed muxer never fails the render thread, but
        // a failed producer stops the muxer.
        let (render_busy, render_snap) = rendered?;
        muxed?;
        let (video_seconds, video_snap) = encoded?;
        let (samples, audio_busy, audio_snap) = audio?;
        report.video_encode_seconds = video_seconds;
        report.render_seconds = render_busy;
        report.audio_samples = samples;
        report.audio_encode_seconds = audio_busy;
        report.video_frames = frames;
        report.threads =
            threads::merge(&[render_snap, video_snap, audio_snap, threads::snapshot()]);
        Ok(())
    });
    result?;
    octx.write_trailer()
        .map_err(ff("writing the MP4 trailer"))?;
    drop(octx);
    progress.encode(crate::progress::EncodeProgress {
        finished: true,
        ..done.get()
    });
    report.bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    report.wall_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

type Snapshot = std::collections::BTreeMap<u64, threads::ThreadBusy>;

/// Packets either encoder may have waiting for the muxer: about 10 s of video at 25 fps, 5 s
/// of AAC at 48 kHz. Bounds how far one stream runs ahead of the other (and memory).
const PACKETS_AHEAD: usize = 256;

/// The muxer's order: by decode time, video first on a tie.
struct DtsOrder {
    fps_num: u32,
    fps_den: u32,
    rate: u32,
}

impl DtsOrder {
    /// Whether audio packet `a` (time base 1/rate) decodes strictly before video packet `v`
    /// (time base fps_den/fps_num), compared exactly.
    fn audio_before(&self, v: &av::Packet, a: &av::Packet) -> bool {
        let t = |p: &av::Packet| i128::from(p.dts().or(p.pts()).unwrap_or(0));
        // a/rate < v·fps_den/fps_num  ⇔  a·fps_num < v·fps_den·rate
        t(a) * i128::from(self.fps_num) < t(v) * i128::from(self.fps_den) * i128::from(self.rate)
    }
}

fn copy_into(src: &Yuv420, dst: &mut av::frame::Video) {
    let (w, h) = (src.width as usize, src.height as usize);
    for (plane, data, pw, ph) in [
        (0usize, &src.y, w, h),
        (1, &src.u, w / 2, h / 2),
        (2, &src.v, w / 2, h / 2),
    ] {
        let stride = dst.stride(plane);
        let out = dst.data_mut(plane);
        for r in 0..ph {
            out[r * stride..r * stride + pw].copy_from_slice(&data[r * pw..(r + 1) * pw]);
        }
    }
}

type WavReader = hound::WavReader<std::io::BufReader<std::fs::File>>;

/// Encodes the whole WAV to AAC, sending packets (time base 1/rate) to `tx`.
fn encode_audio(
    reader: WavReader,
    mut enc: av::encoder::Audio,
    frame_size: usize,
    layout: av::ChannelLayout,
    tx: mpsc::SyncSender<av::Packet>,
) -> Result<(u64, f64)> {
    let started = Instant::now();
    let channels = usize::from(reader.spec().channels);
    let rate = reader.spec().sample_rate;
    // The samples are read in bulk, a frame's worth of little-endian f32 at a time, from
    // where the header ends (hound's per-sample reader cost about 3 % of the audio thread).
    let mut left = u64::from(reader.len()) / channels as u64 * channels as u64;
    let mut data = reader.into_inner();
    let mut pos: u64 = 0;
    let mut bytes: Vec<u8> = vec![0; frame_size * channels * 4];
    let drain = |enc: &mut av::encoder::Audio| -> Result<bool> {
        let mut pkt = av::Packet::empty();
        while enc.receive_packet(&mut pkt).is_ok() {
            if tx
                .send(std::mem::replace(&mut pkt, av::Packet::empty()))
                .is_err()
            {
                return Ok(false);
            }
        }
        Ok(true)
    };
    loop {
        let take = left.min((frame_size * channels) as u64) as usize;
        let n = take / channels;
        if n == 0 {
            break;
        }
        let chunk = &mut bytes[..take * 4];
        std::io::Read::read_exact(&mut data, chunk)
            .ctx(ErrorKind::FfmpegFailed, "reading prepare/audio_padded.wav")?;
        left -= take as u64;
        let mut frame = av::frame::Audio::new(
            av::format::Sample::F32(av::format::sample::Type::Planar),
            n,
            layout,
        );
        frame.set_rate(rate);
        for c in 0..channels {
            let plane = frame.plane_mut::<f32>(c);
            for (s, b) in plane.iter_mut().zip(chunk.chunks_exact(4 * channels)) {
                *s = f32::from_le_bytes([b[4 * c], b[4 * c + 1], b[4 * c + 2], b[4 * c + 3]]);
            }
        }
        frame.set_pts(Some(pos as i64));
        pos += n as u64;
        enc.send_frame(&frame).map_err(ff("encoding audio"))?;
        if !drain(&mut enc)? {
            return Ok((pos, started.elapsed().as_secs_f64()));
        }
        if n < frame_size {
            break;
        }
    }
    enc.send_eof().map_err(ff("flushing the AAC encoder"))?;
    drain(&mut enc)?;
    Ok((pos, started.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timescale_is_exact_for_both_tracks() {
        assert_eq!(movie_timescale(48_000, 25), 48_000);
        assert_eq!(movie_timescale(44_100, 30_000), 4_410_000);
        assert_eq!(movie_timescale(16_000, 24_000), 48_000);
    }
}
