"""Small image helpers on numpy arrays ``[H, W, C]`` (float32 0..1 unless named uint8)."""

import numpy as np

from .errors import InputError


def check_frames(frames, what="images"):
    """A float32 ``[N, H, W, 3]`` view of ComfyUI IMAGE data."""
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise InputError(f"{what} must be an IMAGE batch [frames, height, width, 3], got shape {a.shape}")
    if a.dtype != np.float32:
        a = a.astype(np.float32)
    return a


def to_uint8(img):
    """0..1 floats -> uint8, rounded."""
    return np.clip(np.rint(np.asarray(img, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def _linear_taps(n_in, n_out):
    """Source index pairs and weights for a linear resize of one axis, with the half-pixel
    centre convention and edge clamping of OpenCV's INTER_LINEAR."""
    scale = n_in / n_out
    c = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    c = np.clip(c, 0.0, n_in - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = (c - i0).astype(np.float32)
    return i0, i1, f


def resize_bilinear(img, out_h, out_w):
    """Resizes ``[H, W, C]`` (or ``[H, W]``) to ``out_h × out_w``; the same sampling as
    ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)`` (the resize Wav2Lip was trained with),
    in float32 without its fixed-point rounding."""
    a = np.asarray(img, dtype=np.float32)
    h, w = a.shape[:2]
    out_h, out_w = int(out_h), int(out_w)
    if out_h <= 0 or out_w <= 0 or h == 0 or w == 0:
        raise InputError(f"cannot resize {h}x{w} to {out_h}x{out_w}")
    if (h, w) == (out_h, out_w):
        return a.copy()
    y0, y1, fy = _linear_taps(h, out_h)
    x0, x1, fx = _linear_taps(w, out_w)
    extra = (1,) * (a.ndim - 2)
    fy = fy.reshape((-1, 1) + extra)
    rows = a[y0] * (1.0 - fy) + a[y1] * fy
    fx = fx.reshape((1, -1) + extra)
    return rows[:, x0] * (1.0 - fx) + rows[:, x1] * fx


def parse_hex_colour(text):
    """``#rrggbb`` -> float32 RGB 0..1."""
    s = str(text).strip()
    if s.startswith("#"):
        s = s[1:]
    if len(s) != 6:
        raise InputError(f"background must be #rrggbb, got {text!r}")
    try:
        rgb = [int(s[i:i + 2], 16) for i in (0, 2, 4)]
    except ValueError:
        raise InputError(f"background must be #rrggbb, got {text!r}") from None
    return np.array(rgb, dtype=np.float32) / 255.0
