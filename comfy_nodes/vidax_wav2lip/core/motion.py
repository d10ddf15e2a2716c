"""The motion fallback's geometry and renderer, mirroring the Rust code.

Owns: the zoom curve and crop window of ``src/timeline/motion.rs`` (same formulas, same order of
floating-point operations, checked against ``fixtures/zoom_vectors.json`` by both test suites)
and a numpy port of ``src/media/render.rs``'s resampler (one-time prescale with the scale-aware
triangle filter, then bilinear or triangle taps per window, background outside the source).
Must not: round windows to whole pixels.

Coordinates are continuous source pixels: pixel ``k`` covers ``[k, k+1)``. A window
``(x, y, w, h)`` maps onto an ``out_w × out_h`` frame so that output pixel centre
``(ox + 0.5, oy + 0.5)`` samples source point ``(x + (ox + 0.5)·w/out_w, y + (oy + 0.5)·h/out_h)``.

Known differences to the Rust output (docs/COMFYUI_INTERFACE.md): Rust resamples Y'CbCr with
4:2:0 chroma at half the working resolution and rounds to 8 bits; this resamples RGB in float32.
"""

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError

MODES = ("zoom_in", "zoom_out", "none")
# Largest source-pixels-per-output-pixel step the bilinear path takes (render.rs BILINEAR_MAX_STEP).
BILINEAR_MAX_STEP = 1.25


@dataclass(frozen=True)
class CropWindow:
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class ZoomCurve:
    mode: str
    strength: float
    frames: int

    def zoom(self, i):
        """Zoom at frame ``i``: linear from frame 0 to ``frames - 1`` (zoom_in 1 -> 1+s, zoom_out
        1+s -> 1, none 1), clamped to [1, 1+s]; past the end the last value; with ``frames <= 1``
        the start value. Bad strengths act as 0."""
        s = float(self.strength)
        s = s if math.isfinite(s) and s > 0.0 else 0.0
        last = max(int(self.frames) - 1, 0)
        i = max(int(i), 0)
        if self.mode == "none":
            z = 1.0
        elif self.mode == "zoom_in":
            z = 1.0 if last == 0 else 1.0 + s * (float(min(i, last)) / float(last))
        elif self.mode == "zoom_out":
            z = 1.0 + s if last == 0 else 1.0 + s * (float(last - min(i, last)) / float(last))
        else:
            raise InputError(f"motion mode must be one of {MODES}, got {self.mode!r}")
        return min(max(z, 1.0), 1.0 + s)


def _place(c, length, src):
    if length <= src:
        return min(max(c - length / 2.0, 0.0), src - length)
    return (src - length) / 2.0


def crop_window(zoom, src_w, src_h, out_w, out_h, centre=None):
    """The window for ``zoom`` when a ``src_w × src_h`` source is shown in ``out_w × out_h``:
    the output's aspect; at zoom 1 the smallest such window containing the whole source; sides
    divided by the zoom; centred on ``centre`` (default the source centre) and kept inside the
    source where it fits, centred on the source where it does not. Nothing is rounded."""
    z = float(zoom)
    z = z if math.isfinite(z) and z > 0.0 else 1.0
    sw, sh = max(int(src_w), 1), max(int(src_h), 1)
    ow, oh = max(int(out_w), 1), max(int(out_h), 1)
    if sw * oh >= sh * ow:
        w0, h0 = float(sw), float(sw) * float(oh) / float(ow)
    else:
        w0, h0 = float(sh) * float(ow) / float(oh), float(sh)
    w, h = w0 / z, h0 / z
    swf, shf = float(sw), float(sh)
    cx, cy = swf / 2.0, shf / 2.0
    if centre is not None:
        ccx, ccy = float(centre[0]), float(centre[1])
        if math.isfinite(ccx) and math.isfinite(ccy):
            cx, cy = ccx, ccy
    return CropWindow(_place(cx, w, swf), _place(cy, h, shf), w, h)


def centre_from_inputs(centre_x, centre_y):
    """Node inputs -> centre: both must be finite and >= 0, else None (the source centre)."""
    cx, cy = float(centre_x), float(centre_y)
    if math.isfinite(cx) and math.isfinite(cy) and cx >= 0.0 and cy >= 0.0:
        return (cx, cy)
    return None


