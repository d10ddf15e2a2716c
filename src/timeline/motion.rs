//! Motion geometry for the still-image fallback (SPEC §4): the zoom curve over the main segment
//! and the sub-pixel crop window each output frame samples from the source.
//!
//! Owns: zoom per frame and crop window placement. Floats are allowed here (and only here) as
//! they describe pixel geometry, not time; the frame position `t` is formed from integers with
//! one division, never accumulated. Must not: round the window to whole pixels: ffmpeg's
//! zoompan snaps to integers and shakes on slow zooms; this must not.
//!
//! Coordinates are continuous source pixels: pixel `k` covers `[k, k+1)`. A window
//! `CropWindow { x, y, w, h }` maps onto an `out_w × out_h` frame so that the centre of output
//! pixel `(ox, oy)`, `(ox + 0.5, oy + 0.5)`, samples the source point
//! `(x + (ox + 0.5)·w/out_w, y + (oy + 0.5)·h/out_h)`. Parts of the window outside the source
//! are background.

/// How the crop window moves over the main segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MotionMode {
    /// Zoom 1 → 1+strength: the window shrinks.
    ZoomIn,
    /// Zoom 1+strength → 1: the window grows.
    ZoomOut,
    /// Zoom 1 throughout.
    None,
}

/// A crop window in continuous source pixel coordinates (see the module docs for the mapping).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CropWindow {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// The zoom over a main segment of `frames` frames.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ZoomCurve {
    pub mode: MotionMode,
    /// Extra zoom at the zoomed end (0.10 = 10 %). Negative or non-finite values act as 0.
    pub strength: f64,
    /// Frames in the main segment.
    pub frames: u64,
}

impl ZoomCurve {
    /// The zoom at frame `i`: linear from frame 0 to frame `frames - 1` (zoom_in 1 → 1+s,
    /// zoom_out 1+s → 1, none 1), clamped to `[1, 1+s]`; frames past the end hold the last
    /// value; with `frames <= 1` the start value.
    pub fn zoom(&self, i: u64) -> f64 {
        let s = if self.strength.is_finite() && self.strength > 0.0 {
            self.strength
        } else {
            0.0
        };
        let last = self.frames.saturating_sub(1);
        // How far along: `steps` out of `last`, exact integers, then one division.
        let along = |steps: u64| steps as f64 / last as f64;
        let z = match self.mode {
            MotionMode::None => 1.0,
            MotionMode::ZoomIn if last == 0 => 1.0,
            MotionMode::ZoomOut if last == 0 => 1.0 + s,
            MotionMode::ZoomIn => 1.0 + s * along(i.min(last)),
            MotionMode::ZoomOut => 1.0 + s * along(last - i.min(last)),
        };
        z.clamp(1.0, 1.0 + s)
    }
}

/// The crop window for `zoom` when a `src_w × src_h` source is shown in `out_w × out_h`.
///
/// The window has the output's aspect ratio. At zoom 1 it is the smallest such window that
/// contains the whole source (a square image in a wide frame is pillarboxed, never squashed);
/// at zoom `z` its sides are divided by `z`. It is centred on `centre` (default the source
/// centre), then shifted so that in each dimension where it is not larger than the source it
/// stays inside `[0, src]`; where it is larger it is centred on the source. Nothing is rounded.
///
/// Degenerate input never panics: zero sizes act as 1, a non-finite or non-positive zoom as 1,
/// and a non-finite centre as the source centre.
pub fn crop_window(
    zoom: f64,
    src_w: u32,
    src_h: u32,
    out_w: u32,
    out_h: u32,
    centre: Option<(f64, f64)>,
) -> CropWindow {
    let z = if zoom.is_finite() && zoom > 0.0 {
        zoom
    } else {
        1.0
    };
    let (sw, sh) = (src_w.max(1), src_h.max(1));
    let (ow, oh) = (out_w.max(1), out_h.max(1));
    // Compare aspects exactly: sw/sh >= ow/oh ⇔ sw·oh >= sh·ow.
    let (w0, h0) = if u64::from(sw) * u64::from(oh) >= u64::from(sh) * u64::from(ow) {
        (f64::from(sw), f64::from(sw) * f64::from(oh) / f64::from(ow))
    } else {
        (f64::from(sh) * f64::from(ow) / f64::from(oh), f64::from(sh))
    };
    // A picture thinner than 2 output pixels (a 1×1001 image on its 2×480 frame would be
    // drawn 0.48 px wide) is stretched to 2 pixels, or the whole frame where that is
    // narrower: it fills the frame in that direction instead of fading into the background.
    let shown = |src: u32, win: f64, out: u32| f64::from(src) * f64::from(out) / win;
    let thin = |out: u32| 2.0f64.min(f64::from(out));
    let w0 = if shown(sw, w0, ow) < thin(ow) {
        f64::from(sw) * f64::from(ow) / thin(ow)
    } else {
        w0
    };
    let h0 = if shown(sh, h0, oh) < thin(oh) {
        f64::from(sh) * f64::from(oh) / thin(oh)
    } else {
        h0
    };
    let (w, h) = (w0 / z, h0 / z);
    let (sw, sh) = (f64::from(sw), f64::from(sh));
    let (cx, cy) = match centre {
        Some((cx, cy)) if cx.is_finite() && cy.is_finite() => (cx, cy),
        _ => (sw / 2.0, sh / 2.0),
    };
    CropWindow {
        x: place(cx, w, sw),
        y: place(cy, h, sh),
        w,
        h,
    }
}

