//! Decoding a video file's pictures to the engine's 8-bit 4:2:0 form, in presentation order.
//! Used by the read-back tests and the start-video source.

use std::path::Path;

use ffmpeg_next as av;

use super::picture::Yuv420;
use crate::error::{Error, ErrorKind, Result};

/// Calls `f(index, pts, frame)` for every decoded picture of the best video stream, converted
/// to yuv420p at its own size; `f` returns false to stop early.
pub fn for_each_video_frame(
    path: &Path,
    mut f: impl FnMut(u64, i64, &Yuv420) -> Result<bool>,
) -> Result<u64> {
    super::init();
    super::check_input_file(path)?;
    let mut input = super::open_input(path)
        .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))?;
    let st = input
        .streams()
        .best(av::media::Type::Video)
        .ok_or_else(|| Error::at_path(ErrorKind::UnsupportedFormat, path, "has no video stream"))?;
    let idx = st.index();
    let mut dec = av::codec::context::Context::from_parameters(st.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))?;
    let mut scaler: Option<av::software::scaling::Context> = None;
    let mut frame = av::frame::Video::empty();
    let mut conv = av::frame::Video::empty();
    let mut n: u64 = 0;
    let mut stop = false;
    let mut handle = |dec: &mut av::decoder::Video, n: &mut u64, stop: &mut bool| -> Result<()> {
        while !*stop && dec.receive_frame(&mut frame).is_ok() {
            let (w, h) = (frame.width() & !1, frame.height() & !1);
            let pic = if frame.format() == av::format::Pixel::YUV420P
                && frame.width().is_multiple_of(2)
                && frame.height().is_multiple_of(2)
            {
                &frame
            } else {
                let s = match scaler.as_mut() {
                    Some(s) => s,
                    None => scaler.insert(
                        av::software::scaling::Context::get(
                            frame.format(),
                            frame.width(),
                            frame.height(),
                            av::format::Pixel::YUV420P,
                            w,
                            h,
                            av::software::scaling::Flags::BICUBIC,
                        )
                        .map_err(|e| Error::at_path(ErrorKind::FfmpegFailed, path, e))?,
                    ),
                };
                s.run(&frame, &mut conv)
                    .map_err(|e| Error::at_path(ErrorKind::FfmpegFailed, path, e))?;
                &conv
            };
            let mut out = Yuv420::new(w, h);
            for (p, dst, pw, ph) in [
                (0, &mut out.y, w as usize, h as usize),
                (1, &mut out.u, w as usize / 2, h as usize / 2),
                (2, &mut out.v, w as usize / 2, h as usize / 2),
            ] {
                let stride = pic.stride(p);
                let data = pic.data(p);
                for r in 0..ph {
                    dst[r * pw..(r + 1) * pw].copy_from_slice(&data[r * stride..r * stride + pw]);
                }
            }
            let pts = frame.timestamp().or(frame.pts()).unwrap_or(*n as i64);
            if !f(*n, pts, &out)? {
                *stop = true;
            }
            *n += 1;
        }
        Ok(())
    };
    for (s, pkt) in super::packets(&mut input) {
        if s != idx {
            continue;
        }
        if dec.send_packet(&pkt).is_err() {
            continue;
        }
        handle(&mut dec, &mut n, &mut stop)?;
        if stop {
            return Ok(n);
        }
    }
    dec.send_eof().ok();
    handle(&mut dec, &mut n, &mut stop)?;
    Ok(n)
}
