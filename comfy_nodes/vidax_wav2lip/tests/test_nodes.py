"""The node classes through their ComfyUI entry points, with the pack runtime faked (no torch
needed: without torch the boundary passes numpy through)."""

import json

import numpy as np
import pytest

from vidax_wav2lip import nodes
from vidax_wav2lip.core import faceprobe, pack
from vidax_wav2lip.core.errors import InputError, NoFaceError, PackMissingError

from .conftest import (
    FakeDetector,
    FakeModel,
    fake_mel,
    fake_pack_files,
    make_frames,
    node_result,
    synthetic_face,
    tone,
    write_tree,
)


class FakeRuntime:
    detector_name = "s3fd"

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
    monkeypatch.setattr(nodes, "make_runtime", lambda detector_only=False: rt)
    return rt


def as_np(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def audio_value(wave, rate):
    return {"waveform": np.asarray(wave, np.float32)[None, None, :], "sample_rate": rate}


@pytest.mark.parametrize("fps", [24000 / 1001, 25.0, 30000 / 1001, 60.0])
def test_wav2lip_node_frames_in_equal_frames_out(fake_runtime, fps):
    frames = make_frames(33, no_face=(4,))
    audio = audio_value(tone(44100, 0.3), 44100)  # ends before the last frame at every rate
    (out, report), ui = node_result(nodes.VIDAX_Wav2Lip().run(frames, audio, fps, "sequential", 8, "passthrough"), "vidax_lipsync")
    assert report == ui
    out = as_np(out)
    assert out.shape == frames.shape and out.dtype == np.float32
    assert np.array_equal(out[4], frames[4])  # no face
    assert np.array_equal(out[-1], frames[-1])  # past the audio: silent


def test_wav2lip_node_stereo_48k_and_start_frame(fake_runtime):
    frames = make_frames(5)
    st = np.stack([tone(48000, 3.0, 440), tone(48000, 3.0, 660)])[None]
    (out, _), ui = node_result(
        nodes.VIDAX_Wav2Lip().run(frames, {"waveform": st, "sample_rate": 48000}, 25.0, "repetitive", 2, "passthrough", start_frame=50),
        "vidax_lipsync",
    )
    assert as_np(out).shape == frames.shape
    assert ui["start_frame"] == 50 and ui["synced"] == 5
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


class ScoredDetector(FakeDetector):
    """FakeDetector that also returns a score, as the real backend does."""

    def __call__(self, batch):
        return [None if b is None else (*b, 0.875) for b in super().__call__(batch)]


def changed_mask(a, b):
    return np.any(np.asarray(a) != np.asarray(b), axis=-1)


def box_mask(shape, box):
    m = np.zeros(shape[:2], dtype=bool)
    if box is not None:
        x1, y1, x2, y2 = box
        m[y1:y2, x1:x2] = True
    return m


def check_lipsync_report(ui, frames_in, frames_out):
    """The invariants of docs/COMFYUI_INTERFACE.md's `vidax_lipsync` object."""
    n = len(frames_in)
    assert ui["version"] == 1 and ui["node"] == "VIDAX_Wav2Lip" and ui["frames"] == n
    assert len(ui["outcome"]) == len(ui["boxes"]) == n
    assert ui["synced"] + ui["silent"] + ui["no_face"] == n
    for kind in ("synced", "silent", "no_face"):
        assert ui["outcome"].count(kind) == ui[kind], kind
    for k in range(n):
        assert (ui["outcome"][k] == "synced") == (ui["boxes"][k] is not None), k
        changed = changed_mask(frames_in[k], frames_out[k])
        assert not (changed & ~box_mask(frames_in.shape[1:], ui["boxes"][k])).any(), k
    got = [b for b in ui["boxes"] if b is not None]
    assert ui["box_summary"]["count"] == len(got)
    for i, name in enumerate(("x1", "y1", "x2", "y2")):
        if got:
            assert ui["box_summary"][name] == [min(b[i] for b in got), max(b[i] for b in got)]
        else:
            assert name not in ui["box_summary"]


def test_wav2lip_node_reports_every_frame(fake_runtime):
    fps = 25.0
    # 0.4 s silence, 0.6 s tone, then the audio ends: frames 0..~8 silent, then synced, the
    # frames past the end silent again; frames 12 and 14 have no face, frame 2 (silent) neither.
    wav = np.concatenate([np.zeros(6400, np.float32), tone(16000, 0.6)])
    frames = make_frames(36, no_face=(2, 12, 14))
    (out, report), ui = node_result(nodes.VIDAX_Wav2Lip().run(frames, audio_value(wav, 16000), fps, "sequential", 8, "passthrough", start_frame=0), "vidax_lipsync")
    out = as_np(out)
    assert report == ui
    check_lipsync_report(ui, frames, out)
    assert ui["outcome"][2] == "silent"  # silence is decided first
    assert ui["outcome"][12] == ui["outcome"][14] == "no_face"
    assert ui["outcome"][0] == ui["outcome"][-1] == "silent"
    assert ui["synced"] > 10 and ui["silent"] > 10 and ui["no_face"] == 2
    assert (ui["width"], ui["height"], ui["start_frame"], ui["detector"]) == (48, 64, 0, "s3fd")
    padded = [8, 8, 40, 40]  # FACE_BOX, 10 px down
    assert {tuple(b) for b in ui["boxes"] if b is not None} == {tuple(padded)}
    assert ui["box_summary"] == {"count": ui["synced"], "x1": [8, 8], "y1": [8, 8], "x2": [40, 40], "y2": [40, 40]}
    for k, o in enumerate(ui["outcome"]):
        assert np.array_equal(out[k], frames[k]) == (o != "synced"), k


def test_wav2lip_on_a_synthetic_face_changes_only_the_detected_box(monkeypatch):
    face, box = synthetic_face()
    frames = np.repeat(face[None], 10, axis=0)
    rt = FakeRuntime(detector=FakeDetector(box=box))
    monkeypatch.setattr(nodes, "make_runtime", lambda detector_only=False: rt)
    (out, _), ui = node_result(nodes.VIDAX_Wav2Lip().run(frames, audio_value(tone(16000, 1.0), 16000), 25.0, "sequential", 8, "passthrough"), "vidax_lipsync")
    out = as_np(out)
    x1, y1, x2, y2 = box
    padded = [x1, y1, x2, min(frames.shape[1], y2 + 10)]
    assert ui["synced"] == 10 and ui["boxes"] == [padded] * 10
    check_lipsync_report(ui, frames, out)
    for k in range(10):
        changed = changed_mask(frames[k], out[k])
        assert changed.any()
        ys, xs = np.nonzero(changed)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(padded)  # exactly the box


def test_face_probe_uses_the_detector_and_pads_like_wav2lip(fake_runtime):
    face, box = synthetic_face()
    fake_runtime.detect = ScoredDetector(box=box)
    other = face.copy()
    other[0, 0, 0] = 1.0  # FakeDetector: no face in this one
    batch = np.stack([face, other, face])
    res = nodes.VIDAX_FaceProbe().run(batch)
    (crop, fx, fy, fs, mx, my, mw, mh, meta), ui = node_result(res, "vidax_face")
    assert json.loads(meta) == ui
    x1, y1, x2, y2 = box
    y2p = min(face.shape[0], y2 + 10)
    fb = {"x": x1, "y": y1, "w": x2 - x1, "h": y2p - y1}
    half = fb["h"] // 2
    mouth = {"x": x1, "y": y1 + half, "w": fb["w"], "h": fb["h"] - half}
    assert list(ui) == ["version", "method", "fallback_reason", "image", "found", "faces", "face_box", "mouth_roi", "feather", "centre"]
    assert ui["version"] == 2 and ui["method"] == "s3fd" and ui["fallback_reason"] is None
    assert ui["image"] == {"w": face.shape[1], "h": face.shape[0]}
    assert ui["found"] is False  # frame 1 has none
    assert ui["faces"] == [
        {"found": True, "face_box": fb, "mouth_roi": mouth, "score": 0.875},
        {"found": False},
        {"found": True, "face_box": fb, "mouth_roi": mouth, "score": 0.875},
    ]
    assert ui["face_box"] == fb and ui["mouth_roi"] == mouth
    assert ui["feather"] == max(1, min(mouth["w"], mouth["h"]) // 8)
    assert ui["centre"] == [x1 + fb["w"] / 2.0, y1 + fb["h"] / 2.0]
    assert (fx, fy, fs) == (x1, y1, max(fb["w"], fb["h"]))
    assert (mx, my, mw, mh) == (mouth["x"], mouth["y"], mouth["w"], mouth["h"])
    assert np.array_equal(as_np(crop)[0], face[y1:y2p, x1:x2])
    assert nodes.VIDAX_FaceProbe.OUTPUT_NODE is True

    # The box VIDAX_Wav2Lip pastes into for this picture is the probe's box.
    stills = np.repeat(face[None], 4, axis=0)
    (_, _), rep = node_result(nodes.VIDAX_Wav2Lip().run(stills, audio_value(tone(16000, 1.0), 16000), 25.0, "sequential", 8, "passthrough"), "vidax_lipsync")
    assert rep["boxes"] == [[fb["x"], fb["y"], fb["x"] + fb["w"], fb["y"] + fb["h"]]] * 4


def test_face_probe_without_a_face_reports_it_and_does_not_raise(fake_runtime):
    frames = make_frames(2, no_face=(0, 1))
    (crop, *ints, meta), ui = node_result(nodes.VIDAX_FaceProbe().run(frames), "vidax_face")
    assert ui["method"] == "s3fd" and ui["found"] is False
    assert ui["faces"] == [{"found": False}, {"found": False}]
    assert ui["face_box"] is None and ui["mouth_roi"] is None and ui["centre"] is None and ui["feather"] == 0
    assert ints == [0] * 7 and np.array_equal(as_np(crop), frames[:1])
    # A face only in a later frame: found is false (not every frame), face_box is that face's.
    frames = make_frames(2, no_face=(0,))
    (crop, fx, fy, *_), ui = node_result(nodes.VIDAX_FaceProbe().run(frames), "vidax_face")
    assert ui["found"] is False and ui["faces"][0] == {"found": False} and ui["faces"][1]["found"] is True
    assert ui["face_box"] == ui["faces"][1]["face_box"] and (fx, fy) == (8, 8)
    assert np.array_equal(as_np(crop)[0], frames[1, 8:40, 8:40])


def test_face_probe_falls_back_to_the_size_heuristic_and_says_so(tmp_path, monkeypatch):
    missing = tmp_path / "custom_nodes" / "ComfyUI_wav2lip"
    monkeypatch.setenv(pack.ENV_PACK_DIR, str(missing))
    img = make_frames(2, h=1080 // 8, w=1920 // 8)
    out = nodes.VIDAX_FaceProbe().run(img)
    (crop, fx, fy, fs, mx, my, mw, mh, meta), ui = node_result(out, "vidax_face")
    assert len(out["result"]) == len(nodes.VIDAX_FaceProbe.RETURN_TYPES) == 9
    assert ui["method"] == "size_heuristic"
    assert ui["fallback_reason"].startswith("VIDAX_PACK_MISSING") and str(missing) in ui["fallback_reason"]
    want = faceprobe.probe(240, 135)
    assert (fx, fy, fs) == (want.face.x, want.face.y, want.face.w)
    assert (mx, my, mw, mh) == (want.mouth.x, want.mouth.y, want.mouth.w, want.mouth.h)
    assert ui["found"] is True and len(ui["faces"]) == 2
    assert ui["faces"][0] == {"found": True, "face_box": want.face.as_dict(), "mouth_roi": want.mouth.as_dict(), "score": None}
    assert ui["face_box"] == want.face.as_dict() and ui["mouth_roi"] == want.mouth.as_dict()
    assert ui["feather"] == want.feather and ui["centre"] == list(want.centre)
    assert as_np(crop).shape == (1, fs, fs, 3)
    assert np.array_equal(as_np(crop)[0], img[0, fy:fy + fs, fx:fx + fs])
    assert json.loads(meta) == ui
    # Missing detector weights fall back the same way, naming the file (the network's weights
    # are not needed to detect faces).
    tree = fake_pack_files(with_weights=False)
    tree["Wav2Lip/checkpoints/wav2lip_gan.pth"] = b"fake"
    write_tree(str(missing), tree)
    (_, *_), ui = node_result(nodes.VIDAX_FaceProbe().run(img), "vidax_face")
    assert ui["method"] == "size_heuristic" and "VIDAX_WEIGHTS_MISSING" in ui["fallback_reason"] and "s3fd.pth" in ui["fallback_reason"]
    # Too small for a box: no face, reported, no exception.
    (_, *_), ui = node_result(nodes.VIDAX_FaceProbe().run(make_frames(1, h=2, w=5)), "vidax_face")
    assert ui["method"] == "size_heuristic" and ui["found"] is False and ui["face_box"] is None


def test_face_probe_other_detector_errors_are_not_hidden(fake_runtime):
    def broken(batch):
        raise RuntimeError("detector exploded")

    fake_runtime.detect = broken
    with pytest.raises(RuntimeError, match="exploded"):
        nodes.VIDAX_FaceProbe().run(make_frames(1))


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


def test_mouth_blend_node_takes_the_wav2lip_report(fake_runtime):
    # The vidax_lipsync_mouthblend graph: the lip-synced still and its report into the blend.
    face, box = synthetic_face(h=90, w=160)
    fake_runtime.detect = FakeDetector(box=box)
    n, chunk_start, total = 12, 3, 40
    stills = np.repeat(face[None], n, axis=0)
    wav = np.concatenate([tone(16000, 0.4), np.zeros(16000, np.float32)])  # speech, then silence
    (synced, report), ui = node_result(
        nodes.VIDAX_Wav2Lip().run(stills, audio_value(wav, 16000), 25.0, "sequential", 8, "passthrough", start_frame=chunk_start),
        "vidax_lipsync",
    )
    assert 0 < ui["synced"] < n and ui["silent"] > 0
    (motion_frames,) = nodes.VIDAX_MotionChunk().run(face[None], "zoom_in", 0.1, total, chunk_start, n, 80, 45, -1.0, -1.0, "#000000")
    args = (0, 0, 1, 1, -1, "zoom_in", 0.1, total, chunk_start, -1.0, -1.0, "#000000")
    (out,) = nodes.VIDAX_MouthBlend().run(motion_frames, synced, *args, lipsync_report=report)
    out, motion_frames = as_np(out), as_np(motion_frames)
    for k in range(n):
        same = np.array_equal(out[k], motion_frames[k])
        assert same == (ui["outcome"][k] != "synced"), k
    # Without the report the (0, 0, 1, 1) ROI blends nothing visible of the mouth.
    (plain,) = nodes.VIDAX_MouthBlend().run(motion_frames, synced, *args)
    assert not np.array_equal(as_np(plain), out)
    with pytest.raises(InputError, match="frames"):
        nodes.VIDAX_MouthBlend().run(motion_frames[:5], synced[:5], *args, lipsync_report=report)
