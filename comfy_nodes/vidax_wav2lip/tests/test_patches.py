"""VIDAX_SavePatches: rounding to 8 bits, the changed box, the 1x1 patch of an unchanged frame,
the oFFs chunk before IDAT, SaveImage's file naming, and patch-over-reference = frame.

The core tests need numpy only; the node tests write real PNGs with Pillow (skipped where it
does not import) into a temporary output folder behind a fake ``folder_paths`` module."""

import json
import os
import struct
import sys
import types
import zlib

import numpy as np
import pytest

from vidax_wav2lip import nodes
from vidax_wav2lip.core import patches
from vidax_wav2lip.core.errors import InputError

H, W = 32, 40


def reference_u8(seed=5):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def as_float(u8):
    """What ComfyUI's LoadImage makes of an 8-bit picture: v / 255 in float32."""
    return (u8.astype(np.float32) / 255.0).astype(np.float32)


def bump(u8, ys, xs, channel=None):
    """A copy with the given pixels changed by +1 code value (mod 256) in one or all channels."""
    out = u8.copy()
    sl = (ys, xs) if channel is None else (ys, xs, channel)
    out[sl] = (out[sl].astype(np.int32) + 1) % 256
    return out


def frames_and_boxes():
    """Frames with known changed boxes (x0, y0, x1, y1), None = unchanged."""
    ref = reference_u8()
    cases = []
    cases.append((ref.copy(), None))  # unchanged
    cases.append((bump(ref, 31, 39, channel=2), (39, 31, 40, 32)))  # bottom-right corner, blue only
    cases.append((bump(ref, slice(None), slice(None)), (0, 0, W, H)))  # every pixel
    sparse = bump(bump(ref, 9, 5, channel=0), 19, 16, channel=1)  # two corners of a box only
    cases.append((sparse, (5, 9, 17, 20)))
    cases.append((bump(ref, 0, 0), (0, 0, 1, 1)))  # top-left pixel: same box as unchanged, but changed
    block = ref.copy()
    block[2:31, 3:39] = 255 - block[2:31, 3:39]  # a filled rectangle (x 3..39, y 2..31); 255 - v != v
    cases.append((block, (3, 2, 39, 31)))
    return ref, cases


# ---- core ----


def test_quantise_rounds_where_saveimage_truncates():
    v = np.arange(256, dtype=np.float32)
    x = np.stack([v / 255.0, v / 255.0, v / 255.0], axis=-1).astype(np.float32)
    assert np.array_equal(patches.quantise(x), np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1))
    below = np.clip(x - np.float32(0.4 / 255.0), 0, 1)  # less than half a step under v / 255
    q = patches.quantise(below)
    assert np.array_equal(q[:, 0], np.arange(256, dtype=np.uint8))
    truncated = np.clip(255.0 * below, 0, 255).astype(np.uint8)  # ComfyUI SaveImage
    assert np.count_nonzero(truncated[:, 0] != q[:, 0]) == 255  # all but 0 lose a code value there
    assert patches.quantise(np.array([[-0.5, 1.7, 0.5 / 255.0 + 1e-4]], np.float32)).tolist() == [[0, 255, 1]]


def test_quantise_uses_the_first_three_channels():
    x = np.zeros((2, 2, 4), np.float32)
    x[..., 3] = 1.0
    x[..., 1] = 0.5
    q = patches.quantise(x)
    assert q.shape == (2, 2, 3) and q.dtype == np.uint8
    assert q[..., 1].tolist() == [[128, 128], [128, 128]] and q[..., 0].max() == 0 and q[..., 2].max() == 0
    with pytest.raises(InputError, match="3 channels"):
        patches.quantise(np.zeros((2, 2, 2), np.float32))