class AxisTaps:
    """Filter taps for output samples ``lo..hi`` of one axis (render.rs ``AxisTaps``): a triangle
    of radius ``max(step, 1)`` (or 1, the bilinear path), normalised over all its taps; the part
    falling outside the source is the weight of the background."""

    def __init__(self, origin, extent, n_out, n_src, bilinear, lo=0, hi=None):
        hi = n_out if hi is None else hi
        step = extent / n_out
        radius = 1.0 if bilinear else max(step, 1.0)
        j = np.arange(lo, hi, dtype=np.float64)
        c = origin + (j + 0.5) * step - 0.5
        taps = int(math.ceil(2.0 * radius)) + 2
        kmin = np.floor(c - radius).astype(np.int64) + 1
        k = kmin[:, None] + np.arange(taps, dtype=np.int64)[None, :]
        wgt = 1.0 - np.abs(k - c[:, None]) / radius
        wgt = np.where(wgt > 0.0, wgt, 0.0)
        total = wgt.sum(axis=1)
        outside = (k < 0) | (k >= n_src)
        bg = np.where(outside, wgt, 0.0).sum(axis=1)
        inside = np.where(outside, 0.0, wgt)
        ok = total > 0.0
        inside[ok] /= total[ok, None]
        bg[ok] /= total[ok]
        inside[~ok] = 0.0
        bg[~ok] = 1.0
        used = inside.any(axis=0)
        self.idx = np.clip(k, 0, max(n_src - 1, 0))[:, used]
        self.w = inside[:, used].astype(np.float32)
        self.bg = bg.astype(np.float32)
        self.n = hi - lo

    def span(self):
        """(first, last + 1) source index with a non-zero weight, or None."""
        if self.idx.size == 0 or not (self.w > 0).any():
            return None
        sel = self.idx[self.w > 0]
        return int(sel.min()), int(sel.max()) + 1


def _apply_rows(img, taps, bg, offset=0):
    """``img [H', W, C]`` (source rows ``offset..``) -> ``[n, W, C]``."""
    out = np.empty((taps.n,) + img.shape[1:], dtype=np.float32)
    out[...] = taps.bg[:, None, None] * bg[None, None, :]
    for t in range(taps.w.shape[1]):
        out += taps.w[:, t, None, None] * img[taps.idx[:, t] - offset]
    return out


def _apply_cols(img, taps, bg, offset=0):
    """``img [R, W', C]`` (source columns ``offset..``) -> ``[R, n, C]``."""
    out = np.empty((img.shape[0], taps.n, img.shape[2]), dtype=np.float32)
    out[...] = taps.bg[None, :, None] * bg[None, None, :]
    for t in range(taps.w.shape[1]):
        out += taps.w[None, :, t, None] * img[:, taps.idx[:, t] - offset]
    return out


def _clip_span(span, n):
    if span is None:
        return 0, 0
    return max(0, span[0]), min(n, span[1])


def resample(src, win, out_w, out_h, bg, bilinear=False, rows=None, cols=None):
    """Samples ``src [H, W, C]`` through ``win`` into output rows ``rows=(lo, hi)`` and columns
    ``cols`` of an ``out_w × out_h`` frame (default: all), with the triangle filter (radius 1
    when ``bilinear``). Only the source pixels the taps touch are read."""
    sh, sw = src.shape[:2]
    r0, r1 = rows if rows is not None else (0, out_h)
    c0, c1 = cols if cols is not None else (0, out_w)
    bg = np.asarray(bg, dtype=np.float32)
    ty = AxisTaps(win.y, win.h, out_h, sh, bilinear, r0, r1)
    tx = AxisTaps(win.x, win.w, out_w, sw, bilinear, c0, c1)
    ya, yb = _clip_span(ty.span(), sh)
    xa, xb = _clip_span(tx.span(), sw)
    if yb <= ya or xb <= xa:
        out = np.empty((r1 - r0, c1 - c0, src.shape[2]), dtype=np.float32)
        out[...] = bg
        return out
    block = np.asarray(src[ya:yb, xa:xb], dtype=np.float32)
    # Clamped indices of zero-weight taps may fall outside the block: point them at its edge.
    ty.idx = np.clip(ty.idx, ya, yb - 1)
    tx.idx = np.clip(tx.idx, xa, xb - 1)
    # Columns first on the rows the vertical taps read (render.rs' general path order; the
    # result is the same separable sum either way).
    tmp = _apply_cols(block, tx, bg, xa)
    return _apply_rows(tmp, ty, bg, ya)


