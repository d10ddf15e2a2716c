"""Audio as numpy: reading files, mono down-mix, resampling to the 16 kHz Wav2Lip expects.

Owns: waveform shapes ``[channels, samples]`` float32, decoding through soundfile (PyAV as the
fallback for containers libsndfile cannot read), polyphase resampling. Must not: use torchaudio
(``torchaudio.save`` / torchcodec are exactly what this package replaces) or import torch.
"""

from fractions import Fraction
from math import gcd

import numpy as np

from .errors import InputError

WAV2LIP_RATE = 16000


def as_channels(waveform):
    """``[1, C, S]`` (ComfyUI AUDIO), ``[C, S]`` or ``[S]`` -> float32 ``[C, S]``. A batch of
    several clips uses the first."""
    w = np.asarray(waveform, dtype=np.float32)
    if w.ndim == 3:
        if w.shape[0] < 1:
            raise InputError(f"audio waveform has an empty batch: shape {w.shape}")
        w = w[0]
    elif w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2:
        raise InputError(f"audio waveform must be [batch, channels, samples], got shape {w.shape}")
    return w


def to_mono(waveform):
    """The channel average, float32 ``[S]``."""
    w = as_channels(waveform)
    if w.shape[0] == 1:
        return w[0].copy()
    return w.mean(axis=0, dtype=np.float64).astype(np.float32)


def resample(x, rate_in, rate_out=WAV2LIP_RATE):
    """Resamples the last axis from ``rate_in`` to ``rate_out`` (integers, Hz) with a polyphase
    FIR (scipy's Kaiser-windowed default). Output length ``ceil(n·out/in)``. Equal rates copy."""
    rate_in, rate_out = int(rate_in), int(rate_out)
    if rate_in <= 0 or rate_out <= 0:
        raise InputError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    x = np.asarray(x, dtype=np.float32)
    if rate_in == rate_out or x.shape[-1] == 0:
        if rate_in == rate_out:
            return x.copy()
        return np.zeros(x.shape[:-1] + (0,), dtype=np.float32)
    from scipy.signal import resample_poly

    g = gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    y = resample_poly(x.astype(np.float64), up, down, axis=-1)
    return y.astype(np.float32)


def resampled_length(n, rate_in, rate_out=WAV2LIP_RATE):
    """The number of samples :func:`resample` returns for ``n`` input samples."""
    if int(rate_in) == int(rate_out):
        return int(n)
    f = Fraction(int(n) * int(rate_out), int(rate_in))
    return -((-f.numerator) // f.denominator)


def peak_normalise(x):
    """Scales to a peak of 1 (the pack does the same before its mel); silence stays zeros."""
    x = np.asarray(x, dtype=np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0.0:
        return (x / peak).astype(np.float32)
    return x.copy()


def load_audio_file(path, mono=False):
    """Decodes ``path`` -> (float32 ``[1, C, S]``, sample_rate). soundfile first; PyAV for what
    libsndfile cannot read (AAC/M4A, video containers), when it is installed."""
    try:
        import soundfile
    except ImportError:  # pragma: no cover - soundfile is in requirements.txt
        soundfile = None
    err = None
    if soundfile is not None:
        try:
            data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            wave = np.ascontiguousarray(data.T)
        except Exception as e:  # libsndfile: unknown format and friends
            err = e
            wave = None
    else:
        wave = None
    if wave is None:
        try:
            wave, rate = _decode_with_av(path)
        except ImportError:
            raise InputError(
                f"cannot decode audio file {path}: soundfile failed ({err}) and PyAV is not installed"
            ) from err
        except Exception as e:
            raise InputError(f"cannot decode audio file {path}: soundfile: {err}; PyAV: {e}") from e
    if mono and wave.shape[0] > 1:
        wave = wave.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    return wave[None, :, :].astype(np.float32), int(rate)


def _decode_with_av(path):
    """PyAV decode of the first audio stream -> (float32 [C, S], rate)."""
    import av

    chunks = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise InputError(f"no audio stream in {path}")
        stream = container.streams.audio[0]
        rate = stream.rate or stream.codec_context.sample_rate
        for frame in container.decode(stream):
            a = frame.to_ndarray()
            channels = len(frame.layout.channels)
            if frame.format.is_planar:
                a = a.reshape(channels, -1)
            else:
                a = a.reshape(-1, channels).T
            kind = frame.format.name.rstrip("p")
            if kind in ("s16",):
                a = a.astype(np.float32) / 32768.0
            elif kind in ("s32",):
                a = a.astype(np.float32) / 2147483648.0
            elif kind in ("u8",):
                a = (a.astype(np.float32) - 128.0) / 128.0
            else:
                a = a.astype(np.float32)
            chunks.append(a)
    if not chunks:
        raise InputError(f"no audio decoded from {path}")
    return np.concatenate(chunks, axis=1), int(rate)
