//! Delivery loudness (EBU R128): measuring a programme's integrated loudness and true peak
//! with the `ebur128` crate, and reaching a target loudness with one gain plus, where that
//! gain would lift the true peak over the ceiling, a look-ahead true-peak limiter.
//!
//! Owns: the measurement, the gain, the limiter and the rewrite of the padded WAV. Must not:
//! change the number of samples or move them in time (the limiter's look-ahead delay is
//! compensated exactly), or touch FFmpeg.

use std::collections::VecDeque;
use std::path::Path;

use ebur128::{EbuR128, Mode};

use crate::error::{Context, Error, ErrorKind, Result};

/// What the meter read over a whole programme.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Measurement {
    /// Integrated loudness, LUFS; `None` when the programme is too quiet to measure (every
    /// block under the −70 LUFS gate, e.g. digital silence).
    pub integrated_lufs: Option<f64>,
    /// Highest true peak over the channels, dBTP (4× oversampled); `None` for silence.
    pub true_peak_db: Option<f64>,
}

/// An EBU R128 meter (integrated loudness and true peak) fed interleaved f32 frames.
pub struct Meter {
    inner: EbuR128,
    channels: u32,
}

impl Meter {
    pub fn new(channels: u16, rate: u32) -> Result<Meter> {
        let inner = EbuR128::new(u32::from(channels), rate, Mode::I | Mode::TRUE_PEAK)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("loudness meter: {e}")))?;
        Ok(Meter {
            inner,
            channels: u32::from(channels),
        })
    }

    pub fn add(&mut self, interleaved: &[f32]) -> Result<()> {
        self.inner
            .add_frames_f32(interleaved)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("loudness meter: {e}")))
    }

    pub fn finish(&self) -> Measurement {
        let db = |lin: f64| (lin > 0.0).then(|| 20.0 * lin.log10());
        let peak = (0..self.channels)
            .filter_map(|c| self.inner.true_peak(c).ok())
            .fold(0.0f64, f64::max);
        Measurement {
            integrated_lufs: self.inner.loudness_global().ok().filter(|l| l.is_finite()),
            true_peak_db: db(peak),
        }
    }
}

/// How much the limiter stays under the asked ceiling: its own 4× interpolation differs a
/// little from a meter's, and the AAC encoder adds overshoot of its own (measured on the
/// decoded final by tests/loudness.rs).
pub const LIMITER_HEADROOM_DB: f64 = 0.5;
/// The limiter's look-ahead: the gain is fully down this long before a peak.
const LOOKAHEAD_MS: u64 = 5;
/// Time constant of the gain's return to unity after a peak.
const RELEASE_MS: f64 = 80.0;
/// Taps each side of an interpolated point (12-tap polyphase, 4× oversampling).
const HALF_TAPS: usize = 6;
const PHASES: usize = 4;

/// Windowed-sinc interpolation weights for the points `k/4` (k = 1..3) between frame `i` and
/// `i+1`, over frames `i-5 ..= i+6`; each phase's weights sum to 1.
fn interpolation_weights() -> [[f64; 2 * HALF_TAPS]; PHASES - 1] {
    let mut w = [[0.0; 2 * HALF_TAPS]; PHASES - 1];
    for (k, row) in w.iter_mut().enumerate() {
        let frac = (k + 1) as f64 / PHASES as f64;
        for (j, tap) in row.iter_mut().enumerate() {
            // Distance from the interpolated point to frame i-5+j.
            let d = (j as f64 - (HALF_TAPS as f64 - 1.0)) - frac;
            let x = std::f64::consts::PI * d;
            let sinc = if d.abs() < 1e-12 { 1.0 } else { x.sin() / x };
            // Hann window over ±HALF_TAPS.
            let win = 0.5 + 0.5 * (std::f64::consts::PI * d / HALF_TAPS as f64).cos();
            *tap = sinc * win;
        }
        let sum: f64 = row.iter().sum();
        for tap in row.iter_mut() {
            *tap /= sum;
        }
    }
    w
}

