"""The torch boundary: tensors in and out, torch's OOM error, and the real backend (loading,
device, detector and network wrappers) driven end to end through a fake pack of tiny torch
modules with saved weights. Skipped where torch does not import."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vidax_wav2lip import backend, nodes  # noqa: E402
from vidax_wav2lip.core import lipsync, pack  # noqa: E402

from .conftest import FACE_BOX, FakeDetector, FakeModel, fake_mel, make_frames, node_result, tone, write_tree  # noqa: E402


class FakeRuntime:
    def __init__(self):
        self.detect = FakeDetector()
        self.mel = fake_mel
        self.model = FakeModel()

    def on_oom(self):
        pass


def test_wav2lip_node_takes_and_returns_tensors(monkeypatch):
    monkeypatch.setattr(nodes, "make_runtime", FakeRuntime)
    frames = torch.from_numpy(make_frames(20, no_face=(3,)))
    audio = {"waveform": torch.from_numpy(np.stack([tone(48000, 0.5), tone(48000, 0.5)]))[None], "sample_rate": 48000}
    (out, _), _ = node_result(nodes.VIDAX_Wav2Lip().run(frames, audio, 30000 / 1001, "sequential", 8, "passthrough"), "vidax_lipsync")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.shape == frames.shape
    assert torch.equal(out[3], frames[3])  # no face
    assert torch.equal(out[-1], frames[-1])  # past the audio
    assert not torch.equal(out[5], frames[5])


def test_boundary_converts_other_dtypes():
    x = torch.rand(2, 4, 4, 3, dtype=torch.float64)
    a = nodes.to_numpy(x)
    assert a.dtype == np.float32 and np.allclose(a, x.numpy())
    t = nodes.to_output(a)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32


def test_load_audio_returns_a_tensor(tmp_path):
    import soundfile

    path = tmp_path / "a.wav"
    soundfile.write(str(path), np.stack([tone(44100, 0.5)] * 2, axis=1), 44100)
    (a,) = nodes.VIDAX_LoadAudio().run(str(path), False)
    assert isinstance(a["waveform"], torch.Tensor)
    assert a["waveform"].dtype == torch.float32 and tuple(a["waveform"].shape) == (1, 2, 22050)


def test_motion_nodes_return_tensors():
    still = torch.from_numpy(make_frames(1, h=90, w=160))
    (frames,) = nodes.VIDAX_MotionChunk().run(still, "zoom_out", 0.1, 10, 0, 3, 64, 36, -1.0, -1.0, "#000000")
    assert isinstance(frames, torch.Tensor) and tuple(frames.shape) == (3, 36, 64, 3)
    (blended,) = nodes.VIDAX_MouthBlend().run(frames, still, 50, 60, 60, 30, -1, "zoom_out", 0.1, 10, 0, -1.0, -1.0, "#000000")
    assert torch.equal(blended, frames)


def test_torch_out_of_memory_is_recognised_and_halves_the_batch():
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is None:
        pytest.skip("this torch has no torch.cuda.OutOfMemoryError")
    assert lipsync.is_oom_error(oom("CUDA out of memory. Tried to allocate 20.00 MiB"))

    class Net(torch.nn.Module):
        def forward(self, mels, faces):
            if mels.shape[0] > 3:
                raise oom("CUDA out of memory. Tried to allocate 20.00 MiB")
            return faces[:, 3:] * 0 + 0.25

    calls = []
    model = backend.make_model(Net(), torch.device("cpu"))

    def counting(mels, faces):
        calls.append(len(mels))
        return model(mels, faces)

    frames = make_frames(10)
    out, report = lipsync.lipsync_frames(
        frames, tone(16000, 1.0), 25.0, detect=FakeDetector(), mel=fake_mel, model=counting, model_batch=8, on_oom=backend.free_memory
    )
    assert calls[:3] == [8, 4, 2] and report.model_batch == 2 and report.synced == 10
    x1, y1, x2, _ = FACE_BOX
    assert np.allclose(out[0, y1 + 1, x1 + 1], 0.25)


FAKE_TORCH_PACK = {
    "Wav2Lip/models/__init__.py": "from .wav2lip import Wav2Lip\n",
    "Wav2Lip/models/wav2lip.py": """
        import torch
        from torch import nn

        class Wav2Lip(nn.Module):
            def __init__(self):
                super().__init__()
                self.scale = nn.Parameter(torch.zeros(1))

            def forward(self, audio_sequences, face_sequences):
                assert tuple(audio_sequences.shape[1:]) == (1, 80, 16)
                assert tuple(face_sequences.shape[1:]) == (6, 96, 96)
                return torch.sigmoid(face_sequences[:, 3:] * 0 + self.scale)
        """,
    "Wav2Lip/hparams.py": """
        class _H:
            sample_rate = 16000
            hop_size = 200
            n_fft = 800
        hparams = _H()
        """,
    "Wav2Lip/audio.py": """
        import numpy as np
        from .hparams import hparams as hp

        def melspectrogram(wav):
            t = 1 + len(wav) // hp.hop_size
            return np.ones((80, t)) * (np.abs(wav).max() if len(wav) else 0.0)
        """,
    "Wav2Lip/face_detection/__init__.py": "",
    "Wav2Lip/face_detection/detection/__init__.py": "",
    "Wav2Lip/face_detection/detection/sfd/__init__.py": "",
    "Wav2Lip/face_detection/detection/sfd/net_s3fd.py": """
        import torch
        from torch import nn

        class s3fd(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.ones(1))
        """,
    "Wav2Lip/face_detection/detection/sfd/detect.py": """
        import numpy as np

        def batch_detect(net, imgs, device):
            assert isinstance(device, str)
            b = imgs.shape[0]
            good = np.tile(np.array([8.0, 8.0, 40.0, 30.0, 0.99]), (1, b, 1))
            weak = np.tile(np.array([0.0, 0.0, 5.0, 5.0, 0.2]), (1, b, 1))
            return np.concatenate([good, weak])
        """,
    "Wav2Lip/face_detection/detection/sfd/bbox.py": """
        def nms(dets, thresh):
            return list(range(len(dets)))
        """,
}


def test_backend_end_to_end_with_a_fake_torch_pack(tmp_path, monkeypatch, clean_wav2lip_modules):
    root = tmp_path / "custom_nodes" / "ComfyUI_wav2lip"
    write_tree(str(root), FAKE_TORCH_PACK)
    (root / "Wav2Lip" / "checkpoints").mkdir()
    torch.save({"state_dict": {"module.scale": torch.zeros(1)}, "global_step": 1}, str(root / "Wav2Lip" / "checkpoints" / "wav2lip_gan.pth"))
    torch.save({"w": torch.ones(1)}, str(root / "Wav2Lip" / "face_detection" / "detection" / "sfd" / "s3fd.pth"))
    monkeypatch.setenv(pack.ENV_PACK_DIR, str(root))
    backend._CACHE.clear()

    frames = make_frames(12)
    wav = np.concatenate([np.zeros(8000, np.float32), tone(16000, 0.5)])  # 0.5 s silence first
    audio = {"waveform": torch.from_numpy(wav)[None, None], "sample_rate": 16000}
    (out, report), ui = node_result(
        nodes.VIDAX_Wav2Lip().run(torch.from_numpy(frames), audio, 25.0, "sequential", 4, "passthrough"), "vidax_lipsync"
    )
    out = out.numpy()
    assert out.shape == frames.shape
    # Frames 0..7 hear silence only up to about frame 9: the first ones pass through.
    assert np.array_equal(out[0], frames[0])
    x1, y1, x2, y2 = 8, 8, 40, 40  # detector box, padded 10 px down
    assert np.allclose(out[11, y1:y2, x1:x2], 0.5)  # sigmoid(0) from the fake network
    m = np.ones(frames.shape[1:3], bool)
    m[y1:y2, x1:x2] = False
    assert np.array_equal(out[11][m], frames[11][m])
    # The report says what happened, with the box the fake S3FD found, padded.
    assert ui["detector"] == "s3fd" and ui["outcome"][0] == "silent" and ui["outcome"][11] == "synced"
    assert ui["boxes"][0] is None and ui["boxes"][11] == [x1, y1, x2, y2]
    assert ui["synced"] + ui["silent"] == 12 and report == ui
    # VIDAX_FaceProbe through the same backend: the same padded box, with S3FD's score.
    (crop, fx, fy, fs, mx, my, mw, mh, meta), face = node_result(nodes.VIDAX_FaceProbe().run(torch.from_numpy(frames[:2])), "vidax_face")
    assert face["method"] == "s3fd" and face["found"] is True
    assert face["face_box"] == {"x": x1, "y": y1, "w": x2 - x1, "h": y2 - y1}
    assert [f["score"] for f in face["faces"]] == [0.99, 0.99]
    assert (fx, fy, fs) == (x1, y1, 32) and isinstance(crop, torch.Tensor) and tuple(crop.shape) == (1, 32, 32, 3)
    kinds = {k[0] for k in backend._CACHE}
    assert kinds == {"wav2lip", "s3fd"}
    # A second run reuses the loaded network and detector.
    before = dict(backend._CACHE)
    nodes.VIDAX_Wav2Lip().run(torch.from_numpy(frames), audio, 25.0, "repetitive", 4, "passthrough")
    assert all(backend._CACHE[k] is before[k] for k in before)
    # The face probe needs only the detector: without the network's weights it still runs S3FD.
    (root / "Wav2Lip" / "checkpoints" / "wav2lip_gan.pth").unlink()
    (_, fx, fy, *_), face = node_result(nodes.VIDAX_FaceProbe().run(torch.from_numpy(frames[:1])), "vidax_face")
    assert face["method"] == "s3fd" and (fx, fy) == (x1, y1)
