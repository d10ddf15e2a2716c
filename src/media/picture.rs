//! Pictures in the engine's working form: planar Y'CbCr (BT.709, limited range) as f32
//! planes at full resolution (4:4:4), and the 8-bit 4:2:0 frames the encoder takes.
//!
//! Images are decoded with the `image` crate; the pixel limit is checked from the header
//! before any pixel is decoded, so a decompression bomb cannot exhaust memory.

use std::path::Path;

use super::pngread::{self, PngReader, Rgb8};
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

impl Yuv420 {
    /// Interleaved 8-bit R'G'B' (`width·height·3` bytes) of this frame: the inverse of the
    /// BT.709 limited-range conversion, each chroma sample covering its 2×2 block (so that
    /// converting back and averaging the block gives the chroma sample again), rounded and
    /// clamped. What a frame the engine renders looks like to a program that reads RGB.
    pub fn to_rgb8(&self, out: &mut Vec<u8>) {
        const KR: f32 = 0.2126;
        const KB: f32 = 0.0722;
        const KG: f32 = 1.0 - KR - KB;
        let (w, h) = (self.width as usize, self.height as usize);
        out.clear();
        out.reserve(w * h * 3);
        let q = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
        for y in 0..h {
            for x in 0..w {
                let c = (y / 2) * (w / 2) + x / 2;
                let luma = (f32::from(self.y[y * w + x]) - 16.0) / 219.0;
                let pb = (f32::from(self.u[c]) - 128.0) / 224.0;
                let pr = (f32::from(self.v[c]) - 128.0) / 224.0;
                let r = luma + 1.5748 * pr;
                let b = luma + 1.8556 * pb;
                let g = (luma - KR * r - KB * b) / KG;
                out.extend_from_slice(&[q(r), q(g), q(b)]);
            }
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

    /// An RGBA8 pixel composited over `bg` (the conversion of [`Planes::from_rgba8`]).
    #[inline]
    pub fn from_rgba8(px: &[u8], bg: [u8; 3]) -> YuvColor {
        let a = f32::from(px[3]) / 255.0;
        let mix = |c: u8, b: u8| f32::from(c) * a + f32::from(b) * (1.0 - a);
        YuvColor::from_rgb(mix(px[0], bg[0]), mix(px[1], bg[1]), mix(px[2], bg[2]))
    }
}

/// A full-resolution Y'CbCr image with f32 samples on the 8-bit scale.
#[derive(Clone, Debug, Default)]
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
            let c = YuvColor::from_rgba8(px, bg);
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

impl Planes {
    /// Like [`Planes::from_rgba8`] (the same BT.709 limited-range conversion, alpha composited
    /// over `bg`), for a `width`×`height` picture whose pixel `(x, y)` is read from
    /// `rgba[sy·stride + 4·sx..]` with `(sx, sy) = source_of(x, y)`: how a start video's frame
    /// is turned upright while it is converted, in one pass. The conversion constants are
    /// folded (multiplications only): per frame this runs over every source pixel.
    pub fn from_rgba8_mapped(
        width: u32,
        height: u32,
        rgba: &[u8],
        stride: usize,
        bg: [u8; 3],
        source_of: impl Fn(usize, usize) -> (usize, usize),
    ) -> Planes {
        let mut p = Planes {
            width: 0,
            height: 0,
            y: Vec::new(),
            cb: Vec::new(),
            cr: Vec::new(),
        };
        p.fill_from_rgba8_mapped(width, height, rgba, stride, bg, source_of);
        p
    }

    /// [`Planes::from_rgba8_mapped`] into this picture, reusing its buffers.
    ///
    /// `source_of` is called twice per row (for `x = 0` and `x = 1`): the mapping must be
    /// affine along a row (a rotation or flip is), so the rest of the row is a constant step.
    pub fn fill_from_rgba8_mapped(
        &mut self,
        width: u32,
        height: u32,
        rgba: &[u8],
        stride: usize,
        bg: [u8; 3],
        source_of: impl Fn(usize, usize) -> (usize, usize),
    ) {
        let (w, h) = (width as usize, height as usize);
        self.resize(width, height);
        let bgf = bg.map(f32::from);
        let index = |(sx, sy): (usize, usize)| (sy * stride + 4 * sx) as isize;
        // Gather a band of rows, column by column (for a quarter turn an output row reads a
        // source column, and walking it alone would touch a new page per pixel; a band reads
        // BAND neighbouring pixels of each source row), then convert each gathered row with
        // a straight loop the compiler vectorises.
        const BAND: usize = 32;
        let mut band = vec![[0u8; 4]; BAND * w];
        let mut rows: Vec<(isize, isize)> = Vec::with_capacity(BAND);
        for first in (0..h).step_by(BAND) {
            let count = BAND.min(h - first);
            rows.clear();
            rows.extend((first..first + count).map(|row| {
                let start = index(source_of(0, row));
                let step = if w > 1 {
                    index(source_of(1, row)) - start
                } else {
                    0
                };
                (start, step)
            }));
            for x in 0..w {
                for (r, &(start, step)) in rows.iter().enumerate() {
                    let i = (start + step * x as isize) as usize;
                    band[r * w + x].copy_from_slice(&rgba[i..i + 4]);
                }
            }
            for r in 0..count {
                self.convert_row(first + r, &band[r * w..(r + 1) * w], bgf);
            }
        }
    }

    /// Sets the size, keeping the buffers (every sample is written by the caller: only a new
    /// size needs memory).
    fn resize(&mut self, width: u32, height: u32) {
        let n = width as usize * height as usize;
        self.width = width;
        self.height = height;
        for plane in [&mut self.y, &mut self.cb, &mut self.cr] {
            if plane.len() != n {
                plane.clear();
                plane.resize(n, 0.0);
            }
        }
    }

    /// Converts one row of RGBA pixels into row `row` ([`convert_rgba_row`]).
    fn convert_row(&mut self, row: usize, pixels: &[[u8; 4]], bgf: [f32; 3]) {
        let w = pixels.len();
        let o = row * w;
        convert_rgba_row(
            pixels,
            bgf,
            &mut self.y[o..o + w],
            &mut self.cb[o..o + w],
            &mut self.cr[o..o + w],
        );
    }

    /// Fills this picture from 8-bit limited-range BT.709 Y'CbCr 4:4:4 planes (`data`,
    /// `stride` per plane: Y, Cb, Cr), which are its samples as they are.
    pub fn fill_from_yuv444(
        &mut self,
        width: u32,
        height: u32,
        data: [&[u8]; 3],
        stride: [usize; 3],
    ) {
        let w = width as usize;
        self.resize(width, height);
        for (k, plane) in [&mut self.y, &mut self.cb, &mut self.cr]
            .into_iter()
            .enumerate()
        {
            for (r, out) in plane.chunks_exact_mut(w.max(1)).enumerate() {
                let src = &data[k][r * stride[k]..r * stride[k] + w];
                for (o, &v) in out.iter_mut().zip(src) {
                    *o = f32::from(v);
                }
            }
        }
    }

    /// Fills this picture from 8-bit R'G'B' or R'G'B'A rows, with the conversion of
    /// [`Planes::fill_from_rgba8_mapped`] (same values), reusing its buffers.
    pub fn fill_from_rgb8(&mut self, px: &Rgb8, bg: [u8; 3]) {
        self.resize(px.width, px.height);
        let bgf = bg.map(f32::from);
        let mut row = Vec::new();
        for r in 0..px.height as usize {
            rgba_pixels(px, r, &mut row);
            self.convert_row(r, &row, bgf);
        }
    }
}

/// Row `r` of `px` as RGBA pixels (opaque when it has no alpha) in `row`.
fn rgba_pixels(px: &Rgb8, r: usize, row: &mut Vec<[u8; 4]>) {
    let src = px.row(r);
    row.clear();
    if px.channels == 4 {
        row.extend(src.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]));
    } else {
        row.extend(src.chunks_exact(3).map(|p| [p[0], p[1], p[2], 255]));
    }
}