class Renderer:
    """Renders windows of one source picture (render.rs ``Renderer``): the source is kept at a
    working resolution where the tightest window (``min_window_w`` source pixels wide) is seen at
    most 1:1, shrunk once with the area-like triangle filter when the source is larger; every
    window is then sampled from that working image (bilinear while the step is at most 1.25).

    With ``lazy=True`` the working image is not built up front: each render computes only the
    working pixels its output region needs (for sources that change every frame)."""

    def __init__(self, src, out_w, out_h, bg, min_window_w, lazy=False):
        self.src = np.asarray(src, dtype=np.float32)
        self.out_w, self.out_h = int(out_w), int(out_h)
        self.bg = np.asarray(bg, dtype=np.float32)
        sh, sw = self.src.shape[:2]
        factor = max(float(min_window_w) / float(self.out_w), 1.0)
        self.prescaled = factor > 1.0 + 1e-9
        self.factor = factor  # as render.rs: windows are scaled by it even when nothing was shrunk
        if self.prescaled:
            self.work_w = max(int(math.ceil(sw / factor)), 1)
            self.work_h = max(int(math.ceil(sh / factor)), 1)
            self.shrink_win = CropWindow(0.0, 0.0, self.work_w * factor, self.work_h * factor)
        else:
            self.work_w, self.work_h = sw, sh
        self.work = None
        if not lazy:
            self.work = self._working(None, None)

    def _working(self, rows, cols):
        """Working-image pixels ``rows × cols`` (None = all)."""
        if not self.prescaled:
            if rows is None and cols is None:
                return self.src
            r0, r1 = rows if rows is not None else (0, self.work_h)
            c0, c1 = cols if cols is not None else (0, self.work_w)
            return self.src[r0:r1, c0:c1]
        return resample(self.src, self.shrink_win, self.work_w, self.work_h, self.bg, False, rows, cols)

    def render(self, win, rows=None, cols=None):
        """Output rows/columns (default all) of ``win`` (source coordinates) -> float32
        ``[rows, cols, 3]``."""
        k = self.factor
        lw = CropWindow(win.x / k, win.y / k, win.w / k, win.h / k)
        bilinear = lw.w / self.out_w <= BILINEAR_MAX_STEP and lw.h / self.out_h <= BILINEAR_MAX_STEP
        if self.work is not None:
            return resample(self.work, lw, self.out_w, self.out_h, self.bg, bilinear, rows, cols)
        r0, r1 = rows if rows is not None else (0, self.out_h)
        c0, c1 = cols if cols is not None else (0, self.out_w)
        ty = AxisTaps(lw.y, lw.h, self.out_h, self.work_h, bilinear, r0, r1)
        tx = AxisTaps(lw.x, lw.w, self.out_w, self.work_w, bilinear, c0, c1)
        ya, yb = _clip_span(ty.span(), self.work_h)
        xa, xb = _clip_span(tx.span(), self.work_w)
        if yb <= ya or xb <= xa:
            out = np.empty((r1 - r0, c1 - c0, 3), dtype=np.float32)
            out[...] = self.bg
            return out
        block = self._working((ya, yb), (xa, xb))
        ty.idx = np.clip(ty.idx, ya, yb - 1)
        tx.idx = np.clip(tx.idx, xa, xb - 1)
        tmp = _apply_cols(block, tx, self.bg, xa)
        return _apply_rows(tmp, ty, self.bg, ya)


def tightest_window_w(strength, src_w, src_h, out_w, out_h):
    """The narrowest window the curve asks for: what the Rust compositor prescales to."""
    s = float(strength)
    s = s if math.isfinite(s) and s > 0.0 else 0.0
    return crop_window(1.0 + s, src_w, src_h, out_w, out_h, None).w


def render_chunk(images, mode, strength, frames, chunk_start, chunk_frames, out_w, out_h, centre=None, bg=(0.0, 0.0, 0.0)):
    """Frames ``chunk_start .. chunk_start + chunk_frames`` of the zoom as float32
    ``[chunk_frames, out_h, out_w, 3]``. ``images`` is one source ``[1, H, W, 3]`` or one per
    output frame."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    chunk_frames = int(chunk_frames)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] not in (1, chunk_frames):
        raise InputError(
            f"image must be 1 frame or chunk_frames={chunk_frames} frames [N, H, W, 3], got shape {images.shape}"
        )
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    sh, sw = images.shape[1:3]
    out_w = int(out_w) or sw
    out_h = int(out_h) or sh
    curve = ZoomCurve(mode, strength, int(frames))
    tight = tightest_window_w(strength, sw, sh, out_w, out_h)
    out = np.empty((chunk_frames, out_h, out_w, 3), dtype=np.float32)
    renderer = None
    for k in range(chunk_frames):
        if renderer is None or images.shape[0] > 1:
            renderer = Renderer(images[min(k, images.shape[0] - 1)], out_w, out_h, bg, tight)
        win = crop_window(curve.zoom(int(chunk_start) + k), sw, sh, out_w, out_h, centre)
        out[k] = renderer.render(win)
    return out
