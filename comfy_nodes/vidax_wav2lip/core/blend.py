"""The feathered mouth blend.

Owns: the mask (product of two 1-D smoothstep ramps over a possibly sub-pixel rectangle) and
pasting a layer into a base through it. Guarantee: every pixel whose centre is not strictly
inside the rectangle is left bit-identical; the rectangle is the outer limit of the feather.
"""

import math

import numpy as np

from . import motion
from .errors import InputError
from .faceprobe import auto_feather


def ramp(n, a, b, feather):
    """Weights for pixel centres ``j + 0.5``, ``j in 0..n``: 0 where the centre is not strictly
    inside ``(a, b)``, rising with a smoothstep over ``feather`` pixels inside each edge."""
    u = np.arange(n, dtype=np.float64) + 0.5
    d = np.minimum(u - a, b - u)
    if feather > 0:
        t = np.clip(d / feather, 0.0, 1.0)
    else:
        t = (d > 0).astype(np.float64)
    t = np.where(d > 0, t, 0.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def mask_extent(weights):
    """(first, last + 1) index with a non-zero weight, or None."""
    nz = np.nonzero(weights > 0)[0]
    if nz.size == 0:
        return None
    return int(nz[0]), int(nz[-1]) + 1


def blend_rect(base, layer_fn, rect, feather_x, feather_y):
    """Blends into ``base [H, W, 3]`` (in place) the layer ``layer_fn(rows, cols)`` returns for
    the output region ``rows × cols`` (half-open pairs), through the feathered mask of ``rect``
    ``(x0, y0, x1, y1)`` (output pixels, floats). Returns the region touched or None."""
    h, w = base.shape[:2]
    x0, y0, x1, y1 = rect
    rx = ramp(w, x0, x1, feather_x)
    ry = ramp(h, y0, y1, feather_y)
    ex, ey = mask_extent(rx), mask_extent(ry)
    if ex is None or ey is None:
        return None
    mask = (ry[ey[0]:ey[1], None] * rx[None, ex[0]:ex[1]])[..., None]
    layer = np.asarray(layer_fn(ey, ex), dtype=np.float32)
    region = base[ey[0]:ey[1], ex[0]:ex[1]]
    region += mask * (layer - region)
    return ey, ex


def rois_from_report(report, n):
    """Per-frame mouth ROIs from a VIDAX_Wav2Lip report (``vidax_lipsync``): the lower half of
    ``boxes[k]``, None where the frame was not lip-synced. The report must cover ``n`` frames."""
    if not isinstance(report, dict) or not isinstance(report.get("boxes"), list):
        raise InputError("lipsync_report must be the report output of VIDAX_Wav2Lip (a dict with 'boxes')")
    if report.get("version") != 1:
        raise InputError(f"lipsync_report version {report.get('version')!r} is not supported (expected 1)")
    boxes = report["boxes"]
    if len(boxes) != n:
        raise InputError(f"lipsync_report has {len(boxes)} frames, the motion frames are {n}")
    out = []
    for k, b in enumerate(boxes):
        if b is None:
            out.append(None)
            continue
        try:
            x1, y1, x2, y2 = (int(v) for v in b)
        except (TypeError, ValueError):
            raise InputError(f"lipsync_report box {k} must be [x1, y1, x2, y2] or null, got {b!r}") from None
        if x2 <= x1 or y2 <= y1:
            raise InputError(f"lipsync_report box {k} is empty: {b!r}")
        off = (y2 - y1) // 2
        out.append((x1, y1 + off, x2 - x1, y2 - y1 - off))
    return out


def mouth_blend(motion_frames, lipsync_frames, roi, feather, mode, strength, frames, chunk_start, centre=None, bg=(0.0, 0.0, 0.0), rois=None):
    """Pastes the mouth ROI (``(x, y, w, h)`` in lipsync-frame pixels) of the lip-synced frames,
    seen through each motion frame's crop window, into the motion frames. ``rois``, when given,
    has one ROI (or None: that frame is not blended) per motion frame and replaces ``roi``; a
    negative ``feather`` is then worked out per frame. Returns a new float32 array shaped like
    ``motion_frames``."""
    base = np.asarray(motion_frames, dtype=np.float32)
    synced = np.asarray(lipsync_frames, dtype=np.float32)
    if base.ndim != 4 or base.shape[-1] != 3:
        raise InputError(f"motion_frames must be [N, H, W, 3], got shape {base.shape}")
    if synced.ndim != 4 or synced.shape[-1] != 3 or synced.shape[0] not in (1, base.shape[0]):
        raise InputError(
            f"lipsync_frames must be 1 frame or one per motion frame ({base.shape[0]}), got shape {synced.shape}"
        )
    n, oh, ow = base.shape[:3]
    if rois is None:
        rois = [roi] * n
    elif len(rois) != n:
        raise InputError(f"{len(rois)} mouth ROIs for {n} motion frames")
    for r in rois:
        if r is not None and (int(r[2]) <= 0 or int(r[3]) <= 0):
            raise InputError(f"mouth ROI must have a positive size, got {int(r[2])}x{int(r[3])}")
    out = base.copy()
    sh, sw = synced.shape[1:3]
    curve = motion.ZoomCurve(mode, strength, int(frames))
    tight = motion.tightest_window_w(strength, sw, sh, ow, oh)
    renderer = None
    for k in range(n):
        if rois[k] is None:
            continue
        rx, ry, rw, rh = (int(v) for v in rois[k])
        fk = auto_feather(rw, rh) if int(feather) < 0 else int(feather)
        if renderer is None or synced.shape[0] > 1:
            renderer = motion.Renderer(synced[min(k, synced.shape[0] - 1)], ow, oh, bg, tight, lazy=True)
        win = motion.crop_window(curve.zoom(int(chunk_start) + k), sw, sh, ow, oh, centre)
        sx, sy = ow / win.w, oh / win.h
        rect = ((rx - win.x) * sx, (ry - win.y) * sy, (rx + rw - win.x) * sx, (ry + rh - win.y) * sy)
        if not all(math.isfinite(v) for v in rect):
            continue
        blend_rect(out[k], lambda rows, cols: renderer.render(win, rows, cols), rect, fk * sx, fk * sy)
    return out
