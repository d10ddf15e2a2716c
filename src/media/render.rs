//! The picture renderer: resamples a source picture through a sub-pixel crop window into an
//! output frame. The zoompan-style motion, the end-image hold (contain / cover / stretch) and
//! plain scaling are all this one operation with different windows.
//!
//! The filter is separable and scale-aware: a triangle kernel whose radius is one output
//! pixel measured in source pixels (so it is bilinear when magnifying and an area-like
//! average when minifying). Windows are never snapped to whole pixels, which is what makes
//! slow zooms smooth; samples outside the source take the background colour.

use super::picture::{Planes, Yuv420, YuvColor};
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
    fn new(origin: f64, extent: f64, n_out: usize, n_src: usize) -> AxisTaps {
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
            let mut total = 0.0f64;
            let mut outside = 0.0f64;
            let lo = kmin.clamp(0, n_src as i64) as usize;
            let row = &mut weights[j * len..(j + 1) * len];
            for k in kmin..=kmax {
                let w = 1.0 - ((k as f64 - c).abs() / radius);
                if w <= 0.0 {
                    continue;
                }
                total += w;
                if k < 0 || k >= n_src as i64 {
                    outside += w;
                } else {
                    let idx = k as usize - lo;
                    if idx < len {
                        row[idx] = w as f32;
                    }
                }
            }
            if total > 0.0 {
                for w in row.iter_mut() {
                    *w = (f64::from(*w) / total) as f32;
                }
                outside /= total;
            } else {
                outside = 1.0;
            }
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

/// One f32 plane of the source and the value of everything outside it.
#[derive(Clone, Copy)]
struct Plane<'a> {
    data: &'a [f32],
    w: usize,
    h: usize,
    bg: f32,
}

impl Plane<'_> {
    fn row(&self, r: i64) -> Option<&[f32]> {
        (0..self.h as i64)
            .contains(&r)
            .then(|| &self.data[r as usize * self.w..(r as usize + 1) * self.w])
    }
}

/// Rounds `v` to the nearest integer as u8 without a float-to-int conversion: adding 1.5·2^23
/// puts the rounded value in the low mantissa bits. `v` must lie in [0, 255]; every value
/// the kernels produce does, being a convex combination (non-negative weights summing to 1)
/// of source samples and background values, which are all on the 8-bit Y'CbCr scale.
#[inline]
fn to_u8_fast(v: f32) -> u8 {
    (v + 12_582_912.0).to_bits() as u8
}