/// Converts RGBA pixels to BT.709 limited-range Y'CbCr on the 8-bit scale (the conversion of
/// [`Planes::from_rgba8`], constants folded, alpha composited over `bgf`), one output per
/// pixel.
fn convert_rgba_row(
    pixels: &[[u8; 4]],
    bgf: [f32; 3],
    y: &mut [f32],
    cb: &mut [f32],
    cr: &mut [f32],
) {
    const KR: f32 = 0.2126;
    const KG: f32 = 0.7152;
    const KB: f32 = 0.0722;
    const SY: f32 = 219.0 / 255.0;
    const SB: f32 = 224.0 / 255.0 / 1.8556;
    const SR: f32 = 224.0 / 255.0 / 1.5748;
    let out = y.iter_mut().zip(cb.iter_mut()).zip(cr.iter_mut());
    for (((y, cb), cr), px) in out.zip(pixels) {
        // Branch-free compositing: exact for opaque pixels (a = 1).
        let a = f32::from(px[3]) * (1.0 / 255.0);
        let mix = |c: u8, bg: f32| f32::from(c) * a + bg * (1.0 - a);
        let (r, g, b) = (mix(px[0], bgf[0]), mix(px[1], bgf[1]), mix(px[2], bgf[2]));
        let l = KR * r + KG * g + KB * b;
        *y = 16.0 + SY * l;
        *cb = 128.0 + SB * (b - l);
        *cr = 128.0 + SR * (r - l);
    }
}

/// The renderer's working form of an 8-bit picture at its own size, made row by row without
/// a full-resolution chroma picture: `luma(r, row)` gets each row of Y' (f32 on the 8-bit
/// scale) and `chroma(j, cb, cr)` each row of Cb and Cr at half resolution
/// (`ceil(w/2)`×`ceil(h/2)`), shrunk as the renderer shrinks chroma by 2: the triangle kernel
/// of radius 2, which at an exact factor of 2 is (1, 3, 3, 1)/8 on each axis, edge samples
/// repeated. The same values as [`Planes::fill_from_rgb8`] and then the renderer's shrink, up
/// to float rounding.
pub(crate) fn rgb8_working_rows(
    px: &Rgb8,
    bg: [u8; 3],
    mut luma: impl FnMut(usize, &[f32]),
    mut chroma: impl FnMut(usize, &[f32], &[f32]),
) {
    let (w, h) = (px.width as usize, px.height as usize);
    if w == 0 || h == 0 {
        return;
    }
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let bgf = bg.map(f32::from);
    let row = || vec![0.0f32; w];
    let (mut r, mut g, mut b, mut y) = (row(), row(), row(), row());
    // The last four rows of full-resolution chroma (row i in slot i % 4), one row shrunk
    // vertically, and that row shrunk horizontally.
    let (mut ring_b, mut ring_r) = (vec![0.0f32; 4 * w], vec![0.0f32; 4 * w]);
    let (mut vb, mut vr) = (row(), row());
    let (mut hb, mut hr) = (vec![0.0f32; cw], vec![0.0f32; cw]);
    let mut next = 0;
    for i in 0..h {
        rgb_floats(px, i, bgf, [&mut r, &mut g, &mut b]);
        let slot = (i % 4) * w;
        ycbcr_rows(
            [&r, &g, &b],
            &mut y,
            &mut ring_b[slot..slot + w],
            &mut ring_r[slot..slot + w],
        );
        luma(i, &y);
        // Chroma row j needs rows 2j-1 ..= 2j+2 (clamped to the picture): all within the
        // last four once row min(2j+2, h-1) is in.
        while next < ch && (2 * next + 2).min(h - 1) <= i {
            let k = 2 * next;
            let rows = [k.saturating_sub(1), k, k + 1, k + 2].map(|i| (i.min(h - 1) % 4) * w);
            for (ring, v, out) in [(&ring_b, &mut vb, &mut hb), (&ring_r, &mut vr, &mut hr)] {
                let [p0, p1, p2, p3] = rows.map(|o| &ring[o..o + w]);
                for ((((o, &a), &b), &c), &d) in v.iter_mut().zip(p0).zip(p1).zip(p2).zip(p3) {
                    *o = (a + 3.0 * (b + c) + d) * 0.125;
                }
                shrink_row_by_2(v, out);
            }
            chroma(next, &hb, &hr);
            next += 1;
        }
    }
}

