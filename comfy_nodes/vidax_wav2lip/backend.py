"""The torch side of VIDAX_Wav2Lip: device choice, loading the pack's network and detector, and
the callables the numpy pipeline (core/lipsync.py) drives.

Imported only when a node runs (never at package import): it imports torch.
"""

import logging
import os
import threading

import numpy as np
import torch

from .core import frames as fr
from .core.errors import InputError

log = logging.getLogger("vidax_wav2lip")

_CACHE = {}
_LOCK = threading.Lock()


def device():
    """ComfyUI's device (honours --cpu and friends), else CUDA when available, else the CPU."""
    try:
        import comfy.model_management as mm

        return mm.get_torch_device()
    except Exception:  # noqa: BLE001 - outside ComfyUI, or a stub without it
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def free_memory():
    """After an out-of-memory error: give cached blocks back before the smaller retry."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _torch_load(path):
    """Weights onto the CPU; ``weights_only`` where this torch has it. The files come from the
    hash-checked ``va install`` assets, so a checkpoint that needs full unpickling (older
    Wav2Lip checkpoints keep optimizer state) is loaded with it as the fallback."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13: no weights_only
        return torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - pickle refused under weights_only
        log.info("vidax_wav2lip: %s needs full unpickling (%s)", path, e)
        return torch.load(path, map_location="cpu", weights_only=False)


def _cached(kind, path, dev, build):
    key = (kind, os.path.abspath(path), os.path.getmtime(path), str(dev))
    with _LOCK:
        obj = _CACHE.get(key)
        if obj is None:
            for k in [k for k in _CACHE if k[0] == kind]:
                del _CACHE[k]
            obj = build()
            _CACHE[key] = obj
        return obj


def load_model(mods, path, dev):
    """The pack's ``Wav2Lip`` network with ``path``'s weights (``{"state_dict": ...}``, a
    ``module.`` prefix stripped), in eval mode on ``dev``."""

    def build():
        ck = _torch_load(path)
        state = ck["state_dict"] if isinstance(ck, dict) and "state_dict" in ck else ck
        state = {k.replace("module.", "", 1) if k.startswith("module.") else k: v for k, v in state.items()}
        net = mods.models.Wav2Lip()
        net.load_state_dict(state)
        return net.to(dev).eval()

    return _cached("wav2lip", path, dev, build)


def load_detector(mods, path, dev):
    """The pack's S3FD network with ``path``'s weights, eval mode on ``dev`` (built here rather
    than through the pack's ``FaceAlignment``, which loads without ``map_location``)."""

    def build():
        net = mods.net_s3fd.s3fd()
        net.load_state_dict(_torch_load(path))
        return net.to(dev).eval()

    return _cached("s3fd", path, dev, build)


def make_detect(mods, net, dev):
    """``detect(uint8 RGB [B, H, W, 3])`` -> ``(x1, y1, x2, y2, score)`` or None per frame, as the
    pack's ``FaceAlignment.get_detections_for_batch`` + ``SFDDetector.detect_from_batch``: S3FD
    batch detection, NMS 0.3, score > 0.5, the first box, clipped at 0 (the pipeline pads it).
    Wav2Lip feeds the detector RGB (its BGR frames flipped); these frames are RGB already."""
    dev_s = str(dev)

    def detect(batch):
        with torch.no_grad():
            lists = mods.detect.batch_detect(net, np.ascontiguousarray(batch), device=dev_s)
        out = []
        for i in range(lists.shape[1]):
            keep = mods.bbox.nms(lists[:, i, :], 0.3)
            cand = [b for b in lists[keep, i, :] if b[-1] > 0.5]
            if not cand:
                out.append(None)
                continue
            d = np.clip(np.asarray(cand[0], dtype=np.float64), 0, None)
            x1, y1, x2, y2 = (int(v) for v in d[:4])
            out.append((x1, y1, x2, y2, float(d[4])))
        return out

    return detect


def make_model(net, dev):
    """``model(mels [B,1,80,16], faces [B,6,96,96])`` -> numpy ``[B,3,96,96]``."""

    def model(mels, faces):
        with torch.no_grad():
            m = torch.from_numpy(np.ascontiguousarray(mels, dtype=np.float32)).to(dev)
            f = torch.from_numpy(np.ascontiguousarray(faces, dtype=np.float32)).to(dev)
            return net(m, f).float().cpu().numpy()

    return model


def make_mel(mods):
    """The pack's ``audio.melspectrogram``, after checking its hparams match the alignment's."""
    hp = mods.hparams.hparams
    got = (int(hp.sample_rate), int(hp.hop_size), int(hp.n_fft))
    want = (fr.SAMPLE_RATE, fr.HOP, fr.N_FFT)
    if got != want:
        raise InputError(
            f"the ComfyUI_wav2lip pack's hparams (sample_rate, hop_size, n_fft) = {got}, expected {want}"
        )

    def mel(wav):
        return np.asarray(mods.audio.melspectrogram(np.asarray(wav, dtype=np.float32)))

    return mel