/// General separable resampling of one plane through `win` into `ow`×`oh` f32 rows handed to
/// `put` (used for the one-time prescale and for strong minification).
fn resample_plane(
    src: Plane,
    win: &CropWindow,
    ow: usize,
    oh: usize,
    tmp: &mut Vec<f32>,
    mut put: impl FnMut(usize, &[f32]),
) {
    let hx = AxisTaps::new(win.x, win.w, ow, src.w);
    let vy = AxisTaps::new(win.y, win.h, oh, src.h);
    let (r0, r1) = vy.span(src.h);
    let rows = r1 - r0;
    tmp.clear();
    tmp.resize(rows * ow, 0.0);
    // Horizontal pass over the source rows the vertical taps touch.
    for r in 0..rows {
        let srow = &src.data[(r0 + r) * src.w..(r0 + r + 1) * src.w];
        let trow = &mut tmp[r * ow..(r + 1) * ow];
        for (j, t) in trow.iter_mut().enumerate() {
            let s = hx.start[j];
            let w = &hx.weights[j * hx.len..(j + 1) * hx.len];
            let avail = (src.w - s).min(hx.len);
            let mut acc = hx.bg[j] * src.bg;
            for (wk, sk) in w[..avail].iter().zip(&srow[s..s + avail]) {
                acc += wk * sk;
            }
            *t = acc;
        }
    }
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

/// Bilinear resampling straight into 8-bit rows (the per-frame fast path): a vertical lerp
/// of two source rows over the columns the window touches (vectorised), then a horizontal
/// lerp per output sample.
fn bilinear_plane(
    src: Plane,
    win: &CropWindow,
    out: &mut [u8],
    ow: usize,
    oh: usize,
    tmp: &mut Vec<f32>,
) {
    let (sx, sy) = (win.w / ow as f64, win.h / oh as f64);
    // Column taps into a row padded by one background sample on each side: padded index
    // p = source index + 1, and the weight of p + 1.
    let taps: Vec<(usize, f32)> = (0..ow)
        .map(|j| {
            let c = win.x + (j as f64 + 0.5) * sx - 0.5;
            let f = c.floor();
            let p = f as i64 + 1;
            let w = if p < 0 || p > src.w as i64 {
                0.0
            } else {
                (c - f) as f32
            };
            (p.clamp(0, src.w as i64 + 1) as usize, w)
        })
        .collect();
    // Only the source columns some output sample reads are interpolated vertically.
    let lo = taps.first().map_or(0, |t| t.0).saturating_sub(1).max(1);
    let hi = taps.last().map_or(0, |t| t.0 + 2).min(src.w + 1);
    let (plo, phi) = (lo - 1, (hi + 1).min(src.w + 2));
    tmp.clear();
    tmp.resize(src.w + 3, src.bg);
    // Output row i's source rows, interpolated vertically over the columns in use, stored per
    // column as (value, step to the next): the horizontal lerp is then one load, one bounds
    // check and one multiply-add per output sample.
    let fill = |i: usize, tmp: &mut [f32], pairs: &mut [[f32; 2]]| {
        let c = win.y + (i as f64 + 0.5) * sy - 0.5;
        let f = c.floor();
        let fy = (c - f) as f32;
        if lo < hi {
            let span = &mut tmp[lo..hi];
            let (a, b) = (
                src.row(f as i64).map(|r| &r[lo - 1..hi - 1]),
                src.row(f as i64 + 1).map(|r| &r[lo - 1..hi - 1]),
            );
            match (a, b) {
                (Some(a), Some(b)) => {
                    for ((t, &x), &y) in span.iter_mut().zip(a).zip(b) {
                        *t = x + fy * (y - x);
                    }
                }
                (Some(a), None) => span
                    .iter_mut()
                    .zip(a)
                    .for_each(|(t, &x)| *t = x + fy * (src.bg - x)),
                (None, Some(b)) => span
                    .iter_mut()
                    .zip(b)
                    .for_each(|(t, &y)| *t = src.bg + fy * (y - src.bg)),
                (None, None) => span.fill(src.bg),
            }
        }
        for ((pr, &a), &b) in pairs[plo..phi]
            .iter_mut()
            .zip(&tmp[plo..phi])
            .zip(&tmp[plo + 1..phi + 1])
        {
            *pr = [a, b - a];
        }
    };
    let mut p0 = vec![[0.0f32; 2]; src.w + 2];
    let mut p1 = vec![[0.0f32; 2]; src.w + 2];
    // Rows two at a time: the column taps are loaded once for both.
    let mut rows = out[..ow * oh].chunks_exact_mut(2 * ow);
    let mut i = 0;
    for two in rows.by_ref() {
        fill(i, tmp, &mut p0);
        fill(i + 1, tmp, &mut p1);
        let (r0, r1) = two.split_at_mut(ow);
        for ((o0, o1), &(x0, w)) in r0.iter_mut().zip(r1.iter_mut()).zip(&taps) {
            let ([a, da], [b, db]) = (p0[x0], p1[x0]);
            *o0 = to_u8_fast(a + w * da);
            *o1 = to_u8_fast(b + w * db);
        }
        i += 2;
    }
    let last = rows.into_remainder();
    if !last.is_empty() {
        fill(i, tmp, &mut p0);
        for (o, &(x0, w)) in last.iter_mut().zip(&taps) {
            let [a, d] = p0[x0];
            *o = to_u8_fast(a + w * d);
        }
    }
}

/// Resamples `src` through `win` into the 8-bit plane `out` (`ow`×`oh`, tightly packed),
/// taking the bilinear fast path when the window allows it.
fn resample_into(
    src: Plane,
    win: &CropWindow,
    out: &mut [u8],
    ow: usize,
    oh: usize,
    tmp: &mut Vec<f32>,
) {
    if win.w / ow as f64 <= BILINEAR_MAX_STEP && win.h / oh as f64 <= BILINEAR_MAX_STEP {
        bilinear_plane(src, win, out, ow, oh, tmp);
    } else {
        resample_plane(src, win, ow, oh, tmp, |i, line| {
            for (o, &v) in out[i * ow..(i + 1) * ow].iter_mut().zip(line) {
                *o = to_u8_fast(v);
            }
        });
    }
}

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
    bg: YuvColor,
    out_w: u32,
    out_h: u32,
    tmp: Vec<f32>,
}

