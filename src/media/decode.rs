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

/// A still image FFmpeg reads but the `image` crate does not (a YCbCr TIFF, as ffmpeg writes
/// a video frame to `.tiff`): `Some` when an image demuxer (`image2`, `*_pipe`) opens
/// `path` and its one picture decodes, as upright RGBA8 `(width, height, pixels)`.
/// `max_pixels` is checked from the stream header before the picture is decoded.
pub fn still_image_rgba(path: &Path, max_pixels: u64) -> Result<Option<(u32, u32, Vec<u8>)>> {
    let Some((mut input, idx, (w, h))) = open_still(path)? else {
        return Ok(None);
    };
    super::picture::check_pixels(path, "image", (w, h), max_pixels)?;
    let st = input
        .stream(idx)
        .ok_or_else(|| Error::internal("stream vanished"))?;
    let mut dec = av::codec::context::Context::from_parameters(st.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))?;
    let mut frame = av::frame::Video::empty();
    let mut got = false;
    for (s, pkt) in super::packets(&mut input) {
        if s == idx && dec.send_packet(&pkt).is_ok() && dec.receive_frame(&mut frame).is_ok() {
            got = true;
            break;
        }
    }
    if !got {
        dec.send_eof().ok();
        got = dec.receive_frame(&mut frame).is_ok();
    }
    if !got || frame.width() == 0 || frame.height() == 0 {
        return Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            "cannot decode image (its decoder returned no picture)",
        ));
    }
    let (fw, fh) = (frame.width(), frame.height());
    let mut scaler = av::software::scaling::Context::get(
        frame.format(),
        fw,
        fh,
        av::format::Pixel::RGBA,
        fw,
        fh,
        av::software::scaling::Flags::BICUBIC | av::software::scaling::Flags::ACCURATE_RND,
    )
    .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))?;
    let mut rgba = av::frame::Video::empty();
    scaler
        .run(&frame, &mut rgba)
        .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))?;
    let stride = rgba.stride(0);
    let row = fw as usize * 4;
    let data = rgba.data(0);
    let mut out = Vec::with_capacity(row * fh as usize);
    for r in 0..fh as usize {
        out.extend_from_slice(&data[r * stride..r * stride + row]);
    }
    Ok(Some((fw, fh, out)))
}

/// The size of a still image FFmpeg reads (see [`still_image_rgba`]), from its header.
pub fn still_image_size(path: &Path) -> Result<Option<(u32, u32)>> {
    Ok(open_still(path)?.map(|(_, _, size)| size))
}

/// An opened still image: the input, its picture's stream index and its size.
type Still = (av::format::context::Input, usize, (u32, u32));

/// Opens `path` with libavformat when an image demuxer reads it.
fn open_still(path: &Path) -> Result<Option<Still>> {
    super::init();
    let Ok(input) = super::open_input(path) else {
        return Ok(None);
    };
    let name = input.format().name().to_string();
    if name != "image2" && !name.ends_with("_pipe") {
        return Ok(None);
    }
    let Some(st) = input.streams().best(av::media::Type::Video) else {
        return Ok(None);
    };
    let idx = st.index();
    let Ok(dec) = av::codec::context::Context::from_parameters(st.parameters())
        .and_then(|c| c.decoder().video())
    else {
        return Ok(None);
    };
    let size = (dec.width(), dec.height());
    if size.0 == 0 || size.1 == 0 {
        return Ok(None);
    }
    Ok(Some((input, idx, size)))
}
