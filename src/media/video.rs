//! Start videos (SPEC §4): probing a clip's frame timestamps, size and display orientation
//! without decoding its pictures, and decoding its frames in presentation order into the
//! engine's working form ([`Planes`]: BT.709 limited-range Y'CbCr), upright.
//!
//! Owns: everything libav-specific about a start video — which stream, which timestamps, how a
//! display matrix becomes a rotation, how any pixel format becomes [`Planes`]. Must not: decide
//! which source frame an output frame shows (that is `timeline::cfr_source_plan`), or scale to
//! the render size (that is the shared [`super::render::Renderer`]). The clip's audio streams
//! are never read.
//!
//! Colour: every decoded frame goes through swscale to 8-bit RGBA at its own size, with the
//! source's matrix and range given to swscale explicitly (its own default is BT.601 limited,
//! and it knows a full-range source only by a `yuvj*` format name), then through the same
//! R'G'B' → BT.709 limited-range conversion as start and end images
//! ([`Planes::from_rgba8_mapped`], the constants of [`Planes::from_rgba8`] folded, which also
//! composites an alpha channel over the background and applies the orientation). So
//! full-range (`yuvj*` or flagged `pc`), 10/12-bit, 4:2:2/4:4:4, RGB and grey sources all
//! land on the same levels; the one rounding step is the 8-bit RGB intermediate (at most half
//! a code value per channel, well inside the ±2 the tests allow).

use std::path::{Path, PathBuf};

use ffmpeg_next as av;
use serde::{Deserialize, Serialize};

use super::ffi;
use super::picture::{Planes, Yuv420};
use crate::error::{Error, ErrorKind, Result};
use crate::timeline::TimeBase;

/// How the decoded picture is turned upright: rotated clockwise by `rotation` degrees, then
/// (when `mirror`) flipped left to right. The eight combinations cover every display matrix
/// that is a multiple of 90° with or without a flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orientation {
    /// 0, 90, 180 or 270, clockwise.
    pub rotation: u16,
    pub mirror: bool,
}

impl Orientation {
    pub const UPRIGHT: Orientation = Orientation {
        rotation: 0,
        mirror: false,
    };

    /// The orientation a display matrix asks for, chosen exactly as the `ffmpeg` command line
    /// (5.1) chooses its autorotate filters, so that vidax shows a clip the way `ffmpeg` and
    /// players do: `theta = -round(av_display_rotation_get(m))` normalised to [0, 360), then
    /// 90 → clockwise (or a transpose when `m[3] > 0`), 180 → a horizontal flip when `m[0] < 0`
    /// and a vertical one when `m[4] < 0`, 270 → counter-clockwise (or the anti-transpose when
    /// `m[3] < 0`), 0 → a vertical flip when `m[4] < 0`.
    ///
    /// Returns the orientation and `theta`; an angle that is not within 1° of a multiple of
    /// 90 (which `ffmpeg` would rotate freely) is taken to the nearest multiple of 90, and the
    /// caller gets `theta` to say so. A degenerate matrix (a zero column) is upright.
    pub fn from_display_matrix(m: &[i32; 9]) -> (Orientation, f64) {
        let f = |i: usize| f64::from(m[i]) / 65536.0;
        let (s0, s1) = (f(0).hypot(f(3)), f(1).hypot(f(4)));
        if s0 == 0.0 || s1 == 0.0 {
            return (Orientation::UPRIGHT, 0.0);
        }
        // av_display_rotation_get returns −atan2(m1/s1, m0/s0) in degrees; theta negates it.
        let mut theta = (f(1) / s1).atan2(f(0) / s0).to_degrees().round();
        theta -= 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
        let near = |a: f64| (theta - a).abs() < 1.0;
        let o = |rotation, mirror| Orientation { rotation, mirror };
        let orientation = if near(90.0) {
            // transpose=cclock_flip (the main-diagonal transpose) or clock.
            o(90, m[3] > 0)
        } else if near(180.0) {
            match (m[0] < 0, m[4] < 0) {
                (true, true) => o(180, false),
                (true, false) => o(0, true),
                (false, true) => o(180, true),
                (false, false) => o(0, false),
            }
        } else if near(270.0) {
            // transpose=clock_flip (the anti-diagonal transpose) or cclock.
            o(270, m[3] < 0)
        } else if near(0.0) || near(360.0) {
            o(if m[4] < 0 { 180 } else { 0 }, m[4] < 0)
        } else {
            // A free angle: the nearest quarter turn.
            let q = ((theta / 90.0).round() as i64).rem_euclid(4) as u16;
            o(q * 90, false)
        };
        (orientation, theta)
    }