/// Row `i` of `px` as R', G', B' floats (alpha composited over `bgf`).
fn rgb_floats(px: &Rgb8, i: usize, bgf: [f32; 3], [r, g, b]: [&mut [f32]; 3]) {
    let src = px.row(i);
    let out = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
    if px.channels == 3 {
        for (((r, g), b), p) in out.zip(src.chunks_exact(3)) {
            (*r, *g, *b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
        }
    } else {
        for (((r, g), b), p) in out.zip(src.chunks_exact(4)) {
            let a = f32::from(p[3]) * (1.0 / 255.0);
            let mix = |c: u8, bg: f32| f32::from(c) * a + bg * (1.0 - a);
            (*r, *g, *b) = (mix(p[0], bgf[0]), mix(p[1], bgf[1]), mix(p[2], bgf[2]));
        }
    }
}

/// [`convert_rgba_row`]'s conversion on separate R', G', B' rows (which the compiler
/// vectorises).
fn ycbcr_rows([r, g, b]: [&[f32]; 3], y: &mut [f32], cb: &mut [f32], cr: &mut [f32]) {
    const KR: f32 = 0.2126;
    const KG: f32 = 0.7152;
    const KB: f32 = 0.0722;
    const SY: f32 = 219.0 / 255.0;
    const SB: f32 = 224.0 / 255.0 / 1.8556;
    const SR: f32 = 224.0 / 255.0 / 1.5748;
    let n = y.len();
    let (r, g, b, cb, cr) = (&r[..n], &g[..n], &b[..n], &mut cb[..n], &mut cr[..n]);
    for i in 0..n {
        let l = KR * r[i] + KG * g[i] + KB * b[i];
        y[i] = 16.0 + SY * l;
        cb[i] = 128.0 + SB * (b[i] - l);
        cr[i] = 128.0 + SR * (r[i] - l);
    }
}

/// `out[j]` = (1, 3, 3, 1)/8 over `v[2j-1 ..= 2j+2]`, indices clamped to `v`.
fn shrink_row_by_2(v: &[f32], out: &mut [f32]) {
    let last = v.len() - 1;
    let at = |i: usize| v[i.min(last)];
    let edge = |j: usize| {
        let k = 2 * j;
        (at(k.saturating_sub(1)) + 3.0 * (at(k) + at(k + 1)) + at(k + 2)) * 0.125
    };
    // Inside (2j+2 <= last): the four taps as they are.
    let inside = if v.len() >= 3 {
        (v.len() - 3) / 2 + 1
    } else {
        1
    };
    let inside = inside.min(out.len());
    for (o, t) in out[1..inside].iter_mut().zip(v[1..].windows(4).step_by(2)) {
        *o = (t[0] + 3.0 * (t[1] + t[2]) + t[3]) * 0.125;
    }
    out[0] = edge(0);
    for (j, o) in out.iter_mut().enumerate().skip(inside) {
        *o = edge(j);
    }
}

/// A picture as the frames-folder loader gives it: the decoded 8-bit rows of a PNG like
/// ComfyUI's, or any other image already in the working form.
pub enum Picture<'a> {
    Rgb8(Rgb8<'a>),
    Planes(&'a Planes),
}

impl Picture<'_> {
    pub fn size(&self) -> (u32, u32) {
        match self {
            Picture::Rgb8(p) => (p.width, p.height),
            Picture::Planes(p) => (p.width, p.height),
        }
    }
}

/// Loads pictures one after another into the same buffers: a frames folder's frames. The
/// PNGs ComfyUI writes (8-bit RGB or RGBA, see [`PngReader`]) are decoded into reused buffers
/// by the fast reader; any other image goes through [`load_image`].
///
/// With a base picture ([`ImageLoader::with_base`]), a frame may be a **patch**: an 8-bit
/// RGB PNG whose `oFFs` chunk (in pixels) places it on the base, as `VIDAX_SavePatches`
/// writes them (docs/COMFYUI_INTERFACE.md); the frame is then the base with the patch laid
/// over it. Only the patch is decoded. A patch the fast reader does not take (another kind of
/// PNG) is refused, never shown as a picture of its own.
#[derive(Default)]
pub struct ImageLoader {
    reader: PngReader,
    planes: Planes,
    base: Option<Box<Base>>,
}

/// The picture patches are laid over, and the last frame made from it.
struct Base {
    width: usize,
    height: usize,
    /// The base picture, R'G'B' bytes, rows packed.
    rgb: Vec<u8>,
    /// The base with the last patch laid over it.
    canvas: Vec<u8>,
    /// Where that patch lies (x, y, w, h) until the next one.
    laid: Option<(usize, usize, usize, usize)>,
    /// Whether the loader's last picture was the canvas (a patch laid over the base).
    current: bool,
    /// Where the canvas changed from the loader's picture before the last one, when both
    /// were patches: the two patches' boxes together (x0, y0, x1, y1, end exclusive).
    changed: Option<Rect>,
}

/// A box of pixels: x0, y0, x1, y1 (end exclusive).
pub type Rect = (usize, usize, usize, usize);

impl Base {
    /// Lays `patch` at `(x, y)` over the base on the canvas (the previous patch taken off
    /// first) and notes where the canvas changed; or says why the patch does not fit.
    fn lay(&mut self, patch: &Rgb8, (x, y): (i32, i32)) -> std::result::Result<(), String> {
        let (pw, ph) = (patch.width as usize, patch.height as usize);
        let (Ok(x), Ok(y)) = (usize::try_from(x), usize::try_from(y)) else {
            return Err(format!(
                "patch at ({x}, {y}) lies outside the {}x{} base",
                self.width, self.height
            ));
        };
        if x + pw > self.width || y + ph > self.height {
            return Err(format!(
                "{pw}x{ph} patch at ({x}, {y}) does not fit the {}x{} base",
                self.width, self.height
            ));
        }
        if patch.channels != 3 {
            return Err("a patch must be an RGB PNG (no alpha)".into());
        }
        let stride = self.width * 3;
        let last = self.laid.take();
        if let Some((lx, ly, lw, lh)) = last {
            for r in ly..ly + lh {
                let span = r * stride + lx * 3..r * stride + (lx + lw) * 3;
                self.canvas[span.clone()].copy_from_slice(&self.rgb[span]);
            }
        }
        self.changed = last.filter(|_| self.current).map(|(lx, ly, lw, lh)| {
            (
                lx.min(x),
                ly.min(y),
                (lx + lw).max(x + pw),
                (ly + lh).max(y + ph),
            )
        });
        self.current = true;
        for r in 0..ph {
            let at = (y + r) * stride + x * 3;
            self.canvas[at..at + pw * 3].copy_from_slice(patch.row(r));
        }
        self.laid = Some((x, y, pw, ph));
        Ok(())
    }

    /// The canvas as a picture.
    fn canvas_picture(&self) -> Rgb8<'_> {
        Rgb8 {
            width: self.width as u32,
            height: self.height as u32,
            channels: 3,
            stride: self.width * 3,
            data: &self.canvas,
        }
    }
}

impl ImageLoader {
    /// A loader whose frames may be patches over the picture at `base` (transparency
    /// composited over `bg`).
    pub fn with_base(base: &Path, max_pixels: u64, bg: [u8; 3]) -> Result<ImageLoader> {
        let mut loader = ImageLoader::default();
        let rgb = if loader.read_fast(base, max_pixels)? && loader.reader.offset().is_none() {
            let px = loader.reader.picture();
            let mut rgb = Vec::with_capacity(px.width as usize * px.height as usize * 3);
            for r in 0..px.height as usize {
                for p in px.row(r).chunks_exact(px.channels) {
                    rgb.extend_from_slice(&over(p, bg));
                }
            }
            image::RgbImage::from_raw(px.width, px.height, rgb)
        } else {
            let rgba = load_rgba8(base, max_pixels)?;
            let rgb: Vec<u8> = rgba.pixels().flat_map(|p| over(&p.0, bg)).collect();
            image::RgbImage::from_raw(rgba.width(), rgba.height(), rgb)
        }
        .ok_or_else(|| Error::internal("base picture of the wrong size"))?;
        loader.base = Some(Box::new(Base {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            canvas: rgb.as_raw().clone(),
            rgb: rgb.into_raw(),
            laid: None,
            current: false,
            changed: None,
        }));
        Ok(loader)
    }

    /// The picture at `path` (the checks and errors of [`load_image`]): its 8-bit rows when
    /// the fast reader takes it, else the working form from [`load_image`].
    pub fn decode(&mut self, path: &Path, max_pixels: u64, bg: [u8; 3]) -> Result<Picture<'_>> {
        Ok(self.decode_frame(path, max_pixels, bg)?.0)
    }

    /// [`ImageLoader::decode`], and where the picture differs from the one this loader gave
    /// before it, when both were patches over the base (`None`: anywhere).
    pub fn decode_frame(
        &mut self,
        path: &Path,
        max_pixels: u64,
        bg: [u8; 3],
    ) -> Result<(Picture<'_>, Option<Rect>)> {
        if self.read_fast(path, max_pixels)? {
            let frame = self.frame(path)?;
            let changed = frame.1;
            return Ok((Picture::Rgb8(frame.0), changed));
        }
        self.planes = self.load_whole(path, max_pixels, bg)?;
        Ok((Picture::Planes(&self.planes), None))
    }

    /// The picture at `path` in the working form (the checks and errors of [`load_image`]).
    pub fn load(&mut self, path: &Path, max_pixels: u64, bg: [u8; 3]) -> Result<&Planes> {
        if self.read_fast(path, max_pixels)? {
            let mut planes = std::mem::take(&mut self.planes);
            planes.fill_from_rgb8(&self.frame(path)?.0, bg);
            self.planes = planes;
        } else {
            self.planes = self.load_whole(path, max_pixels, bg)?;
        }
        Ok(&self.planes)
    }

    /// The frame the fast reader decoded last: its pixels, or the base with it laid over
    /// when it is a patch; and where it changed (see [`ImageLoader::decode_frame`]).
    fn frame(&mut self, path: &Path) -> Result<(Rgb8<'_>, Option<Rect>)> {
        let px = self.reader.picture();
        match (self.reader.offset(), self.base.as_deref_mut()) {
            (None, base) => {
                if let Some(b) = base {
                    b.current = false;
                }
                Ok((px, None))
            }
            (Some(at), Some(base)) => {
                base.lay(&px, at)
                    .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))?;
                let changed = base.changed;
                Ok((base.canvas_picture(), changed))
            }
            (Some(_), None) => Err(Error::at_path(
                ErrorKind::UnsupportedFormat,
                path,
                "is a patch (a PNG with an oFFs chunk) but there is no picture to lay it over",
            )),
        }
    }

    /// [`load_image`], for a picture the fast reader does not take; with a base, one that is
    /// a patch is refused.
    fn load_whole(&mut self, path: &Path, max_pixels: u64, bg: [u8; 3]) -> Result<Planes> {
        if let Some(b) = self.base.as_deref_mut() {
            b.current = false;
        }
        if self.base.is_some() && pngread::has_offset(path) {
            return Err(Error::at_path(
                ErrorKind::UnsupportedFormat,
                path,
                "is a patch (a PNG with an oFFs chunk) that is not an 8-bit RGB PNG",
            ));
        }
        load_image(path, max_pixels, bg)
    }

    /// Whether the fast reader decoded `path` (the pixel limit checked from its header).
    fn read_fast(&mut self, path: &Path, max_pixels: u64) -> Result<bool> {
        super::check_input_file(path)?;
        let accept =
            |h: pngread::Header| check_pixels(path, "image", (h.width, h.height), max_pixels);
        Ok(self.reader.read(path, accept)?.is_some())
    }
}

