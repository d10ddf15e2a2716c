"""The Wav2Lip pipeline with a fake detector, mel and network: frame counts, passthrough, silence,
out-of-memory halving, window wiring."""

from fractions import Fraction

import numpy as np
import pytest

from vidax_wav2lip.core import frames as fr
from vidax_wav2lip.core import lipsync
from vidax_wav2lip.core.errors import BatchOutOfMemoryError, InputError, NoFaceError

from .conftest import FACE_BOX, FakeDetector, FakeModel, FakeOOM, fake_mel, make_frames, step_mel, tone

FPS = [24000 / 1001, 25.0, 30000 / 1001, 60.0]


def run(frames, wav, fps=25.0, **kw):
    kw.setdefault("detect", FakeDetector())
    kw.setdefault("mel", fake_mel)
    kw.setdefault("model", FakeModel())
    return lipsync.lipsync_frames(frames, wav, fps, **kw)


def padded_box(h):
    x1, y1, x2, y2 = FACE_BOX
    return x1, y1, x2, min(h, y2 + lipsync.PAD_BOTTOM)


def outside_box_unchanged(a, b, box):
    x1, y1, x2, y2 = box
    m = np.ones(a.shape[:2], dtype=bool)
    m[y1:y2, x1:x2] = False
    return np.array_equal(a[m], b[m])


@pytest.mark.parametrize("fps", FPS)
@pytest.mark.parametrize("n", [1, 2, 17, 61])
@pytest.mark.parametrize("seconds", [0.0, 0.3, 1.0, 3.0])
def test_exactly_as_many_frames_out_as_in(fps, n, seconds):
    frames = make_frames(n, h=40, w=48)
    wav = tone(16000, seconds)
    out, report = run(frames, wav, fps)
    assert out.shape == frames.shape and out.dtype == np.float32
    assert report.frames == n
    assert report.synced + report.silent + report.no_face == n


def test_empty_batch():
    frames = np.zeros((0, 8, 8, 3), np.float32)
    out, report = run(frames, tone(16000, 1.0))
    assert out.shape == (0, 8, 8, 3) and report.frames == 0


def test_synced_frames_change_only_inside_the_face_box():
    frames = make_frames(10)
    out, report = run(frames, tone(16000, 1.0))
    assert report.synced == 10
    box = padded_box(frames.shape[1])
    x1, y1, x2, y2 = box
    for k in range(10):
        assert outside_box_unchanged(out[k], frames[k], box)
        # The fake network's face (RGB 0.9, 0.4, 0.2 after the BGR flip) fills the box.
        assert np.allclose(out[k, y1:y2, x1:x2], [0.9, 0.4, 0.2], atol=1e-6)


def test_no_face_passes_the_frame_through_unchanged():
    frames = make_frames(12, no_face=(0, 3, 4, 11))
    det = FakeDetector()
    out, report = run(frames, tone(16000, 1.0), detect=det)
    assert report.no_face == 4 and report.no_face_frames == [0, 3, 4, 11]
    assert report.synced == 8
    for k in range(12):
        same = np.array_equal(out[k], frames[k])
        assert same == (k in (0, 3, 4, 11)), k


def test_no_face_with_error_names_the_frame():
    frames = make_frames(12, no_face=(5, 9))
    with pytest.raises(NoFaceError) as e:
        run(frames, tone(16000, 1.0), on_no_face="error")
    msg = str(e.value)
    assert msg.startswith("VIDAX_NO_FACE:")
    assert "image 5" in msg and "1 more" in msg
    with pytest.raises(NoFaceError, match=r"image 5 \(timeline frame 105\)"):
        run(frames, tone(16000, 6.0), on_no_face="error", start_frame=100)


def test_no_face_anywhere_still_returns_every_frame():
    frames = make_frames(9, no_face=range(9))
    model = FakeModel()
    out, report = run(frames, tone(16000, 1.0), model=model)
    assert np.array_equal(out, frames) and report.no_face == 9
    assert model.calls == []


