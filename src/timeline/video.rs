//! Start-video CFR conversion (SPEC §4): which source frame each constant-rate output frame
//! shows, for sources of any (variable) frame rate, and how a source shorter than the target
//! is extended.
//!
//! Owns: the mapping output frame index → source frame index, in exact integer time. Must not:
//! decode anything (it sees only timestamps), or compare times through floats.

use super::time::{Rational, TimeBase};
use super::TimelineError;

/// How a start video shorter than the target is continued past its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Extend {
    /// Forward, then backward, then forward again…, without showing a turning frame twice.
    Pingpong,
    /// From the start again.
    Loop,
    /// The last frame, frozen.
    Hold,
}

/// The source frame index for each of `frames` output frames at `fps`.
///
/// `pts` are the source frame timestamps in presentation order, in `tb` ticks: non-decreasing,
/// possibly negative or not starting at 0, possibly variable-rate. `end_pts` is the source's
/// end (last pts + last frame duration), so the source lasts `D = end_pts − pts[0]` ticks.
///
/// Output frame `i` is at time `t = i/fps` after the first frame and shows the source frame
/// with the latest timestamp `<= pts[0] + t` (among equal timestamps, the last one). Times at
/// or past `D` are extended:
/// - `Hold`: the last frame.
/// - `Loop`: `t mod D`.
/// - `Pingpong`: played forward over `[0, D)`, then backward showing frames `n−2 … 1` each for
///   its own duration, then forward again from frame 0. The turning frames (last and first) are
///   not doubled: the period is `D + (pts[n−1] − pts[1])` rather than `2D`; for a CFR source of
///   `n` frames that is the frame sequence `0 … n−1, n−2 … 1, 0 …`.
///
/// A source of zero duration (every timestamp equal to `end_pts`) shows its last frame
/// throughout.
///
/// All comparisons are exact: `t` in source ticks is `i·fps_den·tb_den / (fps_num·tb_num)`, and
/// since timestamps are integers only its floor matters, forward and backward alike.
///
/// Errors: no frames, an invalid time base, a zero fps, decreasing timestamps, an end before
/// the last timestamp, and output too long to index or allocate.
pub fn cfr_source_plan(
    pts: &[i64],
    tb: TimeBase,
    end_pts: i64,
    fps: Rational,
    frames: u64,
    extend: Extend,
) -> Result<Vec<usize>, TimelineError> {
    let (&first, &last) = match (pts.first(), pts.last()) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(TimelineError::EmptySource),
    };
    if !tb.is_valid() {
        return Err(TimelineError::InvalidTimeBase {
            num: tb.num,
            den: tb.den,
        });
    }
    if fps.is_zero() {
        return Err(TimelineError::InvalidFps { fps });
    }
    if let Some(k) = pts.windows(2).position(|w| w[1] < w[0]) {
        return Err(TimelineError::PtsNotMonotonic {
            index: k + 1,
            previous: pts[k],
            pts: pts[k + 1],
        });
    }
    if end_pts < last {
        return Err(TimelineError::EndBeforeLastFrame {
            end_pts,
            last_pts: last,
        });
    }
    let too_long = TimelineError::Overflow {
        what: "start video output frame count",
    };
    let count = usize::try_from(frames).map_err(|_| too_long.clone())?;
    let mut plan = Vec::new();
    plan.try_reserve_exact(count)
        .map_err(|_| too_long.clone())?;

    let mut source = Source {
        pts,
        first,
        duration: 0,
    };
    source.duration = source.rel(end_pts);
    let rel = |p: i64| source.rel(p);
    let n = pts.len();
    // Pingpong period: forward over D, backward over frames n−2 … 1.
    let period = match n {
        0 | 1 => source.duration,
        _ => source.duration + rel(last) - rel(pts[1]),
    };
    // Output frame time in source ticks = i·a/b.
    let a = u128::from(fps.den()) * u128::from(tb.den);
    let b = u128::from(fps.num()) * u128::from(tb.num);
    for i in 0..frames {
        let q = u128::from(i).checked_mul(a).ok_or(too_long.clone())? / b;
        let d = source.duration;
        let index = if d == 0 || n == 1 {
            n - 1
        } else if q < d {
            source.at_or_before(q)
        } else {
            match extend {
                Extend::Hold => n - 1,
                Extend::Loop => source.at_or_before(q % d),
                Extend::Pingpong => {
                    let u = q % period;
                    if u < d {
                        source.at_or_before(u)
                    } else {
                        // Mirror: u ∈ [D, period) ↦ s = pts[n−1] + D − u ∈ (pts[1], pts[n−1]];
                        // the frame shown is the latest strictly before s.
                        source.before(rel(last) + d - u)
                    }
                }
            }
        };
        plan.push(index);
    }
    Ok(plan)
}