def test_changed_boxes_are_exact():
    ref, cases = frames_and_boxes()
    for k, (frame, box) in enumerate(cases):
        assert patches.changed_box(frame, ref) == box, k
        assert patches.patch_box(frame, ref) == (box or (0, 0, 1, 1)), k
        patch, x0, y0, changed = patches.cut_patch(frame, ref)
        x0b, y0b, x1b, y1b = box or (0, 0, 1, 1)
        assert (x0, y0, changed) == (x0b, y0b, box is not None), k
        assert patch.shape == (y1b - y0b, x1b - x0b, 3) and patch.flags["C_CONTIGUOUS"], k
        assert np.array_equal(patches.paste(ref, patch, x0, y0), frame), k
    # Through floats: the frames as LoadImage-like floats round back to the same boxes.
    ref_q = patches.quantise(as_float(ref))
    for k, (frame, box) in enumerate(cases):
        assert patches.changed_box(patches.quantise(as_float(frame)), ref_q) == box, k


def test_noise_under_half_a_code_value_is_no_change():
    ref = reference_u8()
    noisy = np.clip(as_float(ref) + np.float32(0.45 / 255.0) * np.sign(np.random.default_rng(1).standard_normal(ref.shape)), 0, 1)
    assert patches.changed_box(patches.quantise(noisy.astype(np.float32)), patches.quantise(as_float(ref))) is None


def test_offs_chunk_bytes_and_splice():
    assert patches.offs_chunk_data(17, 300) == bytes([0, 0, 0, 17, 0, 0, 1, 44, 0])
    assert patches.offs_chunk_data(-2, 0) == b"\xff\xff\xff\xfe" + b"\x00\x00\x00\x00" + b"\x00"
    ihdr = patches.png_chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0))
    rest = patches.png_chunk(b"IDAT", b"xyz") + patches.png_chunk(b"IEND", b"")
    png = patches.PNG_SIGNATURE + ihdr + rest
    out = patches.with_offs(png, 5, 7)
    assert [c for c, _ in png_chunks(out)] == [b"IHDR", b"oFFs", b"IDAT", b"IEND"]
    assert dict(png_chunks(out))[b"oFFs"] == struct.pack(">iiB", 5, 7, 0)
    with pytest.raises(ValueError):
        patches.with_offs(b"GIF89a" + bytes(40), 0, 0)


def test_reference_checks():
    patches.check_reference((3, H, W, 3), (1, H, W, 3))
    with pytest.raises(InputError, match=r"VIDAX_BAD_INPUT: reference is 41x32 but images are 40x32"):
        patches.check_reference((3, H, W, 3), (1, H, W + 1, 3))
    with pytest.raises(InputError, match="exactly 1 picture, got 2"):
        patches.check_reference((3, H, W, 3), (2, H, W, 3))


# ---- the node ----


