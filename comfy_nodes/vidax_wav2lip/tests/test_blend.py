"""Face probe formulas and the feathered mouth blend (nothing outside the ROI changes)."""

import json

import numpy as np
import pytest

from vidax_wav2lip.core import blend, faceprobe, motion
from vidax_wav2lip.core.errors import InputError, NoFaceError

from .test_motion import textured


@pytest.mark.parametrize(
    "w,h,face,mouth,feather",
    [
        (1920, 1080, (420, 0, 1080, 1080), (690, 720, 540, 360), 45),
        (1024, 1024, (0, 0, 1024, 1024), (256, 683, 512, 341), 42),
        (768, 1024, (0, 0, 768, 768), (192, 512, 384, 256), 32),
        (3, 3, (0, 0, 3, 3), (1, 2, 1, 1), 1),
        (853, 480, (186, 0, 480, 480), (306, 320, 240, 160), 20),
    ],
)
def test_face_box_and_mouth_roi_from_the_size(w, h, face, mouth, feather):
    meta = faceprobe.probe(w, h)
    assert (meta.face.x, meta.face.y, meta.face.w, meta.face.h) == face
    assert (meta.mouth.x, meta.mouth.y, meta.mouth.w, meta.mouth.h) == mouth
    assert meta.feather == feather
    # Square, inside the image; the ROI is the bottom third of the box, middle half.
    f, m = meta.face, meta.mouth
    assert f.w == f.h and 0 <= f.x and f.x + f.w <= w and 0 <= f.y and f.y + f.h <= h
    assert m.y + m.h == f.y + f.h and m.h == f.h // 3
    assert f.x <= m.x and m.x + m.w <= f.x + f.w
    d = json.loads(meta.to_json())
    assert list(d) == ["version", "method", "image", "face_box", "mouth_roi", "feather", "centre"]
    assert d["face_box"] == {"x": face[0], "y": face[1], "w": face[2], "h": face[3]}
    assert d["centre"] == [face[0] + face[2] / 2, face[1] + face[3] / 2]


def test_face_probe_on_a_tiny_image_is_no_face():
    with pytest.raises(NoFaceError, match="VIDAX_NO_FACE"):
        faceprobe.probe(2, 100)


def test_ramp():
    r = blend.ramp(10, 2.0, 8.0, 2.0)
    u = np.arange(10) + 0.5
    assert (r[(u <= 2.0) | (u >= 8.0)] == 0).all()
    assert r[4] == 1.0 and r[5] == 1.0
    assert 0 < r[2] < r[3] < 1
    hard = blend.ramp(10, 2.0, 8.0, 0)
    assert list(hard) == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    # A sub-pixel rectangle: only centres strictly inside.
    assert list(blend.ramp(6, 1.5, 3.5, 0)) == [0, 0, 1, 0, 0, 0]


def outside_roi_mask(out_w, out_h, rect):
    """True for pixels whose centre is not strictly inside the rectangle."""
    x0, y0, x1, y1 = rect
    u = np.arange(out_w) + 0.5
    v = np.arange(out_h) + 0.5
    ix = (u > x0) & (u < x1)
    iy = (v > y0) & (v < y1)
    return ~(iy[:, None] & ix[None, :])


@pytest.mark.parametrize("mode,strength,frames,chunk_start", [("none", 0.0, 1, 0), ("zoom_in", 0.1, 40, 0), ("zoom_out", 0.3, 40, 20), ("zoom_in", 0.5, 40, 35)])
def test_mouth_blend_leaves_every_pixel_outside_the_feathered_roi_unchanged(mode, strength, frames, chunk_start):
    sw, sh, ow, oh = 320, 180, 142, 80
    still = textured(sh, sw, seed=1)
    n = 5
    base = motion.render_chunk(still[None], mode, strength, frames, chunk_start, n, ow, oh)
    rng = np.random.default_rng(2)
    synced = rng.random((n, sh, sw, 3), dtype=np.float32)  # differs everywhere from the still
    meta = faceprobe.probe(sw, sh)
    m = meta.mouth
    roi = (m.x, m.y, m.w, m.h)
    out = blend.mouth_blend(base, synced, roi, -1, mode, strength, frames, chunk_start)
    assert out.shape == base.shape and out.dtype == np.float32
    curve = motion.ZoomCurve(mode, strength, frames)
    for k in range(n):
        win = motion.crop_window(curve.zoom(chunk_start + k), sw, sh, ow, oh)
        sx, sy = ow / win.w, oh / win.h
        rect = ((m.x - win.x) * sx, (m.y - win.y) * sy, (m.x + m.w - win.x) * sx, (m.y + m.h - win.y) * sy)
        outside = outside_roi_mask(ow, oh, rect)
        assert np.array_equal(out[k][outside], base[k][outside]), k
        inside = ~outside
        assert inside.sum() > 0
        assert (np.abs(out[k][inside] - base[k][inside]).max(axis=-1) > 0).mean() > 0.9


