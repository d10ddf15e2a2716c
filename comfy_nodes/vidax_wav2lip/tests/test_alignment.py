"""Mel windows aligned to frame times: a pure function of frame index, fps and mel length."""

from fractions import Fraction

import numpy as np
import pytest

from vidax_wav2lip.core import frames as fr
from vidax_wav2lip.core.errors import InputError

RATES = {
    "24000/1001": (24000 / 1001, Fraction(24000, 1001)),
    "25": (25.0, Fraction(25)),
    "30000/1001": (30000 / 1001, Fraction(30000, 1001)),
    "60": (60.0, Fraction(60)),
}


@pytest.mark.parametrize("name", RATES)
def test_float_fps_becomes_the_exact_fraction(name):
    as_float, exact = RATES[name]
    assert fr.fps_fraction(as_float) == exact
    assert fr.fps_fraction(exact) == exact


def test_fps_that_is_not_a_small_fraction_stays_exact():
    assert fr.fps_fraction(29.97) == Fraction(2997, 100)
    odd = 12.345678901234
    assert fr.fps_fraction(odd) == Fraction(odd)
    for bad in (0, -25, float("nan"), float("inf")):
        with pytest.raises(InputError):
            fr.fps_fraction(bad)


@pytest.mark.parametrize("name", RATES)
def test_each_window_starts_at_its_frames_time(name):
    as_float, fps = RATES[name]
    big = 10 ** 9
    prev = None
    for i in list(range(0, 3000)) + [107_892, 1_000_000, 123_456_789]:
        s = fr.mel_window_start(i, as_float, mel_len=big)
        t = Fraction(i) / fps  # the frame's time in seconds
        # The window's first step is the last mel step at or before the frame's time.
        assert Fraction(s, 80) <= t < Fraction(s + 1, 80), (i, s)
        if prev is not None and i == prev[0] + 1:
            step = s - prev[1]
            assert step in (int(80 / fps), int(80 / fps) + 1)
        prev = (i, s)


def test_known_starts():
    assert [fr.mel_window_start(i, 25.0, 10 ** 6) for i in range(11)] == [0, 3, 6, 9, 12, 16, 19, 22, 25, 28, 32]
    assert [fr.mel_window_start(i, 60.0, 10 ** 6) for i in range(7)] == [0, 1, 2, 4, 5, 6, 8]
    ntsc = 30000 / 1001
    # 30 frames of NTSC are 1.001 s: step 80.08 -> 80; one hour of frames does not drift.
    assert fr.mel_window_start(30, ntsc, 10 ** 9) == 80
    assert fr.mel_window_start(107_892, ntsc, 10 ** 9) == (107_892 * 80 * 1001) // 30000
    film = 24000 / 1001
    assert fr.mel_window_start(24, film, 10 ** 9) == 80
    assert fr.mel_window_start(1, film, 10 ** 9) == 3


@pytest.mark.parametrize("name", RATES)
def test_windows_clamp_to_the_last_full_window(name):
    as_float, _ = RATES[name]
    mel_len = 100
    for i in range(0, 400):
        s = fr.mel_window_start(i, as_float, mel_len)
        assert 0 <= s <= mel_len - fr.MEL_WINDOW
        if fr.mel_window_start_unclamped(i, as_float) > mel_len - 16:
            assert s == mel_len - 16
    # A mel shorter than one window: start 0.
    assert fr.mel_window_start(50, as_float, 5) == 0


@pytest.mark.parametrize("name", RATES)
def test_samples_for_frames_is_the_least_that_gives_a_full_window(name):
    as_float, _ = RATES[name]
    for last in (0, 1, 29, 250, 1799):
        n = fr.samples_for_frames(last, as_float)
        s = fr.mel_window_start_unclamped(last, as_float)
        assert fr.mel_length(n) >= s + 16
        assert fr.mel_length(n - 1) < s + 16


def test_window_sample_span_and_silence():
    assert fr.window_sample_span(0) == (0, 15 * 200 + 400)
    assert fr.window_sample_span(10) == (2000 - 400, 25 * 200 + 400)
    wav = np.zeros(16000, dtype=np.float32)
    wav[8000] = 0.5
    starts = [0, 20, 25, 40, 41, 42, 60]
    silent = fr.silent_frames(wav, starts)
    # Sample 8000 is read by steps 39..42 (±400 samples), i.e. by windows starting at 24..42.
    assert list(silent) == [True, True, False, False, False, False, True]
    # One 16-bit step of noise is still silence; two are not.
    quiet = np.full(4000, 2.0 ** -15, dtype=np.float32)
    assert fr.silent_frames(quiet, [0]).all()
    assert not fr.silent_frames(quiet * 2, [0]).any()
    # Past the end of the audio counts as silence.
    assert fr.silent_frames(wav, [1000]).all()
