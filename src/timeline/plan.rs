//! The audio and frame plan (SPEC §4): how many samples of silence pad the speech, how many
//! video frames the padded audio needs, how many of them are the end-image hold, and which
//! source feeds each output frame.
//!
//! Owns: the sample and frame counts and the picture/sound delta, all exact. Must not: look at
//! media, or round without naming how.

use std::ops::Range;

use super::time::{Rational, Rounding, AV_RATIONAL_MAX};
pub use super::TimelineError;

/// `seconds · rate` samples, rounded as named; saturates at `u64::MAX`.
pub fn samples_for(seconds: Rational, rate: u32, rounding: Rounding) -> u64 {
    seconds.mul_int(u64::from(rate), rounding)
}

/// `seconds · fps` frames, rounded as named; saturates at `u64::MAX`.
pub fn frames_for(seconds: Rational, fps: Rational, rounding: Rounding) -> u64 {
    // Both products are of two u64s: they fit in u128, so one exact division.
    let q = rounding.div(
        u128::from(seconds.num()) * u128::from(fps.num()),
        u128::from(seconds.den()) * u128::from(fps.den()),
    );
    u64::try_from(q).unwrap_or(u64::MAX)
}

/// The MP4 movie timescale in which one audio sample (`1/rate`) and one frame (`1/fps`) are
/// both whole ticks: `lcm(rate, fps_num)`. `None` when it exceeds what FFmpeg's mov muxer
/// takes (`i32::MAX`): such a pair cannot be written with exact durations.
pub fn movie_timescale(rate: u32, fps: Rational) -> Option<u64> {
    let (a, b) = (u64::from(rate), fps.num());
    if a == 0 || b == 0 {
        return None;
    }
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    let lcm = u128::from(a / x) * u128::from(b);
    u64::try_from(lcm).ok().filter(|&t| t <= AV_RATIONAL_MAX)
}

/// Why `fps` cannot be delivered with audio at `rate`, when it cannot (see
/// [`movie_timescale`]); one line for a validation problem.
pub fn timescale_problem(rate: u32, fps: Rational) -> Option<String> {
    if movie_timescale(rate, fps).is_some() {
        return None;
    }
    Some(format!(
        "{fps} fps with {rate} Hz audio needs an MP4 timescale of lcm({rate}, {}) = {}, over the \
         limit of {AV_RATIONAL_MAX}, so the file's durations could not be exact; use a frame rate \
         with a smaller numerator (e.g. 24000/1001 or 23.976)",
        fps.num(),
        u128::from(rate) / u128::from(gcd(u64::from(rate), fps.num())) * u128::from(fps.num()),
    ))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The padded audio: `pre` samples of silence, the `input` samples decoded from the speech
/// file, `post` samples of silence, all at the input's native `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AudioPlan {
    /// Samples per second (native rate of the input).
    pub rate: u32,
    /// `N_in`: samples counted by decoding the input (container durations lie).
    pub input_samples: u64,
    /// `round(pre_seconds · rate)`, half up.
    pub pre_samples: u64,
    /// `round(post_seconds · rate)`, half up.
    pub post_samples: u64,
}

impl AudioPlan {
    /// Pads `input_samples` at `rate` with `pre_seconds` and `post_seconds` of silence, each
    /// rounded half up to whole samples.
    pub fn new(
        rate: u32,
        input_samples: u64,
        pre_seconds: Rational,
        post_seconds: Rational,
    ) -> AudioPlan {
        AudioPlan {
            rate,
            input_samples,
            pre_samples: samples_for(pre_seconds, rate, Rounding::Round),
            post_samples: samples_for(post_seconds, rate, Rounding::Round),
        }
    }

    /// `N = pre + N_in + post`, or `None` if that overflows `u64`.
    pub fn checked_total_samples(&self) -> Option<u64> {
        self.pre_samples
            .checked_add(self.input_samples)?
            .checked_add(self.post_samples)
    }

    /// `N = pre + N_in + post` (saturating; [`FramePlan::new`] rejects an overflowing sum).
    pub fn total_samples(&self) -> u64 {
        self.pre_samples
            .saturating_add(self.input_samples)
            .saturating_add(self.post_samples)
    }

