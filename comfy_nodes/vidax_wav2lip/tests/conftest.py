"""Shared helpers: repository paths, fakes for the detector / mel / network, a fake pack tree."""

import os
import sys
import textwrap

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE_DIR = os.path.dirname(TESTS_DIR)
COMFY_NODES_DIR = os.path.dirname(PACKAGE_DIR)
REPO_DIR = os.path.dirname(COMFY_NODES_DIR)
ZOOM_VECTORS = os.path.join(REPO_DIR, "fixtures", "zoom_vectors.json")
INTERFACE_DOC = os.path.join(REPO_DIR, "docs", "COMFYUI_INTERFACE.md")

# Make `import vidax_wav2lip` work under any pytest import mode.
if COMFY_NODES_DIR not in sys.path:
    sys.path.insert(0, COMFY_NODES_DIR)

FACE_BOX = (8, 8, 40, 30)  # what FakeDetector finds: x1, y1, x2, y2 (the pipeline adds 10 px below)
NO_FACE_MARK = 1.0  # frames whose pixel (0, 0) red is this have no face for FakeDetector


def node_result(res, ui_key):
    """A node's return value ``{"ui": {ui_key: [obj]}, "result": (...)}`` -> (result tuple, obj),
    checking the shape ComfyUI expects (one JSON object in the ui list, plain JSON values)."""
    import json

    assert set(res) == {"ui", "result"}, res.keys()
    assert list(res["ui"]) == [ui_key]
    assert isinstance(res["ui"][ui_key], list) and len(res["ui"][ui_key]) == 1
    obj = res["ui"][ui_key][0]
    assert json.loads(json.dumps(obj)) == obj  # plain JSON: no numpy types, no tuples
    return tuple(res["result"]), obj


class FakeOOM(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the pipeline recognises by name."""


FakeOOM.__name__ = "OutOfMemoryError"


class FakeDetector:
    def __init__(self, box=FACE_BOX, oom_above=None):
        self.box = box
        self.oom_above = oom_above
        self.calls = []

    def __call__(self, batch):
        assert batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[-1] == 3
        self.calls.append(len(batch))
        if self.oom_above is not None and len(batch) > self.oom_above:
            raise FakeOOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [None if f[0, 0, 0] == 255 else self.box for f in batch]


def fake_mel(wav):
    """[80, 1 + S // 200]: each step is the peak |x| of the 800 samples it covers, so a window is
    all zeros exactly when its audio is."""
    wav = np.asarray(wav, dtype=np.float32)
    t = 1 + wav.size // 200
    peaks = np.zeros(t, dtype=np.float32)
    for i in range(t):
        seg = wav[max(0, 200 * i - 400):200 * i + 400]
        peaks[i] = np.abs(seg).max() if seg.size else 0.0
    return np.repeat(peaks[None, :], 80, axis=0)


def step_mel(wav):
    """[80, 1 + S // 200] whose value at step t is t + 1 (never 0): tells which window came in."""
    t = 1 + np.asarray(wav).size // 200
    return np.repeat((np.arange(t, dtype=np.float32) + 1.0)[None, :], 80, axis=0)


class FakeModel:
    """Returns a face whose colour encodes the first mel value; never accepts an all-zero mel
    window; optionally runs out of memory above a batch size."""

    def __init__(self, oom_above=None):
        self.oom_above = oom_above
        self.calls = []
        self.first_mels = []

    def __call__(self, mels, faces):
        assert mels.dtype == np.float32 and mels.shape[1:] == (1, 80, 16), mels.shape
        assert faces.dtype == np.float32 and faces.shape[1:] == (6, 96, 96), faces.shape
        assert len(mels) == len(faces)
        self.calls.append(len(mels))
        if self.oom_above is not None and len(mels) > self.oom_above:
            raise FakeOOM("CUDA out of memory. Tried to allocate 1.00 GiB")
        assert np.all(np.abs(mels).reshape(len(mels), -1).max(axis=1) > 0), "all-zero mel window"
        # Masked half: the lower 48 rows of channels 0..2 are zero.
        assert np.all(faces[:, :3, 48:, :] == 0.0)
        self.first_mels.extend(float(m[0, 0, 0]) for m in mels)
        out = np.empty((len(mels), 3, 96, 96), dtype=np.float32)
        out[:, 0] = 0.2  # B
        out[:, 1] = 0.4  # G
        out[:, 2] = 0.9  # R
        return out


def synthetic_face(h=96, w=80, seed=3):
    """A drawn face on a textured background -> (float32 [h, w, 3], its box (x1, y1, x2, y2)):
    a skin-coloured ellipse with two dark eyes and a red mouth."""
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3), dtype=np.float32) * 0.3 + 0.1).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, rx, ry = w * 0.5, h * 0.45, w * 0.25, h * 0.3
    skin = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    img[skin] = (0.85, 0.65, 0.5)
    for ex in (cx - rx * 0.4, cx + rx * 0.4):
        img[((xx - ex) ** 2 + (yy - (cy - ry * 0.3)) ** 2) <= (rx * 0.12) ** 2] = (0.1, 0.1, 0.1)
    img[(np.abs(xx - cx) <= rx * 0.4) & (np.abs(yy - (cy + ry * 0.5)) <= ry * 0.08)] = (0.7, 0.1, 0.1)
    box = (int(cx - rx), int(cy - ry), int(cx + rx) + 1, int(cy + ry) + 1)
    return img, box


