"""Audio: 16 kHz resampling against a reference tone, mono down-mix, file loading."""

import os
import re

import numpy as np
import pytest

from vidax_wav2lip.core import audio
from vidax_wav2lip.core.errors import InputError

from .conftest import PACKAGE_DIR, tone

EDGE = 320  # 20 ms at each end, where the polyphase filter sees the signal's edges


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_resampling_to_16k_matches_the_reference_tone(rate, freq):
    if freq >= rate / 2 * 0.9:
        pytest.skip("tone above the input's band")
    seconds = 1.5
    x = tone(rate, seconds, freq=freq, amp=0.5, phase=0.3)
    y = audio.resample(x, rate, 16000)
    assert y.dtype == np.float32
    assert len(y) == audio.resampled_length(len(x), rate, 16000) == 24000
    ref = tone(16000, seconds, freq=freq, amp=0.5, phase=0.3)
    err = np.abs(y[EDGE:-EDGE] - ref[EDGE:-EDGE]).max()
    assert err < 2e-3, f"{rate} Hz -> 16 kHz, {freq} Hz tone: max error {err}"
    # No level change: RMS within 0.1 dB.
    rms = lambda v: float(np.sqrt(np.mean(np.square(v, dtype=np.float64))))
    assert abs(20 * np.log10(rms(y[EDGE:-EDGE]) / rms(ref[EDGE:-EDGE]))) < 0.1


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_time_zero_and_length(rate):
    # A click at 0.5 s stays at 0.5 s (within one output sample).
    x = np.zeros(rate, dtype=np.float32)
    x[rate // 2] = 1.0
    y = audio.resample(x, rate, 16000)
    assert len(y) == 16000
    assert abs(int(np.argmax(np.abs(y))) - 8000) <= 1
    # Odd lengths: ceil(n·16000/rate).
    for n in (1, 7, 441, 12345):
        assert len(audio.resample(np.ones(n, np.float32), rate, 16000)) == audio.resampled_length(n, rate)


def test_content_above_8khz_is_removed():
    x = tone(48000, 1.0, freq=12000.0, amp=0.5)
    y = audio.resample(x, 48000, 16000)
    assert np.abs(y[EDGE:-EDGE]).max() < 0.01


def test_16k_is_copied_and_silence_stays_exactly_zero():
    x = tone(16000, 0.5)
    y = audio.resample(x, 16000, 16000)
    assert np.array_equal(x, y) and y is not x
    z = audio.resample(np.zeros(44100, np.float32), 44100, 16000)
    assert not z.any()
    with pytest.raises(InputError):
        audio.resample(x, 0, 16000)


def test_mono_and_shapes():
    left, right = tone(16000, 0.1, 440), tone(16000, 0.1, 880)
    st = np.stack([left, right])[None]  # ComfyUI AUDIO [1, 2, S]
    m = audio.to_mono(st)
    assert m.shape == (1600,)
    assert np.allclose(m, (left + right) / 2, atol=1e-7)
    assert audio.to_mono(left).shape == (1600,)
    assert np.array_equal(audio.to_mono(left[None, None]), left)
    with pytest.raises(InputError):
        audio.to_mono(np.zeros((1, 1, 1, 4)))
    assert np.allclose(audio.peak_normalise(np.array([0.0, -0.25, 0.1])), [0.0, -1.0, 0.4])
    assert not audio.peak_normalise(np.zeros(5)).any()


def _write(path, data, rate, subtype):
    import soundfile

    soundfile.write(path, data, rate, subtype=subtype)


@pytest.mark.parametrize(
    "name,rate,channels,subtype",
    [("stereo44k_s16.wav", 44100, 2, "PCM_16"), ("mono16k_s16.wav", 16000, 1, "PCM_16"), ("stereo48k_f32.wav", 48000, 2, "FLOAT"), ("mono22k.flac", 22050, 1, "PCM_16")],
)
def test_load_audio_file_shapes_like_comfyui_loadaudio(tmp_path, name, rate, channels, subtype):
    n = rate // 2
    data = np.stack([tone(rate, 0.5, 440 * (c + 1), amp=0.125) for c in range(channels)], axis=1)
    path = str(tmp_path / name)
    _write(path, data, rate, subtype)
    wave, got_rate = audio.load_audio_file(path)
    assert got_rate == rate
    assert wave.dtype == np.float32 and wave.shape == (1, channels, n)
    assert np.allclose(wave[0].T, data, atol=1 / 32768 + 1e-6)
    mono, _ = audio.load_audio_file(path, mono=True)
    assert mono.shape == (1, 1, n)
    assert np.allclose(mono[0, 0], data.mean(axis=1), atol=1 / 32768 + 1e-6)


def test_load_audio_file_errors(tmp_path):
    bad = tmp_path / "not_audio.wav"
    bad.write_bytes(b"this is not a wav file at all")
    with pytest.raises(InputError):
        audio.load_audio_file(str(bad))


def test_pyav_fallback_reads_what_soundfile_cannot(tmp_path):
    av = pytest.importorskip("av")
    path = str(tmp_path / "tone.m4a")
    rate = 44100
    x = tone(rate, 0.5, 440, amp=0.25)
    with av.open(path, "w") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    wave, got = audio.load_audio_file(path)
    assert got == rate and wave.shape[:2] == (1, 1)
    assert abs(wave.shape[2] - len(x)) < 4096  # AAC priming/padding
    assert 0.15 < np.abs(wave).max() < 0.35


def test_no_torchaudio_or_torchcodec_anywhere():
    pattern = re.compile(r"^\s*(import|from)\s+(torchaudio|torchcodec)\b", re.M)
    for dirpath, _, names in os.walk(PACKAGE_DIR):
        if "tests" in dirpath.split(os.sep):
            continue
        for n in names:
            if n.endswith(".py"):
                with open(os.path.join(dirpath, n)) as fh:
                    assert not pattern.search(fh.read()), n