    /// The upright size of a `w`×`h` coded picture.
    pub fn display_size(self, w: u32, h: u32) -> (u32, u32) {
        if self.rotation % 180 == 90 {
            (h, w)
        } else {
            (w, h)
        }
    }

    /// The coded pixel shown at upright position `(x, y)` of a `w`×`h` coded picture.
    #[inline]
    fn source_of(self, x: usize, y: usize, w: usize, h: usize) -> (usize, usize) {
        let (dw, _) = self.display_size(w as u32, h as u32);
        let x = if self.mirror { dw as usize - 1 - x } else { x };
        match self.rotation {
            90 => (y, h - 1 - x),
            180 => (w - 1 - x, h - 1 - y),
            270 => (w - 1 - y, x),
            _ => (x, y),
        }
    }
}

/// Where a probe found the frame timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampSource {
    /// The packets' presentation timestamps (nothing decoded).
    Packets,
    /// The stream's packets lack timestamps: the frames were decoded for theirs.
    DecodedFrames,
}

/// What [`probe_video`] learns about a start video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoProbe {
    /// Index of the video stream used (libavformat's best video stream).
    pub stream_index: usize,
    pub codec: String,
    /// Coded size, before [`Orientation`].
    pub width: u32,
    pub height: u32,
    pub orientation: Orientation,
    /// The display matrix's angle as `ffmpeg` reads it (see
    /// [`Orientation::from_display_matrix`]); `None` without a display matrix.
    pub display_matrix_degrees: Option<f64>,
    pub time_base: TimeBase,
    /// Presentation timestamps of every frame that is shown, sorted, in `time_base` ticks.
    pub pts: Vec<i64>,
    /// Last timestamp plus that frame's duration (the average frame duration when its packet
    /// has none).
    pub end_pts: i64,
    /// Whether the gaps between consecutive frames differ (variable frame rate).
    pub vfr: bool,
    pub timestamps: TimestampSource,
}

impl VideoProbe {
    /// The upright size: what the render size is derived from.
    pub fn display_size(&self) -> (u32, u32) {
        self.orientation.display_size(self.width, self.height)
    }

    pub fn frame_count(&self) -> usize {
        self.pts.len()
    }

    /// `(end_pts − pts[0])` in seconds, for display.
    pub fn duration_seconds(&self) -> f64 {
        let first = self.pts.first().copied().unwrap_or(self.end_pts);
        let ticks = (i128::from(self.end_pts) - i128::from(first)) as f64;
        ticks * f64::from(self.time_base.num) / f64::from(self.time_base.den)
    }
}

fn unsupported(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::at_path(ErrorKind::UnsupportedFormat, path, reason)
}

/// An opened start video: its demuxer, the stream and a decoder for it.
struct Opened {
    input: super::FileInput,
    index: usize,
    decoder: av::decoder::Video,
}

/// Opens the start video `file` (at `path`, already opened) for decoding: its demuxer, the
/// best video stream and a decoder for it.
fn open_file(path: &Path, file: std::fs::File) -> Result<Opened> {
    super::init();
    let input = super::open_input_file(file, path)
        .map_err(|e| unsupported(path, format!("not a video vidax reads ({e})")))?;
    let st = input
        .streams()
        .best(av::media::Type::Video)
        .ok_or_else(|| unsupported(path, "has no video stream"))?;
    let index = st.index();
    let decoder = av::codec::context::Context::from_parameters(st.parameters())
        .and_then(|mut c| {
            // libavcodec's own frame threads (one per core): decoding is most of a start
            // video's cost.
            c.set_threading(av::codec::threading::Config {
                kind: av::codec::threading::Type::Frame,
                count: 0,
                ..Default::default()
            });
            c.decoder().video()
        })
        .map_err(|e| unsupported(path, format!("no decoder for its video stream ({e})")))?;
    Ok(Opened {
        input,
        index,
        decoder,
    })
}

/// Probes a start video: stream, size, orientation and every frame's presentation timestamp.
///
/// The timestamps come from the packets (reading the file, not decoding it): their `pts`,
/// sorted (for a stream with B-frames the sorted packet pts are the presentation times),
/// leaving out packets the demuxer marks as discarded (frames before an MP4 edit list's
/// start). Only when some packet has no pts (raw elementary streams) are the frames decoded for
/// their best-effort timestamps.
pub fn probe_video(path: &Path) -> Result<VideoProbe> {
    probe_video_file(path, super::open_input_file_checked(path)?)
}