    /// `N/R` seconds: the audio duration, which is also the visual target duration. Zero for a
    /// zero rate (no decoder reports one; [`FramePlan::new`] rejects it).
    pub fn duration(&self) -> Rational {
        Rational::new(self.total_samples(), u64::from(self.rate)).unwrap_or(Rational::ZERO)
    }

    /// `N_in/R` seconds: the speech without the padding.
    pub fn input_duration(&self) -> Rational {
        Rational::new(self.input_samples, u64::from(self.rate)).unwrap_or(Rational::ZERO)
    }
}

/// Where an output frame's picture comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum FrameSource {
    /// Frame `k` of the main segment (ComfyUI / lip-sync / motion / start video).
    Main(u64),
    /// The end image.
    EndHold,
}

/// The kind of a [`Segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum SegmentKind {
    Main,
    EndHold,
}

/// A run of output frames from one kind of source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Segment {
    pub kind: SegmentKind,
    /// Output frame indices, half-open `start..end`.
    pub frames: Range<u64>,
}

impl Segment {
    /// Number of frames in the segment.
    pub fn len(&self) -> u64 {
        self.frames.end.saturating_sub(self.frames.start)
    }

    /// True for a segment without frames.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The output picture: `target_frames` frames at `fps`, the last `hold_frames` of them from the
/// end image. Output frame `i` has PTS `i` in time base `1/fps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FramePlan {
    pub fps: Rational,
    /// `rounding(N/R · fps)`.
    pub target_frames: u64,
    /// `rounding(post_seconds · fps)` capped at `target_frames - 1` with an end image and a
    /// post buffer; else 0.
    pub hold_frames: u64,
}

impl FramePlan {
    /// Plans the frames for `audio` at `fps`.
    ///
    /// Errors: [`TimelineError::InvalidSampleRate`] / [`TimelineError::InvalidFps`] for rates
    /// FFmpeg cannot carry, [`TimelineError::Overflow`] for absurd lengths, and
    /// [`TimelineError::TooFewFrames`] when fewer than 2 frames result.
    pub fn new(
        audio: &AudioPlan,
        fps: Rational,
        rounding: Rounding,
        post_seconds: Rational,
        has_end_image: bool,
    ) -> Result<FramePlan, TimelineError> {
        let rate = audio.rate;
        if rate == 0 || u64::from(rate) > AV_RATIONAL_MAX {
            return Err(TimelineError::InvalidSampleRate { rate });
        }
        if fps.is_zero() || fps.num() > AV_RATIONAL_MAX || fps.den() > AV_RATIONAL_MAX {
            return Err(TimelineError::InvalidFps { fps });
        }
        let n = audio
            .checked_total_samples()
            .ok_or(TimelineError::Overflow {
                what: "padded sample count",
            })?;
        // N·fps_num / (R·fps_den): u64·u31 and u31·u31 both fit u128; one exact division.
        let target = rounding.div(
            u128::from(n) * u128::from(fps.num()),
            u128::from(rate) * u128::from(fps.den()),
        );
        let target = u64::try_from(target).map_err(|_| TimelineError::Overflow {
            what: "frame count",
        })?;
        // Keeps video_duration() and the delta exact in 64-bit parts.
        if target.checked_mul(fps.den()).is_none() {
            return Err(TimelineError::Overflow {
                what: "video duration",
            });
        }
        if target < 2 {
            return Err(TimelineError::TooFewFrames { frames: target });
        }
        let hold_frames = if has_end_image && !post_seconds.is_zero() {
            frames_for(post_seconds, fps, rounding).min(target - 1)
        } else {
            0
        };
        Ok(FramePlan {
            fps,
            target_frames: target,
            hold_frames,
        })
    }

    /// Frames of the main segment: `target_frames - hold_frames` (what ComfyUI is asked for).
    pub fn main_frames(&self) -> u64 {
        self.target_frames.saturating_sub(self.hold_frames)
    }

    /// The samples (at `rate`) that frame `i` covers: from `floor(i·rate/fps)` up to
    /// `floor((i+1)·rate/fps)`, half-open. Consecutive frames' ranges tile the programme.
    pub fn frame_samples(&self, i: u64, rate: u32) -> Range<u64> {
        let at = |k: u64| {
            let q = (u128::from(k) * u128::from(rate) * u128::from(self.fps.den()))
                / u128::from(self.fps.num().max(1));
            u64::try_from(q).unwrap_or(u64::MAX)
        };
        at(i)..at(i.saturating_add(1))
    }

