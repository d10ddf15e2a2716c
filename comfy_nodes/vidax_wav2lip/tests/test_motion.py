"""The motion chunk: the shared zoom vectors (same file as src/timeline/motion.rs' test), the
renderer ported from src/media/render.rs, chunking and smoothness."""

import json
import os

import numpy as np
import pytest

from vidax_wav2lip.core import motion
from vidax_wav2lip.core.errors import InputError

from .conftest import ZOOM_VECTORS


def load_vectors():
    if not os.path.isfile(ZOOM_VECTORS):
        pytest.skip(f"shared test vectors not found at {ZOOM_VECTORS} (package copied out of the repository)")
    with open(ZOOM_VECTORS) as fh:
        return json.load(fh)["cases"]


def test_shared_zoom_vectors():
    cases = load_vectors()
    assert len(cases) >= 12
    for v in cases:
        zoom = motion.ZoomCurve(v["mode"], v["strength"], v["frames"]).zoom(v["frame"])
        c = motion.crop_window(zoom, v["src_w"], v["src_h"], v["out_w"], v["out_h"], v["centre"])
        e = v["expected"]
        for what, got in (("zoom", zoom), ("x", c.x), ("y", c.y), ("w", c.w), ("h", c.h)):
            assert abs(got - e[what]) <= 1e-9, f"{v['name']}: {what} = {got}, expected {e[what]}"


def test_zoom_curves_as_the_rust_unit_test():
    zin = motion.ZoomCurve("zoom_in", 0.1, 11)
    assert zin.zoom(0) == 1.0 and abs(zin.zoom(5) - 1.05) < 1e-12 and abs(zin.zoom(10) - 1.1) < 1e-12
    assert abs(zin.zoom(99) - 1.1) < 1e-12
    zout = motion.ZoomCurve("zoom_out", 0.1, 11)
    assert abs(zout.zoom(0) - 1.1) < 1e-12 and zout.zoom(10) == 1.0
    assert motion.ZoomCurve("none", 0.1, 11).zoom(3) == 1.0
    for mode, start in (("zoom_in", 1.0), ("zoom_out", 1.1), ("none", 1.0)):
        for frames in (0, 1):
            c = motion.ZoomCurve(mode, 0.1, frames)
            assert abs(c.zoom(0) - start) < 1e-12 and abs(c.zoom(7) - start) < 1e-12
    for s in (-0.5, float("nan"), float("inf")):
        assert motion.ZoomCurve("zoom_out", s, 10).zoom(0) == 1.0
    with pytest.raises(InputError):
        motion.ZoomCurve("spin", 0.1, 10).zoom(0)


def test_crop_window_as_the_rust_unit_test():
    c = motion.crop_window(1.0, 1920, 1080, 854, 480)
    assert (c.x, c.y, c.w, c.h) == (-0.75, 0.0, 1921.5, 1080.0)
    c = motion.crop_window(2.0, 1920, 1080, 1920, 1080, (1000.25, 500.5))
    assert (c.x, c.y) == (520.25, 230.5)
    c = motion.crop_window(2.0, 1920, 1080, 1920, 1080, (1900.0, 10.0))
    assert (c.x, c.y) == (960.0, 0.0)
    for z in (0.0, -1.0, float("nan"), float("inf")):
        assert motion.crop_window(z, 0, 0, 0, 0, (float("nan"), 1.0)) == motion.crop_window(1.0, 1, 1, 1, 1)
    assert motion.centre_from_inputs(-1.0, -1.0) is None
    assert motion.centre_from_inputs(10.0, -1.0) is None
    assert motion.centre_from_inputs(10.5, 20.0) == (10.5, 20.0)


def grey(w, h, v):
    return np.full((h, w, 3), v, dtype=np.float32)


def test_identity_window_reproduces_the_source():
    rng = np.random.default_rng(1)
    src = rng.random((8, 16, 3), dtype=np.float32)
    r = motion.Renderer(src, 16, 8, (0, 0, 0), 16.0)
    out = r.render(motion.CropWindow(0.0, 0.0, 16.0, 8.0))
    assert np.array_equal(out, src)


def test_outside_the_source_is_background():
    r = motion.Renderer(grey(4, 4, 1.0), 8, 4, np.array([0.0, 0.5, 0.25]), 8.0)
    out = r.render(motion.CropWindow(-2.0, 0.0, 8.0, 4.0))
    assert np.allclose(out[0, :, 0], [0, 0, 1, 1, 1, 1, 0, 0])
    assert np.allclose(out[0, 0], [0.0, 0.5, 0.25])


