#![forbid(unsafe_code)]
//! The frame-accurate timeline core (SPEC §4): exact time values, the audio/frame plan, render
//! size, sub-pixel motion geometry and the start-video CFR mapping.
//!
//! Owns: every decision about how many samples, how many frames, which source feeds which
//! output frame, and where the crop window sits. Must not: touch FFmpeg or the filesystem, use
//! floats for time (floats are allowed only for pixel geometry in [`motion`]), or panic on any
//! input: bad input is a [`TimelineError`].
//!
//! Conventions: frames are `u64` indices, samples `u64` counts, rates exact [`Rational`]s;
//! every rational → integer conversion names its [`Rounding`]; frame ranges are half-open.

pub mod motion;
pub mod plan;
pub mod size;
pub mod time;
pub mod video;

use std::fmt;

pub use motion::{crop_window, CropWindow, MotionMode, ZoomCurve};
pub use plan::{
    frames_for, movie_timescale, samples_for, timescale_problem, AudioPlan, FramePlan, FrameSource,
    Segment, SegmentKind,
};
pub use size::render_size;
pub use time::{
    fps_from_f64, parse_decimal, parse_fps, seconds_from_f64, Rational, Rounding, TimeBase,
};
pub use video::{cfr_source_plan, Extend};

/// Why a timeline could not be planned. Each message is one line naming the values at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineError {
    /// The padded audio is shorter than two frames at this rate: nothing useful to encode.
    TooFewFrames { frames: u64 },
    /// A sample rate of 0, or one above `i32::MAX` (FFmpeg time bases are 32-bit).
    InvalidSampleRate { rate: u32 },
    /// A frame rate of 0, or one whose numerator/denominator exceeds `i32::MAX`.
    InvalidFps { fps: Rational },
    /// A stream time base with a zero part.
    InvalidTimeBase { num: u32, den: u32 },
    /// A value that would not fit the integer types the timeline uses.
    Overflow { what: &'static str },
    /// A zero width or height; `what` says whose ("source", "requested", "maximum").
    ZeroSize {
        what: &'static str,
        width: u32,
        height: u32,
    },
    /// A start video without frames.
    EmptySource,
    /// Source timestamps must be non-decreasing in presentation order.
    PtsNotMonotonic {
        index: usize,
        previous: i64,
        pts: i64,
    },
    /// The source's end time lies before its last frame's timestamp.
    EndBeforeLastFrame { end_pts: i64, last_pts: i64 },
}

impl fmt::Display for TimelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineError::TooFewFrames { frames } => write!(
                f,
                "the padded audio gives {frames} video frame(s); at least 2 are needed"
            ),
            TimelineError::InvalidSampleRate { rate } => {
                write!(f, "invalid audio sample rate {rate} Hz")
            }
            TimelineError::InvalidFps { fps } => write!(
                f,
                "invalid frame rate {fps}: must be > 0 with numerator and denominator <= {}",
                time::AV_RATIONAL_MAX
            ),
            TimelineError::InvalidTimeBase { num, den } => {
                write!(f, "invalid time base {num}/{den}: both parts must be > 0")
            }
            TimelineError::Overflow { what } => write!(f, "{what} is too large"),
            TimelineError::ZeroSize {
                what,
                width,
                height,
            } => write!(f, "{what} size {width}x{height} has a zero side"),
            TimelineError::EmptySource => write!(f, "the start video has no frames"),
            TimelineError::PtsNotMonotonic {
                index,
                previous,
                pts,
            } => write!(
                f,
                "start video frame {index} has timestamp {pts}, before the previous frame's {previous}"
            ),
            TimelineError::EndBeforeLastFrame { end_pts, last_pts } => write!(
                f,
                "start video end time {end_pts} is before its last frame's timestamp {last_pts}"
            ),
        }
    }
}

impl std::error::Error for TimelineError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_one_line() {
        let errors = [
            TimelineError::TooFewFrames { frames: 1 },
            TimelineError::InvalidSampleRate { rate: 0 },
            TimelineError::InvalidFps {
                fps: Rational::ZERO,
            },
            TimelineError::InvalidTimeBase { num: 0, den: 1 },
            TimelineError::Overflow {
                what: "frame count",
            },
            TimelineError::ZeroSize {
                what: "source",
                width: 0,
                height: 4,
            },
            TimelineError::EmptySource,
            TimelineError::PtsNotMonotonic {
                index: 3,
                previous: 10,
                pts: 9,
            },
            TimelineError::EndBeforeLastFrame {
                end_pts: 1,
                last_pts: 2,
            },
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{s}");
            let _: &dyn std::error::Error = &e;
        }
        assert_eq!(
            TimelineError::TooFewFrames { frames: 1 }.to_string(),
            "the padded audio gives 1 video frame(s); at least 2 are needed"
        );
    }
}
