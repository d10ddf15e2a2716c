"""Frame patches against a reference picture (VIDAX_SavePatches).

Owns: the 8-bit quantisation (rounding, so a picture loaded as ``v / 255`` gives back exactly
``v``), the box of the pixels a frame changes against the reference, the patch cut from it, and
the PNG ``oFFs`` chunk that carries the patch's position (spliced into the PNG bytes after
``IHDR``: Pillow's ``PngInfo`` silently drops public chunks it does not know, ``oFFs`` among
them). Guarantee: laying ``patch`` at ``(x0, y0)`` over ``quantise(reference)`` gives exactly
``quantise(frame)``. Encoding the pixels (Pillow) is the node's business; this module needs numpy
and the standard library only.
"""

import struct
import zlib

import numpy as np

from .errors import InputError
from .image import to_uint8

OFFS_UNIT_PIXELS = 0  # oFFs unit specifier: 0 = pixels, 1 = micrometres
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def as_batch(x, what):
    """An IMAGE value ``[N, H, W, C]`` (or one picture ``[H, W, C]``), ``C >= 3``, as numpy
    without a copy."""
    a = np.asarray(x)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] < 3:
        raise InputError(f"{what} must be an IMAGE batch [frames, height, width, 3], got shape {a.shape}")
    return a


def quantise(x):
    """The first 3 channels of 0..1 floats ``[..., C]`` -> uint8, rounded:
    ``clip(rint(x * 255), 0, 255)``."""
    a = np.asarray(x)
    if a.ndim < 1 or a.shape[-1] < 3:
        raise InputError(f"an image needs at least 3 channels, got shape {a.shape}")
    return to_uint8(a[..., :3])


def check_reference(images_shape, reference_shape):
    """``images`` ``[N, H, W, C]`` and ``reference`` ``[1, H, W, C]``: one picture of the frames' size."""
    h, w = images_shape[1:3]
    if reference_shape[0] != 1:
        raise InputError(f"reference must be a batch of exactly 1 picture, got {reference_shape[0]}")
    rh, rw = reference_shape[1:3]
    if (rh, rw) != (h, w):
        raise InputError(f"reference is {rw}x{rh} but images are {w}x{h}: they must be the same size")


def changed_box(frame_u8, ref_u8):
    """The bounding box ``(x0, y0, x1, y1)`` (``x1``, ``y1`` exclusive) of the pixels where any
    channel of ``frame_u8`` differs from ``ref_u8`` (both uint8 ``[H, W, 3]``); None when none does."""
    mask = np.any(frame_u8 != ref_u8, axis=2)
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def patch_box(frame_u8, ref_u8):
    """``changed_box``, or ``(0, 0, 1, 1)`` for a frame that equals the reference (the 1x1 patch
    at the origin: an empty PNG cannot be written)."""
    box = changed_box(frame_u8, ref_u8)
    return (0, 0, 1, 1) if box is None else box


def cut_patch(frame_u8, ref_u8):
    """-> (patch uint8 ``[y1 - y0, x1 - x0, 3]``, x0, y0, changed): the frame inside its
    ``patch_box``; ``changed`` is False for the 1x1 patch of an unchanged frame."""
    box = changed_box(frame_u8, ref_u8)
    x0, y0, x1, y1 = (0, 0, 1, 1) if box is None else box
    return np.ascontiguousarray(frame_u8[y0:y1, x0:x1]), x0, y0, box is not None


def offs_chunk_data(x, y):
    """The 9 data bytes of a PNG ``oFFs`` chunk: x and y as signed 32-bit big-endian, then the
    unit byte 0 (pixels)."""
    return struct.pack(">iiB", int(x), int(y), OFFS_UNIT_PIXELS)


def png_chunk(cid, data):
    """One PNG chunk: length, type, data, CRC-32 of type + data."""
    return struct.pack(">I", len(data)) + cid + data + struct.pack(">I", zlib.crc32(cid + data) & 0xFFFFFFFF)


def with_offs(png, x, y):
    """The PNG bytes ``png`` with an ``oFFs`` chunk for ``(x, y)`` inserted right after ``IHDR``
    (so before any ``IDAT``, as the PNG specification requires)."""
    end = len(PNG_SIGNATURE) + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    if png[:len(PNG_SIGNATURE)] != PNG_SIGNATURE or png[12:16] != b"IHDR" or png[8:12] != struct.pack(">I", 13):
        raise ValueError("not a PNG that starts with its IHDR chunk")
    return png[:end] + png_chunk(b"oFFs", offs_chunk_data(x, y)) + png[end:]


def paste(base_u8, patch_u8, x0, y0):
    """A copy of ``base_u8`` with ``patch_u8`` laid at ``(x0, y0)`` (what the engine does)."""
    out = np.array(base_u8, dtype=np.uint8, copy=True)
    h, w = patch_u8.shape[:2]
    out[y0:y0 + h, x0:x0 + w] = patch_u8
    return out