/// `frame` saved as `VIDAX_SavePatches` saves it against `reference` (a pixel outside the
/// reference counts as differing): the box of
/// pixels that differ (1×1 at the origin when none does) as an RGB PNG whose `oFFs` chunk
/// places it. The bench's stand-in for the node, and the test server's.
pub fn patch_png(frame: &image::RgbImage, reference: &image::RgbImage) -> Result<Vec<u8>> {
    let mut bbox: Option<(u32, u32, u32, u32)> = None;
    for (x, y, px) in frame.enumerate_pixels() {
        if reference.get_pixel_checked(x, y) != Some(px) {
            let (x0, y0, x1, y1) = bbox.unwrap_or((x, y, x + 1, y + 1));
            bbox = Some((x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1)));
        }
    }
    let (x0, y0, x1, y1) = bbox.unwrap_or((0, 0, 1, 1));
    let patch = image::imageops::crop_imm(frame, x0, y0, x1 - x0, y1 - y0).to_image();
    let mut png = std::io::Cursor::new(Vec::new());
    patch
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("writing a patch: {e}")))?;
    Ok(pngread::with_offset(
        &png.into_inner(),
        x0 as i32,
        y0 as i32,
    ))
}

/// An 8-bit R'G'B' or R'G'B'A pixel over `bg` (alpha composited, rounded).
fn over(p: &[u8], bg: [u8; 3]) -> [u8; 3] {
    match p {
        [r, g, b] => [*r, *g, *b],
        [r, g, b, a, ..] => {
            let a = u32::from(*a);
            let mix =
                |c: u8, k: u8| ((u32::from(c) * a + u32::from(k) * (255 - a) + 127) / 255) as u8;
            [mix(*r, bg[0]), mix(*g, bg[1]), mix(*b, bg[2])]
        }
        _ => [0; 3],
    }
}

/// The formats vidax decodes, for messages.
const READ_FORMATS: &str = "PNG, JPEG, WebP, BMP, TIFF";

/// `file` (the image at `path`, already open) from its start, buffered.
fn rewound<'f>(
    path: &Path,
    file: &'f std::fs::File,
) -> Result<std::io::BufReader<&'f std::fs::File>> {
    Ok(std::io::BufReader::new(crate::files::from_start(
        file, path,
    )?))
}

/// `file` (the image at `path`) as an image reader: the format its name says, unless its
/// content says another (what `ImageReader::open(path).with_guessed_format()` does).
fn reader_of<'f>(
    path: &Path,
    file: &'f std::fs::File,
) -> Result<image::ImageReader<std::io::BufReader<&'f std::fs::File>>> {
    let mut reader = image::ImageReader::new(rewound(path, file)?);
    if let Ok(f) = image::ImageFormat::from_path(path) {
        reader.set_format(f);
    }
    reader
        .with_guessed_format()
        .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, path, e))
}

/// Opens `file` (the image at `path`) as an image reader with its format guessed from the
/// content.
fn open_reader<'f>(
    path: &Path,
    file: &'f std::fs::File,
) -> Result<image::ImageReader<std::io::BufReader<&'f std::fs::File>>> {
    let reader = reader_of(path, file)?;
    match reader.format() {
        None => Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("is not an image format vidax reads ({READ_FORMATS})"),
        )),
        Some(f) if !f.reading_enabled() => Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("is a {f:?} image; vidax reads {READ_FORMATS}"),
        )),
        Some(_) => Ok(reader),
    }
}

/// Whether `path` is meant as a still image: its content starts like an image format the
/// `image` crate knows (read by vidax or not), or, when the content is like no image, its name
/// ends like one. A GIF counts as an animation, which libavformat reads as a video. A file that
/// passes is judged as an image only: a broken or unsupported one gets an image error, never
/// a video one.
pub fn is_meant_as_image(path: &Path) -> Result<bool> {
    is_meant_as_image_file(path, &super::open_input_file_checked(path)?)
}

/// [`is_meant_as_image`] of `file`, the input at `path` already open.
pub fn is_meant_as_image_file(path: &Path, file: &std::fs::File) -> Result<bool> {
    // The format from the name; the content's guess wins over it.
    let guessed = reader_of(path, file)
        .map_err(|e| Error::new(ErrorKind::InputNotFound, e.message))?
        .format();
    Ok(!matches!(guessed, None | Some(image::ImageFormat::Gif)))
}

fn header_error(path: &Path) -> impl Fn(image::ImageError) -> Error + '_ {
    move |e| {
        Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("unreadable image header ({e})"),
        )
    }
}

/// The stored size turned by the EXIF orientation: the size the picture is seen at.
fn upright_size((w, h): (u32, u32), o: image::metadata::Orientation) -> (u32, u32) {
    use image::metadata::Orientation as O;
    match o {
        O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH => (h, w),
        _ => (w, h),
    }
}

/// A decoder for `path` (header read) and the picture's EXIF orientation, with the `image`
/// crate's own error kept (the inner `Err`) for a file that is an image format it knows: an
/// unsupported variant may be FFmpeg's to read.
#[allow(
    clippy::type_complexity,
    reason = "the decoder type is opaque; naming the pair would not make it clearer"
)]
fn try_open_decoder<'f>(
    path: &Path,
    file: &'f std::fs::File,
) -> Result<
    std::result::Result<
        (impl image::ImageDecoder + 'f, image::metadata::Orientation),
        image::ImageError,
    >,
> {
    use image::ImageDecoder;
    Ok(open_reader(path, file)?.into_decoder().map(|mut decoder| {
        let orientation = decoder
            .orientation()
            .unwrap_or(image::metadata::Orientation::NoTransforms);
        (decoder, orientation)
    }))
}

/// Whether FFmpeg should try an image the `image` crate gave up on: it knows the format but
/// not this variant of it (a TIFF in YCbCr, …).
fn ffmpeg_fallback(e: &image::ImageError) -> bool {
    matches!(e, image::ImageError::Unsupported(_))
}

/// Decodes the whole picture (as [`load_image`] does) and drops it: a truncated or corrupt
/// file is refused before a run starts, never drawn as a grey picture.
pub fn check_decodes(path: &Path, max_pixels: u64) -> Result<()> {
    decode_image(path, max_pixels).map(|_| ())
}

/// A JPEG decoded strictly: zune-jpeg (the `image` crate's decoder) fills missing or corrupt
/// data with grey in its lenient mode, which the `image` crate uses; in strict mode it reports
/// it. The only strict complaint about an intact picture (stray bytes between headers) is let
/// through.
fn check_jpeg(path: &Path, file: &std::fs::File, (w, h): (u32, u32)) -> Result<()> {
    use std::io::Read;
    let mut bytes = Vec::new();
    rewound(path, file)?
        .read_to_end(&mut bytes)
        .map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?;
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(w.max(1) as usize)
        .set_max_height(h.max(1) as usize);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes.as_slice()),
        options,
    );
    match d.decode() {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("Extra bytes between headers") => Ok(()),
        Err(e) => Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("is a damaged JPEG: its decoder reports missing or corrupt data ({e})"),
        )),
    }
}