/// [`probe_video`] over `file`, the start video at `path` already opened (see
/// [`super::open_input_file_checked`]).
pub fn probe_video_file(path: &Path, file: std::fs::File) -> Result<VideoProbe> {
    // A handle of the same open, for a stream whose packets lack timestamps.
    let again = file
        .try_clone()
        .map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?;
    let Opened {
        mut input,
        index,
        decoder,
    } = open_file(path, file)?;
    let st = input
        .stream(index)
        .ok_or_else(|| Error::internal("the video stream vanished"))?;
    let tb = st.time_base();
    let st_frames = st.frames();
    let time_base = u32::try_from(tb.numerator())
        .ok()
        .zip(u32::try_from(tb.denominator()).ok())
        .and_then(|(n, d)| TimeBase::new(n, d))
        .ok_or_else(|| {
            unsupported(
                path,
                format!("video stream has an invalid time base {}", tb),
            )
        })?;
    let matrix = st.side_data().find_map(|sd| {
        let data = sd.data();
        (sd.kind() == av::packet::side_data::Type::DisplayMatrix && data.len() >= 36).then(|| {
            let mut m = [0i32; 9];
            for (i, v) in m.iter_mut().enumerate() {
                let b = [
                    data[4 * i],
                    data[4 * i + 1],
                    data[4 * i + 2],
                    data[4 * i + 3],
                ];
                *v = i32::from_ne_bytes(b);
            }
            m
        })
    });
    let (orientation, display_matrix_degrees) = match matrix {
        Some(m) => {
            let (o, theta) = Orientation::from_display_matrix(&m);
            (o, Some(theta))
        }
        None => (Orientation::UPRIGHT, None),
    };
    let avg_rate = st.avg_frame_rate();
    let real_rate = st.rate();
    let codec = decoder
        .codec()
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| format!("{:?}", decoder.id()).to_lowercase());
    let (width, height) = (decoder.width(), decoder.height());
    if width == 0 || height == 0 {
        return Err(unsupported(
            path,
            format!("video stream has no picture size ({width}x{height})"),
        ));
    }

    // (pts, duration) of every frame to be shown, in decode order.
    let mut frames: Vec<(i64, i64)> = Vec::new();
    let mut missing = false;
    let declared_frames = u64::try_from(st_frames).unwrap_or(0);
    let mut read_packets: u64 = 0;
    for (s, pkt) in super::packets(&mut input) {
        if s != index {
            continue;
        }
        read_packets += 1;
        if ffi::packet_is_discarded(&pkt) {
            continue;
        }
        match pkt.pts() {
            Some(p) => frames.push((p, pkt.duration())),
            None => {
                missing = true;
                break;
            }
        }
    }
    drop(input);
    // The container's index promises more frames than the file holds: it was cut short.
    if !missing && declared_frames > 0 && read_packets < declared_frames {
        return Err(unsupported(
            path,
            format!(
                "is truncated: its index lists {declared_frames} video frames, only {read_packets} can be read"
            ),
        ));
    }
    let timestamps = if missing {
        frames = decoded_timestamps(path, again)?;
        TimestampSource::DecodedFrames
    } else {
        TimestampSource::Packets
    };
    if frames.is_empty() {
        return Err(unsupported(path, "has no video frames"));
    }
    frames.sort_by_key(|&(p, _)| p);
    let pts: Vec<i64> = frames.iter().map(|&(p, _)| p).collect();
    let last = *pts
        .last()
        .ok_or_else(|| unsupported(path, "has no video frames"))?;
    let last_duration = frames.last().map_or(0, |&(_, d)| d);
    let duration = if last_duration > 0 {
        last_duration
    } else {
        average_duration(&pts, time_base, avg_rate, real_rate)
    };
    let end_pts = last
        .checked_add(duration)
        .ok_or_else(|| unsupported(path, format!("video timestamp {last} is out of range")))?;
    let vfr = {
        let mut gaps = pts.windows(2).map(|w| w[1] - w[0]);
        match gaps.next() {
            Some(g0) => gaps.any(|g| g != g0),
            None => false,
        }
    };
    Ok(VideoProbe {
        stream_index: index,
        codec,
        width,
        height,
        orientation,
        display_matrix_degrees,
        time_base,
        pts,
        end_pts,
        vfr,
        timestamps,
    })
}

/// The average frame duration in ticks (at least 1): from the stream's average frame rate,
/// else its real base rate, else the mean gap between the frames.
fn average_duration(pts: &[i64], tb: TimeBase, avg: av::Rational, real: av::Rational) -> i64 {
    let from_rate = |r: av::Rational| -> Option<i64> {
        let (num, den) = (i128::from(r.numerator()), i128::from(r.denominator()));
        if num <= 0 || den <= 0 {
            return None;
        }
        // Ticks per frame = den/num seconds ÷ (tb.num/tb.den), rounded half up.
        let n = den * i128::from(tb.den);
        let d = num * i128::from(tb.num);
        i64::try_from((2 * n + d) / (2 * d)).ok().filter(|&t| t > 0)
    };
    from_rate(avg)
        .or_else(|| from_rate(real))
        .or_else(|| {
            let (first, last) = (*pts.first()?, *pts.last()?);
            let gaps = i64::try_from(pts.len().checked_sub(1)?).ok()?;
            (gaps > 0).then(|| ((last - first) / gaps).max(1))
        })
        .unwrap_or(1)
}