def tone(rate, seconds, freq=440.0, amp=0.5, phase=0.0):
    n = int(round(rate * seconds))
    t = np.arange(n, dtype=np.float64) / rate
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def make_frames(n, h=64, w=48, seed=0, no_face=()):
    rng = np.random.default_rng(seed)
    f = rng.random((n, h, w, 3), dtype=np.float32) * 0.9
    for k in no_face:
        f[k, 0, 0, 0] = NO_FACE_MARK
    return f


@pytest.fixture
def clean_wav2lip_modules():
    """Removes any `Wav2Lip*` modules and added sys.path entries a test created."""
    before_path = list(sys.path)
    before = {k for k in sys.modules if k == "Wav2Lip" or k.startswith("Wav2Lip.")}
    yield
    for k in [k for k in sys.modules if (k == "Wav2Lip" or k.startswith("Wav2Lip.")) and k not in before]:
        del sys.modules[k]
    sys.path[:] = before_path


def write_tree(root, files):
    for rel, text in files.items():
        p = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(p, mode) as fh:
            fh.write(text if isinstance(text, bytes) else textwrap.dedent(text))


def fake_pack_files(with_weights=True):
    """A ComfyUI_wav2lip layout with plain-python modules (no torch): enough for the import path."""
    files = {
        "__init__.py": "raise RuntimeError('the pack __init__ must not be imported by vidax')\n",
        "Wav2Lip/models/__init__.py": "from .wav2lip import Wav2Lip\n",
        "Wav2Lip/models/wav2lip.py": "class Wav2Lip:\n    FAKE = True\n",
        "Wav2Lip/audio.py": "from .hparams import hparams as hp\ndef melspectrogram(wav):\n    return None\n",
        "Wav2Lip/hparams.py": "class _H:\n    sample_rate = 16000\n    hop_size = 200\n    n_fft = 800\nhparams = _H()\n",
        "Wav2Lip/face_detection/__init__.py": "",
        "Wav2Lip/face_detection/detection/__init__.py": "",
        "Wav2Lip/face_detection/detection/sfd/__init__.py": "",
        "Wav2Lip/face_detection/detection/sfd/net_s3fd.py": "class s3fd:\n    pass\n",
        "Wav2Lip/face_detection/detection/sfd/detect.py": "from .bbox import *\ndef batch_detect(net, imgs, device):\n    return None\n",
        "Wav2Lip/face_detection/detection/sfd/bbox.py": "def nms(dets, thresh):\n    return []\n",
    }
    if with_weights:
        files["Wav2Lip/checkpoints/wav2lip_gan.pth"] = b"fake"
        files["Wav2Lip/face_detection/detection/sfd/s3fd.pth"] = b"fake"
    return files