/// Caps what decoding a `w`×`h` picture may allocate (from the header: a bomb stops there).
fn limit_decoder(
    decoder: &mut impl image::ImageDecoder,
    path: &Path,
    (w, h): (u32, u32),
    max_pixels: u64,
) -> Result<()> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(64 << 20));
    decoder.set_limits(limits).map_err(header_error(path))
}

/// Reads only the header: the upright (width, height), EXIF orientation applied. An image the
/// `image` crate recognises but cannot read (a YCbCr TIFF) is read by FFmpeg's image
/// decoders instead.
pub fn image_dimensions(path: &Path) -> Result<(u32, u32)> {
    image_dimensions_file(path, &super::open_input_file_checked(path)?)
}

/// [`image_dimensions`] of `file`, the image at `path` already open.
pub fn image_dimensions_file(path: &Path, file: &std::fs::File) -> Result<(u32, u32)> {
    use image::ImageDecoder;
    match try_open_decoder(path, file)? {
        Ok((decoder, orientation)) => Ok(upright_size(decoder.dimensions(), orientation)),
        Err(e) if ffmpeg_fallback(&e) => {
            super::decode::still_image_size(path)?.ok_or_else(|| header_error(path)(e))
        }
        Err(e) => Err(header_error(path)(e)),
    }
}

/// What the first bytes of an image file tell about its stored size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSize {
    /// Width and height as stored (before any EXIF turn).
    Known(u32, u32),
    /// The header is not complete yet.
    NeedMore,
    /// The bytes are no image vidax reads (the reason).
    NotAnImage(String),
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The stored size an image file declares in its first bytes, for a check while the file
/// arrives. A PNG's `IHDR` (bytes 8–24) is read directly: ComfyUI's frames are PNGs, whose
/// text chunks (the prompt and workflow) may come before anything else a decoder reads.
/// Other formats go through the `image` crate's header reader, which may need more bytes.
pub fn header_size(head: &[u8]) -> HeaderSize {
    let n = head.len().min(PNG_SIGNATURE.len());
    if head[..n] == PNG_SIGNATURE[..n] {
        if head.len() < 24 {
            return HeaderSize::NeedMore;
        }
        if &head[12..16] != b"IHDR" {
            return HeaderSize::NotAnImage("a PNG whose first chunk is not IHDR".into());
        }
        let be = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        return HeaderSize::Known(be(16), be(20));
    }
    if head.len() < 16 {
        return HeaderSize::NeedMore;
    }
    let format = match image::guess_format(head) {
        Ok(f) if f.reading_enabled() => f,
        Ok(f) => {
            return HeaderSize::NotAnImage(format!("a {f:?} image; vidax reads {READ_FORMATS}"))
        }
        Err(_) => {
            return HeaderSize::NotAnImage(format!("not an image ({READ_FORMATS})"));
        }
    };
    match image::ImageReader::with_format(std::io::Cursor::new(head), format).into_dimensions() {
        Ok((w, h)) => HeaderSize::Known(w, h),
        Err(_) => HeaderSize::NeedMore,
    }
}

/// Refuses a picture (`what`: "image", "video frame") of `w`×`h` that is empty or has more
/// than `max_pixels` pixels, before anything is decoded: a decompression bomb must not get to
/// allocate.
pub fn check_pixels(path: &Path, what: &str, (w, h): (u32, u32), max_pixels: u64) -> Result<()> {
    let pixels = u64::from(w) * u64::from(h);
    if pixels == 0 {
        return Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("{what} has zero size"),
        ));
    }
    if pixels > max_pixels {
        return Err(Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            format!("{what} is {w}x{h} = {pixels} pixels, over the limit of {max_pixels} (limits.max_image_pixels)"),
        ));
    }
    Ok(())
}

/// A decoded image, upright, in the pixel format it was stored in (8/16-bit or float, grey or
/// colour, with or without alpha): the only full-size copy of the picture the engine keeps
/// while it shrinks it. Rows are converted to Y'CbCr on demand ([`Decoded::yuv_row`]), so a
/// big start image never exists as float planes at full size (an 8000×8000 RGB PNG is its
/// 192 MB of pixels here, where RGBA8 plus three f32 planes would be another 1 GB).
pub struct Decoded {
    img: image::DynamicImage,
}

impl Decoded {
    /// An image already decoded and upright.
    pub fn from_image(img: image::DynamicImage) -> Decoded {
        Decoded { img }
    }

    /// The upright size.
    pub fn size(&self) -> (u32, u32) {
        (self.img.width(), self.img.height())
    }

    /// Upright row `y` as RGBA8 into `out` (`4·width` bytes), converted as
    /// `image::DynamicImage::to_rgba8` converts (rows of other formats go through it).
    fn rgba_row(&self, y: u32, out: &mut Vec<u8>) {
        use image::DynamicImage as D;
        let w = self.img.width() as usize;
        out.clear();
        match &self.img {
            D::ImageRgba8(b) => out.extend_from_slice(&b.as_raw()[y as usize * w * 4..][..w * 4]),
            D::ImageRgb8(b) => {
                for px in b.as_raw()[y as usize * w * 3..][..w * 3].chunks_exact(3) {
                    out.extend_from_slice(&[px[0], px[1], px[2], 255]);
                }
            }
            D::ImageLuma8(b) => {
                for &l in &b.as_raw()[y as usize * w..][..w] {
                    out.extend_from_slice(&[l, l, l, 255]);
                }
            }
            other => out.extend_from_slice(other.crop_imm(0, y, w as u32, 1).to_rgba8().as_raw()),
        }
    }

    /// Upright row `y` as Y'CbCr, alpha composited over `bg`: the samples
    /// [`Planes::from_rgba8`] would give that row (`scratch` is reused between calls).
    pub fn yuv_row(
        &self,
        y: u32,
        bg: [u8; 3],
        scratch: &mut Vec<u8>,
        out: &mut dyn FnMut(usize, YuvColor),
    ) {
        self.rgba_row(y, scratch);
        for (x, px) in scratch.chunks_exact(4).enumerate() {
            out(x, YuvColor::from_rgba8(px, bg));
        }
    }

    /// The whole picture as planes (what [`load_image`] returns).
    pub fn to_planes(&self, bg: [u8; 3]) -> Result<Planes> {
        let (w, h) = self.size();
        let n = w as usize * h as usize;
        let mut planes = Planes {
            width: w,
            height: h,
            y: try_zeroed(n)?,
            cb: try_zeroed(n)?,
            cr: try_zeroed(n)?,
        };
        let mut scratch = Vec::new();
        for row in 0..h {
            let o = row as usize * w as usize;
            self.yuv_row(row, bg, &mut scratch, &mut |x, c| {
                planes.y[o + x] = c.y;
                planes.cb[o + x] = c.cb;
                planes.cr[o + x] = c.cr;
            });
        }
        Ok(planes)
    }
}

