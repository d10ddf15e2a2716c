//! The render size (SPEC §4): from the start image/video's size (after rotation), the job's
//! explicit `width`/`height` and the `max_width × max_height` box.
//!
//! Owns: the choice of output width and height, in exact integer arithmetic. Must not: use
//! floats, or produce an odd or zero side (H.264 with 4:2:0 chroma needs even sides).

use super::time::Rounding;
use super::TimelineError;

/// The output size `(width, height)`, both even and >= 2.
///
/// - Both explicit: each rounded to even (an odd value goes up one), min 2; the user wins, even
///   against the source aspect.
/// - One explicit: it is rounded to even; the other side is the source aspect applied to it,
///   rounded to the nearest even number (ties up), min 2.
/// - None: the source is fitted into `max_w × max_h` keeping its aspect, never upscaled (a
///   source inside the box keeps its size), then each side is floored to even, min 2.
///
/// Flooring to even means a fitted side can lie up to (not including) 2 pixels below the exact
/// scaled size; the aspect error is below one even step.
///
/// Errors: a zero side in the source, in an explicit size, or (when fitting) in the box.
pub fn render_size(
    src_w: u32,
    src_h: u32,
    width: Option<u32>,
    height: Option<u32>,
    max_w: u32,
    max_h: u32,
) -> Result<(u32, u32), TimelineError> {
    if src_w == 0 || src_h == 0 {
        return Err(TimelineError::ZeroSize {
            what: "source",
            width: src_w,
            height: src_h,
        });
    }
    if width == Some(0) || height == Some(0) {
        return Err(TimelineError::ZeroSize {
            what: "requested",
            width: width.unwrap_or(0),
            height: height.unwrap_or(0),
        });
    }
    let (sw, sh) = (u64::from(src_w), u64::from(src_h));
    match (width, height) {
        (Some(w), Some(h)) => Ok((up_to_even(u64::from(w)), up_to_even(u64::from(h)))),
        (Some(w), None) => {
            let w = up_to_even(u64::from(w));
            Ok((w, nearest_even(u64::from(w) * sh, sw)))
        }
        (None, Some(h)) => {
            let h = up_to_even(u64::from(h));
            Ok((nearest_even(u64::from(h) * sw, sh), h))
        }
        (None, None) => {
            if max_w == 0 || max_h == 0 {
                return Err(TimelineError::ZeroSize {
                    what: "maximum",
                    width: max_w,
                    height: max_h,
                });
            }
            let (bw, bh) = (u64::from(max_w), u64::from(max_h));
            let (w, h) = if sw <= bw && sh <= bh {
                (sw, sh)
            } else if sw * bh >= sh * bw {
                // The source is at least as wide as the box: the width limits.
                (bw, sh * bw / sw)
            } else {
                (sw * bh / sh, bh)
            };
            Ok((floor_to_even(w), floor_to_even(h)))
        }
    }
}

/// An odd value goes up to the next even number; min 2; saturates at the largest even `u32`.
fn up_to_even(v: u64) -> u32 {
    clamp_even(v + (v & 1))
}

/// `num/den` rounded to the nearest even number, ties up; min 2.
fn nearest_even(num: u64, den: u64) -> u32 {
    let halves = Rounding::Round.div(u128::from(num), 2 * u128::from(den));
    clamp_even(u64::try_from(halves.saturating_mul(2)).unwrap_or(u64::MAX))
}

fn floor_to_even(v: u64) -> u32 {
    clamp_even(v & !1)
}