def test_silent_windows_pass_through_and_never_reach_the_model():
    fps = 25.0
    # 1 s digital silence, 1 s tone, 1 s silence: the pre/post buffers of a job.
    wav = np.concatenate([np.zeros(16000, np.float32), tone(16000, 1.0), np.zeros(16000, np.float32)])
    frames = make_frames(75)
    model = FakeModel()  # asserts it never sees an all-zero mel window
    out, report = run(frames, wav, fps, model=model)
    starts = [fr.mel_window_start_unclamped(k, fps) for k in range(75)]
    silent = fr.silent_frames(wav, starts)
    assert report.silent == int(silent.sum()) > 0
    for k in range(75):
        assert np.array_equal(out[k], frames[k]) == bool(silent[k]), k
    # Frames well inside the buffers are silent, frames inside the tone are not.
    assert silent[:20].all() and not silent[26:49].any() and silent[55:].all()
    assert sum(model.calls) == 75 - report.silent


def test_all_silent_audio_touches_neither_detector_nor_model():
    frames = make_frames(30)
    det, model = FakeDetector(), FakeModel()
    for wav in (np.zeros(48000, np.float32), np.zeros(0, np.float32), np.full(9000, 2.0 ** -16, np.float32)):
        out, report = run(frames, wav, detect=det, model=model, mel=lambda w: pytest.fail("mel called"))
        assert np.array_equal(out, frames) and report.silent == 30
    assert det.calls == [] and model.calls == []


def test_frames_past_the_end_of_the_audio_are_silent():
    frames = make_frames(50)
    out, report = run(frames, tone(16000, 1.0), 25.0)
    # 1 s of audio at 25 fps: frames from about 26 on hear only the padding.
    assert report.synced < 30 and report.silent > 20
    for k in range(27, 50):
        assert np.array_equal(out[k], frames[k])


@pytest.mark.parametrize("fps", FPS)
def test_each_frame_gets_its_own_window(fps):
    n = 40
    frames = make_frames(n)
    model = FakeModel()
    run(frames, tone(16000, 3.0), fps, mel=step_mel, model=model)
    got = [int(v) - 1 for v in model.first_mels]
    assert got == [fr.mel_window_start_unclamped(k, fps) for k in range(n)]


def test_start_frame_offsets_the_windows():
    fps = Fraction(30000, 1001)
    frames = make_frames(10)
    model = FakeModel()
    run(frames, tone(16000, 5.0), fps, mel=step_mel, model=model, start_frame=90)
    got = [int(v) - 1 for v in model.first_mels]
    assert got == [fr.mel_window_start_unclamped(90 + k, fps) for k in range(10)]


def test_out_of_memory_halves_the_network_batch_and_keeps_every_frame():
    frames = make_frames(40)
    wav = tone(16000, 2.0)
    reference, _ = run(frames, wav)
    model = FakeModel(oom_above=5)
    logs = []
    frees = []
    out, report = run(frames, wav, model=model, model_batch=32, log=logs.append, on_oom=lambda: frees.append(1))
    assert model.calls[:4] == [32, 16, 8, 4]
    assert all(c <= 4 for c in model.calls[4:])
    assert sum(c for c in model.calls if c <= 5) == 40
    assert report.model_batch == 4 and report.synced == 40
    assert np.array_equal(out, reference)
    assert len(frees) == 3 and any("batch of 4" in m for m in logs)


def test_out_of_memory_halves_the_detector_batch():
    frames = make_frames(20, seed=3)
    frames[10:] += 0.01  # twenty distinct frames
    det = FakeDetector(oom_above=3)
    out, report = run(frames, tone(16000, 1.0), detect=det, face_detect_batch=16)
    assert det.calls[:3] == [16, 8, 4] and report.detect_batch == 2
    assert report.synced == 20


def test_out_of_memory_at_batch_one_is_an_error_and_other_errors_pass_unchanged():
    frames = make_frames(4)
    with pytest.raises(BatchOutOfMemoryError, match="VIDAX_OUT_OF_MEMORY"):
        run(frames, tone(16000, 1.0), model=FakeModel(oom_above=0), model_batch=4)

    def broken(mels, faces):
        raise ValueError("not an OOM")

    with pytest.raises(ValueError, match="not an OOM"):
        run(frames, tone(16000, 1.0), model=broken)