/// The timestamps of a stream whose packets lack them: every frame decoded, its best-effort
/// timestamp (or the previous one plus one tick when even that is missing).
fn decoded_timestamps(path: &Path, file: std::fs::File) -> Result<Vec<(i64, i64)>> {
    let mut frames = FrameReader::from_file(path, file)?;
    let mut out: Vec<(i64, i64)> = Vec::new();
    while let Some(frame) = frames.next_frame()? {
        let t = frame
            .pts()
            .or(frame.timestamp())
            .unwrap_or_else(|| out.last().map_or(0, |&(p, _)| p + 1));
        out.push((t, 0));
    }
    Ok(out)
}

/// Decoded frames of the start video's stream, in presentation (decoder output) order.
struct FrameReader {
    path: PathBuf,
    /// The one open of the file: a decode from the start again demuxes a handle of it
    /// (`try_clone`), without opening the path again.
    file: std::fs::File,
    opened: Opened,
    packet: av::Packet,
    eof_sent: bool,
}

impl FrameReader {
    fn new(path: &Path) -> Result<FrameReader> {
        FrameReader::from_file(path, super::open_input_file_checked(path)?)
    }

    fn from_file(path: &Path, file: std::fs::File) -> Result<FrameReader> {
        let handle = file
            .try_clone()
            .map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?;
        Ok(FrameReader {
            path: path.to_path_buf(),
            file,
            opened: open_file(path, handle)?,
            packet: av::Packet::empty(),
            eof_sent: false,
        })
    }

    /// The same file, to be decoded from its start again.
    fn restart(&self) -> Result<FrameReader> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::at_path(ErrorKind::InputNotFound, &self.path, e))?;
        FrameReader::from_file(&self.path, file)
    }

    /// The next decoded frame, or `None` at the end of the stream.
    fn next_frame(&mut self) -> Result<Option<av::frame::Video>> {
        let mut frame = av::frame::Video::empty();
        loop {
            match self.opened.decoder.receive_frame(&mut frame) {
                Ok(()) => return Ok(Some(frame)),
                Err(av::Error::Eof) => return Ok(None),
                Err(_) if self.eof_sent => return Ok(None),
                Err(_) => {}
            }
            // The decoder wants input.
            loop {
                // av_read_frame overwrites its packet without releasing what it held: each
                // read gets a fresh one (the old one is released on drop).
                self.packet = av::Packet::empty();
                match self.packet.read(&mut self.opened.input) {
                    Ok(()) => {
                        if self.packet.stream() != self.opened.index {
                            continue;
                        }
                        if let Err(e) = self.opened.decoder.send_packet(&self.packet) {
                            tracing::warn!(
                                stage = "video",
                                "{}: skipped an undecodable video packet ({e})",
                                self.path.display()
                            );
                        }
                    }
                    Err(av::Error::Eof) => {
                        let _ = self.opened.decoder.send_eof();
                        self.eof_sent = true;
                    }
                    Err(e) => {
                        return Err(Error::at_path(
                            ErrorKind::UnsupportedFormat,
                            &self.path,
                            format!("cannot read the video ({e})"),
                        ))
                    }
                }
                break;
            }
        }
    }
}

/// Pixel-format facts the conversion needs: full range by default (the `yuvj*` formats, and
/// grey, which swscale also reads as full range) and the Y'CbCr matrix to assume when the
/// stream does not say.
fn full_range(frame: &av::frame::Video) -> bool {
    match frame.color_range() {
        av::color::Range::JPEG => true,
        av::color::Range::MPEG => false,
        _ => {
            let name = frame.format().descriptor().map_or("", |d| d.name());
            name.starts_with("yuvj") || name.starts_with("gray") || name.starts_with("ya")
        }
    }
}

