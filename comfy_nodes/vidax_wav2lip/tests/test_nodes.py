"""The node classes through their ComfyUI entry points, with the pack runtime faked (no torch
needed: without torch the boundary passes numpy through)."""

import json

import numpy as np
import pytest

from vidax_wav2lip import nodes
from vidax_wav2lip.core import faceprobe, pack
from vidax_wav2lip.core.errors import InputError, NoFaceError, PackMissingError

from .conftest import FakeDetector, FakeModel, fake_mel, make_frames, tone


class FakeRuntime:
    def __init__(self, detector=None, model=None):
        self.detect = detector or FakeDetector()
        self.mel = fake_mel
        self.model = model or FakeModel()
        self.ooms = 0

    def on_oom(self):
        self.ooms += 1


@pytest.fixture
def fake_runtime(monkeypatch):
    rt = FakeRuntime()
    monkeypatch.setattr(nodes, "make_runtime", lambda: rt)
    return rt


def as_np(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def audio_value(wave, rate):
    return {"waveform": np.asarray(wave, np.float32)[None, None, :], "sample_rate": rate}


@pytest.mark.parametrize("fps", [24000 / 1001, 25.0, 30000 / 1001, 60.0])
def test_wav2lip_node_frames_in_equal_frames_out(fake_runtime, fps):
    frames = make_frames(33, no_face=(4,))
    audio = audio_value(tone(44100, 0.3), 44100)  # ends before the last frame at every rate
    (out,) = nodes.VIDAX_Wav2Lip().run(frames, audio, fps, "sequential", 8, "passthrough")
    out = as_np(out)
    assert out.shape == frames.shape and out.dtype == np.float32
    assert np.array_equal(out[4], frames[4])  # no face
    assert np.array_equal(out[-1], frames[-1])  # past the audio: silent


def test_wav2lip_node_stereo_48k_and_start_frame(fake_runtime):
    frames = make_frames(5)
    st = np.stack([tone(48000, 3.0, 440), tone(48000, 3.0, 660)])[None]
    (out,) = nodes.VIDAX_Wav2Lip().run(frames, {"waveform": st, "sample_rate": 48000}, 25.0, "repetitive", 2, "passthrough", start_frame=50)
    assert as_np(out).shape == frames.shape
    assert fake_runtime.model.calls == [5]


def test_wav2lip_node_error_mode(fake_runtime):
    frames = make_frames(6, no_face=(2,))
    with pytest.raises(NoFaceError, match="image 2"):
        nodes.VIDAX_Wav2Lip().run(frames, audio_value(tone(16000, 1.0), 16000), 25.0, "sequential", 8, "error")


def test_wav2lip_node_rejects_bad_audio(fake_runtime):
    with pytest.raises(InputError):
        nodes.VIDAX_Wav2Lip().run(make_frames(2), {"waveform": np.zeros((1, 1, 10))}, 25.0, "sequential", 8, "passthrough")


def test_wav2lip_node_without_the_pack_names_the_missing_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(pack.ENV_PACK_DIR, str(tmp_path / "custom_nodes" / "ComfyUI_wav2lip"))
    with pytest.raises(PackMissingError) as e:
        nodes.VIDAX_Wav2Lip().run(make_frames(2), audio_value(tone(16000, 1.0), 16000), 25.0, "sequential", 8, "passthrough")
    assert str(tmp_path / "custom_nodes" / "ComfyUI_wav2lip") in str(e.value) and "va install" in str(e.value)


def test_load_audio_node(tmp_path, monkeypatch):
    import soundfile

    data = np.stack([tone(44100, 1.0, 440, 0.1), tone(44100, 1.0, 550, 0.1)], axis=1)
    path = tmp_path / "vidax_audio_0123456789abcdef.wav"
    soundfile.write(str(path), data, 44100, subtype="PCM_16")
    node = nodes.VIDAX_LoadAudio()
    (a,) = node.run(str(path), False)
    assert a["sample_rate"] == 44100 and as_np(a["waveform"]).shape == (1, 2, 44100)
    (m,) = node.run(str(path), True)
    assert as_np(m["waveform"]).shape == (1, 1, 44100)
    assert nodes.VIDAX_LoadAudio.VALIDATE_INPUTS(str(path)) is True
    missing = nodes.VIDAX_LoadAudio.VALIDATE_INPUTS(str(tmp_path / "nope.wav"))
    assert isinstance(missing, str) and missing.startswith("VIDAX_BAD_INPUT") and "nope.wav" in missing
    before = nodes.VIDAX_LoadAudio.IS_CHANGED(str(path), False)
    assert before == nodes.VIDAX_LoadAudio.IS_CHANGED(str(path), False)
    assert before != nodes.VIDAX_LoadAudio.IS_CHANGED(str(path), True)
    # Relative names resolve against the working directory without ComfyUI.
    monkeypatch.chdir(tmp_path)
    (r,) = node.run(path.name, True)
    assert as_np(r["waveform"]).shape == (1, 1, 44100)
    with pytest.raises(InputError):
        node.run(str(tmp_path / "nope.wav"), False)


def test_load_audio_node_resolves_names_in_comfys_input_folder(tmp_path, monkeypatch):
    import sys
    import types

    import soundfile

    (tmp_path / "input").mkdir()
    soundfile.write(str(tmp_path / "input" / "a.wav"), tone(16000, 0.25), 16000)
    stub = types.ModuleType("folder_paths")
    stub.get_annotated_filepath = lambda name: str(tmp_path / "input" / name)
    monkeypatch.setitem(sys.modules, "folder_paths", stub)
    (a,) = nodes.VIDAX_LoadAudio().run("a.wav", False)
    assert as_np(a["waveform"]).shape == (1, 1, 4000)


def test_face_probe_node():
    img = make_frames(2, h=1080 // 8, w=1920 // 8)
    out = nodes.VIDAX_FaceProbe().run(img)
    assert len(out) == len(nodes.VIDAX_FaceProbe.RETURN_TYPES) == 9
    crop, fx, fy, fs, mx, my, mw, mh, meta = out
    want = faceprobe.probe(240, 135)
    assert (fx, fy, fs) == (want.face.x, want.face.y, want.face.w)
    assert (mx, my, mw, mh) == (want.mouth.x, want.mouth.y, want.mouth.w, want.mouth.h)
    assert as_np(crop).shape == (1, fs, fs, 3)
    assert np.array_equal(as_np(crop)[0], img[0, fy:fy + fs, fx:fx + fs])
    assert json.loads(meta)["mouth_roi"] == {"x": mx, "y": my, "w": mw, "h": mh}


def test_motion_chunk_and_mouth_blend_nodes():
    still = make_frames(1, h=90, w=160)
    (motion_frames,) = nodes.VIDAX_MotionChunk().run(still, "zoom_in", 0.1, 48, 12, 6, 64, 36, -1.0, -1.0, "#102030")
    motion_frames = as_np(motion_frames)
    assert motion_frames.shape == (6, 36, 64, 3)
    m = faceprobe.probe(160, 90).mouth
    synced = np.repeat(still, 6, axis=0)
    (same,) = nodes.VIDAX_MouthBlend().run(motion_frames, synced, m.x, m.y, m.w, m.h, -1, "zoom_in", 0.1, 48, 12, -1.0, -1.0, "#102030")
    assert np.array_equal(as_np(same), motion_frames)
    (changed,) = nodes.VIDAX_MouthBlend().run(motion_frames, 1.0 - synced, m.x, m.y, m.w, m.h, 4, "zoom_in", 0.1, 48, 12, -1.0, -1.0, "#102030")
    changed = as_np(changed)
    assert changed.shape == motion_frames.shape and not np.array_equal(changed, motion_frames)
    assert np.array_equal(changed[:, :10], motion_frames[:, :10])  # the top is far from the mouth
    with pytest.raises(InputError):
        nodes.VIDAX_MotionChunk().run(still, "zoom_in", 0.1, 48, 12, 6, 64, 36, -1.0, -1.0, "red")
