"""The face box and mouth ROI of the anime/mouth-blend path, from the image size alone.

Owns: the normative integer formulas of docs/COMFYUI_INTERFACE.md ("Face box and mouth ROI"),
which the Rust faceprobe computes identically, and the face_meta JSON. Must not: look at pixels
(SPEC §6: deterministic from the image size; no detector in the core).
"""

import json
from dataclasses import dataclass

from .errors import NoFaceError


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    def as_dict(self):
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


@dataclass(frozen=True)
class FaceMeta:
    image_w: int
    image_h: int
    face: Box
    mouth: Box
    feather: int

    @property
    def centre(self):
        return (self.face.x + self.face.w / 2.0, self.face.y + self.face.h / 2.0)

    def as_dict(self):
        return {
            "version": 1,
            "method": "size_heuristic",
            "image": {"w": self.image_w, "h": self.image_h},
            "face_box": self.face.as_dict(),
            "mouth_roi": self.mouth.as_dict(),
            "feather": self.feather,
            "centre": [self.centre[0], self.centre[1]],
        }

    def to_json(self):
        return json.dumps(self.as_dict())


def auto_feather(mouth_w, mouth_h):
    return max(1, min(int(mouth_w), int(mouth_h)) // 8)


def probe(width, height):
    """Face box: the largest square, centred horizontally, top-anchored. Mouth ROI: the middle
    half of its width, its bottom third."""
    w, h = int(width), int(height)
    m = min(w, h)
    if m < 3:
        raise NoFaceError(f"image {w}x{h} is too small for a face box")
    face = Box((w - m) // 2, 0, m, m)
    mw, mh = m // 2, m // 3
    mouth = Box(face.x + (m - mw) // 2, face.y + m - mh, mw, mh)
    return FaceMeta(w, h, face, mouth, auto_feather(mw, mh))