fn clamp_even(v: u64) -> u32 {
    let max_even = u64::from(u32::MAX - 1);
    let v = v.clamp(2, max_even) & !1;
    // In range by the clamp above.
    u32::try_from(v).unwrap_or(u32::MAX - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fits_into_the_box_flooring_to_even() {
        // 1023·480/767 = 640.2 → 640.
        assert_eq!(render_size(1023, 767, None, None, 854, 480), Ok((640, 480)));
        // 1920·480 = 921600 < 1080·854 = 922320: the height limits; 1920·480/1080 = 853.3 → 852.
        assert_eq!(
            render_size(1920, 1080, None, None, 854, 480),
            Ok((852, 480))
        );
        // 1280x720 in 1280x720 is kept.
        assert_eq!(
            render_size(1280, 720, None, None, 1280, 720),
            Ok((1280, 720))
        );
        // Width limits: 2000x500 → 854 x 213.5 → 854x212.
        assert_eq!(render_size(2000, 500, None, None, 854, 480), Ok((854, 212)));
        // Square in a wide box: 480x480.
        assert_eq!(
            render_size(1024, 1024, None, None, 854, 480),
            Ok((480, 480))
        );
        // Portrait: 1080x1920 → 270x480.
        assert_eq!(
            render_size(1080, 1920, None, None, 854, 480),
            Ok((270, 480))
        );
        // An odd box side is floored too: 1000x1000 in 853x853 → 852x852.
        assert_eq!(
            render_size(1000, 1000, None, None, 853, 853),
            Ok((852, 852))
        );
    }

    #[test]
    fn never_upscales_but_keeps_even_and_min_two() {
        assert_eq!(render_size(640, 360, None, None, 854, 480), Ok((640, 360)));
        assert_eq!(render_size(641, 361, None, None, 854, 480), Ok((640, 360)));
        assert_eq!(render_size(1, 1, None, None, 854, 480), Ok((2, 2)));
        // Extreme aspect: the thin side is held at 2.
        assert_eq!(render_size(10000, 1, None, None, 854, 480), Ok((854, 2)));
    }

    #[test]
    fn explicit_sizes_win() {
        assert_eq!(
            render_size(1920, 1080, Some(1280), Some(720), 854, 480),
            Ok((1280, 720))
        );
        assert_eq!(
            render_size(1920, 1080, Some(853), Some(481), 1, 1),
            Ok((854, 482))
        );
        assert_eq!(
            render_size(1920, 1080, Some(1), Some(1), 854, 480),
            Ok((2, 2))
        );
        // One side: 1280 → 1280·1080/1920 = 720.
        assert_eq!(
            render_size(1920, 1080, Some(1280), None, 854, 480),
            Ok((1280, 720))
        );
        // 1000 → 562.5 → nearest even 562 (281.25 halves → 281).
        assert_eq!(
            render_size(1920, 1080, Some(1000), None, 854, 480),
            Ok((1000, 562))
        );
        // Height 481 → 482; width 482·4/3 = 642.67 → 642.
        assert_eq!(
            render_size(640, 480, None, Some(481), 854, 480),
            Ok((642, 482))
        );
        // 100 → 100·3/4 = 75 → 37.5 halves, a tie, up → 76.
        assert_eq!(render_size(4, 3, Some(100), None, 854, 480), Ok((100, 76)));
        // Explicit sizes are not limited by the box (and a zero box is irrelevant).
        assert_eq!(
            render_size(100, 100, Some(2000), None, 0, 0),
            Ok((2000, 2000))
        );
        assert_eq!(
            render_size(1, 1, Some(u32::MAX), None, 0, 0),
            Ok((u32::MAX - 1, u32::MAX - 1))
        );
    }

    #[test]
    fn zero_sizes_are_errors() {
        assert!(matches!(
            render_size(0, 1080, None, None, 854, 480),
            Err(TimelineError::ZeroSize { what: "source", .. })
        ));
        assert!(matches!(
            render_size(1920, 1080, Some(0), None, 854, 480),
            Err(TimelineError::ZeroSize {
                what: "requested",
                ..
            })
        ));
        assert!(matches!(
            render_size(1920, 1080, None, None, 854, 0),
            Err(TimelineError::ZeroSize {
                what: "maximum",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn fitted_sizes_are_even_inside_the_box_and_keep_aspect(
            sw in 1u32..20_000, sh in 1u32..20_000,
            bw in 1u32..8_000, bh in 1u32..8_000,
        ) {
            let (w, h) = render_size(sw, sh, None, None, bw, bh).unwrap();
            prop_assert!(w % 2 == 0 && h % 2 == 0 && w >= 2 && h >= 2);
            prop_assert!(w <= bw.max(2) && h <= bh.max(2));
            prop_assert!(w <= sw.max(2) && h <= sh.max(2), "upscaled");
            // The exact fitted size, as rationals over a common denominator: scale = num/den.
            let (sw, sh, bw, bh) = (u128::from(sw), u128::from(sh), u128::from(bw), u128::from(bh));
            let (num, den) = if sw <= bw && sh <= bh {
                (1, 1)
            } else if sw * bh >= sh * bw {
                (bw, sw)
            } else {
                (bh, sh)
            };
            // Each side is within [exact - 2, exact] (or 2 where the exact side is below 2),
            // so the aspect error is below one even step.
            for (side, src) in [(u128::from(w), sw), (u128::from(h), sh)] {
                let exact_times_den = src * num;
                if exact_times_den >= 2 * den {
                    prop_assert!(side * den <= exact_times_den);
                    prop_assert!((side + 2) * den > exact_times_den);
                } else {
                    prop_assert_eq!(side, 2);
                }
            }
        }

        #[test]
        fn one_explicit_side_derives_the_other_within_one_pixel(
            sw in 1u32..20_000, sh in 1u32..20_000, want in 1u32..8_000,
        ) {
            let (w, h) = render_size(sw, sh, Some(want), None, 854, 480).unwrap();
            prop_assert!(w % 2 == 0 && h % 2 == 0 && w >= 2 && h >= 2);
            prop_assert!(w == want || w == want + 1);
            // |h - w·sh/sw| <= 1 unless held at the minimum of 2.
            let (w, h, sw, sh) = (u128::from(w), u128::from(h), u128::from(sw), u128::from(sh));
            if w * sh >= 2 * sw {
                prop_assert!((h * sw).abs_diff(w * sh) <= sw);
            } else {
                prop_assert_eq!(h, 2);
            }
        }
    }
}