def test_oom_recognition():
    assert lipsync.is_oom_error(MemoryError())
    assert lipsync.is_oom_error(FakeOOM("x"))
    assert lipsync.is_oom_error(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert not lipsync.is_oom_error(RuntimeError("shape mismatch"))
    assert not lipsync.is_oom_error(ValueError("out of memory"))


def test_identical_frames_are_detected_once():
    still = make_frames(1)
    frames = np.repeat(still, 50, axis=0)  # what RepeatImageBatch hands over
    det = FakeDetector()
    out, report = run(frames, tone(16000, 2.0), detect=det)
    assert sum(det.calls) == 1 and report.detected_unique == 1
    assert report.synced == 50


def test_boxes_are_padded_and_clamped():
    assert lipsync.pad_box((5, 6, 20, 25), 30, 40) == (5, 6, 20, 30)
    assert lipsync.pad_box((-3, -2, 50, 10), 30, 40) == (0, 0, 40, 20)
    assert lipsync.pad_box((10, 10, 10, 20), 30, 40) is None
    assert lipsync.pad_box(None, 30, 40) is None


def test_sequential_smooths_boxes_repetitive_does_not():
    boxes = {0: (0, 0, 10, 10), 1: (5, 5, 15, 15), 2: (10, 10, 20, 20), 4: (0, 0, 4, 4), 5: (2, 2, 6, 6)}
    sm = lipsync.smooth_boxes([0, 1, 2, 4, 5], boxes, t=2)
    assert sm[0] == (2, 2, 12, 12) and sm[1] == (7, 7, 17, 17) and sm[2] == (7, 7, 17, 17)
    assert sm[4] == (1, 1, 5, 5) and sm[5] == (1, 1, 5, 5)  # a gap starts a new run

    class Jitter(FakeDetector):
        def __call__(self, batch):
            self.calls.append(len(batch))
            return [(8 + (i % 2) * 4, 8, 40, 30) for i in range(len(batch))]

    frames = make_frames(10)
    seq, _ = run(frames, tone(16000, 1.0), detect=Jitter(), face_detect_batch=16)
    rep, _ = run(frames, tone(16000, 1.0), detect=Jitter(), face_detect_batch=16, mode="repetitive")
    # Repetitive keeps the raw boxes: x1 alternates 8 / 12; sequential averages them to 9 or 10.
    assert np.array_equal(rep[1][:, 8:12], frames[1][:, 8:12])
    assert not np.array_equal(seq[1][:, 9:12], frames[1][:, 9:12])


def test_face_input_is_bgr_with_the_lower_half_masked():
    crop = np.zeros((96, 96, 3), np.float32)
    crop[..., 0] = 0.9  # R
    crop[..., 2] = 0.1  # B
    x = lipsync.face_input([crop])
    assert x.shape == (1, 6, 96, 96)
    assert np.allclose(x[0, 0, :48], 0.1) and np.allclose(x[0, 2, :48], 0.9)  # B, G, R
    assert not x[0, :3, 48:].any()
    assert np.allclose(x[0, 3], 0.1) and np.allclose(x[0, 5], 0.9)


def test_bad_inputs():
    frames = make_frames(2)
    with pytest.raises(InputError):
        run(frames, tone(16000, 1.0), mode="loop")
    with pytest.raises(InputError):
        run(frames, tone(16000, 1.0), on_no_face="skip")
    with pytest.raises(InputError):
        run(np.zeros((2, 8, 8, 4), np.float32), tone(16000, 1.0))
    with pytest.raises(InputError):
        run(frames, tone(16000, 1.0), fps=0)


# ---- issue 16: frame k comes out the same whichever chunk renders it ----


def preemph_mel(wav):
    """The pack's mel where it matters here: pre-emphasis ``y[i] = x[i] - 0.97·x[i-1]`` over the
    signal as given, then per mel step ``t`` the mean ``|y|`` over samples ``200t-400 ..
    200t+400`` (zeros past the end, as librosa's centred STFT pads)."""
    x = np.asarray(wav, dtype=np.float64)
    y = x.copy()
    y[1:] -= 0.97 * x[:-1]
    t = 1 + x.size // 200
    ypad = np.concatenate([np.zeros(400), y, np.zeros(800)])
    steps = np.array([np.abs(ypad[200 * i:200 * i + 800]).mean() for i in range(t)], dtype=np.float32)
    return np.repeat(steps[None, :], 80, axis=0)


class MelModel:
    """A face whose value follows the mel window; like torch's CPU convolutions, a batch of one
    sample takes another code path whose result differs in the last bits."""

    def __init__(self):
        self.calls = []

    def __call__(self, mels, faces):
        self.calls.append(len(mels))
        v = mels.reshape(len(mels), -1).astype(np.float64).mean(axis=1)
        if len(mels) == 1:
            v = v + 1e-6
        val = (0.5 + 0.4 * np.tanh(v)).astype(np.float32)
        return np.broadcast_to(val[:, None, None, None], (len(mels), 3, 96, 96)).copy()


class ShiftDetector:
    """A face whose box moves with the frame: x offset = pixel (1, 1) green · 20."""

    def __call__(self, batch):
        return [(8 + int(round(f[1, 1, 1] / 255 * 20)), 8, 40 + int(round(f[1, 1, 1] / 255 * 20)), 30) for f in batch]


def render_chunks(frames, wav, fps, cuts, overlap=0, **kw):
    """Renders ``frames`` chunk by chunk (chunk boundaries ``cuts``), each chunk with the whole
    audio and its start_frame, optionally with ``overlap`` extra frames on each side that are
    thrown away; returns the frames and the per-frame outcome/boxes, concatenated."""
    n = len(frames)
    edges = [0, *cuts, n]
    outs, outcome, boxes = [], [], []
    for a, b in zip(edges[:-1], edges[1:]):
        lo, hi = max(0, a - overlap), min(n, b + overlap)
        out, rep = lipsync.lipsync_frames(frames[lo:hi], wav, fps, start_frame=lo, **kw)
        outs.append(out[a - lo:b - lo])
        outcome += rep.outcome[a - lo:b - lo]
        boxes += rep.boxes[a - lo:b - lo]
    return np.concatenate(outs), outcome, boxes


def test_a_still_frame_comes_out_the_same_whichever_chunk_renders_it():
    fps, n = 25.0, 30
    # The audio ends, still loud, exactly where frame 16's window ends: a chunk ending at frame
    # 16 needs no padding, a longer one does. Frame 20 alone in a chunk is a batch of one.
    wav = tone(16000, 2.0)[: fr.samples_for_frames(16, fps)]
    frames = np.repeat(make_frames(1), n, axis=0)
    kw = dict(detect=FakeDetector(), mel=preemph_mel, model=MelModel())
    whole, rep = lipsync.lipsync_frames(frames, wav, fps, **kw)
    assert 0 < rep.synced < n and rep.outcome[20] == "synced"
    for cuts in ([17], [16, 17], [20, 21], [5, 10, 15, 20, 25], list(range(1, n))):
        out, outcome, boxes = render_chunks(frames, wav, fps, cuts, **kw)
        assert outcome == rep.outcome and boxes == rep.boxes, cuts
        for k in range(n):
            assert np.array_equal(out[k], whole[k]), (cuts, k)


def test_video_frames_are_chunk_independent_unsmoothed_or_with_a_four_frame_overlap():
    fps, n = 25.0, 24
    frames = make_frames(n, seed=4)
    for k in range(n):
        frames[k, 1, 1, 1] = ((k * 7) % 5) / 20  # the face moves from frame to frame
    wav = tone(16000, 2.0)
    kw = dict(detect=ShiftDetector(), mel=preemph_mel, model=MelModel())
    cuts = [7, 8, 15]
    # repetitive: no smoothing, nothing crosses a chunk edge.
    whole, rep = lipsync.lipsync_frames(frames, wav, fps, mode="repetitive", **kw)
    out, outcome, boxes = render_chunks(frames, wav, fps, cuts, mode="repetitive", **kw)
    assert boxes == rep.boxes and np.array_equal(out, whole)
    # sequential smooths each box over the next 5 (the last 5 at the end of a run): a chunk
    # edge changes the boxes near it, unless each chunk carries SMOOTH_T - 1 = 4 extra frames
    # on both sides and drops them.
    whole, rep = lipsync.lipsync_frames(frames, wav, fps, mode="sequential", **kw)
    _, _, cut_boxes = render_chunks(frames, wav, fps, cuts, mode="sequential", **kw)
    assert cut_boxes != rep.boxes
    out, outcome, boxes = render_chunks(frames, wav, fps, cuts, overlap=lipsync.SMOOTH_T - 1, mode="sequential", **kw)
    assert boxes == rep.boxes and np.array_equal(out, whole)