/// `n` zeros, or `INTERNAL` when the memory is not there (never an abort).
pub fn try_zeroed<T: Clone + Default>(n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| out_of_memory(n * std::mem::size_of::<T>()))?;
    v.resize(n, T::default());
    Ok(v)
}

pub(crate) fn out_of_memory(bytes: usize) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("cannot get {bytes} bytes of memory"),
    )
    .with_hint("free memory, or lower limits.max_image_pixels so that such inputs are refused")
}

/// Decodes an image, refusing it from its header when it exceeds `max_pixels`, and when its
/// decoder reports missing or corrupt data (a JPEG is decoded strictly first). The pixel
/// buffer is allocated here, fallibly: an image the machine has no memory for is `INTERNAL`
/// naming the file, never an abort. A variant the `image` crate cannot read (a YCbCr TIFF)
/// is read by FFmpeg's image decoders.
pub fn decode_image(path: &Path, max_pixels: u64) -> Result<Decoded> {
    decode_image_file(path, &super::open_input_file_checked(path)?, max_pixels)
}

/// [`decode_image`] of `file`, the image at `path` already open: header, pixel limit, strict
/// JPEG check and decode all read this one handle.
pub fn decode_image_file(path: &Path, file: &std::fs::File, max_pixels: u64) -> Result<Decoded> {
    use image::{ColorType as C, DynamicImage as D, ImageBuffer, ImageDecoder};
    let (w, h) = image_dimensions_file(path, file)?;
    check_pixels(path, "image", (w, h), max_pixels)?;
    if open_reader(path, file)?.format() == Some(image::ImageFormat::Jpeg) {
        check_jpeg(path, file, (w.max(h), w.max(h)))?;
    }
    let bad_size = || {
        Error::at_path(
            ErrorKind::UnsupportedFormat,
            path,
            "decoded size does not match the header",
        )
    };
    let from_ffmpeg = || -> Result<Decoded> {
        let (w, h, rgba) = super::decode::still_image_rgba(path, max_pixels)?.ok_or_else(|| {
            Error::at_path(ErrorKind::UnsupportedFormat, path, "cannot decode image")
        })?;
        let img = ImageBuffer::from_raw(w, h, rgba).ok_or_else(bad_size)?;
        Ok(Decoded::from_image(D::ImageRgba8(img)))
    };
    let (mut decoder, orientation) = match try_open_decoder(path, file)? {
        Ok(d) => d,
        Err(e) if ffmpeg_fallback(&e) => return from_ffmpeg(),
        Err(e) => return Err(header_error(path)(e)),
    };
    let (sw, sh) = decoder.dimensions();
    limit_decoder(&mut decoder, path, (sw, sh), max_pixels)?;
    let color = decoder.color_type();
    let bytes = usize::try_from(decoder.total_bytes()).unwrap_or(usize::MAX);
    // Read straight into a buffer of the sample type, so it is the only copy.
    fn read<T: bytemuck::Pod + Clone + Default>(
        decoder: impl ImageDecoder,
        bytes: usize,
    ) -> Result<std::result::Result<Vec<T>, image::ImageError>> {
        let mut buf: Vec<T> = try_zeroed(bytes / std::mem::size_of::<T>())?;
        Ok(decoder
            .read_image(bytemuck::cast_slice_mut(&mut buf))
            .map(|()| buf))
    }
    let named = |e: Error| e.for_path(path);
    let read =
        match color {
            C::L8 | C::La8 | C::Rgb8 | C::Rgba8 => {
                read::<u8>(decoder, bytes)
                    .map_err(named)?
                    .map(|buf| match color {
                        C::L8 => ImageBuffer::from_raw(sw, sh, buf).map(D::ImageLuma8),
                        C::La8 => ImageBuffer::from_raw(sw, sh, buf).map(D::ImageLumaA8),
                        C::Rgb8 => ImageBuffer::from_raw(sw, sh, buf).map(D::ImageRgb8),
                        _ => ImageBuffer::from_raw(sw, sh, buf).map(D::ImageRgba8),
                    })
            }
            C::L16 | C::La16 | C::Rgb16 | C::Rgba16 => read::<u16>(decoder, bytes)
                .map_err(named)?
                .map(|buf| match color {
                    C::L16 => ImageBuffer::from_raw(sw, sh, buf).map(D::ImageLuma16),
                    C::La16 => ImageBuffer::from_raw(sw, sh, buf).map(D::ImageLumaA16),
                    C::Rgb16 => ImageBuffer::from_raw(sw, sh, buf).map(D::ImageRgb16),
                    _ => ImageBuffer::from_raw(sw, sh, buf).map(D::ImageRgba16),
                }),
            C::Rgb32F | C::Rgba32F => {
                read::<f32>(decoder, bytes)
                    .map_err(named)?
                    .map(|buf| match color {
                        C::Rgb32F => ImageBuffer::from_raw(sw, sh, buf).map(D::ImageRgb32F),
                        _ => ImageBuffer::from_raw(sw, sh, buf).map(D::ImageRgba32F),
                    })
            }
            // A format newer than this code: the crate's own path (not bounded by us).
            _ => D::from_decoder(decoder).map(Some),
        };
    let mut img = match read {
        Ok(Some(img)) => img,
        Ok(None) => return Err(bad_size()),
        Err(e) if ffmpeg_fallback(&e) => return from_ffmpeg(),
        Err(e) => {
            return Err(Error::at_path(
                ErrorKind::UnsupportedFormat,
                path,
                format!("cannot decode image ({e})"),
            ))
        }
    };
    img.apply_orientation(orientation);
    Ok(Decoded { img })
}

/// Loads an image as full-size Y'CbCr planes (alpha composited over `bg`), with the checks
/// of [`decode_image`] (for pictures of about the render size; a start image of any size
/// goes through [`decode_image`] and the renderer's row-by-row shrink).
pub fn load_image(path: &Path, max_pixels: u64, bg: [u8; 3]) -> Result<Planes> {
    decode_image(path, max_pixels)?
        .to_planes(bg)
        .map_err(|e| e.for_path(path))
}

/// Loads an image as upright RGBA8 (EXIF orientation applied), with the checks of
/// [`decode_image`].
pub fn load_rgba8(path: &Path, max_pixels: u64) -> Result<image::RgbaImage> {
    Ok(decode_image(path, max_pixels)?.img.into_rgba8())
}