/// Shrinks a `w`×`h` plane by `factor` (>= 1) with the area-like filter into `out`; the
/// result covers `ceil(w/factor)`×`ceil(h/factor)` working pixels of `factor` source pixels
/// each, and those dimensions are returned.
fn shrink_into(
    data: &[f32],
    w: usize,
    h: usize,
    bg: f32,
    factor: f64,
    tmp: &mut Vec<f32>,
    out: &mut Vec<f32>,
) -> (usize, usize) {
    let ww = (w as f64 / factor).ceil().max(1.0) as usize;
    let wh = (h as f64 / factor).ceil().max(1.0) as usize;
    let win = CropWindow {
        x: 0.0,
        y: 0.0,
        w: ww as f64 * factor,
        h: wh as f64 * factor,
    };
    out.clear();
    out.reserve(ww * wh);
    resample_plane(Plane { data, w, h, bg }, &win, ww, wh, tmp, |_, line| {
        out.extend_from_slice(line)
    });
    (ww, wh)
}

impl Renderer {
    /// `min_window_w`: the narrowest window (in source pixels) that will be asked for.
    pub fn new(src: Planes, out_w: u32, out_h: u32, bg: YuvColor, min_window_w: f64) -> Renderer {
        let (sw, sh) = (src.width as usize, src.height as usize);
        let mut tmp = Vec::new();
        let factor = (min_window_w / f64::from(out_w)).max(1.0);
        let (mut luma, mut cb, mut cr) = (Vec::new(), Vec::new(), Vec::new());
        let (luma_w, luma_h) = if factor > 1.0 + 1e-9 {
            shrink_into(&src.y, sw, sh, bg.y, factor, &mut tmp, &mut luma)
        } else {
            luma = src.y;
            (sw, sh)
        };
        // Chroma at half the working luma resolution, on the same geometry.
        let cf = factor * 2.0;
        let (chroma_w, chroma_h) = shrink_into(&src.cb, sw, sh, bg.cb, cf, &mut tmp, &mut cb);
        shrink_into(&src.cr, sw, sh, bg.cr, cf, &mut tmp, &mut cr);
        Renderer {
            luma,
            luma_w,
            luma_h,
            cb,
            cr,
            chroma_w,
            chroma_h,
            prescale: factor,
            bg,
            out_w,
            out_h,
            tmp,
        }
    }

    /// Points this renderer at another source picture, reusing its buffers: what a start
    /// video does once per source frame it shows (same result as [`Renderer::new`] with the
    /// same arguments).
    pub fn set_source(&mut self, src: &Planes, min_window_w: f64) {
        let (sw, sh) = (src.width as usize, src.height as usize);
        let factor = (min_window_w / f64::from(self.out_w)).max(1.0);
        let bg = self.bg;
        (self.luma_w, self.luma_h) = if factor > 1.0 + 1e-9 {
            shrink_into(&src.y, sw, sh, bg.y, factor, &mut self.tmp, &mut self.luma)
        } else {
            self.luma.clear();
            self.luma.extend_from_slice(&src.y);
            (sw, sh)
        };
        let cf = factor * 2.0;
        (self.chroma_w, self.chroma_h) =
            shrink_into(&src.cb, sw, sh, bg.cb, cf, &mut self.tmp, &mut self.cb);
        shrink_into(&src.cr, sw, sh, bg.cr, cf, &mut self.tmp, &mut self.cr);
        self.prescale = factor;
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
        let luma = Plane {
            data: &self.luma,
            w: self.luma_w,
            h: self.luma_h,
            bg: self.bg.y,
        };
        resample_into(luma, &lw, &mut out.y, ow, oh, &mut self.tmp);
        let (cw_, ch_) = (self.chroma_w, self.chroma_h);
        for (data, bg, dst) in [
            (&self.cb, self.bg.cb, &mut out.u),
            (&self.cr, self.bg.cr, &mut out.v),
        ] {
            resample_into(
                Plane {
                    data,
                    w: cw_,
                    h: ch_,
                    bg,
                },
                &cw,
                dst,
                ow / 2,
                oh / 2,
                &mut self.tmp,
            );
        }
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

    fn crop_window_contain(sw: u32, sh: u32, ow: u32, oh: u32) -> CropWindow {
        crate::timeline::crop_window(1.0, sw, sh, ow, oh, None)
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
