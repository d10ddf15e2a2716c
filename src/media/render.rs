//! The picture renderer: resamples a source picture through a sub-pixel crop window into an
//! output frame. The zoompan-style motion, the end-image hold (contain / cover / stretch) and
//! plain scaling are all this one operation with different windows.
//!
//! The filter is separable and scale-aware: a triangle kernel whose radius is one output
//! pixel measured in source pixels (so it is bilinear when magnifying and an area-like
//! average when minifying). Windows are never snapped to whole pixels, which is what makes
//! slow zooms smooth; samples outside the source take the background colour.

use super::picture::{rgb8_working_rows, Decoded, Planes, Yuv420, YuvColor};
use super::pngread::Rgb8;
use crate::error::Result;
use crate::timeline::CropWindow;

/// Filter taps for one axis: for output index j, `weights[j*len..][..len]` apply to source
/// indices `start[j]..start[j]+len` (those inside the source), and `bg[j]` is the weight of
/// the part of the kernel that falls outside the source.
struct AxisTaps {
    len: usize,
    start: Vec<usize>,
    weights: Vec<f32>,
    bg: Vec<f32>,
}

impl AxisTaps {
    /// `origin`/`extent`: the window on this axis in source coordinates (pixel k covers
    /// [k, k+1)); `n_out` output samples spread evenly over it; `n_src` source samples.
    fn new(origin: f64, extent: f64, n_out: usize, n_src: usize, picture: f64) -> AxisTaps {
        let step = extent / n_out as f64;
        let radius = step.max(1.0);
        let len = (2.0 * radius).ceil() as usize + 2;
        let mut start = Vec::with_capacity(n_out);
        let mut weights = vec![0.0f32; n_out * len];
        let mut bg = Vec::with_capacity(n_out);
        for j in 0..n_out {
            // Centre of output sample j in source coordinates, and in sample-index space.
            let c = origin + (j as f64 + 0.5) * step - 0.5;
            let kmin = (c - radius).floor() as i64 + 1;
            let kmax = (c + radius).ceil() as i64 - 1;
            // Share of output sample j's footprint that the source covers (edge coordinates:
            // the source spans [0, n_src)). Only the uncovered share is background: samples
            // the picture covers are picture to their edge, so an upscaled picture gets no
            // dark rim and a 1x1 picture renders its colour.
            let covered = coverage(origin, step, j, picture);
            let lo = kmin.clamp(0, n_src as i64 - 1).max(0) as usize;
            let row = &mut weights[j * len..(j + 1) * len];
            let mut total = 0.0f64;
            if covered > 0.0 {
                // The kernel over the picture, its edge samples repeated beyond the edge.
                for k in kmin..=kmax {
                    let w = 1.0 - ((k as f64 - c).abs() / radius);
                    if w <= 0.0 {
                        continue;
                    }
                    let idx = (k.clamp(0, n_src as i64 - 1) as usize).saturating_sub(lo);
                    if idx < len {
                        row[idx] += w as f32;
                        total += w;
                    }
                }
            }
            let outside = if total > 0.0 {
                for w in row.iter_mut() {
                    *w = (f64::from(*w) / total * covered) as f32;
                }
                1.0 - covered
            } else {
                1.0
            };
            start.push(lo.min(n_src.saturating_sub(1)));
            bg.push(outside as f32);
        }
        AxisTaps {
            len,
            start,
            weights,
            bg,
        }
    }

    /// The source range any output sample touches.
    fn span(&self, n_src: usize) -> (usize, usize) {
        let lo = self.start.iter().copied().min().unwrap_or(0);
        let hi = self
            .start
            .iter()
            .map(|&s| (s + self.len).min(n_src))
            .max()
            .unwrap_or(0);
        (lo, hi.max(lo))
    }
}

/// The share of output sample `j`'s footprint [origin + j·step, origin + (j+1)·step) that
/// the picture [0, extent) covers: 1 inside, 0 beyond the picture, a fraction on its edge.
fn coverage(origin: f64, step: f64, j: usize, extent: f64) -> f64 {
    let (a, b) = (origin + j as f64 * step, origin + (j + 1) as f64 * step);
    let c = (b.min(extent) - a.max(0.0)) / step;
    // Rounding must not make an inside sample look partly covered (which would send every
    // sample through the blend): within 1e-6 of whole is whole.
    if c >= 1.0 - 1e-6 {
        1.0
    } else if c <= 1e-6 {
        0.0
    } else {
        c
    }
}

/// One f32 plane of the source and the value of everything outside it.
#[derive(Clone, Copy)]
struct Plane<'a> {
    data: &'a [f32],
    /// Rows made on demand instead of `data` (which is then empty): `make(r, out)` writes
    /// row `r` into `out`. How a big source picture is shrunk without ever being held as
    /// full-size planes; only [`resample_plane`] reads such a plane.
    make: Option<MakeRow<'a>>,
    w: usize,
    h: usize,
    bg: f32,
    /// The picture's extent in this plane's samples: `w`×`h`, or less where the last
    /// sample of a shrunk working plane covers the picture's edge and some background.
    /// Coverage (what is background) follows the extent; taps clamp to the samples.
    ext: (f64, f64),
}

impl Plane<'_> {
    fn row(&self, r: i64) -> Option<&[f32]> {
        (0..self.h as i64)
            .contains(&r)
            .then(|| &self.data[r as usize * self.w..(r as usize + 1) * self.w])
    }
}