def test_mouth_blend_of_the_unchanged_still_is_the_motion_frame_exactly():
    sw, sh = 320, 180
    still = textured(sh, sw, seed=5)
    base = motion.render_chunk(still[None], "zoom_in", 0.1, 30, 10, 6, 142, 80, (200.5, 60.25), np.array([0.1, 0.1, 0.1]))
    m = faceprobe.probe(sw, sh).mouth
    out = blend.mouth_blend(base, still[None], (m.x, m.y, m.w, m.h), -1, "zoom_in", 0.1, 30, 10, (200.5, 60.25), np.array([0.1, 0.1, 0.1]))
    assert np.array_equal(out, base)


def test_mouth_blend_centre_of_the_roi_takes_the_lipsynced_pixels():
    sw = sh = 200
    still = np.zeros((sh, sw, 3), np.float32)
    synced = np.ones((1, sh, sw, 3), np.float32)
    base = motion.render_chunk(still[None], "none", 0.0, 1, 0, 1, sw, sh)
    out = blend.mouth_blend(base, synced, (50, 120, 100, 60), 10, "none", 0.0, 1, 0)
    assert np.allclose(out[0, 150, 100], 1.0)  # deep inside: fully lip-synced
    assert 0.0 < out[0, 122, 100, 0] < 1.0  # in the feather band
    assert (out[0, :120] == 0).all() and (out[0, 180:] == 0).all()
    assert (out[0, :, :50] == 0).all() and (out[0, :, 150:] == 0).all()


def test_mouth_blend_input_checks():
    base = np.zeros((3, 10, 10, 3), np.float32)
    with pytest.raises(InputError):
        blend.mouth_blend(base, np.zeros((2, 10, 10, 3), np.float32), (1, 1, 4, 4), -1, "none", 0, 1, 0)
    with pytest.raises(InputError):
        blend.mouth_blend(base, np.zeros((1, 10, 10, 3), np.float32), (1, 1, 0, 4), -1, "none", 0, 1, 0)


def test_mouth_blend_with_a_lipsync_report_blends_each_frame_around_its_own_box():
    sw, sh, ow, oh = 320, 180, 160, 90
    mode, strength, frames, chunk_start, centre = "zoom_in", 0.2, 30, 7, (170.0, 80.0)
    still = textured(sh, sw, seed=7)
    n = 4
    base = motion.render_chunk(still[None], mode, strength, frames, chunk_start, n, ow, oh, centre)
    synced = 1.0 - np.repeat(still[None], n, axis=0)  # differs from the still everywhere
    boxes = [[100, 40, 180, 130], None, [140, 60, 200, 110], [120, 50, 190, 121]]
    report = {"version": 1, "frames": n, "boxes": boxes}
    rois = blend.rois_from_report(report, n)
    assert rois == [(100, 85, 80, 45), None, (140, 85, 60, 25), (120, 85, 70, 36)]  # lower halves
    out = blend.mouth_blend(base, synced, (0, 0, 1, 1), -1, mode, strength, frames, chunk_start, centre, rois=rois)
    curve = motion.ZoomCurve(mode, strength, frames)
    assert np.array_equal(out[1], base[1])  # null box: not lip-synced, not blended
    for k in (0, 2, 3):
        x, y, w, h = rois[k]
        win = motion.crop_window(curve.zoom(chunk_start + k), sw, sh, ow, oh, centre)
        sx, sy = ow / win.w, oh / win.h
        rect = ((x - win.x) * sx, (y - win.y) * sy, (x + w - win.x) * sx, (y + h - win.y) * sy)
        outside = outside_roi_mask(ow, oh, rect)
        assert np.array_equal(out[k][outside], base[k][outside]), k
        assert (np.abs(out[k][~outside] - base[k][~outside]).max(axis=-1) > 0).mean() > 0.9, k
    # The same frames with the fixed ROI of frame 0 differ: the boxes really were per frame.
    fixed = blend.mouth_blend(base, synced, rois[0], -1, mode, strength, frames, chunk_start, centre)
    assert not np.array_equal(fixed[2], out[2]) and not np.array_equal(fixed[1], out[1])


def test_lipsync_report_checks():
    good = {"version": 1, "boxes": [[0, 0, 4, 4], None]}
    assert blend.rois_from_report(good, 2) == [(0, 2, 4, 2), None]
    for bad, n, msg in [
        ({"version": 1, "boxes": [[0, 0, 4, 4]]}, 2, "1 frames"),
        ({"version": 2, "boxes": [None]}, 1, "version"),
        ({"boxes": [None]}, 1, "version"),
        ("not a report", 1, "VIDAX_Wav2Lip"),
        ({"version": 1, "boxes": [[4, 0, 4, 4]]}, 1, "empty"),
        ({"version": 1, "boxes": [[0, 0, 4]]}, 1, "box 0"),
    ]:
        with pytest.raises(InputError, match=msg):
            blend.rois_from_report(bad, n)
