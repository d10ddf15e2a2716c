//! A fast reader for the PNGs ComfyUI writes: 8-bit RGB or RGBA, not interlaced, no
//! transparency key, no EXIF. The whole file is read at once, the `IDAT` stream inflated in
//! one call by libdeflate into a buffer of the exact size the header gives, and the rows are
//! unfiltered in place. Any other PNG (or anything this reader does not take) is left to the
//! general decoder (the `image` crate), which also gives the error for a broken file: this
//! reader only ever says "not mine".
//!
//! Why: a frames folder is decoded once per output frame, and on the reference machine the
//! `png` crate's inflate (fdeflate) was about half of a frame's cost; libdeflate needs about
//! half the instructions for the same stream (docs/PERFORMANCE.md, "Frames folders").

use std::io::Read;
use std::path::Path;

/// A decoded picture: `height` rows of `width` pixels of `channels` (3: R'G'B', 4: R'G'B'A)
/// bytes, row `r` at `data[r * stride..][..width * channels]`.
#[derive(Clone, Copy, Debug)]
pub struct Rgb8<'a> {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    pub stride: usize,
    pub data: &'a [u8],
}

impl<'a> Rgb8<'a> {
    /// Row `r`'s pixels.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.width as usize * self.channels;
        &self.data[r * self.stride..r * self.stride + n]
    }
}

/// The reader's buffers, reused from picture to picture.
pub struct PngReader {
    file: Vec<u8>,
    zlib: Vec<u8>,
    raw: Vec<u8>,
    inflater: libdeflater::Decompressor,
    /// The header of the picture in `raw`, when the last read decoded one.
    last: Option<Header>,
    /// The position its `oFFs` chunk gives (in pixels), when it has one.
    offset: Option<(i32, i32)>,
}

impl Default for PngReader {
    fn default() -> Self {
        PngReader {
            file: Vec::new(),
            zlib: Vec::new(),
            raw: Vec::new(),
            inflater: libdeflater::Decompressor::new(),
            last: None,
            offset: None,
        }
    }
}

const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// What the header of a PNG this reader takes says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
}

/// The header of `head` (the file's first 33 bytes or more) when it is a PNG this reader
/// takes: 8-bit RGB or RGBA, standard compression and filtering, not interlaced.
pub fn header(head: &[u8]) -> Option<Header> {
    if head.len() < 33 || &head[..8] != SIGNATURE || &head[12..16] != b"IHDR" {
        return None;
    }
    if be32(&head[8..12]) != 13 || crc(&head[12..29]) != be32(&head[29..33]) {
        return None;
    }
    let ihdr = &head[16..29];
    let (width, height) = (be32(&ihdr[0..4]), be32(&ihdr[4..8]));
    let channels = match (ihdr[8], ihdr[9]) {
        (8, 2) => 3,
        (8, 6) => 4,
        _ => return None,
    };
    // Compression 0, filter method 0, no interlace.
    if ihdr[10..13] != [0, 0, 0] || width == 0 || height == 0 {
        return None;
    }
    Some(Header {
        width,
        height,
        channels,
    })
}

/// `png` (a PNG file's bytes) with an `oFFs` chunk in pixels placing it at `(x, y)`, right
/// after `IHDR`: a patch as `VIDAX_SavePatches` writes one (the bench's and the tests').
pub fn with_offset(png: &[u8], x: i32, y: i32) -> Vec<u8> {
    let mut body = b"oFFs".to_vec();
    body.extend_from_slice(&x.to_be_bytes());
    body.extend_from_slice(&y.to_be_bytes());
    body.push(0);
    let mut chunk = 9u32.to_be_bytes().to_vec();
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc(&body).to_be_bytes());
    // The signature (8 bytes) and IHDR (25) first.
    let at = 33.min(png.len());
    [&png[..at], &chunk[..], &png[at..]].concat()
}

