"""Frame time <-> mel window alignment, and which frames hear only silence.

Owns: the exact (rational) mapping from a frame index at a given fps to its 16-step window of
the Wav2Lip mel spectrogram, the audio samples that window is computed from, and the silence
test on them. Pure integer/fraction arithmetic; no accumulated floats.

The pack's hparams: 16 kHz, hop 200 -> 80 mel steps per second; STFT window 800 samples,
centred (librosa ``center=True``), so mel step ``t`` is computed from samples
``200·t - 400 .. 200·t + 400`` and a signal of ``S`` samples has ``1 + S // 200`` steps.
"""

from fractions import Fraction
from math import isfinite

import numpy as np

from .errors import InputError

SAMPLE_RATE = 16000
HOP = 200
N_FFT = 800
MEL_WINDOW = 16
# Digital silence: at most one 16-bit step. Exact zeros (the pre/post buffers) are far below it;
# resampling ringing next to real audio only reaches windows that contain that audio anyway.
SILENCE_PEAK = 2.0 ** -15


def fps_fraction(fps):
    """``fps`` (float, int or Fraction) as an exact Fraction: the closest fraction with a
    denominator <= 1001 when that is within 1e-9 relative of the value (29.97002997002997 ->
    30000/1001), else the float's exact value."""
    if isinstance(fps, Fraction):
        f = fps
    else:
        v = float(fps)
        if not isfinite(v) or v <= 0.0:
            raise InputError(f"fps must be a positive number, got {fps!r}")
        exact = Fraction(v)
        near = exact.limit_denominator(1001)
        f = near if abs(near - exact) <= Fraction(1, 10 ** 9) * exact else exact
    if f <= 0:
        raise InputError(f"fps must be positive, got {fps!r}")
    return f


def mel_steps_per_second(sample_rate=SAMPLE_RATE, hop=HOP):
    return Fraction(int(sample_rate), int(hop))


def mel_window_start_unclamped(frame_index, fps, sample_rate=SAMPLE_RATE, hop=HOP):
    """``floor(frame_index · steps_per_second / fps)``, exactly: the mel step at (or just before)
    the frame's time ``frame_index / fps``."""
    fps = fps_fraction(fps)
    sps = mel_steps_per_second(sample_rate, hop)
    q = Fraction(int(frame_index)) * sps / fps
    return q.numerator // q.denominator


def mel_window_start(frame_index, fps, mel_len, window=MEL_WINDOW, sample_rate=SAMPLE_RATE, hop=HOP):
    """First mel step of frame ``frame_index``'s ``window``-step window in a mel of ``mel_len``
    steps: the frame's own step (Wav2Lip's inference convention: the window starts at the frame's
    time), clamped to the last full window (``mel_len - window``) and to 0."""
    s = mel_window_start_unclamped(frame_index, fps, sample_rate, hop)
    return max(0, min(s, int(mel_len) - int(window)))


def mel_length(n_samples, hop=HOP):
    """Mel steps librosa (``center=True``) makes from ``n_samples``."""
    return 1 + int(n_samples) // int(hop)


def samples_for_frames(last_frame, fps, window=MEL_WINDOW, sample_rate=SAMPLE_RATE, hop=HOP):
    """The fewest samples whose mel gives frame ``last_frame`` a full, unclamped window."""
    s = mel_window_start_unclamped(last_frame, fps, sample_rate, hop)
    return int(hop) * (s + int(window) - 1)


def window_sample_span(start, window=MEL_WINDOW, hop=HOP, n_fft=N_FFT):
    """Half-open sample range the mel steps ``start .. start+window`` are computed from."""
    half = int(n_fft) // 2
    return max(0, int(hop) * int(start) - half), int(hop) * (int(start) + int(window) - 1) + half


def silent_frames(wav, starts, window=MEL_WINDOW, hop=HOP, n_fft=N_FFT, peak=SILENCE_PEAK):
    """For each window start, whether every sample its window is computed from (samples past the
    end count as silence) has ``|x| <= peak``."""
    wav = np.asarray(wav)
    out = np.empty(len(starts), dtype=bool)
    for i, s in enumerate(starts):
        a, b = window_sample_span(s, window, hop, n_fft)
        seg = wav[a:b]
        out[i] = seg.size == 0 or float(np.max(np.abs(seg))) <= peak
    return out
