//! Pictures in the engine's working form: planar Y'CbCr (BT.709, limited range) as f32
//! planes at full resolution (4:4:4), and the 8-bit 4:2:0 frames the encoder takes.
//!
//! Images are decoded with the `image` crate; the pixel limit is checked from the header
//! before any pixel is decoded, so a decompression bomb cannot exhaust memory.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// An 8-bit planar 4:2:0 frame, tightly packed (stride = width), even dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct Yuv420 {
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl Yuv420 {
    pub fn new(width: u32, height: u32) -> Yuv420 {
        let (w, h) = (width as usize, height as usize);
        Yuv420 {
            width,
            height,
            y: vec![16; w * h],
            u: vec![128; w * h / 4],
            v: vec![128; w * h / 4],
        }
    }
}

/// A background colour as limited-range BT.709 Y'CbCr.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YuvColor {
    pub y: f32,
    pub cb: f32,
    pub cr: f32,
}

impl YuvColor {
    pub const BLACK: YuvColor = YuvColor {
        y: 16.0,
        cb: 128.0,
        cr: 128.0,
    };

    /// From 8-bit sRGB-encoded R'G'B' (no linearisation: Y'CbCr is defined on gamma values).
    pub fn from_rgb(r: f32, g: f32, b: f32) -> YuvColor {
        let (r, g, b) = (r / 255.0, g / 255.0, b / 255.0);
        let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
        YuvColor {
            y: 16.0 + 219.0 * y,
            cb: 128.0 + 224.0 * (b - y) / 1.8556,
            cr: 128.0 + 224.0 * (r - y) / 1.5748,
        }
    }
}

/// A full-resolution Y'CbCr image with f32 samples on the 8-bit scale.
#[derive(Clone, Debug)]
pub struct Planes {
    pub width: u32,
    pub height: u32,
    pub y: Vec<f32>,
    pub cb: Vec<f32>,
    pub cr: Vec<f32>,
}

impl Planes {
    /// Converts interleaved RGBA8 (alpha composited over `bg`).
    pub fn from_rgba8(width: u32, height: u32, rgba: &[u8], bg: [u8; 3]) -> Planes {
        let n = width as usize * height as usize;
        let (mut y, mut cb, mut cr) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for px in rgba.chunks_exact(4).take(n) {
            let a = f32::from(px[3]) / 255.0;
            let mix = |c: u8, b: u8| f32::from(c) * a + f32::from(b) * (1.0 - a);
            let c = YuvColor::from_rgb(mix(px[0], bg[0]), mix(px[1], bg[1]), mix(px[2], bg[2]));
            y.push(c.y);
            cb.push(c.cb);
            cr.push(c.cr);
        }
        Planes {
            width,
            height,
            y,
            cb,
            cr,
        }
    }
}

/// Reads only the header: (width, height).
pub fn image_dimensions(path: &Path) -> Result<(u32, u32)> {
    super::check_input_file(path)?;
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?
        .with_guessed_format()
        .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))?;
    if reader.format().is_none() {
        return Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            "is not an image format vidax reads (PNG, JPEG, WebP, BMP, TIFF)",
        ));
    }
    reader.into_dimensions().map_err(|e| {
        Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("unreadable image header ({e})"),
        )
    })
}

/// Loads an image as RGBA8, refusing it from its header when it exceeds `max_pixels`.
pub fn load_image(path: &Path, max_pixels: u64, bg: [u8; 3]) -> Result<Planes> {
    let (w, h) = image_dimensions(path)?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels == 0 {
        return Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            "image has zero size",
        ));
    }
    if pixels > max_pixels {
        return Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("image is {w}x{h} = {pixels} pixels, over the limit of {max_pixels} (limits.max_image_pixels)"),
        ));
    }
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?
        .with_guessed_format()
        .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(64 << 20));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| {
        Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("cannot decode image ({e})"),
        )
    })?;
    let rgba = img.to_rgba8();
    Ok(Planes::from_rgba8(
        rgba.width(),
        rgba.height(),
        rgba.as_raw(),
        bg,
    ))
}
