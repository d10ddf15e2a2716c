//! Sample-rate conversion for the rare inputs AAC cannot carry (e.g. 37.8 kHz), with rubato.
//!
//! The output has exactly `round(n_in · out / in)` samples and no leading delay: the
//! resampler's own latency is trimmed at the front and flushed at the end.

use rubato::{FftFixedIn, Resampler as _};

const CHUNK: usize = 1024;

pub struct Resampler {
    inner: Option<FftFixedIn<f32>>,
    channels: usize,
    rate_in: u64,
    rate_out: u64,
    pending: Vec<Vec<f32>>,
    in_total: u64,
    out_total: u64,
    to_skip: usize,
}

impl Resampler {
    pub fn new(rate_in: u32, rate_out: u32, channels: usize) -> Resampler {
        let inner =
            FftFixedIn::<f32>::new(rate_in as usize, rate_out as usize, CHUNK, 2, channels).ok();
        let to_skip = inner.as_ref().map_or(0, |r| r.output_delay());
        Resampler {
            inner,
            channels,
            rate_in: u64::from(rate_in),
            rate_out: u64::from(rate_out),
            pending: vec![Vec::new(); channels],
            in_total: 0,
            out_total: 0,
            to_skip,
        }
    }

    /// Feeds interleaved samples; returns the interleaved output ready so far.
    pub fn process(&mut self, interleaved: &[f32]) -> Vec<f32> {
        for frame in interleaved.chunks_exact(self.channels) {
            for (c, &s) in frame.iter().enumerate() {
                self.pending[c].push(s);
            }
        }
        self.in_total += (interleaved.len() / self.channels) as u64;
        let mut out = Vec::new();
        while self.pending[0].len() >= CHUNK {
            let chunk: Vec<Vec<f32>> = self
                .pending
                .iter_mut()
                .map(|p| p.drain(..CHUNK).collect())
                .collect();
            self.run(Some(&chunk), &mut out);
        }
        out
    }

    /// Flushes the tail; the total output is then exactly `round(n_in · out / in)`.
    pub fn finish(&mut self) -> Vec<f32> {
        let want = (u128::from(self.in_total) * u128::from(self.rate_out) * 2
            + u128::from(self.rate_in))
            / (2 * u128::from(self.rate_in));
        let want = u64::try_from(want).unwrap_or(u64::MAX);
        let mut out = Vec::new();
        if !self.pending[0].is_empty() {
            let rest: Vec<Vec<f32>> = self.pending.iter_mut().map(std::mem::take).collect();
            self.run_partial(Some(&rest), &mut out);
        }
        let mut guard = 0;
        while self.out_total < want && guard < 64 && self.inner.is_some() {
            self.run_partial(None, &mut out);
            guard += 1;
        }
        let excess = self.out_total.saturating_sub(want) as usize;
        out.truncate(out.len() - (excess * self.channels).min(out.len()));
        self.out_total -= excess as u64;
        out
    }

    fn run(&mut self, chunk: Option<&Vec<Vec<f32>>>, out: &mut Vec<f32>) {
        let Some(r) = self.inner.as_mut() else { return };
        if let Some(c) = chunk {
            if let Ok(res) = r.process(c, None) {
                self.take(res, out);
            }
        }
    }

    fn run_partial(&mut self, chunk: Option<&Vec<Vec<f32>>>, out: &mut Vec<f32>) {
        let Some(r) = self.inner.as_mut() else { return };
        if let Ok(res) = r.process_partial(chunk.map(|c| c.as_slice()), None) {
            self.take(res, out);
        }
    }

    fn take(&mut self, res: Vec<Vec<f32>>, out: &mut Vec<f32>) {
        let n = res.first().map_or(0, Vec::len);
        let skip = self.to_skip.min(n);
        self.to_skip -= skip;
        for i in skip..n {
            for ch in &res {
                out.push(ch[i]);
            }
        }
        self.out_total += (n - skip) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_count_is_exact_and_tone_survives() {
        let (fin, fout) = (37_800u32, 48_000u32);
        let n = 37_800 * 2 + 123;
        let input: Vec<f32> = (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / fin as f32).sin())
            .collect();
        let mut r = Resampler::new(fin, fout, 1);
        let mut out = Vec::new();
        for c in input.chunks(700) {
            out.extend(r.process(c));
        }
        out.extend(r.finish());
        let want = ((n as u64 * 48_000 * 2 + 37_800) / (2 * 37_800)) as usize;
        assert_eq!(out.len(), want);
        // No leading delay: the best-fitting lag against the ideal tone is under one sample.
        let err = |lag: f64| -> f64 {
            [4_800usize, 30_000, 60_000]
                .iter()
                .map(|&k| {
                    let ideal = (2.0 * std::f64::consts::PI * 440.0 * (k as f64 - lag)
                        / f64::from(fout))
                    .sin();
                    (f64::from(out[k]) - ideal).abs()
                })
                .fold(0.0, f64::max)
        };
        let (lag, e) = (-40..=40)
            .map(|i| f64::from(i) * 0.05)
            .map(|l| (l, err(l)))
            .fold((0.0, f64::MAX), |a, b| if b.1 < a.1 { b } else { a });
        assert!(lag.abs() <= 1.0, "resampler delay {lag} samples");
        assert!(e < 0.01, "tone error {e} at the best lag {lag}");
    }
}