/// Where the rows of a source plane come from.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// The plane in memory.
    Held(&'a [f32]),
    /// Made on demand: `make(r, out)` writes row `r`.
    Made(MakeRow<'a>),
}

/// Writes row `r` of a plane into `out`.
type MakeRow<'a> = &'a dyn Fn(usize, &mut [f32]);

/// Rounds `v` to the nearest integer as u8 without a float-to-int conversion: adding 1.5·2^23
/// puts the rounded value in the low mantissa bits. `v` must lie in [0, 255]; every value
/// the kernels produce does, being a convex combination (non-negative weights summing to 1)
/// of source samples and background values, which are all on the 8-bit Y'CbCr scale.
#[inline]
fn to_u8_fast(v: f32) -> u8 {
    (v + 12_582_912.0).to_bits() as u8
}

/// Working buffers of the general path, reused from call to call.
#[derive(Default)]
struct General {
    /// `LANES` source rows interleaved, and a row of zeros for those past the source.
    cols: Vec<[f32; LANES]>,
    zeros: Vec<f32>,
    /// Their horizontal interpolation (interleaved), then all rows of it as plain rows.
    inter: Vec<[f32; LANES]>,
    tmp: Vec<f32>,
    /// `LANES` rows of a plane whose rows are made on demand.
    made: Vec<f32>,
}

/// General separable resampling of one plane through `win` into `ow`×`oh` f32 rows handed to
/// `put` (used for the one-time prescale and for strong minification).
fn resample_plane(
    src: Plane,
    win: &CropWindow,
    ow: usize,
    oh: usize,
    scratch: &mut General,
    mut put: impl FnMut(usize, &[f32]),
) {
    let hx = AxisTaps::new(win.x, win.w, ow, src.w, src.ext.0);
    let vy = AxisTaps::new(win.y, win.h, oh, src.h, src.ext.1);
    let (r0, r1) = vy.span(src.h);
    let rows = r1 - r0;
    // Horizontal pass over the source rows the vertical taps touch, `LANES` rows at a time:
    // their columns in use, zero-padded by one kernel length (every tap past the source has
    // weight 0) and interleaved, so that each tap is one vector multiply-add for all rows.
    let (c0, c1) = hx.span(src.w);
    let (n, padded) = (c1 - c0, c1 - c0 + hx.len);
    let g = scratch;
    g.zeros.clear();
    g.zeros.resize(n, 0.0);
    g.cols.clear();
    g.cols.resize(padded, [0.0; LANES]);
    g.inter.resize(ow, [0.0; LANES]);
    g.tmp.resize(rows.next_multiple_of(LANES) * ow, 0.0);
    g.made
        .resize(if src.make.is_some() { LANES * src.w } else { 0 }, 0.0);
    for (b, block) in g.tmp.chunks_exact_mut((LANES * ow).max(1)).enumerate() {
        if let Some(make) = src.make {
            for (k, row) in g.made.chunks_exact_mut(src.w.max(1)).enumerate() {
                let r = r0 + b * LANES + k;
                if r < r1 {
                    make(r, row);
                }
            }
        }
        let row = |k: usize| {
            let r = r0 + b * LANES + k;
            if r >= r1 {
                return &g.zeros[..];
            }
            if src.make.is_some() {
                return &g.made[k * src.w + c0..k * src.w + c1];
            }
            match src.row(r as i64) {
                Some(s) => &s[c0..c1],
                None => &g.zeros[..],
            }
        };
        interleave(std::array::from_fn(row), &mut g.cols);
        for (j, o) in g.inter.iter_mut().enumerate() {
            let s = hx.start[j] - c0;
            let w = &hx.weights[j * hx.len..(j + 1) * hx.len];
            let mut acc = [hx.bg[j] * src.bg; LANES];
            for (&wk, col) in w.iter().zip(&g.cols[s..s + hx.len]) {
                for (a, &c) in acc.iter_mut().zip(col) {
                    *a += wk * c;
                }
            }
            *o = acc;
        }
        transpose(&g.inter, block, ow);
    }
    let tmp = &g.tmp;
    // Vertical pass, row by row (vectorises across the row).
    let mut line = vec![0.0f32; ow];
    for i in 0..oh {
        let base = vy.bg[i] * src.bg;
        line.iter_mut().for_each(|v| *v = base);
        let s = vy.start[i];
        let w = &vy.weights[i * vy.len..(i + 1) * vy.len];
        for (k, &wk) in w.iter().enumerate() {
            let r = s + k;
            if wk == 0.0 || r >= r1 || r < r0 {
                continue;
            }
            let trow = &tmp[(r - r0) * ow..(r - r0 + 1) * ow];
            for (l, t) in line.iter_mut().zip(trow) {
                *l += wk * t;
            }
        }
        put(i, &line);
    }
}

/// Largest step (source pixels per output pixel) the bilinear fast path takes: up to a mild
/// minification the 2-tap filter is indistinguishable from the general one.
const BILINEAR_MAX_STEP: f64 = 1.25;

/// Rows per block of the fast path's source layout (one 128-bit vector of u16).
const LANES: usize = 8;

/// One column of a block: the samples of `LANES` consecutive rows.
type Lanes = [u16; LANES];

/// The fast path works in unsigned 8.8 fixed point: 8-bit scale values times 256.
fn fixed(v: f32) -> u16 {
    // Adding 1.5·2^23 leaves round(v·256) in the low mantissa bits (like `to_u8_fast`); every
    // working value lies in [0, 255], so the result fits.
    (v * 256.0 + 12_582_912.0).to_bits() as u16
}

/// `a·w / 2^16`, rounded down: the kernels' one multiply (`pmulhuw` once vectorised).
#[inline(always)]
fn mulhi(a: u16, w: u16) -> u16 {
    ((u32::from(a) * u32::from(w)) >> 16) as u16
}

/// The two weights of a linear interpolation at fraction `t` in [0, 1), in 0.16 fixed point:
/// they sum to 2^16 (2^16 − 1 at t = 0, where 2^16 does not fit).
fn lerp_weights(t: f64) -> (u16, u16) {
    let b = (t * 65_536.0).round().min(65_535.0) as u32;
    let a = (65_536 - b).min(65_535);
    (a as u16, b as u16)
}

/// A plane in the fast path's layout: rows in blocks of [`LANES`], the rows of a block
/// interleaved, so that the horizontal pass interpolates a whole block with a few vector
/// operations per output column. Entry `p` of a block holds padded columns `p` and `p + 1`
/// (the two taps of a sample whose left tap is `p`), where padded column 0 and those past
/// the source are background, as are the rows past the bottom.
#[derive(Default)]
struct Blocked {
    taps: Vec<[Lanes; 2]>,
    w: usize,
    h: usize,
    /// The picture's extent (see [`Plane::ext`]).
    ext: (f64, f64),
    bg: u16,
    /// Whether `taps` holds the current source (built when the fast path is first taken).
    ready: bool,
}

impl Blocked {
    fn stride(&self) -> usize {
        self.w + 2
    }

    fn fill(&mut self, src: Plane) {
        self.ready = true;
        self.bg = fixed(src.bg);
        (self.w, self.h, self.ext) = (src.w, src.h, src.ext);
        let stride = self.stride();
        let blocks = src.h.div_ceil(LANES);
        self.taps.clear();
        self.taps.resize(blocks * stride, [[0; LANES]; 2]);
        self.fill_rows(src, 0..src.h);
    }

    /// Builds again the blocks that hold source rows `rows` (of a source the size of the
    /// one this was filled from).
    fn fill_rows(&mut self, src: Plane, rows: std::ops::Range<usize>) {
        let stride = self.stride();
        let first = rows.start / LANES;
        let end = rows
            .end
            .div_ceil(LANES)
            .min(self.taps.len() / stride.max(1));
        // Each block's rows converted and padded (background once left and twice right),
        // interleaved, then paired.
        let n = src.w + 3;
        let mut rows = vec![self.bg; LANES * n];
        let mut cols = vec![[0; LANES]; n];
        let blocks = self.taps[first * stride..end.max(first) * stride].chunks_exact_mut(stride);
        for (b, taps) in (first..).zip(blocks) {
            for (k, row) in rows.chunks_exact_mut(n).enumerate() {
                match src.row((b * LANES + k) as i64) {
                    Some(r) => {
                        row[1..=src.w]
                            .iter_mut()
                            .zip(r)
                            .for_each(|(o, &v)| *o = fixed(v));
                        // The edge samples repeated: the picture reaches to its edge, and
                        // what lies beyond it is blended in by coverage afterwards.
                        row[0] = row[1];
                        let last = row[src.w];
                        row[src.w + 1..].fill(last);
                    }
                    None => row.fill(self.bg),
                }
            }
            let mut it = rows.chunks_exact(n);
            interleave(
                std::array::from_fn(|_| it.next().unwrap_or_default()),
                &mut cols,
            );
            for (t, c) in taps.iter_mut().zip(cols.windows(2)) {
                *t = [c[0], c[1]];
            }
        }
    }

    fn block(&self, b: usize) -> &[[Lanes; 2]] {
        let s = self.stride();
        &self.taps[b * s..(b + 1) * s]
    }
}

/// Per-plane working buffers of the fast path, reused from frame to frame.
#[derive(Default)]
struct Fast {
    /// Per output column: the padded source column of the left tap, and both weights
    /// repeated across the lanes.
    col: Vec<u32>,
    wa: Vec<Lanes>,
    wb: Vec<Lanes>,
    /// One horizontally interpolated block (rows interleaved).
    inter: Vec<Lanes>,
    /// Two horizontally interpolated blocks as plain rows, and which blocks they are.
    rows: Vec<u16>,
    slot: [Option<usize>; 2],
    /// Per output row: the source row of the upper tap and both weights.
    rowtaps: Vec<(i64, u16, u16)>,
    bg_row: Vec<u16>,
    /// Output columns the picture covers only partly or not at all, with their coverage.
    edge_cols: Vec<(usize, f64)>,
}

impl Fast {
    /// Makes source row `r`'s horizontally interpolated samples available, keeping the
    /// block that holds row `keep`.
    fn ensure(&mut self, src: &Blocked, r: i64, keep: i64) {
        if r < 0 || r as usize >= src.h {
            return;
        }
        let b = r as usize / LANES;
        if self.slot.contains(&Some(b)) {
            return;
        }
        let kb = (keep >= 0).then_some(keep as usize / LANES);
        let s = match self.slot {
            [None, _] => 0,
            [_, None] => 1,
            [x, _] if x == kb => 1,
            [_, y] if y == kb => 0,
            [x, y] => usize::from(y < x),
        };
        self.slot[s] = Some(b);
        let block = src.block(b);
        for ((o, &c), (wa, wb)) in self
            .inter
            .iter_mut()
            .zip(&self.col)
            .zip(self.wa.iter().zip(&self.wb))
        {
            let ([a, b], wa, wb) = (block[c as usize], *wa, *wb);
            let mut r = [0u16; LANES];
            for k in 0..LANES {
                r[k] = mulhi(a[k], wa[k]) + mulhi(b[k], wb[k]);
            }
            *o = r;
        }
        let ow = self.inter.len();
        let rows = &mut self.rows[s * LANES * ow..(s + 1) * LANES * ow];
        transpose(&self.inter, rows, ow);
    }

    fn row(&self, src: &Blocked, r: i64) -> &[u16] {
        let ow = self.inter.len();
        if r < 0 || r as usize >= src.h {
            return &self.bg_row;
        }
        let b = r as usize / LANES;
        let s = usize::from(self.slot[0] != Some(b));
        let k = s * LANES + r as usize % LANES;
        &self.rows[k * ow..(k + 1) * ow]
    }
}

/// Writes the `LANES` rows interleaved in `inter` as plain rows of `n` samples.
fn transpose<T: Copy>(inter: &[[T; LANES]], rows: &mut [T], n: usize) {
    // `rows` holds `LANES` rows (an empty one, were it short, would fail the indexing below).
    let mut it = rows.chunks_exact_mut(n);
    let mut r: [&mut [T]; LANES] = std::array::from_fn(|_| it.next().unwrap_or_default());
    let [r0, r1, r2, r3, r4, r5, r6, r7] = &mut r;
    for (j, l) in inter.iter().enumerate().take(n) {
        r0[j] = l[0];
        r1[j] = l[1];
        r2[j] = l[2];
        r3[j] = l[3];
        r4[j] = l[4];
        r5[j] = l[5];
        r6[j] = l[6];
        r7[j] = l[7];
    }
}

/// The inverse of [`transpose`]: `rows` (of equal length) interleaved into `cols`.
fn interleave<T: Copy>(rows: [&[T]; LANES], cols: &mut [[T; LANES]]) {
    let [r0, r1, r2, r3, r4, r5, r6, r7] = rows;
    let n = r0.len();
    let (r1, r2, r3, r4, r5, r6, r7) = (
        &r1[..n],
        &r2[..n],
        &r3[..n],
        &r4[..n],
        &r5[..n],
        &r6[..n],
        &r7[..n],
    );
    for (p, c) in cols[..n].iter_mut().enumerate() {
        *c = [r0[p], r1[p], r2[p], r3[p], r4[p], r5[p], r6[p], r7[p]];
    }
}

/// Output samples per step of [`lerp_row`]: one vector of bytes.
const CHUNK: usize = 2 * LANES;

/// One output row: `h0`·`wa` + `h1`·`wb` rounded to 8 bits, in fixed-size chunks (which the
/// compiler vectorises).
fn lerp_row(out: &mut [u8], h0: &[u16], h1: &[u16], wa: u16, wb: u16) {
    // 128 rounds to nearest; the extra 1 offsets what the two passes' rounded-down products
    // lose on average (measured against the f32 kernel: mean difference 0.0003 levels).
    let lerp = |a: u16, b: u16| ((mulhi(a, wa) + mulhi(b, wb) + 129) >> 8) as u8;
    let mut o = out.chunks_exact_mut(CHUNK);
    let (mut a, mut b) = (h0.chunks_exact(CHUNK), h1.chunks_exact(CHUNK));
    for ((o, a), b) in o.by_ref().zip(a.by_ref()).zip(b.by_ref()) {
        // Fixed-size views (the lengths are exact, so these conversions cannot fail).
        let (Ok(o), Ok(a), Ok(b)) = (
            <&mut [u8; CHUNK]>::try_from(o),
            <&[u16; CHUNK]>::try_from(a),
            <&[u16; CHUNK]>::try_from(b),
        ) else {
            continue;
        };
        for k in 0..CHUNK {
            o[k] = lerp(a[k], b[k]);
        }
    }
    for ((o, &a), &b) in o
        .into_remainder()
        .iter_mut()
        .zip(a.remainder())
        .zip(b.remainder())
    {
        *o = lerp(a, b);
    }
}

/// The 2-tap filter along one axis: for each of `n` output samples spread evenly over
/// [`origin`, `origin + extent`), the source index of the left tap and the two weights.
fn lerp_taps(origin: f64, extent: f64, n: usize) -> impl Iterator<Item = (i64, u16, u16)> {
    let step = extent / n as f64;
    (0..n).map(move |j| {
        let c = origin + (j as f64 + 0.5) * step - 0.5;
        let f = c.floor();
        let (a, b) = lerp_weights(c - f);
        (f as i64, a, b)
    })
}

/// Bilinear resampling straight into 8-bit rows (the per-frame fast path), in 8.8 fixed
/// point with 0.16 weights: a horizontal pass over blocks of source rows (each block once per
/// frame), then a vertical pass per output row, both vectorised.
fn bilinear_plane(
    src: &Blocked,
    win: &CropWindow,
    out: &mut [u8],
    ow: usize,
    oh: usize,
    fast: &mut Fast,
) {
    if ow == 0 || oh == 0 {
        return;
    }
    // Column taps into the padded block: padded index p = source index + 1; a tap wholly
    // outside the source reads background only.
    fast.col.clear();
    fast.wa.clear();
    fast.wb.clear();
    for (f, a, b) in lerp_taps(win.x, win.w, ow) {
        let p = f + 1;
        let (a, b) = if p < 0 || p > src.w as i64 {
            lerp_weights(0.0)
        } else {
            (a, b)
        };
        fast.col.push(p.clamp(0, src.w as i64 + 1) as u32);
        fast.wa.push([a; LANES]);
        fast.wb.push([b; LANES]);
    }
    fast.rowtaps.clear();
    fast.rowtaps.extend(lerp_taps(win.y, win.h, oh));
    fast.inter.clear();
    fast.inter.resize(ow, [0; LANES]);
    fast.rows.resize(2 * LANES * ow, 0);
    fast.slot = [None, None];
    fast.bg_row.clear();
    fast.bg_row.resize(ow, src.bg);
    // Output samples the picture does not fully cover (its edges and beyond) are blended with
    // the background by the share they cover; rows and columns beyond the picture are
    // background.
    let (sx, sy) = (win.w / ow as f64, win.h / oh as f64);
    fast.edge_cols.clear();
    fast.edge_cols.extend(
        (0..ow)
            .map(|j| (j, coverage(win.x, sx, j, src.ext.0)))
            .filter(|&(_, c)| c < 1.0),
    );
    let last = src.h as i64 - 1;
    let bg = f32::from(src.bg) / 256.0;
    for (i, orow) in out.chunks_exact_mut(ow).take(oh).enumerate() {
        let cy = coverage(win.y, sy, i, src.ext.1);
        if cy == 0.0 {
            orow.fill(to_u8_fast(bg));
            continue;
        }
        // Row taps clamped to the picture: its edge rows repeated.
        let (r, wa, wb) = fast.rowtaps[i];
        let (r0, r1) = (r.clamp(0, last), (r + 1).clamp(0, last));
        fast.ensure(src, r0, r1);
        fast.ensure(src, r1, r0);
        let (h0, h1) = (fast.row(src, r0), fast.row(src, r1));
        lerp_row(orow, h0, h1, wa, wb);
        let blend = |o: &mut u8, c: f64| {
            let c = c as f32;
            *o = to_u8_fast(c * f32::from(*o) + (1.0 - c) * bg);
        };
        if cy < 1.0 {
            for (j, o) in orow.iter_mut().enumerate() {
                blend(o, cy * coverage(win.x, sx, j, src.ext.0));
            }
        } else {
            for &(j, c) in &fast.edge_cols {
                blend(&mut orow[j], c);
            }
        }
    }
}

/// The least shrink of the source worth its resampling: a source that the tightest window
/// would minify by less (a picture staged for ComfyUI at the size the zoom needs, rounded up
/// to whole pixels) is kept as it is, and the bilinear fast path minifies it that little
/// (its widest window stays within [`BILINEAR_MAX_STEP`] for every zoom strength up to 0.23).
const PRESCALE_MIN: f64 = 1.01;

/// Renders windows of one source picture into 4:2:0 frames.
///
/// The source is kept in a working form chosen once: luma at a resolution where the tightest
/// window is seen at most 1:1 (shrunk with the area-like filter when the source is larger),
/// and chroma at half that resolution, like the 4:2:0 output. Every frame is then a
/// magnification or a mild minification on each plane, which the bilinear fast path handles.
pub struct Renderer {
    luma: Vec<f32>,
    luma_w: usize,
    luma_h: usize,
    cb: Vec<f32>,
    cr: Vec<f32>,
    chroma_w: usize,
    chroma_h: usize,
    /// Source pixels per working luma pixel (1 unless the source was shrunk).
    prescale: f64,
    /// The source picture's size.
    src_size: (f64, f64),
    bg: YuvColor,
    out_w: u32,
    out_h: u32,
    work: Box<Work>,
}

/// The renderer's working buffers, reused from frame to frame (boxed: they are many).
#[derive(Default)]
struct Work {
    /// The three planes in the fast path's layout, built when it is first taken.
    blocked: [Blocked; 3],
    general: General,
    fast: Fast,
    /// A converted picture, when an 8-bit source is shrunk for luma.
    planes: Planes,
}

impl Work {
    /// Resamples plane `k` (`src`) through `win` into the 8-bit plane `out` (`ow`×`oh`,
    /// tightly packed), taking the bilinear fast path when the window allows it.
    fn resample(
        &mut self,
        k: usize,
        src: Plane,
        win: &CropWindow,
        out: &mut [u8],
        ow: usize,
        oh: usize,
    ) {
        if win.w / ow as f64 <= BILINEAR_MAX_STEP && win.h / oh as f64 <= BILINEAR_MAX_STEP {
            let blocked = &mut self.blocked[k];
            if !blocked.ready {
                blocked.fill(src);
            }
            bilinear_plane(blocked, win, out, ow, oh, &mut self.fast);
        } else {
            resample_plane(src, win, ow, oh, &mut self.general, |i, line| {
                for (o, &v) in out[i * ow..(i + 1) * ow].iter_mut().zip(line) {
                    *o = to_u8_fast(v);
                }
            });
        }
    }
}

/// Shrinks a `w`×`h` plane by `factor` (>= 1) with the area-like filter into `out`; the
/// result covers `ceil(w/factor)`×`ceil(h/factor)` working pixels of `factor` source pixels
/// each, and those dimensions are returned.
///
/// For made rows (a decoded picture of any size) the buffers that grow with the source are
/// reserved fallibly, so a picture too big for the memory at hand is an error, not an abort;
/// held planes reserve as they always did (they are already in memory, and these buffers are
/// smaller).
fn shrink_into(
    src: Rows,
    w: usize,
    h: usize,
    bg: f32,
    factor: f64,
    scratch: &mut General,
    out: &mut Vec<f32>,
) -> Result<(usize, usize)> {
    let ww = (w as f64 / factor).ceil().max(1.0) as usize;
    let wh = (h as f64 / factor).ceil().max(1.0) as usize;
    let win = CropWindow {
        x: 0.0,
        y: 0.0,
        w: ww as f64 * factor,
        h: wh as f64 * factor,
    };
    out.clear();
    let (data, make) = match src {
        Rows::Held(d) => {
            out.reserve(ww * wh);
            (d, None)
        }
        Rows::Made(m) => {
            // The horizontal pass keeps every source row it touches (at most h, rounded up
            // to whole blocks), `ww` samples each.
            let tmp = (h + LANES) * ww;
            if scratch.tmp.capacity() < tmp {
                scratch.tmp = super::picture::try_zeroed(tmp)?;
            }
            out.try_reserve_exact(ww * wh)
                .map_err(|_| super::picture::out_of_memory(ww * wh * 4))?;
            (&[][..], Some(m))
        }
    };
    resample_plane(
        Plane {
            data,
            make,
            w,
            h,
            bg,
            ext: (win.w, win.h),
        },
        &win,
        ww,
        wh,
        scratch,
        |_, line| out.extend_from_slice(line),
    );
    Ok((ww, wh))
}

impl Renderer {
    /// `min_window_w`: the narrowest window (in source pixels) that will be asked for.
    pub fn new(src: Planes, out_w: u32, out_h: u32, bg: YuvColor, min_window_w: f64) -> Renderer {
        let mut r = Renderer::empty(out_w, out_h, bg);
        r.set_source(&src, min_window_w);
        r
    }

    /// A renderer for a decoded image of any size: its planes are made row by row from the
    /// decoded pixels (alpha composited over `bg_rgb`) and shrunk on the way, so memory stays
    /// at the decoded picture plus the working planes. The working planes are those
    /// [`Renderer::new`] makes from [`Decoded::to_planes`], sample for sample.
    pub fn from_decoded(
        src: &Decoded,
        bg_rgb: [u8; 3],
        out_w: u32,
        out_h: u32,
        bg: YuvColor,
        min_window_w: f64,
    ) -> Result<Renderer> {
        let mut r = Renderer::empty(out_w, out_h, bg);
        let (w, h) = src.size();
        let scratch = std::cell::RefCell::new(Vec::new());
        let plane = |k: usize| {
            let scratch = &scratch;
            move |row: usize, out: &mut [f32]| {
                src.yuv_row(
                    row as u32,
                    bg_rgb,
                    &mut scratch.borrow_mut(),
                    &mut |x, c| {
                        out[x] = [c.y, c.cb, c.cr][k];
                    },
                );
            }
        };
        let (y, cb, cr) = (plane(0), plane(1), plane(2));
        r.set_rows(
            (w as usize, h as usize),
            [Rows::Made(&y), Rows::Made(&cb), Rows::Made(&cr)],
            min_window_w,
        )?;
        Ok(r)
    }

    /// Points this renderer at another source picture, reusing its buffers: what a start
    /// video does once per source frame it shows (same result as [`Renderer::new`] with the
    /// same arguments).
    pub fn set_source(&mut self, src: &Planes, min_window_w: f64) {
        let size = (src.width as usize, src.height as usize);
        let rows = [Rows::Held(&src.y), Rows::Held(&src.cb), Rows::Held(&src.cr)];
        // Held rows reserve infallibly (see `shrink_into`): this cannot return an error.
        let _ = self.set_rows(size, rows, min_window_w);
    }

    /// The working planes from the source's Y', Cb and Cr rows: luma shrunk to the
    /// narrowest window's scale (kept whole when no shrink is needed), chroma to half that.
    fn set_rows(
        &mut self,
        (sw, sh): (usize, usize),
        [y, cb, cr]: [Rows; 3],
        min_window_w: f64,
    ) -> Result<()> {
        let factor = (min_window_w / f64::from(self.out_w)).max(1.0);
        let factor = if factor > PRESCALE_MIN { factor } else { 1.0 };
        let bg = self.bg;
        (self.luma_w, self.luma_h) = if factor > PRESCALE_MIN {
            shrink_into(
                y,
                sw,
                sh,
                bg.y,
                factor,
                &mut self.work.general,
                &mut self.luma,
            )?
        } else {
            self.luma.clear();
            match y {
                Rows::Held(data) => self.luma.extend_from_slice(data),
                Rows::Made(make) => {
                    self.luma = super::picture::try_zeroed(sw * sh)?;
                    for (r, row) in self.luma.chunks_exact_mut(sw.max(1)).enumerate() {
                        make(r, row);
                    }
                }
            }
            (sw, sh)
        };
        let cf = factor * 2.0;
        (self.chroma_w, self.chroma_h) =
            shrink_into(cb, sw, sh, bg.cb, cf, &mut self.work.general, &mut self.cb)?;
        shrink_into(cr, sw, sh, bg.cr, cf, &mut self.work.general, &mut self.cr)?;
        self.prescale = factor;
        self.src_size = (sw as f64, sh as f64);
        self.work.blocked.iter_mut().for_each(|b| b.ready = false);
        Ok(())
    }

    /// A renderer with no source yet: give it one ([`Renderer::set_source_rgb8`],
    /// [`Renderer::set_source`]) before rendering.
    pub fn empty(out_w: u32, out_h: u32, bg: YuvColor) -> Renderer {
        Renderer {
            luma: Vec::new(),
            luma_w: 0,
            luma_h: 0,
            cb: Vec::new(),
            cr: Vec::new(),
            chroma_w: 0,
            chroma_h: 0,
            prescale: 1.0,
            src_size: (0.0, 0.0),
            bg,
            out_w,
            out_h,
            work: Box::default(),
        }
    }

    /// [`Renderer::set_source`] for an 8-bit picture (`bg` composited under its alpha):
    /// converted straight into the working form (luma as it is, chroma shrunk by 2 as the
    /// rows come) unless luma is to be shrunk too, without a full-resolution Y'CbCr picture
    /// in between. The same working form as `set_source` of the converted picture, up to
    /// float rounding.
    pub fn set_source_rgb8(&mut self, px: &Rgb8, bg: [u8; 3], min_window_w: f64) {
        let factor = (min_window_w / f64::from(self.out_w)).max(1.0);
        let factor = if factor > PRESCALE_MIN { factor } else { 1.0 };
        if factor > PRESCALE_MIN {
            let mut planes = std::mem::take(&mut self.work.planes);
            planes.fill_from_rgb8(px, bg);
            self.set_source(&planes, min_window_w);
            self.work.planes = planes;
            return;
        }
        let (w, h) = (px.width as usize, px.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        self.luma.resize(w * h, 0.0);
        self.cb.resize(cw * ch, 0.0);
        self.cr.resize(cw * ch, 0.0);
        let (luma, cb, cr) = (&mut self.luma, &mut self.cb, &mut self.cr);
        rgb8_working_rows(
            px,
            bg,
            |r, row| luma[r * w..(r + 1) * w].copy_from_slice(row),
            |j, b, r| {
                cb[j * cw..(j + 1) * cw].copy_from_slice(b);
                cr[j * cw..(j + 1) * cw].copy_from_slice(r);
            },
        );
        (self.luma_w, self.luma_h) = (w, h);
        (self.chroma_w, self.chroma_h) = (cw, ch);
        self.prescale = 1.0;
        self.src_size = (w as f64, h as f64);
        self.work.blocked.iter_mut().for_each(|b| b.ready = false);
    }

    /// Brings the working form up to date after the picture it was last set from with
    /// [`Renderer::set_source_rgb8`] changed inside `rect` (`x0, y0, x1, y1`, source pixels,
    /// end exclusive); `px` is the changed picture. Only the samples whose filters reach into
    /// `rect` are made again (from a margin around it, so that they come out as a whole
    /// conversion gives them), and only the fast path's blocks that hold them. False, with
    /// nothing done, when the working form is not made that way (a source shrunk for luma, or
    /// of another size): then set the source again.
    pub fn update_rgb8(
        &mut self,
        px: &Rgb8,
        bg: [u8; 3],
        min_window_w: f64,
        (x0, y0, x1, y1): (usize, usize, usize, usize),
    ) -> bool {
        let (w, h) = (px.width as usize, px.height as usize);
        let factor = (min_window_w / f64::from(self.out_w)).max(1.0);
        if factor > PRESCALE_MIN
            || self.prescale != 1.0
            || (self.luma_w, self.luma_h) != (w, h)
            || self.src_size != (w as f64, h as f64)
            || x1 > w
            || y1 > h
        {
            return false;
        }
        if x0 >= x1 || y0 >= y1 {
            return true;
        }
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        // The chroma samples whose taps (source rows 2j-1 ..= 2j+2, and the same across)
        // reach into the rect, and the span of source pixels that makes them exactly: it
        // starts on an even pixel, two before the first sample's own (unless at the edge),
        // so every sample kept has all its taps inside the span or clamped at a true edge.
        let span = |a: usize, b: usize, n: usize, cn: usize| {
            let (j0, j1) = (a.saturating_sub(1) / 2, (b / 2 + 1).min(cn));
            let s0 = if j0 == 0 { 0 } else { 2 * j0 - 2 };
            (j0, j1, s0, (2 * j1 + 2).min(n))
        };
        let (i0, i1, sx0, sx1) = span(x0, x1, w, cw);
        let (j0, j1, sy0, sy1) = span(y0, y1, h, ch);
        let sub = Rgb8 {
            width: (sx1 - sx0) as u32,
            height: (sy1 - sy0) as u32,
            channels: px.channels,
            stride: px.stride,
            data: &px.data[sy0 * px.stride + sx0 * px.channels..],
        };
        let (luma, cb, cr) = (&mut self.luma, &mut self.cb, &mut self.cr);
        let (ci0, cj0) = (sx0 / 2, sy0 / 2);
        rgb8_working_rows(
            &sub,
            bg,
            |r, row| {
                let at = (sy0 + r) * w + sx0;
                luma[at..at + row.len()].copy_from_slice(row);
            },
            |j, b, r| {
                let j = cj0 + j;
                if (j0..j1).contains(&j) {
                    let at = j * cw;
                    cb[at + i0..at + i1].copy_from_slice(&b[i0 - ci0..i1 - ci0]);
                    cr[at + i0..at + i1].copy_from_slice(&r[i0 - ci0..i1 - ci0]);
                }
            },
        );
        let planes = [
            (&self.luma, w, h, self.bg.y, sy0..sy1),
            (&self.cb, cw, ch, self.bg.cb, j0..j1),
            (&self.cr, cw, ch, self.bg.cr, j0..j1),
        ];
        for (blocked, (data, pw, ph, pbg, rows)) in self.work.blocked.iter_mut().zip(planes) {
            if blocked.ready {
                let plane = Plane {
                    data,
                    make: None,
                    w: pw,
                    h: ph,
                    bg: pbg,
                    ext: blocked.ext,
                };
                blocked.fill_rows(plane, rows);
            }
        }
        true
    }

    /// What a renderer gives for the window of the whole of `px` when `px` has the output's
    /// size (every output sample is its working sample, rounded), straight from the rows:
    /// the frames-folder path when ComfyUI's frames have the render size. `out` must have
    /// `px`'s size (even, as every output frame).
    pub fn render_whole_rgb8(px: &Rgb8, bg: [u8; 3], out: &mut Yuv420) {
        let (w, cw) = (px.width as usize, px.width as usize / 2);
        let (y, u, v) = (&mut out.y, &mut out.u, &mut out.v);
        let put = |out: &mut [u8], row: &[f32]| {
            for (o, &s) in out.iter_mut().zip(row) {
                *o = to_u8_fast(s);
            }
        };
        rgb8_working_rows(
            px,
            bg,
            |r, row| put(&mut y[r * w..(r + 1) * w], row),
            |j, b, r| {
                put(&mut u[j * cw..(j + 1) * cw], b);
                put(&mut v[j * cw..(j + 1) * cw], r);
            },
        );
    }

    /// Renders `win` (in original source coordinates) into `out`.
    pub fn render(&mut self, win: &CropWindow, out: &mut Yuv420) {
        let scaled = |k: f64| CropWindow {
            x: win.x / k,
            y: win.y / k,
            w: win.w / k,
            h: win.h / k,
        };
        let (ow, oh) = (self.out_w as usize, self.out_h as usize);
        let (lw, cw) = (scaled(self.prescale), scaled(self.prescale * 2.0));
        let (cw_, ch_) = (self.chroma_w, self.chroma_h);
        // The picture's extent in each working plane: the source size over the plane's scale.
        let ext = |k: f64| (self.src_size.0 / k, self.src_size.1 / k);
        let (le, ce) = (ext(self.prescale), ext(self.prescale * 2.0));
        let plane = |data, w, h, bg, ext| Plane {
            data,
            make: None,
            w,
            h,
            bg,
            ext,
        };
        let luma = plane(&self.luma, self.luma_w, self.luma_h, self.bg.y, le);
        let work = &mut self.work;
        work.resample(0, luma, &lw, &mut out.y, ow, oh);
        let cb = plane(&self.cb, cw_, ch_, self.bg.cb, ce);
        work.resample(1, cb, &cw, &mut out.u, ow / 2, oh / 2);
        let cr = plane(&self.cr, cw_, ch_, self.bg.cr, ce);
        work.resample(2, cr, &cw, &mut out.v, ow / 2, oh / 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(w: u32, h: u32, y: f32) -> Planes {
        let n = (w * h) as usize;
        Planes {
            width: w,
            height: h,
            y: vec![y; n],
            cb: vec![128.0; n],
            cr: vec![128.0; n],
        }
    }

    #[test]
    fn identity_window_reproduces_the_source() {
        let (w, h) = (16u32, 8u32);
        let mut p = flat(w, h, 0.0);
        for (i, v) in p.y.iter_mut().enumerate() {
            *v = 16.0 + (i % 200) as f32;
        }
        let want: Vec<u8> = p.y.iter().map(|v| *v as u8).collect();
        let mut r = Renderer::new(p, w, h, YuvColor::BLACK, f64::from(w));
        let mut out = Yuv420::new(w, h);
        r.render(
            &CropWindow {
                x: 0.0,
                y: 0.0,
                w: f64::from(w),
                h: f64::from(h),
            },
            &mut out,
        );
        assert_eq!(out.y, want);
    }

    #[test]
    fn odd_row_counts_render_every_row() {
        // 6x5 source, identity window: the last (unpaired) row must be rendered too.
        let (w, h) = (6u32, 5u32);
        let mut p = flat(w, h, 0.0);
        for (i, v) in p.y.iter_mut().enumerate() {
            *v = 20.0 + 7.0 * i as f32;
        }
        let want: Vec<u8> = p.y.iter().map(|v| *v as u8).collect();
        let mut r = Renderer::new(p, w, h, YuvColor::BLACK, f64::from(w));
        let mut out = Yuv420 {
            width: w,
            height: h,
            y: vec![0; 30],
            u: vec![0; 6],
            v: vec![0; 6],
        };
        let win = CropWindow {
            x: 0.0,
            y: 0.0,
            w: f64::from(w),
            h: f64::from(h),
        };
        r.render(&win, &mut out);
        assert_eq!(out.y, want);
    }

    #[test]
    fn outside_the_source_is_background() {
        let mut r = Renderer::new(flat(4, 4, 235.0), 8, 4, YuvColor::BLACK, 8.0);
        let mut out = Yuv420::new(8, 4);
        // A window twice as wide as the source, centred: pillarbox.
        r.render(
            &CropWindow {
                x: -2.0,
                y: 0.0,
                w: 8.0,
                h: 4.0,
            },
            &mut out,
        );
        assert_eq!(&out.y[0..8], &[16, 16, 235, 235, 235, 235, 16, 16]);
    }

    #[test]
    fn a_magnified_picture_reaches_its_edges_and_edges_blend_by_coverage() {
        // 4x4 grey magnified 4x (fast path) and 1x1 magnified to 2x2: no dark rim.
        for (src, ow) in [(4u32, 16u32), (1, 2)] {
            let mut r = Renderer::new(flat(src, src, 200.0), ow, ow, YuvColor::BLACK, 0.5);
            let mut out = Yuv420::new(ow, ow);
            let whole = CropWindow {
                x: 0.0,
                y: 0.0,
                w: f64::from(src),
                h: f64::from(src),
            };
            r.render(&whole, &mut out);
            assert!(out.y.iter().all(|&v| v == 200), "{src}->{ow}: {:?}", out.y);
        }
        // The window starts half an output pixel left of the picture: the first column is
        // half picture, half background (16); the rest is picture.
        let mut r = Renderer::new(flat(4, 4, 200.0), 16, 16, YuvColor::BLACK, 0.5);
        let mut out = Yuv420::new(16, 16);
        let shifted = CropWindow {
            x: -0.125,
            y: 0.0,
            w: 4.0,
            h: 4.0,
        };
        r.render(&shifted, &mut out);
        assert_eq!(out.y[0], 108, "(200 + 16) / 2");
        assert!(out.y[1..16].iter().all(|&v| v == 200), "{:?}", &out.y[..16]);
    }

    #[test]
    fn half_pixel_shift_interpolates() {
        let mut p = flat(4, 2, 0.0);
        p.y = vec![16.0, 116.0, 216.0, 216.0, 16.0, 116.0, 216.0, 216.0];
        let mut r = Renderer::new(p, 2, 2, YuvColor::BLACK, 2.0);
        let mut out = Yuv420::new(2, 2);
        r.render(
            &CropWindow {
                x: 0.5,
                y: 0.0,
                w: 2.0,
                h: 2.0,
            },
            &mut out,
        );
        assert_eq!(&out.y[0..2], &[66, 166]);
    }

    #[test]
    fn set_source_renders_like_a_new_renderer() {
        let ramp = |w: u32, h: u32, k: f32| {
            let mut p = flat(w, h, 0.0);
            for (i, v) in p.y.iter_mut().enumerate() {
                *v = 16.0 + ((i as f32 * k) % 200.0);
            }
            for (i, v) in p.cb.iter_mut().enumerate() {
                *v = 60.0 + ((i as f32 * 0.7) % 120.0);
            }
            p
        };
        let (a, b) = (ramp(64, 48, 1.3), ramp(200, 120, 0.4));
        let win = |p: &Planes| crop_window_contain(p.width, p.height, 32, 24);
        let mut reused = Renderer::new(a.clone(), 32, 24, YuvColor::BLACK, win(&a).w);
        for p in [&b, &a, &b] {
            reused.set_source(p, win(p).w);
            let mut fresh = Renderer::new(p.clone(), 32, 24, YuvColor::BLACK, win(p).w);
            let (mut x, mut y) = (Yuv420::new(32, 24), Yuv420::new(32, 24));
            reused.render(&win(p), &mut x);
            fresh.render(&win(p), &mut y);
            assert_eq!(x, y);
        }
    }

    /// Samples of two frames that differ, and by how much at most.
    fn differences(a: &Yuv420, b: &Yuv420) -> (usize, u8) {
        let pairs =
            a.y.iter()
                .zip(&b.y)
                .chain(a.u.iter().zip(&b.u))
                .chain(a.v.iter().zip(&b.v));
        pairs.fold((0, 0), |(n, worst), (p, q)| {
            let d = p.abs_diff(*q);
            (n + usize::from(d > 0), worst.max(d))
        })
    }

    /// An 8-bit picture with detail in every channel (and alpha ramps when `channels` is 4).
    fn rgb8_picture(w: u32, h: u32, channels: usize) -> Vec<u8> {
        let mut seed = 0x9e37_79b9u32;
        (0..(w * h) as usize * channels)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let (p, c) = (i / channels, i % channels);
                let (x, y) = (p % w as usize, p / w as usize);
                if c == 3 {
                    (x * 255 / w as usize) as u8
                } else {
                    ((x * (c + 1) * 3 + y * 5) % 256) as u8 ^ (seed % 16) as u8
                }
            })
            .collect()
    }

    #[test]
    fn an_8bit_source_renders_like_its_converted_picture() {
        let bg = [10, 200, 30];
        let bgc = YuvColor::from_rgb(10.0, 200.0, 30.0);
        // Odd sizes (chroma edge samples), RGB and RGBA, fitted and under a zoom.
        for (w, h, channels) in [
            (67u32, 41u32, 3usize),
            (50, 36, 4),
            (64, 36, 3),
            (200, 100, 4),
        ] {
            let data = rgb8_picture(w, h, channels);
            let px = Rgb8 {
                width: w,
                height: h,
                channels,
                stride: w as usize * channels,
                data: &data,
            };
            let mut planes = Planes::default();
            planes.fill_from_rgb8(&px, bg);
            let (ow, oh) = (64u32, 36u32);
            for zoom in [1.0, 1.07, 1.2] {
                let fit = crop_window_contain(w, h, ow, oh);
                let win = CropWindow {
                    x: fit.x + fit.w * (1.0 - 1.0 / zoom) / 2.0,
                    y: fit.y + fit.h * (1.0 - 1.0 / zoom) / 2.0,
                    w: fit.w / zoom,
                    h: fit.h / zoom,
                };
                let mut want = Yuv420::new(ow, oh);
                Renderer::new(planes.clone(), ow, oh, bgc, fit.w / 1.2).render(&win, &mut want);
                let mut r = Renderer::empty(ow, oh, bgc);
                r.set_source_rgb8(&px, bg, fit.w / 1.2);
                let mut got = Yuv420::new(ow, oh);
                r.render(&win, &mut got);
                let (n, worst) = differences(&got, &want);
                let total = (ow * oh * 3 / 2) as usize;
                assert!(
                    worst <= 1 && n * 100 < total,
                    "{w}x{h}x{channels} zoom {zoom}: {n} of {total} differ, by up to {worst}"
                );
                if (w, h) == (ow, oh) && zoom == 1.0 {
                    // The whole picture at its own size: no renderer needed.
                    let mut whole = Yuv420::new(ow, oh);
                    Renderer::render_whole_rgb8(&px, bg, &mut whole);
                    let (n, worst) = differences(&whole, &want);
                    assert!(
                        worst <= 1 && n * 100 < total,
                        "whole: {n} of {total} differ, by up to {worst}"
                    );
                }
            }
        }
    }

    fn crop_window_contain(sw: u32, sh: u32, ow: u32, oh: u32) -> CropWindow {
        crate::timeline::crop_window(1.0, sw, sh, ow, oh, None)
    }

    #[test]
    fn fixed_point_fast_path_matches_the_f32_kernel() {
        // Magnifying windows: the general kernel is then exactly bilinear (in f32), so the
        // fixed-point fast path must agree with it to the rounding of the last level.
        let (w, h) = (64u32, 40u32);
        let mut p = flat(w, h, 0.0);
        for (i, v) in p.y.iter_mut().enumerate() {
            let (x, y) = ((i % 64) as f32, (i / 64) as f32);
            *v = 16.0 + 219.0 * (0.5 + 0.5 * (x * 0.9 + y * 0.37).sin() * (y * 0.23).cos());
        }
        let (ow, oh) = (48usize, 30usize);
        let mut r = Renderer::new(p.clone(), ow as u32, oh as u32, YuvColor::BLACK, 40.0);
        let src = Plane {
            data: &p.y,
            make: None,
            w: 64,
            h: 40,
            bg: 16.0,
            ext: (64.0, 40.0),
        };
        let (mut out, mut general) = (Yuv420::new(48, 30), General::default());
        let (mut n, mut off, mut sum, mut worst) = (0usize, 0usize, 0i64, 0i32);
        for (x, y, ww) in [
            (0.0, 0.0, 48.0),
            (3.37, 2.91, 40.0),
            (10.123, 5.5, 45.7),
            (-4.26, -1.7, 47.3),
            (20.81, 14.02, 44.9),
            (7.0001, 0.4999, 24.6),
        ] {
            let win = CropWindow {
                x,
                y,
                w: ww,
                h: ww * 30.0 / 48.0,
            };
            r.render(&win, &mut out);
            resample_plane(src, &win, ow, oh, &mut general, |i, line| {
                for (&v, &got) in line.iter().zip(&out.y[i * ow..(i + 1) * ow]) {
                    let d = i32::from(got) - i32::from(to_u8_fast(v));
                    (n, sum, worst) = (n + 1, sum + i64::from(d), worst.max(d.abs()));
                    off += usize::from(d != 0);
                }
            });
        }
        assert!(worst <= 1, "worst difference {worst} levels");
        assert!(off * 50 < n, "{off} of {n} samples differ");
        assert!((sum as f64 / n as f64).abs() < 0.01, "bias {sum}/{n}");
    }

    #[test]
    fn prescale_keeps_geometry() {
        // A 400-wide ramp seen through a 400-wide window into 40 pixels: prescaled by 10.
        let (w, h) = (400u32, 40u32);
        let mut p = flat(w, h, 0.0);
        for (i, v) in p.y.iter_mut().enumerate() {
            *v = 16.0 + ((i % w as usize) as f32) * 0.5;
        }
        let mut r = Renderer::new(p, 40, 4, YuvColor::BLACK, 400.0);
        let mut out = Yuv420::new(40, 4);
        r.render(
            &CropWindow {
                x: 0.0,
                y: 0.0,
                w: 400.0,
                h: 40.0,
            },
            &mut out,
        );
        // Output pixel j averages source columns around 10j+5 -> 16 + (10j+4.5)*0.5.
        for j in 2..38 {
            let want = 16.0 + (10.0 * j as f32 + 4.5) * 0.5;
            assert!(
                (f32::from(out.y[2 * 40 + j]) - want).abs() <= 1.0,
                "j={j} {} {want}",
                out.y[2 * 40 + j]
            );
        }
    }

    /// A renderer made row by row from a decoded picture renders what one made from its
    /// whole planes renders, byte for byte: shrinking (a big picture) and not (a small one),
    /// with and without alpha.
    #[test]
    fn renderer_from_decoded_rows_matches_the_one_from_planes() {
        let bg_rgb = [10, 40, 200];
        let bg = YuvColor::from_rgb(10.0, 40.0, 200.0);
        let pic = |w: u32, h: u32| {
            image::RgbaImage::from_fn(w, h, |x, y| {
                image::Rgba([
                    (x * 7 + y) as u8,
                    (y * 5) as u8,
                    (x ^ y) as u8,
                    if (x + y) % 9 == 0 { 90 } else { 255 },
                ])
            })
        };
        for (w, h, out, min_w) in [(300, 200, (64, 48), 280.0), (40, 30, (64, 48), 30.0)] {
            let img = image::DynamicImage::ImageRgba8(pic(w, h));
            let decoded = Decoded::from_image(img);
            let planes = decoded.to_planes(bg_rgb).unwrap();
            let mut whole = Renderer::new(planes, out.0, out.1, bg, min_w);
            let mut rows =
                Renderer::from_decoded(&decoded, bg_rgb, out.0, out.1, bg, min_w).unwrap();
            for win in [
                crate::timeline::crop_window(1.0, w, h, out.0, out.1, None),
                crate::timeline::crop_window(1.07, w, h, out.0, out.1, Some((100.3, 61.7))),
            ] {
                let (mut a, mut b) = (Yuv420::new(out.0, out.1), Yuv420::new(out.0, out.1));
                whole.render(&win, &mut a);
                rows.render(&win, &mut b);
                assert_eq!(a, b, "{w}x{h} window {win:?}");
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// Prints the per-frame cost of a zoom render at 854x480 (`cargo test --release -- --ignored
    /// render_cost --nocapture`); a measurement, not a check (speed targets live in `va bench`).
    #[test]
    #[ignore]
    fn render_cost() {
        let (w, h) = (854u32, 480u32);
        let n = (w * h) as usize;
        let p = Planes {
            width: w,
            height: h,
            y: (0..n).map(|i| (i % 251) as f32).collect(),
            cb: vec![128.0; n],
            cr: vec![128.0; n],
        };
        let mut r = Renderer::new(p, w, h, YuvColor::BLACK, f64::from(w) / 1.1);
        let mut out = Yuv420::new(w, h);
        let t = std::time::Instant::now();
        let frames = 300;
        for i in 0..frames {
            let z = 1.0 + 0.1 * f64::from(i) / f64::from(frames);
            let (ww, wh) = (f64::from(w) / z, f64::from(h) / z);
            r.render(
                &CropWindow {
                    x: (f64::from(w) - ww) / 2.0,
                    y: (f64::from(h) - wh) / 2.0,
                    w: ww,
                    h: wh,
                },
                &mut out,
            );
        }
        eprintln!(
            "render: {:.3} ms/frame",
            t.elapsed().as_secs_f64() * 1000.0 / f64::from(frames)
        );
    }
}