def test_half_pixel_shift_interpolates():
    row = np.array([16.0, 116.0, 216.0, 216.0], dtype=np.float32) / 255.0
    src = np.repeat(np.repeat(row[None, :, None], 2, axis=0), 3, axis=2)
    r = motion.Renderer(src, 2, 2, (0, 0, 0), 2.0)
    out = r.render(motion.CropWindow(0.5, 0.0, 2.0, 2.0))
    assert np.allclose(out[0, :, 0] * 255.0, [66.0, 166.0], atol=1e-4)


def test_prescale_keeps_geometry():
    w, h = 400, 40
    ramp = (16.0 + np.arange(w, dtype=np.float32) * 0.5) / 255.0
    src = np.repeat(np.repeat(ramp[None, :, None], h, axis=0), 3, axis=2)
    r = motion.Renderer(src, 40, 4, (0, 0, 0), 400.0)
    assert r.prescaled and abs(r.factor - 10.0) < 1e-12
    out = r.render(motion.CropWindow(0.0, 0.0, 400.0, 40.0))
    for j in range(2, 38):
        want = 16.0 + (10.0 * j + 4.5) * 0.5
        assert abs(out[2, j, 0] * 255.0 - want) <= 1.0, (j, out[2, j, 0] * 255.0, want)


def textured(h, w, seed=0):
    """Smooth random texture (no single-pixel detail, so sub-pixel motion shows as small diffs)."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 8 + 2, w // 8 + 2, 3), dtype=np.float32)
    from vidax_wav2lip.core.image import resize_bilinear

    return resize_bilinear(small, h, w)


def test_lazy_region_render_equals_the_full_render():
    src = textured(180, 320)
    win = motion.crop_window(1.07, 320, 180, 142, 80, (150.3, 90.7))
    tight = motion.tightest_window_w(0.1, 320, 180, 142, 80)
    full = motion.Renderer(src, 142, 80, (0.1, 0.2, 0.3), tight).render(win)
    lazy = motion.Renderer(src, 142, 80, (0.1, 0.2, 0.3), tight, lazy=True)
    assert np.array_equal(lazy.render(win), full)
    assert np.array_equal(lazy.render(win, rows=(10, 47), cols=(33, 90)), full[10:47, 33:90])


@pytest.mark.parametrize("mode", ["zoom_in", "zoom_out", "none"])
def test_chunks_join_into_the_whole(mode):
    src = textured(90, 160)[None]
    whole = motion.render_chunk(src, mode, 0.1, 20, 0, 20, 64, 36)
    a = motion.render_chunk(src, mode, 0.1, 20, 0, 7, 64, 36)
    b = motion.render_chunk(src, mode, 0.1, 20, 7, 13, 64, 36)
    assert whole.shape == (20, 36, 64, 3) and whole.dtype == np.float32
    assert np.array_equal(np.concatenate([a, b]), whole)
    if mode == "none":
        assert all(np.array_equal(whole[0], f) for f in whole)


def test_chunk_frames_follow_the_curve_and_window():
    src = textured(90, 160)
    out = motion.render_chunk(src[None], "zoom_in", 0.5, 10, 9, 1, 160, 90)
    win = motion.crop_window(1.5, 160, 90, 160, 90)
    tight = motion.tightest_window_w(0.5, 160, 90, 160, 90)
    assert np.array_equal(out[0], motion.Renderer(src, 160, 90, (0, 0, 0), tight).render(win))
    # Width/height 0 = the source size; a source per output frame.
    two = np.stack([src, src[::-1]])
    out = motion.render_chunk(two, "none", 0.0, 2, 0, 2, 0, 0)
    assert out.shape == (2, 90, 160, 3)
    assert np.array_equal(out[0], src) and np.array_equal(out[1], src[::-1])
    with pytest.raises(InputError):
        motion.render_chunk(np.stack([src] * 3), "none", 0.0, 2, 0, 2, 0, 0)


def test_slow_zoom_moves_smoothly():
    # 0.05 over 300 frames: sub-pixel steps. Integer snapping (ffmpeg's zoompan) would show as
    # runs of identical frames and jumps; here every frame moves, by about the same amount.
    src = textured(270, 480, seed=4)
    out = motion.render_chunk(src[None], "zoom_in", 0.05, 300, 100, 40, 240, 136)
    diffs = np.array([np.abs(out[k + 1] - out[k]).mean() for k in range(len(out) - 1)])
    assert (diffs > 0).all()
    assert diffs.max() < 2.0 * np.median(diffs)


def test_square_source_in_wide_output_is_pillarboxed_with_the_background():
    src = grey(100, 100, 0.5)
    out = motion.render_chunk(src[None], "none", 0.0, 1, 0, 1, 160, 90, None, np.array([1.0, 0.0, 0.0]))
    assert np.allclose(out[0, 45, 0], [1.0, 0.0, 0.0])
    assert np.allclose(out[0, 45, 80], [0.5, 0.5, 0.5])