/// The window's start in one dimension: centred on `c`, kept inside `[0, src]` when it fits,
/// centred on the source when it does not.
fn place(c: f64, len: f64, src: f64) -> f64 {
    if len <= src {
        (c - len / 2.0).clamp(0.0, src - len)
    } else {
        (src - len) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9
    }

    #[test]
    fn zoom_curves() {
        let zin = ZoomCurve {
            mode: MotionMode::ZoomIn,
            strength: 0.1,
            frames: 11,
        };
        assert_eq!(zin.zoom(0), 1.0);
        assert!(close(zin.zoom(5), 1.05));
        assert!(close(zin.zoom(10), 1.1));
        assert!(close(zin.zoom(99), 1.1), "past the end holds");
        let zout = ZoomCurve {
            mode: MotionMode::ZoomOut,
            ..zin
        };
        assert!(close(zout.zoom(0), 1.1));
        assert!(close(zout.zoom(5), 1.05));
        assert_eq!(zout.zoom(10), 1.0);
        let none = ZoomCurve {
            mode: MotionMode::None,
            ..zin
        };
        assert_eq!(none.zoom(3), 1.0);
        // One frame: the start value.
        for (mode, start) in [
            (MotionMode::ZoomIn, 1.0),
            (MotionMode::ZoomOut, 1.1),
            (MotionMode::None, 1.0),
        ] {
            for frames in [0, 1] {
                let c = ZoomCurve {
                    mode,
                    strength: 0.1,
                    frames,
                };
                assert!(close(c.zoom(0), start) && close(c.zoom(7), start));
            }
        }
        // Bad strengths act as 0.
        for strength in [-0.5, f64::NAN, f64::INFINITY] {
            let c = ZoomCurve {
                mode: MotionMode::ZoomOut,
                strength,
                frames: 10,
            };
            assert_eq!(c.zoom(0), 1.0);
        }
    }

    #[test]
    fn zoom_one_contains_the_source() {
        // Same aspect: the window is the source.
        let c = crop_window(1.0, 1920, 1080, 1280, 720, None);
        assert_eq!((c.x, c.y, c.w, c.h), (0.0, 0.0, 1920.0, 1080.0));
        // 854x480 is a hair wider than 16:9: the height limits, 1080·854/480 = 1921.5.
        let c = crop_window(1.0, 1920, 1080, 854, 480, None);
        assert_eq!((c.x, c.y, c.w, c.h), (-0.75, 0.0, 1921.5, 1080.0));
        // Square source, 16:9 output: pillarboxed, the window is wider than the source.
        let c = crop_window(1.0, 1000, 1000, 1280, 720, None);
        assert!(close(c.h, 1000.0) && close(c.w, 1000.0 * 16.0 / 9.0));
        assert!(close(c.x, -(c.w - 1000.0) / 2.0) && close(c.y, 0.0));
        // Tall output from a wide source: letterboxed.
        let c = crop_window(1.0, 1600, 900, 480, 854, None);
        assert!(close(c.w, 1600.0) && close(c.h, 1600.0 * 854.0 / 480.0));
        assert!(close(c.x, 0.0) && close(c.y, (900.0 - c.h) / 2.0));
    }

    #[test]
    fn pictures_thinner_than_two_pixels_fill_the_frame() {
        // 1×1001 on its 2×480 frame: the window is the picture's width, so it fills it.
        let c = crop_window(1.0, 1, 1001, 2, 480, None);
        assert!(close(c.w, 1.0) && close(c.x, 0.0), "{c:?}");
        assert!(close(c.h, 1001.0) && close(c.y, 0.0), "{c:?}");
        let c = crop_window(1.0, 1001, 1, 480, 2, None);
        assert!(close(c.h, 1.0) && close(c.y, 0.0), "{c:?}");
        // In a wide frame it is stretched to 2 pixels, centred, not to the frame.
        let c = crop_window(1.0, 1, 1001, 854, 480, None);
        assert!(close(f64::from(854u32) / c.w, 2.0), "{c:?}");
        assert!(close(c.x + c.w / 2.0, 0.5), "{c:?}");
        // Two pixels or more: unchanged (pillarboxed, 2.88 px wide).
        let c = crop_window(1.0, 6, 1000, 4, 480, None);
        assert!(close(c.w, 1000.0 * 4.0 / 480.0), "{c:?}");
    }

    #[test]
    fn zoomed_window_is_smaller_and_follows_the_centre() {
        let c = crop_window(2.0, 1920, 1080, 1920, 1080, None);
        assert_eq!((c.x, c.y, c.w, c.h), (480.0, 270.0, 960.0, 540.0));
        let c = crop_window(2.0, 1920, 1080, 1920, 1080, Some((1000.25, 500.5)));
        assert_eq!((c.x, c.y), (520.25, 230.5));
        // Near the edge it is pushed back inside.
        let c = crop_window(2.0, 1920, 1080, 1920, 1080, Some((1900.0, 10.0)));
        assert_eq!((c.x, c.y), (960.0, 0.0));
        // Sub-pixel: no rounding of the position.
        let c = crop_window(1.1, 1000, 1000, 1000, 1000, None);
        assert!(close(c.w, 1000.0 / 1.1) && close(c.x, (1000.0 - 1000.0 / 1.1) / 2.0));
        assert!(c.x.fract() != 0.0);
    }

    #[test]
    fn degenerate_input_does_not_panic() {
        for zoom in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let c = crop_window(zoom, 0, 0, 0, 0, Some((f64::NAN, 1.0)));
            assert!(c.x.is_finite() && c.y.is_finite() && c.w.is_finite() && c.h.is_finite());
            assert_eq!(c, crop_window(1.0, 1, 1, 1, 1, None));
        }
    }

    #[test]
    fn motion_mode_serde_names() {
        assert_eq!(
            serde_json::to_string(&MotionMode::ZoomIn).unwrap(),
            "\"zoom_in\""
        );
        let m: MotionMode = serde_json::from_str("\"zoom_out\"").unwrap();
        assert_eq!(m, MotionMode::ZoomOut);
        let m: MotionMode = serde_json::from_str("\"none\"").unwrap();
        assert_eq!(m, MotionMode::None);
    }

    /// One case of fixtures/zoom_vectors.json, shared with the Python nodes' tests.
    #[derive(serde::Deserialize)]
    struct Vector {
        name: String,
        mode: MotionMode,
        strength: f64,
        frames: u64,
        frame: u64,
        src_w: u32,
        src_h: u32,
        out_w: u32,
        out_h: u32,
        centre: Option<(f64, f64)>,
        expected: Expected,
    }

    #[derive(serde::Deserialize)]
    struct Expected {
        zoom: f64,
        x: f64,
        y: f64,
        w: f64,
        h: f64,
    }

    #[derive(serde::Deserialize)]
    struct Vectors {
        cases: Vec<Vector>,
    }

    #[test]
    fn shared_zoom_vectors() {
        let vectors: Vectors =
            serde_json::from_str(include_str!("../../fixtures/zoom_vectors.json")).unwrap();
        assert!(vectors.cases.len() >= 12);
        for v in vectors.cases {
            let curve = ZoomCurve {
                mode: v.mode,
                strength: v.strength,
                frames: v.frames,
            };
            let zoom = curve.zoom(v.frame);
            let c = crop_window(zoom, v.src_w, v.src_h, v.out_w, v.out_h, v.centre);
            let e = &v.expected;
            for (what, got, want) in [
                ("zoom", zoom, e.zoom),
                ("x", c.x, e.x),
                ("y", c.y, e.y),
                ("w", c.w, e.w),
                ("h", c.h, e.h),
            ] {
                assert!(
                    close(got, want),
                    "{}: {what} = {got}, expected {want}",
                    v.name
                );
            }
        }
    }

    fn any_mode() -> impl Strategy<Value = MotionMode> {
        prop::sample::select(vec![
            MotionMode::ZoomIn,
            MotionMode::ZoomOut,
            MotionMode::None,
        ])
    }

    proptest! {
        #[test]
        fn window_stays_inside_where_smaller_and_keeps_the_output_aspect(
            sw in 1u32..5000, sh in 1u32..5000, ow in 2u32..4000, oh in 2u32..4000,
            zoom in 1.0f64..1.5,
            cx in -100.0f64..5100.0, cy in -100.0f64..5100.0,
        ) {
            // A picture thinner than 2 output pixels is stretched (its own test above); the
            // aspect rule holds for every other.
            let fit = (f64::from(sw) / f64::from(ow)).max(f64::from(sh) / f64::from(oh));
            prop_assume!(f64::from(sw) / fit >= 2.0 && f64::from(sh) / fit >= 2.0);
            let c = crop_window(zoom, sw, sh, ow, oh, Some((cx, cy)));
            let base = crop_window(1.0, sw, sh, ow, oh, None);
            let (sw, sh) = (f64::from(sw), f64::from(sh));
            for (pos, len, src) in [(c.x, c.w, sw), (c.y, c.h, sh)] {
                if len <= src {
                    prop_assert!(pos >= 0.0 && pos + len <= src * (1.0 + 1e-12));
                } else {
                    prop_assert!(((pos + len / 2.0) - src / 2.0).abs() <= 1e-9 * src);
                }
            }
            // The output aspect, and at zoom z the zoom-1 window divided by z.
            let aspect = f64::from(ow) / f64::from(oh);
            prop_assert!((c.w / c.h - aspect).abs() <= 1e-9 * aspect);
            prop_assert!(base.w >= sw * (1.0 - 1e-12) && base.h >= sh * (1.0 - 1e-12));
            prop_assert!(base.w <= sw * (1.0 + 1e-12) || base.h <= sh * (1.0 + 1e-12));
            prop_assert!((c.w * zoom - base.w).abs() <= 1e-9 * base.w);
        }

        #[test]
        fn zoom_is_monotonic_and_clamped(
            mode in any_mode(), strength in 0.0f64..0.5, frames in 0u64..5000, i in 0u64..5000,
        ) {
            let curve = ZoomCurve { mode, strength, frames };
            let (a, b) = (curve.zoom(i), curve.zoom(i + 1));
            prop_assert!((1.0..=1.0 + strength).contains(&a));
            match mode {
                MotionMode::ZoomIn => prop_assert!(b >= a),
                MotionMode::ZoomOut => prop_assert!(b <= a),
                MotionMode::None => prop_assert_eq!(a, b),
            }
            if mode != MotionMode::None && frames >= 2 {
                let end = curve.zoom(frames - 1);
                let start = curve.zoom(0);
                let (lo, hi) = if mode == MotionMode::ZoomIn { (start, end) } else { (end, start) };
                prop_assert_eq!(lo, 1.0);
                prop_assert!((hi - (1.0 + strength)).abs() <= 1e-12);
            }
        }

        #[test]
        fn window_grows_as_zoom_falls(
            z1 in 1.0f64..1.5, z2 in 1.0f64..1.5, sw in 1u32..5000, sh in 1u32..5000,
        ) {
            let (lo, hi) = if z1 <= z2 { (z1, z2) } else { (z2, z1) };
            let a = crop_window(lo, sw, sh, 854, 480, None);
            let b = crop_window(hi, sw, sh, 854, 480, None);
            prop_assert!(a.w >= b.w && a.h >= b.h);
        }
    }
}