/// The swscale matrix (`SWS_CS_*`) for a frame: its own tag, else BT.709 for HD sizes and
/// BT.601 below (what players assume for untagged video).
fn sws_matrix(frame: &av::frame::Video) -> i32 {
    use av::color::Space;
    match frame.color_space() {
        Space::BT709 => av::ffi::SWS_CS_ITU709,
        Space::FCC => av::ffi::SWS_CS_FCC,
        Space::BT470BG | Space::SMPTE170M => av::ffi::SWS_CS_ITU601,
        Space::SMPTE240M => av::ffi::SWS_CS_SMPTE240M,
        Space::BT2020NCL | Space::BT2020CL => av::ffi::SWS_CS_BT2020,
        _ if frame.width() >= 1280 || frame.height() >= 720 => av::ffi::SWS_CS_ITU709,
        _ => av::ffi::SWS_CS_ITU601,
    }
}

/// Whether a frame's Y'CbCr is BT.709 already (by its tag, or untagged HD): only its range
/// and size need changing for the encoder.
fn yuv_709(frame: &av::frame::Video) -> bool {
    sws_matrix(frame) == av::ffi::SWS_CS_ITU709
        && frame.format().descriptor().is_some_and(|d| {
            let name = d.name();
            name.starts_with("yuv") && d.nb_components() >= 3
        })
}

/// What [`VideoFrames::frame_into`] delivered.
pub enum Delivered<'a> {
    /// The output frame is filled.
    Filled,
    /// The picture to render into it.
    Planes(&'a Planes),
}

/// Source pictures by frame index, decoded forward and converted to upright [`Planes`].
///
/// Asking for a frame earlier than the last one asked for re-opens the file and decodes from
/// the start (how `video.extend: loop` starts over); memory stays at a few frames whatever the
/// clip's length.
pub struct VideoFrames {
    path: PathBuf,
    pts: Vec<i64>,
    orientation: Orientation,
    bg: [u8; 3],
    reader: FrameReader,
    /// The decoded frame currently shown (the latest with time <= the last time asked), with
    /// its time.
    current: Option<(i64, av::frame::Video)>,
    /// The next decoded frame, not reached yet.
    pending: Option<(i64, av::frame::Video)>,
    /// Frames taken from the decoder since the last (re)open.
    decoded: usize,
    last_asked: Option<i64>,
    /// The largest upright size worth converting to: pictures larger than this (in either
    /// direction) are scaled down by swscale while they are converted, keeping their aspect.
    fit: Option<(u32, u32)>,
    scaler: Option<(ScalerKey, ffi::Scaler)>,
    /// swscale's output, reused while its size stays.
    scaled: Option<av::frame::Video>,
    /// The converted picture, reused from frame to frame.
    planes: Planes,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct ScalerKey {
    format: av::format::Pixel,
    width: u32,
    height: u32,
    matrix: i32,
    full: bool,
    /// swscale's output: its format (RGBA, or YUV444P when the source's Y'CbCr is BT.709
    /// already and only its range and size change) and its coded size.
    out: av::format::Pixel,
    out_width: u32,
    out_height: u32,
}

impl VideoFrames {
    /// Opens `path` for decoding; `probe` is what [`probe_video`] returned for it; `bg` is
    /// the colour transparent parts of a picture are composited over; pictures larger than
    /// `fit` (upright) are delivered scaled down to fit it, aspect kept (`None`: their own
    /// size).
    pub fn open(
        path: &Path,
        probe: &VideoProbe,
        bg: [u8; 3],
        fit: Option<(u32, u32)>,
    ) -> Result<VideoFrames> {
        Ok(VideoFrames {
            path: path.to_path_buf(),
            pts: probe.pts.clone(),
            orientation: probe.orientation,
            bg,
            reader: FrameReader::new(path)?,
            current: None,
            pending: None,
            decoded: 0,
            last_asked: None,
            fit,
            scaler: None,
            scaled: None,
            planes: Planes::from_rgba8(0, 0, &[], bg),
        })
    }

    /// Source frame `k` for an `out` frame of the render size, shown whole: when the clip's
    /// Y'CbCr is BT.709 already, upright, and its fitted size is the frame's within a pixel
    /// each way, swscale scales it straight into `out` as limited-range 4:2:0 (what the
    /// ffmpeg CLI's `scale` does), with no 4:4:4 picture and no renderer; otherwise the
    /// picture as [`VideoFrames::picture`] gives it, for the caller to render.
    pub fn frame_into(&mut self, k: usize, out: &mut Yuv420) -> Result<Delivered<'_>> {
        self.advance_to(k)?;
        let Some((t, frame)) = self.current.take() else {
            return Err(self.nothing_decoded());
        };
        let direct = self.direct_size(&frame, (out.width, out.height));
        let done = match direct {
            true => self.scale_into(&frame, out).map(|()| true),
            false => self.convert(&frame).map(|_| false),
        };
        self.current = Some((t, frame));
        Ok(match done? {
            true => Delivered::Filled,
            false => Delivered::Planes(&self.planes),
        })
    }