/// [`load_rgba8`] through `file`, a handle on `path` opened earlier (not opened again).
pub fn load_rgba8_file(
    path: &Path,
    file: &std::fs::File,
    max_pixels: u64,
) -> Result<image::RgbaImage> {
    Ok(decode_image_file(path, file, max_pixels)?.img.into_rgba8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_of_a_frame_converts_back_to_the_same_frame() {
        // Colours through the BT.709 conversion to 4:2:0 (2×2 blocks of one colour, as the
        // staged clip's frames are after rendering), to RGB and back.
        let colours = [
            [0u8, 0, 0],
            [255, 255, 255],
            [200, 150, 120],
            [10, 240, 30],
            [90, 20, 250],
        ];
        let (w, h) = (2 * colours.len() as u32, 2);
        let mut f = Yuv420::new(w, h);
        for (i, c) in colours.iter().enumerate() {
            let yc = YuvColor::from_rgb(f32::from(c[0]), f32::from(c[1]), f32::from(c[2]));
            for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                f.y[y * w as usize + 2 * i + x] = yc.y.round() as u8;
            }
            f.u[i] = yc.cb.round() as u8;
            f.v[i] = yc.cr.round() as u8;
        }
        let mut rgb = Vec::new();
        f.to_rgb8(&mut rgb);
        assert_eq!(rgb.len(), (w * h * 3) as usize);
        for (i, c) in colours.iter().enumerate() {
            let px = &rgb[6 * i..6 * i + 3];
            for k in 0..3 {
                assert!(
                    (i32::from(px[k]) - i32::from(c[k])).abs() <= 3,
                    "{c:?} -> {px:?}"
                );
            }
        }
        let rgba: Vec<u8> = rgb
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        let back = Planes::from_rgba8(w, h, &rgba, [0; 3]);
        for (a, b) in back.y.iter().zip(&f.y) {
            assert!((a - f32::from(*b)).abs() <= 0.6, "{a} vs {b}");
        }
    }

    #[test]
    fn header_size_reads_the_png_ihdr_and_other_headers_as_they_arrive() {
        let mut png = Vec::new();
        image::RgbImage::new(33, 17)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        for cut in [0, 5, 8, 23] {
            assert_eq!(
                header_size(&png[..cut]),
                HeaderSize::NeedMore,
                "{cut} bytes"
            );
        }
        assert_eq!(header_size(&png[..24]), HeaderSize::Known(33, 17));
        // A header claiming 20000x20000: known from 24 bytes, nothing else needed.
        let mut big = png[..24].to_vec();
        big[16..20].copy_from_slice(&20000u32.to_be_bytes());
        big[20..24].copy_from_slice(&20000u32.to_be_bytes());
        assert_eq!(header_size(&big), HeaderSize::Known(20000, 20000));
        let mut bmp = Vec::new();
        image::RgbImage::new(7, 5)
            .write_to(&mut std::io::Cursor::new(&mut bmp), image::ImageFormat::Bmp)
            .unwrap();
        assert_eq!(header_size(&bmp[..10]), HeaderSize::NeedMore);
        assert_eq!(header_size(&bmp), HeaderSize::Known(7, 5));
        assert!(matches!(
            header_size(b"<html>not a frame at all</html>"),
            HeaderSize::NotAnImage(_)
        ));
        assert!(matches!(
            header_size(b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00"),
            HeaderSize::NotAnImage(m) if m.contains("Gif")
        ));
    }

    #[test]
    fn mapped_conversion_matches_the_image_conversion() {
        // Every 17th grey level in each channel, with a few alpha values.
        let mut rgba = Vec::new();
        for r in (0..=255u8).step_by(51) {
            for g in (0..=255u8).step_by(51) {
                for b in (0..=255u8).step_by(51) {
                    for a in [255u8, 128, 0] {
                        rgba.extend_from_slice(&[r, g, b, a]);
                    }
                }
            }
        }
        let n = (rgba.len() / 4) as u32;
        let bg = [10, 200, 30];
        let want = Planes::from_rgba8(n, 1, &rgba, bg);
        let got = Planes::from_rgba8_mapped(n, 1, &rgba, rgba.len(), bg, |x, y| (x, y));
        for (a, b) in [(&want.y, &got.y), (&want.cb, &got.cb), (&want.cr, &got.cr)] {
            for (u, v) in a.iter().zip(b.iter()) {
                assert!((u - v).abs() < 1e-3, "{u} vs {v}");
            }
        }
        // A quarter turn read through the mapping: 3x2 source, 2x3 upright.
        let src: Vec<u8> = (0..6u8).flat_map(|k| [k * 40, 0, 0, 255]).collect();
        let turned = Planes::from_rgba8_mapped(2, 3, &src, 12, bg, |x, y| (y, 1 - x));
        let order: Vec<u8> = [3u8, 0, 4, 1, 5, 2].iter().map(|k| k * 40).collect();
        let want = Planes::from_rgba8(
            2,
            3,
            &order
                .iter()
                .flat_map(|&r| [r, 0, 0, 255])
                .collect::<Vec<u8>>(),
            bg,
        );
        assert!(turned
            .y
            .iter()
            .zip(&want.y)
            .all(|(a, b)| (a - b).abs() < 1e-3));
        // Limited-range extremes.
        let white = Planes::from_rgba8_mapped(1, 1, &[255, 255, 255, 255], 4, bg, |x, y| (x, y));
        assert!((white.y[0] - 235.0).abs() < 1e-3 && (white.cb[0] - 128.0).abs() < 1e-3);
    }

    /// A test picture in each of the image crate's formats (alpha varying where there is one).
    fn every_format() -> Vec<image::DynamicImage> {
        let (w, h) = (13u32, 7u32);
        let rgba = image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([
                (x * 19 + y * 3) as u8,
                (y * 37) as u8,
                (x * y * 5 + 7) as u8,
                (x * 20 + y * 9) as u8,
            ])
        });
        let base = image::DynamicImage::ImageRgba8(rgba);
        vec![
            image::DynamicImage::ImageLuma8(base.to_luma8()),
            image::DynamicImage::ImageLumaA8(base.to_luma_alpha8()),
            image::DynamicImage::ImageRgb8(base.to_rgb8()),
            base.clone(),
            image::DynamicImage::ImageLuma16(base.to_luma16()),
            image::DynamicImage::ImageLumaA16(base.to_luma_alpha16()),
            image::DynamicImage::ImageRgb16(base.to_rgb16()),
            image::DynamicImage::ImageRgba16(base.to_rgba16()),
            image::DynamicImage::ImageRgb32F(base.to_rgb32f()),
            image::DynamicImage::ImageRgba32F(base.to_rgba32f()),
        ]
    }

    /// The row-by-row conversion gives the planes the whole-image conversion gives (to_rgba8,
    /// then from_rgba8), sample for sample, in every pixel format.
    #[test]
    fn decoded_rows_match_the_whole_image_conversion_in_every_format() {
        let bg = [200, 30, 90];
        for img in every_format() {
            let want = {
                let rgba = img.to_rgba8();
                Planes::from_rgba8(rgba.width(), rgba.height(), rgba.as_raw(), bg)
            };
            let what = format!("{:?}", img.color());
            let got = Decoded::from_image(img).to_planes(bg).unwrap();
            assert_eq!((got.width, got.height), (want.width, want.height), "{what}");
            assert_eq!(got.y, want.y, "{what}");
            assert_eq!(got.cb, want.cb, "{what}");
            assert_eq!(got.cr, want.cr, "{what}");
        }
    }

    #[test]
    fn decode_image_reads_files_and_refuses_over_the_limit_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        every_format()[6].save(&p).unwrap(); // 16-bit RGB
        let d = decode_image(&p, 1_000).unwrap();
        assert_eq!(d.size(), (13, 7));
        let e = decode_image(&p, 90).err().unwrap();
        assert_eq!(e.kind, ErrorKind::UnsupportedFormat);
        assert!(e.message.contains("91 pixels"), "{e}");
    }

    #[test]
    fn an_allocation_too_big_is_an_error_not_an_abort() {
        let e = try_zeroed::<f32>(usize::MAX / 8).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("memory"), "{e}");
    }
}

#[cfg(test)]
mod loader_tests {
    use super::*;