def png_chunks(data):
    """(type, data) of every chunk, checking the signature, lengths and CRCs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, p = [], 8
    while p < len(data):
        (n,) = struct.unpack(">I", data[p:p + 4])
        cid, body = data[p + 4:p + 8], data[p + 8:p + 8 + n]
        (crc,) = struct.unpack(">I", data[p + 8 + n:p + 12 + n])
        assert crc == zlib.crc32(cid + body) & 0xFFFFFFFF, cid
        out.append((cid, body))
        p += 12 + n
    assert p == len(data) and out[-1] == (b"IEND", b"")
    return out


def fake_folder_paths(output_dir):
    """ComfyUI's folder_paths as far as SaveImage uses it (get_save_image_path without the
    %date% variables), recording its calls."""
    m = types.ModuleType("folder_paths")
    m.calls = []

    def get_output_directory():
        return output_dir

    def get_save_image_path(filename_prefix, out_dir, image_width=0, image_height=0):
        m.calls.append((filename_prefix, out_dir, image_width, image_height))
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        full = os.path.join(out_dir, subfolder)

        def numbered(name):
            prefix = name[:len(filename) + 1]
            try:
                digits = int(name[len(filename) + 1:].split("_")[0])
            except ValueError:
                digits = 0
            return digits, prefix

        try:
            counter = max(d for d, pre in map(numbered, os.listdir(full)) if pre[:-1] == filename and pre[-1:] == "_") + 1
        except ValueError:
            counter = 1
        except FileNotFoundError:
            os.makedirs(full, exist_ok=True)
            counter = 1
        return full, filename, counter, subfolder, filename_prefix

    m.get_output_directory = get_output_directory
    m.get_save_image_path = get_save_image_path
    return m


@pytest.fixture
def fake_output(tmp_path, monkeypatch):
    """A fake ComfyUI output folder (empty) behind ``import folder_paths``."""
    out = str(tmp_path / "output")
    os.makedirs(out)
    fp = fake_folder_paths(out)
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return fp


@pytest.fixture
def comfy_output(fake_output):
    pytest.importorskip("PIL", reason="Pillow writes the PNGs (ComfyUI has it)")
    return fake_output


def test_save_patches_writes_exact_patches_named_like_saveimage(comfy_output):
    from PIL import Image

    ref, cases = frames_and_boxes()
    out_dir = comfy_output.get_output_directory()
    os.makedirs(os.path.join(out_dir, "lip"))
    open(os.path.join(out_dir, "lip", "job1_00007_.png"), "wb").close()  # the counter goes on from 8
    open(os.path.join(out_dir, "lip", "other_00020_.png"), "wb").close()  # another prefix: ignored
    images = np.stack([as_float(f) for f, _ in cases])
    res = nodes.VIDAX_SavePatches().run(images, as_float(ref)[None], "lip/job1")

    assert comfy_output.calls == [("lip/job1", out_dir, W, H)]
    assert list(res) == ["ui"] and list(res["ui"]) == ["images", "vidax_patches"]
    assert json.loads(json.dumps(res["ui"])) == res["ui"]  # plain JSON
    names = [f"job1_{c:05}_.png" for c in range(8, 8 + len(cases))]
    assert res["ui"]["images"] == [{"filename": n, "subfolder": "lip", "type": "output"} for n in names]
    assert res["ui"]["vidax_patches"] == [{"width": W, "height": H, "frames": len(cases), "changed": len(cases) - 1}]

    for (frame, box), name in zip(cases, names):
        path = os.path.join(out_dir, "lip", name)
        with open(path, "rb") as fh:
            data = fh.read()
        chunks = png_chunks(data)
        kinds = [c for c, _ in chunks]
        assert kinds[:2] == [b"IHDR", b"oFFs"], (name, kinds)
        assert set(kinds[2:-1]) == {b"IDAT"} and kinds[-1] == b"IEND", (name, kinds)
        assert b"tRNS" not in kinds and b"eXIf" not in kinds
        x0, y0, x1, y1 = box or (0, 0, 1, 1)
        assert chunks[1][1] == struct.pack(">iiB", x0, y0, 0), name
        assert chunks[0][1] == struct.pack(">IIBBBBB", x1 - x0, y1 - y0, 8, 2, 0, 0, 0), name  # 8-bit RGB, not interlaced
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.size == (x1 - x0, y1 - y0)
            patch = np.asarray(im)
        assert np.array_equal(patches.paste(ref, patch, x0, y0), frame), name
    assert sorted(os.listdir(os.path.join(out_dir, "lip"))) == sorted(["job1_00007_.png", "other_00020_.png"] + names)


def test_save_patches_default_prefix_counts_from_one_and_continues(comfy_output):
    ref = reference_u8(9)
    frames = np.stack([as_float(ref), as_float(bump(ref, 4, 6))])
    prefix = nodes.VIDAX_SavePatches.INPUT_TYPES()["required"]["filename_prefix"][1]["default"]
    assert prefix == "vidax_patch"
    first = nodes.VIDAX_SavePatches().run(frames, as_float(ref)[None], prefix)
    again = nodes.VIDAX_SavePatches().run(frames[1:], as_float(ref)[None], prefix)
    assert [i["filename"] for i in first["ui"]["images"]] == ["vidax_patch_00001_.png", "vidax_patch_00002_.png"]
    assert [i["filename"] for i in again["ui"]["images"]] == ["vidax_patch_00003_.png"]
    assert first["ui"]["images"][0]["subfolder"] == ""
    assert first["ui"]["vidax_patches"] == [{"width": W, "height": H, "frames": 2, "changed": 1}]
    assert again["ui"]["vidax_patches"] == [{"width": W, "height": H, "frames": 1, "changed": 1}]


def test_float_reference_and_equal_frame_give_the_1x1_patch(comfy_output):
    from PIL import Image

    ref = reference_u8(11)
    ref_f = as_float(ref)
    frame = (ref.astype(np.float64) / 255.0).astype(np.float32)  # computed apart, same values
    frame += np.float32(0.3 / 255.0)  # and off by less than half a code value
    res = nodes.VIDAX_SavePatches().run(frame[None], ref_f[None], "still")
    assert res["ui"]["vidax_patches"][0]["changed"] == 0
    path = os.path.join(comfy_output.get_output_directory(), res["ui"]["images"][0]["filename"])
    with open(path, "rb") as fh:
        chunks = dict(png_chunks(fh.read()))
    assert chunks[b"oFFs"] == bytes(9)
    with Image.open(path) as im:
        assert im.size == (1, 1) and np.asarray(im)[0, 0].tolist() == ref[0, 0].tolist()


def test_save_patches_uses_three_channels_and_takes_one_picture_unbatched(comfy_output):
    ref = reference_u8(2)
    frame = bump(ref, slice(10, 12), slice(20, 23))
    rgba = np.concatenate([as_float(frame), np.full((H, W, 1), 0.5, np.float32)], axis=-1)
    ref_rgba = np.concatenate([as_float(ref), np.zeros((H, W, 1), np.float32)], axis=-1)
    res = nodes.VIDAX_SavePatches().run(rgba[None], ref_rgba, "x")  # reference as [H, W, C]
    path = os.path.join(comfy_output.get_output_directory(), res["ui"]["images"][0]["filename"])
    with open(path, "rb") as fh:
        assert dict(png_chunks(fh.read()))[b"oFFs"] == struct.pack(">iiB", 20, 10, 0)
    assert res["ui"]["vidax_patches"] == [{"width": W, "height": H, "frames": 1, "changed": 1}]


def test_save_patches_bad_inputs(fake_output):
    node = nodes.VIDAX_SavePatches()
    ref = as_float(reference_u8())[None]
    images = np.repeat(ref, 2, axis=0)
    with pytest.raises(InputError, match=r"reference is 40x31 but images are 40x32"):
        node.run(images, ref[:, :31], "p")
    with pytest.raises(InputError, match=r"reference is 40x32 but images are 39x32"):
        node.run(images[:, :, :39], ref, "p")
    with pytest.raises(InputError, match="exactly 1 picture, got 2"):
        node.run(images, images, "p")
    with pytest.raises(InputError, match="exactly 1 picture, got 0"):
        node.run(images, ref[:0], "p")
    with pytest.raises(InputError, match="empty batch"):
        node.run(images[:0], ref, "p")
    with pytest.raises(InputError, match="shape"):
        node.run(images[..., :2], ref, "p")
    assert fake_output.calls == [] and os.listdir(fake_output.get_output_directory()) == []


def test_save_patches_outside_comfyui_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "folder_paths", None)  # import folder_paths -> ImportError
    ref = as_float(reference_u8())[None]
    with pytest.raises(RuntimeError, match="inside ComfyUI"):
        nodes.VIDAX_SavePatches().run(ref, ref, "p")


def test_save_patches_takes_torch_tensors(comfy_output):
    torch = pytest.importorskip("torch")
    ref = reference_u8(4)
    frame = bump(ref, slice(7, 9), 30)
    res = nodes.VIDAX_SavePatches().run(torch.from_numpy(as_float(frame)[None]), torch.from_numpy(as_float(ref)[None]), "t")
    path = os.path.join(comfy_output.get_output_directory(), res["ui"]["images"][0]["filename"])
    with open(path, "rb") as fh:
        chunks = png_chunks(fh.read())
    assert chunks[1] == (b"oFFs", struct.pack(">iiB", 30, 7, 0))
    assert chunks[0][1][:8] == struct.pack(">II", 1, 2)