    /// Whether `frame` can go straight into an `out`-sized 4:2:0 frame (see
    /// [`VideoFrames::frame_into`]).
    fn direct_size(&self, frame: &av::frame::Video, out: (u32, u32)) -> bool {
        let (w, h) = (frame.width(), frame.height());
        let (fw, fh) = fitted((w, h), self.fit);
        self.orientation == Orientation::UPRIGHT
            && yuv_709(frame)
            && fw.abs_diff(out.0) <= 1
            && fh.abs_diff(out.1) <= 1
            && out.0.is_multiple_of(2)
            && out.1.is_multiple_of(2)
    }

    /// Scales `frame` into `out` as limited-range BT.709 4:2:0 at `out`'s size.
    fn scale_into(&mut self, frame: &av::frame::Video, out: &mut Yuv420) -> Result<()> {
        let key = ScalerKey {
            format: frame.format(),
            width: frame.width(),
            height: frame.height(),
            matrix: sws_matrix(frame),
            full: full_range(frame),
            out: av::format::Pixel::YUV420P,
            out_width: out.width,
            out_height: out.height,
        };
        self.scale(key, frame, false)?;
        let scaled = self.scaled_frame()?;
        let (w, h) = (out.width as usize, out.height as usize);
        for (plane, k, (pw, ph)) in [
            (&mut out.y, 0, (w, h)),
            (&mut out.u, 1, (w / 2, h / 2)),
            (&mut out.v, 2, (w / 2, h / 2)),
        ] {
            let (data, stride) = (scaled.data(k), scaled.stride(k));
            for (r, row) in plane.chunks_exact_mut(pw).take(ph).enumerate() {
                row.copy_from_slice(&data[r * stride..r * stride + pw]);
            }
        }
        Ok(())
    }

    /// The upright picture of source frame `k` (an index into the probe's `pts`).
    ///
    /// Decoded frames are matched to the probe by time, not by count: the picture is the
    /// latest decoded frame whose timestamp is `<= pts[k]`, so a frame the decoder drops or
    /// an extra frame before the first shown one cannot shift the sequence. A frame without a
    /// timestamp takes the probe's timestamp for its position.
    pub fn picture(&mut self, k: usize) -> Result<&Planes> {
        self.advance_to(k)?;
        let Some((t, frame)) = self.current.take() else {
            return Err(self.nothing_decoded());
        };
        let converted = self.convert(&frame).map(|_| ());
        self.current = Some((t, frame));
        converted.map(|()| &self.planes)
    }

    fn nothing_decoded(&self) -> Error {
        Error::at_path(
            ErrorKind::UnsupportedFormat,
            &self.path,
            "no video frame could be decoded",
        )
    }

    /// Decodes up to source frame `k`: `current` is then the frame shown at its time.
    fn advance_to(&mut self, k: usize) -> Result<()> {
        let t = *self.pts.get(k).ok_or_else(|| {
            Error::internal(format!(
                "start video frame {k} asked for, the clip has {}",
                self.pts.len()
            ))
        })?;
        if self.last_asked.is_some_and(|last| t < last) {
            self.restart()?;
        }
        self.last_asked = Some(t);
        loop {
            if self.pending.is_none() {
                self.pending = self.decode_next()?;
            }
            let take = match (&self.pending, &self.current) {
                (Some((p, _)), _) if *p <= t => true,
                // Nothing shown yet: the first decoded frame, even if it is late.
                (Some(_), None) => true,
                _ => false,
            };
            if !take {
                break;
            }
            self.current = self.pending.take();
        }
        Ok(())
    }

    fn restart(&mut self) -> Result<()> {
        tracing::debug!(
            stage = "video",
            "{}: decoding the start video again from its start",
            self.path.display()
        );
        self.reader = self.reader.restart()?;
        self.current = None;
        self.pending = None;
        self.decoded = 0;
        Ok(())
    }

    fn decode_next(&mut self) -> Result<Option<(i64, av::frame::Video)>> {
        let Some(frame) = self.reader.next_frame()? else {
            return Ok(None);
        };
        let position = self.decoded.min(self.pts.len().saturating_sub(1));
        self.decoded += 1;
        let t = frame
            .pts()
            .or(frame.timestamp())
            .unwrap_or(self.pts[position]);
        Ok(Some((t, frame)))
    }