/// A streaming look-ahead true-peak limiter with a fixed gain in front of it. Every frame
/// fed comes out once, in order, `delay` frames later; [`Limiter::finish`] flushes the rest,
/// so output count = input count.
pub struct Limiter {
    channels: usize,
    gain: f64,
    ceiling: f64,
    lookahead: usize,
    release: f64,
    weights: [[f64; 2 * HALF_TAPS]; PHASES - 1],
    /// Gained frames from index `y_first` on (history for the interpolation and the delay).
    y: VecDeque<[f64; 2]>,
    y_first: i64,
    /// Frames fed so far (the real ones; padding at the end does not count).
    fed: i64,
    /// Frames pushed into `y` (real and padding).
    pushed: i64,
    /// The sliding minimum of the required gains: (index, gain), gains increasing.
    window: VecDeque<(i64, f64)>,
    /// The last `lookahead + 1` windowed minima and their sum (the attack smoothing).
    smooth: VecDeque<f64>,
    smooth_sum: f64,
    released: f64,
    /// Next frame to emit.
    out_next: i64,
    /// Frames whose gain the limiter lowered.
    pub limited_frames: u64,
}

impl Limiter {
    /// `gain_db` applied to every sample, and the true peak kept at or under `ceiling_db`
    /// (less [`LIMITER_HEADROOM_DB`]).
    pub fn new(channels: u16, rate: u32, gain_db: f64, ceiling_db: f64) -> Limiter {
        let lookahead = usize::try_from(u64::from(rate) * LOOKAHEAD_MS / 1000)
            .unwrap_or(1)
            .max(1);
        let mut l = Limiter {
            channels: usize::from(channels).clamp(1, 2),
            gain: 10f64.powf(gain_db / 20.0),
            ceiling: 10f64.powf((ceiling_db - LIMITER_HEADROOM_DB) / 20.0),
            lookahead,
            release: (-1000.0 / (RELEASE_MS * f64::from(rate.max(1)))).exp(),
            weights: interpolation_weights(),
            y: VecDeque::new(),
            y_first: -(HALF_TAPS as i64 - 1),
            fed: 0,
            pushed: 0,
            window: VecDeque::new(),
            smooth: VecDeque::new(),
            smooth_sum: 0.0,
            released: 1.0,
            out_next: 0,
            limited_frames: 0,
        };
        // Silence before the first frame: the interpolation's history.
        for _ in 0..HALF_TAPS - 1 {
            l.y.push_back([0.0; 2]);
        }
        // The attack window starts at unity gain.
        for _ in 0..lookahead {
            l.smooth.push_back(1.0);
            l.smooth_sum += 1.0;
        }
        l
    }

    /// Frames between a frame going in and coming out.
    pub fn delay(&self) -> usize {
        HALF_TAPS + self.lookahead
    }

    /// Feeds interleaved frames; returns the interleaved frames ready so far.
    pub fn process(&mut self, interleaved: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(interleaved.len());
        for frame in interleaved.chunks_exact(self.channels) {
            let mut f = [0.0; 2];
            for (c, &s) in frame.iter().enumerate() {
                f[c] = f64::from(s) * self.gain;
            }
            self.fed += 1;
            self.push(f, &mut out);
        }
        out
    }

    /// Flushes the frames still in the look-ahead.
    pub fn finish(&mut self) -> Vec<f32> {
        let mut out = Vec::new();
        while self.out_next < self.fed {
            self.push([0.0; 2], &mut out);
        }
        out
    }

