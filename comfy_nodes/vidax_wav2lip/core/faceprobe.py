"""Face geometry: the ``vidax_face`` report of VIDAX_FaceProbe, from detector boxes or, as a
recorded fallback, from the image size.

Owns: the report's shape (docs/COMFYUI_INTERFACE.md, "VIDAX_FaceProbe"), the mouth ROI of a
detected face (the lower half of its box), and the size heuristic's normative integer formulas
("Face box and mouth ROI"), which the Rust faceprobe computes identically. Must not: run a
detector (the node hands in the boxes the pack's S3FD found, padded as VIDAX_Wav2Lip pads them).
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


METHOD_S3FD = "s3fd"
METHOD_SIZE = "size_heuristic"
REPORT_VERSION = 2


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


def mouth_of(face):
    """The mouth ROI of a detected face: the lower half of its box (the half Wav2Lip regenerates:
    the network's input masks exactly that half)."""
    off = face.h // 2
    return Box(face.x, face.y + off, face.w, face.h - off)


@dataclass(frozen=True)
class FrameFace:
    """One frame's result: ``face`` None when no face was found."""

    face: object = None
    mouth: object = None
    score: object = None

    def as_dict(self):
        if self.face is None:
            return {"found": False}
        return {
            "found": True,
            "face_box": self.face.as_dict(),
            "mouth_roi": self.mouth.as_dict(),
            "score": None if self.score is None else float(self.score),
        }


@dataclass(frozen=True)
class FaceReport:
    method: str
    fallback_reason: object
    image_w: int
    image_h: int
    faces: tuple

    @property
    def first(self):
        """The first frame's face, else the first face found in a later frame, else None."""
        return next((f for f in self.faces if f.face is not None), None)

    @property
    def first_index(self):
        return next((k for k, f in enumerate(self.faces) if f.face is not None), None)

    @property
    def found(self):
        """Every frame has a face (for one frame: that frame has one)."""
        return bool(self.faces) and all(f.face is not None for f in self.faces)

    def as_dict(self):
        first = self.first
        face = None if first is None else first.face
        mouth = None if first is None else first.mouth
        return {
            "version": REPORT_VERSION,
            "method": self.method,
            "fallback_reason": self.fallback_reason,
            "image": {"w": int(self.image_w), "h": int(self.image_h)},
            "found": self.found,
            "faces": [f.as_dict() for f in self.faces],
            "face_box": None if face is None else face.as_dict(),
            "mouth_roi": None if mouth is None else mouth.as_dict(),
            "feather": 0 if mouth is None else auto_feather(mouth.w, mouth.h),
            "centre": None if face is None else [face.x + face.w / 2.0, face.y + face.h / 2.0],
        }

    def to_json(self):
        return json.dumps(self.as_dict())


def from_boxes(width, height, boxes, scores=None, method=METHOD_S3FD):
    """The report for detector boxes: one ``(x1, y1, x2, y2)`` (padded, half-open) or None per
    frame, and optionally one score (or None) per frame."""
    scores = list(scores) if scores is not None else [None] * len(boxes)
    faces = []
    for b, sc in zip(boxes, scores):
        if b is None:
            faces.append(FrameFace())
            continue
        x1, y1, x2, y2 = (int(v) for v in b[:4])
        face = Box(x1, y1, x2 - x1, y2 - y1)
        faces.append(FrameFace(face, mouth_of(face), sc))
    return FaceReport(method, None, int(width), int(height), tuple(faces))


def from_size(width, height, frames, reason):
    """The size heuristic for ``frames`` frames of one size, recorded as the fallback it is:
    ``method`` ``size_heuristic`` with ``reason``. An image too small for a face box has none."""
    try:
        meta = probe(width, height)
        one = FrameFace(meta.face, meta.mouth, None)
    except NoFaceError:
        one = FrameFace()
    return FaceReport(METHOD_SIZE, str(reason), int(width), int(height), tuple([one] * int(frames)))