    /// Converts a decoded frame to upright [`Planes`] (see the module docs for the colour
    /// path), scaled to fit [`VideoFrames::fit`].
    fn convert(&mut self, frame: &av::frame::Video) -> Result<&Planes> {
        let (w, h) = (frame.width(), frame.height());
        let o = self.orientation;
        let (dw, dh) = o.display_size(w, h);
        // The working size upright, then in the coded orientation (a quarter turn swaps).
        let (fw, fh) = fitted((dw, dh), self.fit);
        let (sw, sh) = o.display_size(fw, fh);
        let (matrix, full) = (sws_matrix(frame), full_range(frame));
        let format = frame.format();
        // Y'CbCr that is BT.709 already needs only its range and size changed: swscale does
        // that straight into 4:4:4 at the working size. Anything else goes through R'G'B'.
        let yuv = o == Orientation::UPRIGHT && yuv_709(frame);
        let key = ScalerKey {
            format,
            width: w,
            height: h,
            matrix,
            full,
            out: if yuv {
                av::format::Pixel::YUV444P
            } else {
                av::format::Pixel::RGBA
            },
            out_width: sw,
            out_height: sh,
        };
        let bg = self.bg;
        self.scale(key, frame, !yuv)?;
        // The scaled frame is read while the planes are written (two fields).
        let Some(out) = self.scaled.as_ref() else {
            return Err(Error::internal("no scaled video frame"));
        };
        let planes = &mut self.planes;
        if yuv {
            planes.fill_from_yuv444(
                sw,
                sh,
                [out.data(0), out.data(1), out.data(2)],
                [out.stride(0), out.stride(1), out.stride(2)],
            );
        } else {
            let (cw, ch) = (sw as usize, sh as usize);
            let (uw, uh) = o.display_size(sw, sh);
            planes.fill_from_rgba8_mapped(uw, uh, out.data(0), out.stride(0), bg, |x, y| {
                o.source_of(x, y, cw, ch)
            });
        }
        Ok(&self.planes)
    }

    /// The output of the last [`VideoFrames::scale`].
    fn scaled_frame(&self) -> Result<&av::frame::Video> {
        self.scaled
            .as_ref()
            .ok_or_else(|| Error::internal("no scaled video frame"))
    }

    /// `frame` through the scaler `key` describes (made, or reused while the key stays),
    /// into the reused output frame ([`VideoFrames::scaled_frame`]); `rgb`: the output is
    /// R'G'B' (full range), else Y'CbCr (limited, like the encoder's).
    fn scale(&mut self, key: ScalerKey, frame: &av::frame::Video, rgb: bool) -> Result<()> {
        let (w, h, sw, sh) = (key.width, key.height, key.out_width, key.out_height);
        let scaler = match &mut self.scaler {
            Some((k, s)) if *k == key => s,
            slot => {
                use av::software::scaling::Flags;
                let mut s = ffi::Scaler::new(
                    key.format,
                    w,
                    h,
                    key.out,
                    sw,
                    sh,
                    Flags::BILINEAR
                        | Flags::ACCURATE_RND
                        | Flags::FULL_CHR_H_INT
                        | Flags::FULL_CHR_H_INP,
                )
                .map_err(|e| {
                    Error::at_path(
                        ErrorKind::UnsupportedFormat,
                        &self.path,
                        format!(
                            "cannot convert its {} pictures ({e})",
                            key.format.descriptor().map_or("unknown", |d| d.name())
                        ),
                    )
                })?;
                // R'G'B' output is full range; Y'CbCr output limited, like the encoder's.
                if !s.set_source_colorspace(key.matrix, key.full, rgb) {
                    tracing::debug!(
                        stage = "video",
                        "swscale kept its own colour settings for {:?}",
                        key.format
                    );
                }
                &mut slot.insert((key, s)).1
            }
        };
        let out = match &mut self.scaled {
            Some(f) if f.format() == key.out && f.width() == sw && f.height() == sh => f,
            slot => slot.insert(av::frame::Video::new(key.out, sw, sh)),
        };
        let path = &self.path;
        scaler.run(frame, out).map_err(|e| {
            Error::at_path(
                ErrorKind::FfmpegFailed,
                path,
                format!("converting a video frame: {e}"),
            )
        })
    }
}