    fn push(&mut self, f: [f64; 2], out: &mut Vec<f32>) {
        self.y.push_back(f);
        let newest = self.pushed;
        self.pushed += 1;
        // The peak of frame i (with the points up to i+1) needs frames up to i+6.
        let i = newest - HALF_TAPS as i64;
        if i < 0 {
            return;
        }
        let need = if i < self.fed {
            let p = self.peak(i);
            if p > self.ceiling {
                self.ceiling / p
            } else {
                1.0
            }
        } else {
            1.0
        };
        // Sliding minimum over [k - 2L, k]: the minimum around frame k - L, both sides.
        let l = self.lookahead as i64;
        while self.window.back().is_some_and(|&(_, g)| g >= need) {
            self.window.pop_back();
        }
        self.window.push_back((i, need));
        while self.window.front().is_some_and(|&(j, _)| j < i - 2 * l) {
            self.window.pop_front();
        }
        let centre = i - l;
        if centre < 0 {
            return;
        }
        let m = self.window.front().map_or(1.0, |&(_, g)| g);
        // Attack: the mean of the last L+1 minima, never above the gain any frame in
        // reach needs.
        self.smooth.push_back(m);
        self.smooth_sum += m;
        while self.smooth.len() > self.lookahead + 1 {
            if let Some(old) = self.smooth.pop_front() {
                self.smooth_sum -= old;
            }
        }
        let attack = (self.smooth_sum / self.smooth.len() as f64).min(1.0);
        // Release: back towards unity exponentially, never above the attack's gain.
        let released = match 1.0 - (1.0 - self.released) * self.release {
            // Close enough to unity to be it: no endless tail of tiny gain changes.
            r if r > 1.0 - 1e-6 => 1.0,
            r => r,
        };
        self.released = attack.min(released);
        if centre < self.fed && centre == self.out_next {
            let g = self.released;
            if g < 1.0 - 1e-9 {
                self.limited_frames += 1;
            }
            let idx = usize::try_from(centre - self.y_first).unwrap_or(0);
            let frame = self.y.get(idx).copied().unwrap_or([0.0; 2]);
            for &v in frame.iter().take(self.channels) {
                out.push((v * g) as f32);
            }
            self.out_next += 1;
        }
        // Keep what the next interpolations (5 frames back from the next peak) and the
        // next output frame need.
        let keep_from = (i + 1 - (HALF_TAPS as i64 - 1)).min(self.out_next);
        while self.y_first < keep_from && !self.y.is_empty() {
            self.y.pop_front();
            self.y_first += 1;
        }
    }

    /// The largest absolute sample or interpolated point in `[i, i+1)` over the channels.
    fn peak(&self, i: i64) -> f64 {
        let base = i - (HALF_TAPS as i64 - 1) - self.y_first;
        let Ok(base) = usize::try_from(base) else {
            return 0.0;
        };
        let mut p = 0.0f64;
        for c in 0..self.channels {
            if let Some(f) = self.y.get(base + HALF_TAPS - 1) {
                p = p.max(f[c].abs());
            }
            for w in &self.weights {
                let v: f64 = w
                    .iter()
                    .enumerate()
                    .map(|(j, &t)| self.y.get(base + j).map_or(0.0, |f| f[c]) * t)
                    .sum();
                p = p.max(v.abs());
            }
        }
        p
    }
}

/// What [`normalize_wav`] did, for the manifest.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoudnessReport {
    pub target_lufs: f64,
    pub true_peak_ceiling_db: f64,
    /// The programme as prepared (after resampling), before any gain.
    pub input: Measurement,
    /// The gain applied in front of the limiter, dB.
    pub gain_db: f64,
    /// Frames whose gain the limiter lowered below `gain_db`.
    pub limited_frames: u64,
    /// The programme as delivered to the encoder.
    pub output: Measurement,
}

type WavReader = hound::WavReader<std::io::BufReader<std::fs::File>>;

fn open(path: &Path) -> Result<WavReader> {
    hound::WavReader::open(path).at(ErrorKind::Internal, path)
}