/// Timestamp lookups relative to the first frame.
struct Source<'a> {
    pts: &'a [i64],
    first: i64,
    /// `D` in ticks.
    duration: u128,
}

impl Source<'_> {
    /// Ticks since the first frame; non-negative because pts is non-decreasing.
    fn rel(&self, p: i64) -> u128 {
        (i128::from(p) - i128::from(self.first)).unsigned_abs()
    }

    /// The last frame with relative time `<= t` (frame 0 has time 0, so there is one).
    fn at_or_before(&self, t: u128) -> usize {
        self.pts
            .partition_point(|&p| self.rel(p) <= t)
            .saturating_sub(1)
    }

    /// The last frame with relative time `< t`.
    fn before(&self, t: u128) -> usize {
        self.pts
            .partition_point(|&p| self.rel(p) < t)
            .saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(n: u64, d: u64) -> Rational {
        Rational::new(n, d).unwrap()
    }

    fn tb(num: u32, den: u32) -> TimeBase {
        TimeBase::new(num, den).unwrap()
    }

    #[test]
    fn same_rate_is_the_identity() {
        let pts: Vec<i64> = (0..10).collect();
        let plan = cfr_source_plan(&pts, tb(1, 25), 10, r(25, 1), 10, Extend::Hold).unwrap();
        assert_eq!(plan, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn halving_and_upsampling() {
        let pts: Vec<i64> = (0..20).collect();
        let plan = cfr_source_plan(&pts, tb(1, 50), 20, r(25, 1), 10, Extend::Hold).unwrap();
        assert_eq!(plan, vec![0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
        // 10 fps → 25 fps: output frame i at 0.4·i source frames.
        let pts: Vec<i64> = (0..5).collect();
        let plan = cfr_source_plan(&pts, tb(1, 10), 5, r(25, 1), 12, Extend::Hold).unwrap();
        assert_eq!(plan, vec![0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn ntsc_source_to_25_fps() {
        // 30000/1001 fps in 1/30000: frame k at 1001·k. Output frame i at i/25 s = 1200·i ticks.
        let pts: Vec<i64> = (0..30).map(|k| 1001 * k).collect();
        let plan = cfr_source_plan(&pts, tb(1, 30000), 30030, r(25, 1), 25, Extend::Hold).unwrap();
        let expected: Vec<usize> = (0..25u64).map(|i| (1200 * i / 1001) as usize).collect();
        assert_eq!(plan, expected);
        // Exactly on a timestamp counts as reached: 25 fps in 1/30000 at 5 fps source.
        let pts: Vec<i64> = vec![0, 6000, 12000];
        let plan = cfr_source_plan(&pts, tb(1, 30000), 18000, r(25, 1), 15, Extend::Hold).unwrap();
        assert_eq!(plan, vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn vfr_source_each_extension() {
        // Frames at 0, 0.10, 0.15, 0.40 s; ends at 0.50 s. Output at 10 fps.
        let pts = [0, 10, 15, 40];
        let run = |extend| cfr_source_plan(&pts, tb(1, 100), 50, r(10, 1), 14, extend).unwrap();
        assert_eq!(
            run(Extend::Hold),
            vec![0, 1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]
        );
        assert_eq!(
            run(Extend::Loop),
            vec![0, 1, 2, 2, 3, 0, 1, 2, 2, 3, 0, 1, 2, 2]
        );
        // Period 50 + (40 − 10) = 80 ticks: backward, frame 2 covers u ∈ [50, 75), frame 1
        // [75, 80) (between samples), then frame 0 again at u = 80.
        assert_eq!(
            run(Extend::Pingpong),
            vec![0, 1, 2, 2, 3, 2, 2, 2, 0, 1, 2, 2, 3, 2]
        );
    }

    #[test]
    fn pingpong_does_not_double_turning_frames() {
        let pts: Vec<i64> = (0..4).collect();
        let plan = cfr_source_plan(&pts, tb(1, 1), 4, r(1, 1), 14, Extend::Pingpong).unwrap();
        assert_eq!(plan, vec![0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        // Two frames alternate.
        let plan = cfr_source_plan(&[0, 1], tb(1, 1), 2, r(1, 1), 5, Extend::Pingpong).unwrap();
        assert_eq!(plan, vec![0, 1, 0, 1, 0]);
        // Output twice the source rate: each source frame shown twice, turning ones too.
        let pts: Vec<i64> = (0..3).collect();
        let plan = cfr_source_plan(&pts, tb(1, 1), 3, r(2, 1), 12, Extend::Pingpong).unwrap();
        assert_eq!(plan, vec![0, 0, 1, 1, 2, 2, 1, 1, 0, 0, 1, 1]);
    }

    #[test]
    fn negative_start_and_duplicates() {
        let pts = [-1001, 0, 1001];
        let plan =
            cfr_source_plan(&pts, tb(1, 30000), 2002, r(30000, 1001), 5, Extend::Hold).unwrap();
        assert_eq!(plan, vec![0, 1, 2, 2, 2]);
        let plan =
            cfr_source_plan(&pts, tb(1, 30000), 2002, r(30000, 1001), 5, Extend::Loop).unwrap();
        assert_eq!(plan, vec![0, 1, 2, 0, 1]);
        // Equal timestamps: the later frame in presentation order wins.
        let plan = cfr_source_plan(&[0, 0, 1], tb(1, 1), 2, r(1, 1), 2, Extend::Hold).unwrap();
        assert_eq!(plan, vec![1, 2]);
        // Extreme timestamps do not overflow.
        let plan = cfr_source_plan(
            &[i64::MIN, i64::MAX],
            tb(1, 1),
            i64::MAX,
            r(1, 1),
            2,
            Extend::Loop,
        )
        .unwrap();
        assert_eq!(plan, vec![0, 0]);
    }

    #[test]
    fn degenerate_sources() {
        for extend in [Extend::Hold, Extend::Loop, Extend::Pingpong] {
            let one = cfr_source_plan(&[5], tb(1, 25), 6, r(25, 1), 4, extend).unwrap();
            assert_eq!(one, vec![0; 4]);
            let zero = cfr_source_plan(&[5, 5], tb(1, 25), 5, r(25, 1), 3, extend).unwrap();
            assert_eq!(zero, vec![1; 3]);
            let none = cfr_source_plan(&[0, 1], tb(1, 25), 2, r(25, 1), 0, extend).unwrap();
            assert!(none.is_empty());
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let ok_tb = tb(1, 25);
        assert_eq!(
            cfr_source_plan(&[], ok_tb, 0, r(25, 1), 1, Extend::Hold),
            Err(TimelineError::EmptySource)
        );
        assert_eq!(
            cfr_source_plan(&[0, 2, 1], ok_tb, 3, r(25, 1), 1, Extend::Hold),
            Err(TimelineError::PtsNotMonotonic {
                index: 2,
                previous: 2,
                pts: 1
            })
        );
        assert_eq!(
            cfr_source_plan(&[0, 2], ok_tb, 1, r(25, 1), 1, Extend::Hold),
            Err(TimelineError::EndBeforeLastFrame {
                end_pts: 1,
                last_pts: 2
            })
        );
        assert_eq!(
            cfr_source_plan(
                &[0],
                TimeBase { num: 0, den: 1 },
                1,
                r(25, 1),
                1,
                Extend::Hold
            ),
            Err(TimelineError::InvalidTimeBase { num: 0, den: 1 })
        );
        assert!(matches!(
            cfr_source_plan(&[0], ok_tb, 1, Rational::ZERO, 1, Extend::Hold),
            Err(TimelineError::InvalidFps { .. })
        ));
        assert!(matches!(
            cfr_source_plan(&[0], ok_tb, 1, r(25, 1), u64::MAX, Extend::Hold),
            Err(TimelineError::Overflow { .. })
        ));
        // The widest products (fps_den·tb_den ≈ 2^96) stay exact: frame 1 is at an odd tick.
        assert_eq!(
            cfr_source_plan(&[0, 1], tb(1, u32::MAX), 2, r(1, u64::MAX), 3, Extend::Loop),
            Ok(vec![0, 1, 0])
        );
    }

    #[test]
    fn extend_serde_names() {
        assert_eq!(
            serde_json::to_string(&Extend::Pingpong).unwrap(),
            "\"pingpong\""
        );
        let e: Extend = serde_json::from_str("\"loop\"").unwrap();
        assert_eq!(e, Extend::Loop);
    }

    /// Non-decreasing VFR timestamps from a random start, and a non-negative last duration.
    fn any_source() -> impl Strategy<Value = (Vec<i64>, i64)> {
        (
            -1_000_000i64..1_000_000,
            prop::collection::vec(0i64..5000, 1..60),
            0i64..5000,
        )
            .prop_map(|(start, steps, last_duration)| {
                let mut t = start;
                let pts: Vec<i64> = steps
                    .iter()
                    .map(|s| {
                        let p = t;
                        t += s;
                        p
                    })
                    .collect();
                let end = pts.last().copied().unwrap_or(start) + last_duration;
                (pts, end)
            })
    }

    fn any_fps() -> impl Strategy<Value = Rational> {
        prop::sample::select(vec![
            r(24000, 1001),
            r(25, 1),
            r(30000, 1001),
            r(60, 1),
            r(1, 3),
        ])
    }

    fn any_tb() -> impl Strategy<Value = TimeBase> {
        prop::sample::select(vec![tb(1, 1000), tb(1, 90000), tb(1001, 30000), tb(1, 25)])
    }

    proptest! {
        #[test]
        fn hold_is_valid_and_non_decreasing(
            (pts, end) in any_source(), tb in any_tb(), fps in any_fps(), frames in 0u64..400,
        ) {
            let plan = cfr_source_plan(&pts, tb, end, fps, frames, Extend::Hold).unwrap();
            prop_assert_eq!(plan.len() as u64, frames);
            prop_assert!(plan.iter().all(|&k| k < pts.len()));
            prop_assert!(plan.windows(2).all(|w| w[0] <= w[1]));
            let first = i128::from(pts[0]);
            let d = i128::from(end) - first;
            for (i, &k) in plan.iter().enumerate() {
                // Time of output frame i in ticks·(fps_num·tb_num): i·fps_den·tb_den.
                let scale = i128::from(fps.num()) * i128::from(tb.num);
                let t = i as i128 * i128::from(fps.den()) * i128::from(tb.den);
                let rel = |j: usize| (i128::from(pts[j]) - first) * scale;
                if t < d * scale {
                    // Within the source: latest frame at or before t.
                    prop_assert!(rel(k) <= t);
                    prop_assert!(k + 1 == pts.len() || rel(k + 1) > t);
                } else {
                    prop_assert_eq!(k, pts.len() - 1);
                }
            }
        }

        #[test]
        fn every_extension_is_valid_and_agrees_within_the_source(
            (pts, end) in any_source(), tb in any_tb(), fps in any_fps(), frames in 0u64..400,
        ) {
            let hold = cfr_source_plan(&pts, tb, end, fps, frames, Extend::Hold).unwrap();
            let d = (i128::from(end) - i128::from(pts[0])).unsigned_abs();
            for extend in [Extend::Loop, Extend::Pingpong] {
                let plan = cfr_source_plan(&pts, tb, end, fps, frames, extend).unwrap();
                prop_assert_eq!(plan.len(), hold.len());
                prop_assert!(plan.iter().all(|&k| k < pts.len()));
                for (i, (&a, &b)) in plan.iter().zip(&hold).enumerate() {
                    let q = i as u128 * u128::from(fps.den()) * u128::from(tb.den)
                        / (u128::from(fps.num()) * u128::from(tb.num));
                    if q < d {
                        prop_assert_eq!(a, b);
                    }
                }
            }
        }
    }
}