/// The upright size a `(w, h)` picture is converted at: its own, or scaled down (aspect kept,
/// rounded, at least 1×1) to fit `fit`.
fn fitted((w, h): (u32, u32), fit: Option<(u32, u32)>) -> (u32, u32) {
    match fit {
        Some((fw, fh)) if w > fw || h > fh => {
            let f = (f64::from(w) / f64::from(fw.max(1))).max(f64::from(h) / f64::from(fh.max(1)));
            let side = |v: u32| ((f64::from(v) / f).round() as u32).max(1);
            (side(w), side(h))
        }
        _ => (w, h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The display matrix ffprobe reports as `rotation=r` (av_display_rotation_get's
    /// counter-clockwise angle): `[cos r, −sin r; sin r, cos r]` in 16.16.
    fn matrix_for(r: i32) -> [i32; 9] {
        let (c, s) = match r.rem_euclid(360) {
            0 => (1, 0),
            90 => (0, 1),
            180 => (-1, 0),
            _ => (0, -1),
        };
        let one = 1 << 16;
        [c * one, -s * one, 0, s * one, c * one, 0, 0, 0, 1 << 30]
    }

    #[test]
    fn phone_portrait_matrix_rotates_clockwise() {
        // ffprobe "rotation=-90" (the old `rotate=90` tag): tkhd matrix 0 1 / -1 0.
        let m = [0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30];
        let (o, theta) = Orientation::from_display_matrix(&m);
        assert_eq!(theta, 90.0);
        assert_eq!(
            o,
            Orientation {
                rotation: 90,
                mirror: false
            }
        );
        assert_eq!(o.display_size(1920, 1080), (1080, 1920));
        assert_eq!(matrix_for(-90), m);
    }

    #[test]
    fn every_quarter_turn() {
        for (r, cw) in [(0, 0), (90, 270), (180, 180), (270, 90), (-90, 90)] {
            let (o, _) = Orientation::from_display_matrix(&matrix_for(r));
            assert_eq!(
                o,
                Orientation {
                    rotation: cw,
                    mirror: false
                },
                "ffprobe rotation {r}"
            );
        }
        // Degenerate: upright.
        let (o, _) = Orientation::from_display_matrix(&[0; 9]);
        assert_eq!(o, Orientation::UPRIGHT);
    }

    #[test]
    fn flips_follow_ffmpeg() {
        let one = 1 << 16;
        // Horizontal flip: m0 = -1, m4 = 1 (theta 180 with only m0 negative).
        let (o, _) = Orientation::from_display_matrix(&[-one, 0, 0, 0, one, 0, 0, 0, 1 << 30]);
        assert_eq!(
            o,
            Orientation {
                rotation: 0,
                mirror: true
            }
        );
        // Vertical flip: m4 = -1 (theta 0).
        let (o, _) = Orientation::from_display_matrix(&[one, 0, 0, 0, -one, 0, 0, 0, 1 << 30]);
        assert_eq!(
            o,
            Orientation {
                rotation: 180,
                mirror: true
            }
        );
    }

    /// Applies an orientation to a small labelled picture and returns the labels row by row.
    fn apply(o: Orientation, w: usize, h: usize) -> Vec<Vec<usize>> {
        let (dw, dh) = o.display_size(w as u32, h as u32);
        (0..dh as usize)
            .map(|y| {
                (0..dw as usize)
                    .map(|x| {
                        let (sx, sy) = o.source_of(x, y, w, h);
                        sy * w + sx
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn source_mapping_matches_the_transforms() {
        // 3x2 picture:  0 1 2
        //               3 4 5
        let o = |rotation, mirror| Orientation { rotation, mirror };
        assert_eq!(apply(o(0, false), 3, 2), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        // Clockwise: the left column becomes the top row, read bottom to top.
        assert_eq!(
            apply(o(90, false), 3, 2),
            vec![vec![3, 0], vec![4, 1], vec![5, 2]]
        );
        assert_eq!(
            apply(o(180, false), 3, 2),
            vec![vec![5, 4, 3], vec![2, 1, 0]]
        );
        assert_eq!(
            apply(o(270, false), 3, 2),
            vec![vec![2, 5], vec![1, 4], vec![0, 3]]
        );
        assert_eq!(apply(o(0, true), 3, 2), vec![vec![2, 1, 0], vec![5, 4, 3]]);
        // Vertical flip = 180° then mirror.
        assert_eq!(
            apply(o(180, true), 3, 2),
            vec![vec![3, 4, 5], vec![0, 1, 2]]
        );
        // Transpose (main diagonal) and anti-transpose.
        assert_eq!(
            apply(o(90, true), 3, 2),
            vec![vec![0, 3], vec![1, 4], vec![2, 5]]
        );
        assert_eq!(
            apply(o(270, true), 3, 2),
            vec![vec![5, 2], vec![4, 1], vec![3, 0]]
        );
    }

    #[test]
    fn average_duration_sources() {
        let tb = TimeBase::new(1, 90000).unwrap();
        let none = av::Rational::new(0, 1);
        assert_eq!(
            average_duration(&[0], tb, av::Rational::new(30000, 1001), none),
            3003
        );
        assert_eq!(
            average_duration(&[0, 10, 30], tb, none, av::Rational::new(25, 1)),
            3600
        );
        assert_eq!(average_duration(&[0, 10, 30], tb, none, none), 15);
        assert_eq!(average_duration(&[7], tb, none, none), 1);
    }
}