/// Reads the WAV in chunks of interleaved frames.
fn for_each_chunk(path: &Path, mut f: impl FnMut(&[f32]) -> Result<()>) -> Result<()> {
    let mut reader = open(path)?;
    let ch = usize::from(reader.spec().channels);
    let mut buf = Vec::with_capacity(4096 * ch);
    for s in reader.samples::<f32>() {
        buf.push(s.at(ErrorKind::Internal, path)?);
        if buf.len() == 4096 * ch {
            f(&buf)?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        f(&buf)?;
    }
    Ok(())
}

/// Measures the 32-bit float WAV at `path`.
pub fn measure_wav(path: &Path) -> Result<Measurement> {
    let spec = open(path)?.spec();
    let mut meter = Meter::new(spec.channels, spec.sample_rate)?;
    for_each_chunk(path, |c| meter.add(c))?;
    Ok(meter.finish())
}

/// Brings the engine's padded WAV at `path` to `target_lufs` integrated loudness with its
/// true peak at or under `ceiling_db`, in place, keeping every sample where it is. The gain is
/// corrected (up to two more passes) for the loudness the limiter takes away. A programme too
/// quiet to measure is left as it is.
pub fn normalize_wav(path: &Path, target_lufs: f64, ceiling_db: f64) -> Result<LoudnessReport> {
    let input = measure_wav(path)?;
    let Some(measured) = input.integrated_lufs else {
        tracing::warn!(
            stage = "prepare",
            "the audio is too quiet to measure its loudness; left as it is"
        );
        return Ok(LoudnessReport {
            target_lufs,
            true_peak_ceiling_db: ceiling_db,
            input,
            gain_db: 0.0,
            limited_frames: 0,
            output: input,
        });
    };
    let spec = open(path)?.spec();
    let tmp = path.with_extension("loudness.wav");
    let mut gain_db = target_lufs - measured;
    let mut report = None;
    for _ in 0..3 {
        let mut writer = hound::WavWriter::create(&tmp, spec).at(ErrorKind::Internal, &tmp)?;
        let mut limiter = Limiter::new(spec.channels, spec.sample_rate, gain_db, ceiling_db);
        let mut meter = Meter::new(spec.channels, spec.sample_rate)?;
        let write = |w: &mut hound::WavWriter<_>, m: &mut Meter, out: &[f32]| -> Result<()> {
            m.add(out)?;
            for &s in out {
                w.write_sample(s).at(ErrorKind::Internal, &tmp)?;
            }
            Ok(())
        };
        for_each_chunk(path, |c| {
            let out = limiter.process(c);
            write(&mut writer, &mut meter, &out)
        })?;
        let tail = limiter.finish();
        write(&mut writer, &mut meter, &tail)?;
        writer.finalize().at(ErrorKind::Internal, &tmp)?;
        let output = meter.finish();
        let r = LoudnessReport {
            target_lufs,
            true_peak_ceiling_db: ceiling_db,
            input,
            gain_db,
            limited_frames: limiter.limited_frames,
            output,
        };
        report = Some(r);
        match output.integrated_lufs {
            // The limiter took loudness away: raise the gain by what is missing.
            Some(got) if r.limited_frames > 0 && target_lufs - got > 0.05 => {
                gain_db += target_lufs - got;
            }
            _ => break,
        }
    }
    std::fs::rename(&tmp, path).at(ErrorKind::Internal, path)?;
    report.ok_or_else(|| Error::internal("loudness pass did not run"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(l: &mut Limiter, input: &[f32], chunk: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            out.extend(l.process(c));
        }
        out.extend(l.finish());
        out
    }

    #[test]
    fn keeps_every_sample_in_place_when_nothing_is_limited() {
        let rate = 48_000;
        let input: Vec<f32> = (0..10_007)
            .flat_map(|i| {
                let v = 0.1 * (i as f32 * 0.05).sin();
                [v, -v]
            })
            .collect();
        let mut l = Limiter::new(2, rate, 6.0, -1.0);
        let out = run(&mut l, &input, 998);
        assert_eq!(out.len(), input.len());
        let g = 10f32.powf(6.0 / 20.0);
        for (a, b) in input.iter().zip(&out) {
            assert!((a * g - b).abs() < 1e-6, "{a}·{g} vs {b}");
        }
        assert_eq!(l.limited_frames, 0);
    }

    #[test]
    fn peaks_stay_under_the_ceiling_and_timing_is_kept() {
        let rate = 48_000;
        // A quiet tone with one loud burst in the middle.
        let input: Vec<f32> = (0..48_000)
            .map(|i| {
                let loud = (20_000..21_000).contains(&i);
                let a = if loud { 0.9 } else { 0.1 };
                a * (i as f32 * 2.0 * std::f32::consts::PI * 1000.0 / 48_000.0).sin()
            })
            .collect();
        let mut l = Limiter::new(1, rate, 6.0, -1.0);
        let out = run(&mut l, &input, 4096);
        assert_eq!(out.len(), input.len());
        let mut m = Meter::new(1, rate).unwrap();
        m.add(&out).unwrap();
        let tp = m.finish().true_peak_db.unwrap();
        assert!(tp <= -1.0, "true peak {tp} dBTP over the -1 ceiling");
        // Before the burst's look-ahead the signal is the gained input, sample for sample (no
        // shift); well after it the gain is back at unity.
        let g = 10f32.powf(6.0 / 20.0);
        for i in 100..19_700 {
            assert!((input[i] * g - out[i]).abs() < 1e-5, "frame {i}");
        }
        // The release (80 ms time constant) has brought the gain back within 1 % of unity
        // five time constants after the burst.
        for i in 40_000..47_000 {
            let want = input[i] * g;
            assert!(
                (want - out[i]).abs() <= 0.01 * want.abs() + 1e-6,
                "frame {i}"
            );
        }
        assert!(l.limited_frames > 1_000);
    }
}