    /// The source of output frame `i`: `Main(i)` for `i < main_frames()`, else the end hold.
    /// Indices past the picture get the last frame's source (the picture holds its end).
    pub fn source(&self, i: u64) -> FrameSource {
        let i = i.min(self.target_frames.saturating_sub(1));
        if i < self.main_frames() {
            FrameSource::Main(i)
        } else {
            FrameSource::EndHold
        }
    }

    /// The main segment then the end hold, contiguous from 0 to `target_frames`; a hold of
    /// zero frames is omitted.
    pub fn segments(&self) -> Vec<Segment> {
        let main = self.main_frames();
        let mut segments = vec![Segment {
            kind: SegmentKind::Main,
            frames: 0..main,
        }];
        if self.target_frames > main {
            segments.push(Segment {
                kind: SegmentKind::EndHold,
                frames: main..self.target_frames,
            });
        }
        segments
    }

    /// `target_frames / fps` seconds.
    pub fn video_duration(&self) -> Rational {
        lossy_ratio(
            u128::from(self.target_frames) * u128::from(self.fps.den()),
            u128::from(self.fps.num()),
        )
    }

    /// Picture minus sound, in frames: `(picture_longer, |target − N/R·fps|)`. Exact for a plan
    /// built by [`FramePlan::new`] from the same `audio`.
    pub fn av_delta_frames(&self, audio: &AudioPlan) -> (bool, Rational) {
        let (longer, diff) = self.delta_numerator(audio);
        // Both durations in units of 1/(R·fps_num) s: frames = diff / (R·fps_den).
        let den = u128::from(audio.rate) * u128::from(self.fps.den());
        (longer, lossy_ratio(diff, den))
    }

    /// Picture minus sound, in seconds: `(picture_longer, |target/fps − N/R|)`.
    pub fn av_delta_seconds(&self, audio: &AudioPlan) -> (bool, Rational) {
        let (longer, diff) = self.delta_numerator(audio);
        let den = u128::from(audio.rate) * u128::from(self.fps.num());
        (longer, lossy_ratio(diff, den))
    }

    /// `target·R·fps_den` vs `N·fps_num`: the picture and sound durations scaled by
    /// `R·fps_num`. Saturates only for hand-built plans outside `new`'s limits.
    fn delta_numerator(&self, audio: &AudioPlan) -> (bool, u128) {
        let picture = u128::from(self.target_frames)
            .saturating_mul(u128::from(audio.rate))
            .saturating_mul(u128::from(self.fps.den()));
        let sound = u128::from(audio.total_samples()) * u128::from(self.fps.num());
        (picture > sound, picture.abs_diff(sound))
    }
}

/// `num/den` reduced; exact whenever the reduced value fits 64-bit parts (always, for plans
/// built by [`FramePlan::new`]). Outside that both parts are shifted down until they fit, and a
/// zero `den` gives 0: a display value for inconsistent hand-built input, never a panic.
fn lossy_ratio(num: u128, den: u128) -> Rational {
    if let Some(r) = Rational::from_u128(num, den) {
        return r;
    }
    if den == 0 {
        return Rational::ZERO;
    }
    let (mut n, mut d) = (num, den);
    while n > u128::from(u64::MAX) || d > u128::from(u64::MAX) {
        n >>= 1;
        d = (d >> 1).max(1);
    }
    Rational::from_u128(n, d).unwrap_or(Rational::ZERO)
}

#[cfg(test)]
mod timescale_tests {
    use super::*;