    #[test]
    fn image_loader_gives_what_load_image_gives_and_reuses_its_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let bg = [10, 200, 30];
        let rgb = image::RgbImage::from_fn(37, 21, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 11) as u8, ((x + y) * 5) as u8])
        });
        let rgba = image::RgbaImage::from_fn(16, 9, |x, y| {
            image::Rgba([(x * 15) as u8, (y * 25) as u8, 90, ((x * y) % 256) as u8])
        });
        let grey = image::GrayImage::from_fn(8, 8, |x, _| image::Luma([(x * 30) as u8]));
        let (a, b, c) = (
            dir.path().join("rgb.png"),
            dir.path().join("rgba.png"),
            dir.path().join("grey.png"),
        );
        rgb.save(&a).unwrap();
        rgba.save(&b).unwrap();
        grey.save(&c).unwrap();
        let mut loader = ImageLoader::default();
        for path in [&a, &b, &c, &a] {
            let want = load_image(path, 1 << 20, bg).unwrap();
            let got = loader.load(path, 1 << 20, bg).unwrap();
            assert_eq!((got.width, got.height), (want.width, want.height));
            for (p, q) in [(&got.y, &want.y), (&got.cb, &want.cb), (&got.cr, &want.cr)] {
                assert_eq!(p.len(), q.len());
                let worst = p
                    .iter()
                    .zip(q)
                    .map(|(u, v)| (u - v).abs())
                    .fold(0.0, f32::max);
                assert!(worst < 1e-3, "{}: {worst}", path.display());
            }
        }
        // The pixel limit holds on the fast path too.
        let e = loader.load(&a, 100, bg).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedFormat);
    }

    /// `img` as a PNG with an `oFFs` chunk placing it at `(x, y)` in pixels (`unit` 0) or
    /// micrometres (`unit` 1).
    fn patch_png(img: &image::RgbImage, x: i32, y: i32, unit: u8) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        let mut bytes = pngread::with_offset(&out.into_inner(), x, y);
        if unit != 0 {
            // The unit byte is the chunk's last before its CRC.
            bytes[33 + 8 + 8] = unit;
            let crc = crc32fast::hash(&bytes[33 + 4..33 + 4 + 13]);
            bytes[33 + 17..33 + 21].copy_from_slice(&crc.to_be_bytes());
        }
        bytes
    }

    fn rgb_of(pic: Picture) -> image::RgbImage {
        let Picture::Rgb8(px) = pic else {
            panic!("not decoded by the fast reader")
        };
        assert_eq!(px.channels, 3);
        image::RgbImage::from_fn(px.width, px.height, |x, y| {
            let p = &px.row(y as usize)[x as usize * 3..][..3];
            image::Rgb([p[0], p[1], p[2]])
        })
    }

    #[test]
    fn patches_are_laid_over_the_base_and_taken_off_again() {
        let dir = tempfile::tempdir().unwrap();
        let bg = [0; 3];
        let base = image::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x * y) % 251) as u8])
        });
        let base_path = dir.path().join("still.png");
        base.save(&base_path).unwrap();
        let red = image::RgbImage::from_pixel(5, 4, image::Rgb([255, 0, 0]));
        let blue = image::RgbImage::from_pixel(3, 2, image::Rgb([0, 0, 255]));
        let write = |name: &str, bytes: Vec<u8>| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let a = write("a.png", patch_png(&red, 10, 20, 0));
        let b = write("b.png", patch_png(&blue, 35, 0, 0));
        let whole = dir.path().join("whole.png");
        image::RgbImage::from_pixel(40, 30, image::Rgb([9, 9, 9]))
            .save(&whole)
            .unwrap();
        let mut loader = ImageLoader::with_base(&base_path, 1 << 20, bg).unwrap();
        let want = |patches: &[(&image::RgbImage, u32, u32)]| {
            let mut w = base.clone();
            for (p, x, y) in patches {
                image::imageops::replace(&mut w, *p, i64::from(*x), i64::from(*y));
            }
            w
        };
        let got = rgb_of(loader.decode(&a, 1 << 20, bg).unwrap());
        assert_eq!(got, want(&[(&red, 10, 20)]));
        // The next patch replaces the last one: the base shows again where it lay.
        let got = rgb_of(loader.decode(&b, 1 << 20, bg).unwrap());
        assert_eq!(got, want(&[(&blue, 35, 0)]));
        // A whole frame is itself.
        let got = rgb_of(loader.decode(&whole, 1 << 20, bg).unwrap());
        assert_eq!(got.get_pixel(0, 0), &image::Rgb([9, 9, 9]));
        // The working form of a patched frame is that of the same frame saved whole.
        let full = dir.path().join("full.png");
        want(&[(&red, 10, 20)]).save(&full).unwrap();
        let w = load_image(&full, 1 << 20, bg).unwrap();
        let g = loader.load(&a, 1 << 20, bg).unwrap();
        let worst =
            g.y.iter()
                .zip(&w.y)
                .map(|(u, v)| (u - v).abs())
                .fold(0.0, f32::max);
        assert!(worst < 1e-3, "{worst}");
        // An offset in micrometres places nothing: the picture is a whole frame.
        let um = write("um.png", patch_png(&red, 10, 20, 1));
        assert_eq!(loader.decode(&um, 1 << 20, bg).unwrap().size(), (5, 4));
    }

    #[test]
    fn a_patch_that_does_not_fit_or_has_no_base_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bg = [0; 3];
        let base_path = dir.path().join("still.png");
        image::RgbImage::new(20, 10).save(&base_path).unwrap();
        let p = image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]));
        let mut loader = ImageLoader::with_base(&base_path, 1 << 20, bg).unwrap();
        for (name, x, y) in [("over.png", 17, 0), ("under.png", 0, 7), ("neg.png", -1, 0)] {
            let path = dir.path().join(name);
            std::fs::write(&path, patch_png(&p, x, y, 0)).unwrap();
            let e = loader.decode(&path, 1 << 20, bg).err().unwrap();
            assert_eq!(e.kind, ErrorKind::UnsupportedFormat);
            assert!(e.message.contains(name), "{}", e.message);
            assert!(e.message.contains("20x10"), "{}", e.message);
        }
        let path = dir.path().join("alone.png");
        std::fs::write(&path, patch_png(&p, 0, 0, 0)).unwrap();
        let e = ImageLoader::default()
            .decode(&path, 1 << 20, bg)
            .err()
            .unwrap();
        assert!(
            e.message.contains("no picture to lay it over"),
            "{}",
            e.message
        );
        // A patch the fast reader leaves to the general decoder (16-bit here) is refused too.
        let deep =
            image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(4, 4, image::Rgb([9u16; 3]));
        let mut out = std::io::Cursor::new(Vec::new());
        deep.write_to(&mut out, image::ImageFormat::Png).unwrap();
        let path = dir.path().join("deep.png");
        std::fs::write(&path, pngread::with_offset(&out.into_inner(), 1, 1)).unwrap();
        assert!(pngread::has_offset(&path));
        let e = loader.decode(&path, 1 << 20, bg).err().unwrap();
        assert!(e.message.contains("deep.png"), "{}", e.message);
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// Prints the cost of converting a 1920x1080 RGBA frame upright and turned a quarter
    /// (`cargo test --release -- --ignored convert_cost --nocapture`); a measurement only.
    #[test]
    #[ignore]
    fn convert_cost() {
        let (w, h) = (1920usize, 1080usize);
        let rgba: Vec<u8> = (0..w * h * 4).map(|i| (i % 251) as u8).collect();
        let mut p = Planes::from_rgba8_mapped(1, 1, &[0, 0, 0, 255], 4, [0; 3], |x, y| (x, y));
        for (name, turned) in [("upright", false), ("quarter turn", true)] {
            let t = std::time::Instant::now();
            for _ in 0..20 {
                if turned {
                    p.fill_from_rgba8_mapped(h as u32, w as u32, &rgba, w * 4, [0; 3], |x, y| {
                        (y, h - 1 - x)
                    });
                } else {
                    p.fill_from_rgba8_mapped(w as u32, h as u32, &rgba, w * 4, [0; 3], |x, y| {
                        (x, y)
                    });
                }
            }
            eprintln!(
                "{name}: {:.2} ms/frame",
                t.elapsed().as_secs_f64() * 1000.0 / 20.0
            );
        }
    }
}