/// Whether the PNG at `path` has an `oFFs` chunk before its pixels (any PNG this reader
/// takes or not; false for anything that is not a PNG).
pub fn has_offset(path: &Path) -> bool {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut sig = [0u8; 8];
    if f.read_exact(&mut sig).is_err() || sig != SIGNATURE {
        return false;
    }
    let mut head = [0u8; 8];
    while f.read_exact(&mut head).is_ok() {
        match &head[4..8] {
            b"oFFs" => return true,
            b"IDAT" | b"IEND" => return false,
            _ => {}
        }
        let skip = i64::from(be32(&head[..4])) + 4;
        if f.seek(SeekFrom::Current(skip)).is_err() {
            return false;
        }
    }
    false
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn crc(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(b);
    h.finalize()
}

impl PngReader {
    /// Decodes `path` when it is a PNG this reader takes (see the module) and its header
    /// passes `accept` (the caller's size checks: an error there is returned as it is); the
    /// picture is then [`PngReader::picture`]. `Ok(None)`: not one this reader decodes
    /// (another format, another kind of PNG, or a broken one); the caller uses the general
    /// decoder.
    pub fn read<E>(
        &mut self,
        path: &Path,
        accept: impl FnOnce(Header) -> Result<(), E>,
    ) -> Result<Option<Header>, E> {
        self.last = None;
        self.offset = None;
        let Ok(mut f) = std::fs::File::open(path) else {
            return Ok(None);
        };
        let mut head = [0u8; 33];
        if f.read_exact(&mut head).is_err() {
            return Ok(None);
        }
        let Some(h) = header(&head) else {
            return Ok(None);
        };
        accept(h)?;
        let row_bytes = h.width as usize * h.channels + 1;
        let raw_len = row_bytes * h.height as usize;
        // A file far larger than its pixels (huge metadata, stored blocks) is streamed by the
        // general decoder instead of read into memory.
        let len = f.metadata().map_or(u64::MAX, |m| m.len());
        if len > 2 * raw_len as u64 + (16 << 20) {
            return Ok(None);
        }
        self.file.clear();
        self.file.extend_from_slice(&head);
        if f.read_to_end(&mut self.file).is_err() || !self.collect_idat() {
            return Ok(None);
        }
        self.raw.resize(raw_len, 0);
        match self.inflater.zlib_decompress(&self.zlib, &mut self.raw) {
            Ok(n) if n == raw_len => {}
            _ => return Ok(None),
        }
        if !unfilter_rows(&mut self.raw, row_bytes, h.channels) {
            return Ok(None);
        }
        self.last = Some(h);
        Ok(Some(h))
    }

    /// The picture [`PngReader::read`] decoded last (empty when it decoded none).
    pub fn picture(&self) -> Rgb8<'_> {
        let h = self.last.unwrap_or(Header {
            width: 0,
            height: 0,
            channels: 3,
        });
        Rgb8 {
            width: h.width,
            height: h.height,
            channels: h.channels,
            stride: h.width as usize * h.channels + 1,
            data: self.raw.get(1..).unwrap_or_default(),
        }
    }

    /// The position of the picture [`PngReader::read`] decoded last, from its `oFFs` chunk
    /// in pixels (a patch of a bigger picture, see [`super::picture::ImageLoader`]); `None`
    /// when it has none (or one in micrometres, which says nothing about pixels).
    pub fn offset(&self) -> Option<(i32, i32)> {
        self.offset
    }

    /// Walks the chunks after `IHDR`, checking each one's CRC, and gathers the `IDAT` data.
    /// False for a PNG this reader leaves to the general decoder: a transparency key or EXIF
    /// (the general decoder turns them into alpha and an orientation), an unknown critical
    /// chunk, a damaged chunk, or no `IEND`.
    fn collect_idat(&mut self) -> bool {
        self.zlib.clear();
        let b = &self.file;
        let mut i = 33;
        while i + 12 <= b.len() {
            let len = be32(&b[i..i + 4]) as usize;
            let Some(end) = (i + 12).checked_add(len).filter(|&e| e <= b.len()) else {
                return false;
            };
            let kind = &b[i + 4..i + 8];
            let body = &b[i + 8..end - 4];
            match kind {
                b"IDAT" | b"IEND" | b"PLTE" | b"oFFs"
                    if crc(&b[i + 4..end - 4]) != be32(&b[end - 4..end]) =>
                {
                    return false
                }
                b"IDAT" | b"IEND" | b"PLTE" => {}
                b"tRNS" | b"eXIf" => return false,
                k if k[0].is_ascii_uppercase() => return false,
                _ => {}
            }
            match kind {
                b"oFFs" if body.len() == 9 && body[8] == 0 => {
                    let at = |k: usize| {
                        i32::from_be_bytes([body[k], body[k + 1], body[k + 2], body[k + 3]])
                    };
                    self.offset = Some((at(0), at(4)));
                }
                b"IDAT" => self.zlib.extend_from_slice(body),
                b"IEND" => return !self.zlib.is_empty(),
                _ => {}
            }
            i = end;
        }
        false
    }
}