    #[test]
    fn timescale_is_the_lcm_within_ffmpegs_limit() {
        let fps = |n, d| Rational::new(n, d).unwrap();
        assert_eq!(movie_timescale(48_000, fps(25, 1)), Some(48_000));
        assert_eq!(movie_timescale(48_000, fps(30_000, 1001)), Some(240_000));
        assert_eq!(movie_timescale(44_100, fps(30_000, 1001)), Some(4_410_000));
        // "23.9761" = 239761/10000: 48000 · 239761 does not fit.
        assert_eq!(movie_timescale(48_000, fps(239_761, 10_000)), None);
        assert_eq!(movie_timescale(22_050, fps(239_761, 10_000)), None);
        let why = timescale_problem(48_000, fps(239_761, 10_000)).unwrap();
        assert!(why.contains("11508528000"), "{why}");
        assert_eq!(timescale_problem(48_000, fps(24_000, 1001)), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(n: u64, d: u64) -> Rational {
        Rational::new(n, d).unwrap()
    }

    const FPS: [(u64, u64); 8] = [
        (24000, 1001),
        (24, 1),
        (25, 1),
        (30000, 1001),
        (30, 1),
        (50, 1),
        (60000, 1001),
        (60, 1),
    ];

    #[test]
    fn frame_sample_ranges_tile_the_programme() {
        let plan = FramePlan {
            fps: r(30000, 1001),
            target_frames: 100,
            hold_frames: 0,
        };
        // 48000 Hz at 30000/1001 fps: 1601.6 samples per frame.
        assert_eq!(plan.frame_samples(0, 48_000), 0..1601);
        assert_eq!(plan.frame_samples(1, 48_000), 1601..3203);
        let mut end = 0;
        for i in 0..100 {
            let s = plan.frame_samples(i, 48_000);
            assert_eq!(s.start, end);
            end = s.end;
        }
        assert_eq!(end, 160_160);
    }

    #[test]
    fn samples_for_rounds_as_named() {
        assert_eq!(samples_for(r(1, 2), 44100, Rounding::Round), 22050);
        assert_eq!(samples_for(r(1, 3), 44100, Rounding::Round), 14700);
        assert_eq!(samples_for(r(1, 7), 44100, Rounding::Floor), 6300);
        // 0.00001 s at 44100 Hz = 0.441 samples.
        assert_eq!(samples_for(r(1, 100_000), 44100, Rounding::Round), 0);
        assert_eq!(samples_for(r(1, 100_000), 44100, Rounding::Ceil), 1);
        // Exactly half a sample rounds up.
        assert_eq!(samples_for(r(1, 88200), 44100, Rounding::Round), 1);
        assert_eq!(samples_for(r(1, 88200), 44100, Rounding::Floor), 0);
        assert_eq!(
            samples_for(r(u64::MAX, 1), u32::MAX, Rounding::Round),
            u64::MAX
        );
    }

    #[test]
    fn frames_for_rounds_as_named() {
        assert_eq!(frames_for(r(1, 1), r(25, 1), Rounding::Round), 25);
        assert_eq!(frames_for(r(1, 1), r(30000, 1001), Rounding::Round), 30);
        assert_eq!(frames_for(r(1, 1), r(30000, 1001), Rounding::Floor), 29);
        assert_eq!(frames_for(r(10, 1), r(30000, 1001), Rounding::Ceil), 300);
        assert_eq!(frames_for(r(1, 50), r(25, 1), Rounding::Round), 1);
        assert_eq!(frames_for(r(1, 50), r(25, 1), Rounding::Floor), 0);
        assert_eq!(frames_for(Rational::ZERO, r(25, 1), Rounding::Ceil), 0);
        assert_eq!(
            frames_for(r(u64::MAX, 1), r(u64::MAX, 1), Rounding::Round),
            u64::MAX
        );
    }

    #[test]
    fn one_second_at_25_fps_with_half_and_one_second_buffers() {
        let audio = AudioPlan::new(44100, 44100, r(1, 2), r(1, 1));
        assert_eq!(audio.pre_samples, 22050);
        assert_eq!(audio.post_samples, 44100);
        assert_eq!(audio.total_samples(), 110_250);
        assert_eq!(audio.duration(), r(5, 2));
        assert_eq!(audio.input_duration(), r(1, 1));

        // 2.5 s · 25 = 62.5 frames.
        let round = FramePlan::new(&audio, r(25, 1), Rounding::Round, r(1, 1), true).unwrap();
        assert_eq!(round.target_frames, 63);
        assert_eq!(round.hold_frames, 25);
        assert_eq!(round.main_frames(), 38);
        assert_eq!(round.av_delta_frames(&audio), (true, r(1, 2)));
        assert_eq!(round.av_delta_seconds(&audio), (true, r(1, 50)));
        assert_eq!(round.video_duration(), r(63, 25));

        let floor = FramePlan::new(&audio, r(25, 1), Rounding::Floor, r(1, 1), true).unwrap();
        assert_eq!(floor.target_frames, 62);
        assert_eq!(floor.av_delta_frames(&audio), (false, r(1, 2)));
        let ceil = FramePlan::new(&audio, r(25, 1), Rounding::Ceil, r(1, 1), true).unwrap();
        assert_eq!(ceil.target_frames, 63);

        // Without an end image there is no hold, whatever the post buffer.
        let no_end = FramePlan::new(&audio, r(25, 1), Rounding::Round, r(1, 1), false).unwrap();
        assert_eq!(no_end.hold_frames, 0);
        assert_eq!(no_end.main_frames(), 63);
    }

    #[test]
    fn ntsc_ten_seconds_at_48k() {
        let audio = AudioPlan::new(48000, 480_000, Rational::ZERO, Rational::ZERO);
        let fps = r(30000, 1001);
        // 10 s · 30000/1001 = 299.7003 frames.
        let plan = FramePlan::new(&audio, fps, Rounding::Round, Rational::ZERO, true).unwrap();
        assert_eq!(plan.target_frames, 300);
        assert_eq!(plan.hold_frames, 0, "no post buffer, no hold");
        assert_eq!(plan.av_delta_frames(&audio), (true, r(300, 1001)));
        assert_eq!(plan.video_duration(), r(1001, 100));
        let floor = FramePlan::new(&audio, fps, Rounding::Floor, Rational::ZERO, true).unwrap();
        assert_eq!(floor.target_frames, 299);
        assert_eq!(floor.av_delta_frames(&audio), (false, r(701, 1001)));
    }

    #[test]
    fn ntsc_hold_of_one_second() {
        // 3 s of speech + 1 s post at 44100 Hz, 30000/1001 fps: 4 s = 119.88 frames → 120.
        let audio = AudioPlan::new(44100, 3 * 44100, Rational::ZERO, r(1, 1));
        let plan = FramePlan::new(&audio, r(30000, 1001), Rounding::Round, r(1, 1), true).unwrap();
        assert_eq!(plan.target_frames, 120);
        // 1 s · 29.97 = 29.97 → 30.
        assert_eq!(plan.hold_frames, 30);
        assert_eq!(plan.main_frames(), 90);
        // 24000/1001: 4 s = 95.904 → 96; hold 23.976 → 24; floor gives 95 and 23.
        let p24 = FramePlan::new(&audio, r(24000, 1001), Rounding::Round, r(1, 1), true).unwrap();
        assert_eq!((p24.target_frames, p24.hold_frames), (96, 24));
        let f24 = FramePlan::new(&audio, r(24000, 1001), Rounding::Floor, r(1, 1), true).unwrap();
        assert_eq!((f24.target_frames, f24.hold_frames), (95, 23));
    }

    #[test]
    fn hold_is_capped_below_the_target() {
        // 0.1 s of audio (post buffer only) at 25 fps: 2.5 → 3 frames; hold 3 capped to 2.
        let audio = AudioPlan::new(8000, 0, Rational::ZERO, r(1, 10));
        let plan = FramePlan::new(&audio, r(25, 1), Rounding::Round, r(1, 10), true).unwrap();
        assert_eq!(plan.target_frames, 3);
        assert_eq!(plan.hold_frames, 2);
        assert_eq!(plan.main_frames(), 1);
        // A post buffer longer than the audio (inconsistent input) is still capped.
        let plan = FramePlan::new(&audio, r(25, 1), Rounding::Round, r(100, 1), true).unwrap();
        assert_eq!(plan.hold_frames, 2);
    }

    #[test]
    fn too_few_frames() {
        // 0.05 s at 25 fps = 1.25 frames.
        let audio = AudioPlan::new(48000, 2400, Rational::ZERO, Rational::ZERO);
        assert_eq!(
            FramePlan::new(&audio, r(25, 1), Rounding::Round, Rational::ZERO, false),
            Err(TimelineError::TooFewFrames { frames: 1 })
        );
        let empty = AudioPlan::new(48000, 0, Rational::ZERO, Rational::ZERO);
        assert_eq!(
            FramePlan::new(&empty, r(25, 1), Rounding::Ceil, Rational::ZERO, false),
            Err(TimelineError::TooFewFrames { frames: 0 })
        );
        // 0.06 s = 1.5 frames: round and ceil give 2, floor 1.
        let audio = AudioPlan::new(48000, 2880, Rational::ZERO, Rational::ZERO);
        assert!(FramePlan::new(&audio, r(25, 1), Rounding::Round, Rational::ZERO, false).is_ok());
        assert_eq!(
            FramePlan::new(&audio, r(25, 1), Rounding::Floor, Rational::ZERO, false),
            Err(TimelineError::TooFewFrames { frames: 1 })
        );
    }

    #[test]
    fn bad_rates_and_overflow_are_errors() {
        let audio = AudioPlan::new(0, 1000, Rational::ZERO, Rational::ZERO);
        assert_eq!(audio.duration(), Rational::ZERO);
        assert_eq!(
            FramePlan::new(&audio, r(25, 1), Rounding::Round, Rational::ZERO, false),
            Err(TimelineError::InvalidSampleRate { rate: 0 })
        );
        let audio = AudioPlan::new(u32::MAX, 1000, Rational::ZERO, Rational::ZERO);
        assert!(matches!(
            FramePlan::new(&audio, r(25, 1), Rounding::Round, Rational::ZERO, false),
            Err(TimelineError::InvalidSampleRate { .. })
        ));
        let audio = AudioPlan::new(48000, 48000, Rational::ZERO, Rational::ZERO);
        for fps in [Rational::ZERO, r(u64::MAX, 1), r(1, u64::MAX)] {
            assert_eq!(
                FramePlan::new(&audio, fps, Rounding::Round, Rational::ZERO, false),
                Err(TimelineError::InvalidFps { fps })
            );
        }
        let huge = AudioPlan {
            rate: 1,
            input_samples: u64::MAX,
            pre_samples: 1,
            post_samples: 0,
        };
        assert_eq!(huge.total_samples(), u64::MAX);
        assert!(matches!(
            FramePlan::new(&huge, r(25, 1), Rounding::Round, Rational::ZERO, false),
            Err(TimelineError::Overflow { .. })
        ));
        let long = AudioPlan::new(1, u64::MAX, Rational::ZERO, Rational::ZERO);
        assert!(matches!(
            FramePlan::new(&long, r(1000, 1), Rounding::Round, Rational::ZERO, false),
            Err(TimelineError::Overflow { .. })
        ));
    }

    #[test]
    fn sources_and_segments() {
        let plan = FramePlan {
            fps: r(25, 1),
            target_frames: 10,
            hold_frames: 3,
        };
        assert_eq!(plan.source(0), FrameSource::Main(0));
        assert_eq!(plan.source(6), FrameSource::Main(6));
        assert_eq!(plan.source(7), FrameSource::EndHold);
        assert_eq!(plan.source(9), FrameSource::EndHold);
        assert_eq!(plan.source(u64::MAX), FrameSource::EndHold);
        assert_eq!(
            plan.segments(),
            vec![
                Segment {
                    kind: SegmentKind::Main,
                    frames: 0..7
                },
                Segment {
                    kind: SegmentKind::EndHold,
                    frames: 7..10
                },
            ]
        );
        let no_hold = FramePlan {
            hold_frames: 0,
            ..plan
        };
        assert_eq!(no_hold.segments().len(), 1);
        assert_eq!(no_hold.source(20), FrameSource::Main(9));
    }

    #[test]
    fn hand_built_inconsistent_plans_do_not_panic() {
        let plan = FramePlan {
            fps: r(u64::MAX, u64::MAX - 1),
            target_frames: u64::MAX,
            hold_frames: u64::MAX,
        };
        let audio = AudioPlan {
            rate: 0,
            input_samples: u64::MAX,
            pre_samples: u64::MAX,
            post_samples: u64::MAX,
        };
        let _ = plan.av_delta_frames(&audio);
        let _ = plan.av_delta_seconds(&audio);
        let _ = plan.video_duration();
        let _ = plan.segments();
        let _ = plan.source(0);
        let audio = AudioPlan {
            rate: u32::MAX,
            ..audio
        };
        let _ = plan.av_delta_frames(&audio);
        assert_eq!(lossy_ratio(1, 0), Rational::ZERO);
        assert_eq!(lossy_ratio(u128::MAX, 1).den(), 1);
    }

    fn any_fps() -> impl Strategy<Value = Rational> {
        prop::sample::select(FPS.to_vec()).prop_map(|(n, d)| r(n, d))
    }

    fn any_rounding() -> impl Strategy<Value = Rounding> {
        prop::sample::select(vec![Rounding::Round, Rounding::Floor, Rounding::Ceil])
    }

    /// A sample rate, samples up to 10 hours at that rate, buffers of 0..10 s in milliseconds.
    fn any_audio() -> impl Strategy<Value = (AudioPlan, Rational)> {
        (8000u32..=96000)
            .prop_flat_map(|rate| {
                (
                    Just(rate),
                    0..=36_000 * u64::from(rate),
                    0u64..10_000,
                    0u64..10_000,
                )
            })
            .prop_map(|(rate, n_in, pre_ms, post_ms)| {
                let post = r(post_ms, 1000);
                (AudioPlan::new(rate, n_in, r(pre_ms, 1000), post), post)
            })
    }

    proptest! {
        #[test]
        fn segments_cover_the_target_contiguously(
            (audio, post) in any_audio(),
            fps in any_fps(),
            rounding in any_rounding(),
            end in any::<bool>(),
        ) {
            let Ok(plan) = FramePlan::new(&audio, fps, rounding, post, end) else {
                return Ok(());
            };
            let segments = plan.segments();
            let mut next = 0;
            for s in &segments {
                prop_assert_eq!(s.frames.start, next);
                prop_assert!(!s.is_empty());
                next = s.frames.end;
            }
            prop_assert_eq!(next, plan.target_frames);
            prop_assert_eq!(segments.iter().map(Segment::len).sum::<u64>(), plan.target_frames);
            prop_assert!(plan.main_frames() >= 1);
            prop_assert!(plan.hold_frames < plan.target_frames);
            if !end || post.is_zero() {
                prop_assert_eq!(plan.hold_frames, 0);
            }
            prop_assert_eq!(plan.source(plan.main_frames() - 1),
                FrameSource::Main(plan.main_frames() - 1));
            if plan.hold_frames > 0 {
                prop_assert_eq!(plan.source(plan.main_frames()), FrameSource::EndHold);
            }
        }

        #[test]
        fn round_keeps_picture_within_half_a_frame_of_sound(
            (audio, post) in any_audio(),
            fps in any_fps(),
        ) {
            match FramePlan::new(&audio, fps, Rounding::Round, post, true) {
                Ok(plan) => {
                    let (_, delta) = plan.av_delta_frames(&audio);
                    prop_assert!(delta <= r(1, 2), "delta {} frames", delta);
                    // The same delta through the durations, in seconds.
                    let (longer, secs) = plan.av_delta_seconds(&audio);
                    let expected = if longer {
                        plan.video_duration().checked_sub(audio.duration())
                    } else {
                        audio.duration().checked_sub(plan.video_duration())
                    };
                    if let Some(expected) = expected {
                        prop_assert_eq!(secs, expected);
                    }
                    prop_assert_eq!(secs.checked_mul(fps), Some(delta));
                }
                Err(TimelineError::TooFewFrames { frames }) => prop_assert!(frames < 2),
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
        }

        #[test]
        fn floor_is_never_longer_and_ceil_never_shorter(
            (audio, post) in any_audio(),
            fps in any_fps(),
        ) {
            if let Ok(plan) = FramePlan::new(&audio, fps, Rounding::Floor, post, true) {
                let (longer, delta) = plan.av_delta_frames(&audio);
                prop_assert!(!longer);
                prop_assert!(delta < Rational::ONE);
                prop_assert!(plan.video_duration() <= audio.duration());
            }
            if let Ok(plan) = FramePlan::new(&audio, fps, Rounding::Ceil, post, true) {
                let (longer, delta) = plan.av_delta_frames(&audio);
                prop_assert!(longer || delta.is_zero());
                prop_assert!(delta < Rational::ONE);
                prop_assert!(plan.video_duration() >= audio.duration());
            }
        }
    }
}