/// Unfilters `raw` (rows of `row_bytes`: a filter byte, then the row) in place; false on an
/// unknown filter type.
fn unfilter_rows(raw: &mut [u8], row_bytes: usize, bpp: usize) -> bool {
    let zeros = vec![0u8; row_bytes];
    let mut prev: &[u8] = &zeros[1..];
    for row in raw.chunks_exact_mut(row_bytes) {
        let (filter, cur) = row.split_at_mut(1);
        let ok = match bpp {
            3 => unfilter::<3>(filter[0], prev, cur),
            _ => unfilter::<4>(filter[0], prev, cur),
        };
        if !ok {
            return false;
        }
        prev = cur;
    }
    true
}

/// Undoes one row's filter (PNG's five: none, Sub, Up, Average, Paeth) for `B` bytes per
/// pixel, `prev` the row above unfiltered (zeros for the first row). Sub, Average and Paeth
/// depend on the pixel to the left, so they go pixel by pixel; each pixel's channels are
/// worked as four 16-bit lanes without branches, which the compiler turns into vector
/// operations (Paeth's three-way choice becomes two selects).
fn unfilter<const B: usize>(filter: u8, prev: &[u8], cur: &mut [u8]) -> bool {
    let pixels = cur.chunks_exact_mut(B).zip(prev.chunks_exact(B));
    let lanes = |px: &[u8]| {
        let mut v = [0i16; 4];
        for (l, b) in v.iter_mut().zip(px) {
            *l = i16::from(*b);
        }
        v
    };
    match filter {
        0 => {}
        1 => {
            let mut a = [0u8; B];
            for (c, _) in pixels {
                for k in 0..B {
                    c[k] = c[k].wrapping_add(a[k]);
                    a[k] = c[k];
                }
            }
        }
        2 => {
            for (c, p) in cur.iter_mut().zip(prev) {
                *c = c.wrapping_add(*p);
            }
        }
        3 => {
            let mut a = [0i16; 4];
            for (x, p) in pixels {
                let b = lanes(p);
                let mut pred = [0i16; 4];
                for k in 0..4 {
                    pred[k] = (a[k] + b[k]) >> 1;
                }
                for k in 0..B {
                    x[k] = x[k].wrapping_add(pred[k] as u8);
                    a[k] = i16::from(x[k]);
                }
            }
        }
        4 => {
            // a: left, b: above, c: above left.
            let (mut a, mut c) = ([0i16; 4], [0i16; 4]);
            for (x, p) in pixels {
                let b = lanes(p);
                let mut pred = [0i16; 4];
                for k in 0..4 {
                    let pa = (b[k] - c[k]).abs();
                    let pb = (a[k] - c[k]).abs();
                    let pc = (a[k] + b[k] - 2 * c[k]).abs();
                    let b_or_c = if pb <= pc { b[k] } else { c[k] };
                    pred[k] = if pa <= pb && pa <= pc { a[k] } else { b_or_c };
                }
                for k in 0..B {
                    x[k] = x[k].wrapping_add(pred[k] as u8);
                    a[k] = i16::from(x[k]);
                }
                c = b;
            }
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};

    fn noisy(w: u32, h: u32, alpha: bool) -> Vec<u8> {
        let c = if alpha { 4 } else { 3 };
        let mut seed = 0x1234_5678u32;
        (0..w * h * c)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                // Smooth ramps plus noise, so every filter type gets chosen somewhere.
                ((i / c) % w + (i / c) / w * 3 + seed % 9) as u8
            })
            .collect()
    }

    fn encode(w: u32, h: u32, px: &[u8], alpha: bool, filter: FilterType) -> Vec<u8> {
        use image::ImageEncoder;
        let mut out = Vec::new();
        let t = if alpha {
            image::ExtendedColorType::Rgba8
        } else {
            image::ExtendedColorType::Rgb8
        };
        PngEncoder::new_with_quality(&mut out, CompressionType::Default, filter)
            .write_image(px, w, h, t)
            .unwrap();
        out
    }

    #[test]
    fn decodes_what_the_png_crate_decodes_for_every_filter() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = PngReader::default();
        for alpha in [false, true] {
            for filter in [
                FilterType::NoFilter,
                FilterType::Sub,
                FilterType::Up,
                FilterType::Avg,
                FilterType::Paeth,
                FilterType::Adaptive,
            ] {
                let (w, h) = (37, 23);
                let px = noisy(w, h, alpha);
                let path = dir.path().join("f.png");
                std::fs::write(&path, encode(w, h, &px, alpha, filter)).unwrap();
                let head = reader.read(&path, |_| Ok::<(), ()>(())).unwrap();
                assert!(head.is_some(), "{filter:?} alpha {alpha}: not decoded");
                let got = reader.picture();
                assert_eq!((got.width, got.height), (w, h));
                let c = got.channels;
                for r in 0..h as usize {
                    let want = &px[r * w as usize * c..(r + 1) * w as usize * c];
                    assert_eq!(got.row(r), want, "{filter:?} alpha {alpha} row {r}");
                }
            }
        }
    }

    #[test]
    fn leaves_other_pictures_and_damage_to_the_general_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = PngReader::default();
        let path = dir.path().join("f.png");
        let (w, h) = (16, 8);
        let good = encode(w, h, &noisy(w, h, false), false, FilterType::Adaptive);
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut grey = Vec::new();
        image::GrayImage::new(4, 4)
            .write_to(
                &mut std::io::Cursor::new(&mut grey),
                image::ImageFormat::Png,
            )
            .unwrap();
        cases.push(("grey", grey));
        let mut jpeg = Vec::new();
        image::RgbImage::new(4, 4)
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        cases.push(("jpeg", jpeg));
        cases.push(("cut", good[..good.len() - 20].to_vec()));
        let mut flipped = good.clone();
        let n = flipped.len();
        flipped[n - 30] ^= 0x40; // inside the last IDAT: its CRC no longer matches
        cases.push(("damaged", flipped));
        // A transparency key right after IHDR.
        let mut trns = good[..33].to_vec();
        let body = [0u8, 1, 0, 2, 0, 3];
        trns.extend_from_slice(&(body.len() as u32).to_be_bytes());
        let mut chunk = b"tRNS".to_vec();
        chunk.extend_from_slice(&body);
        trns.extend_from_slice(&chunk);
        trns.extend_from_slice(&crc(&chunk).to_be_bytes());
        trns.extend_from_slice(&good[33..]);
        cases.push(("tRNS", trns));
        for (name, bytes) in cases {
            std::fs::write(&path, bytes).unwrap();
            let got = reader.read(&path, |_| Ok::<(), ()>(())).unwrap();
            assert!(got.is_none(), "{name} was taken");
        }
        // The caller's check sees the header and its error comes back as it is.
        std::fs::write(&path, &good).unwrap();
        let e = reader.read(&path, |h| Err(h.width)).unwrap_err();
        assert_eq!(e, w);
    }
}
