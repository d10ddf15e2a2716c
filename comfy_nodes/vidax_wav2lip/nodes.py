"""The ComfyUI node classes: a thin boundary (tensors <-> numpy, ComfyUI's progress bar and
interrupt, the pack runtime) over the numpy core in ``core/``.

Importing this module needs neither torch nor ComfyUI: torch comes in with ``backend`` when a
node runs, ComfyUI's modules are looked up when they are there. Inputs and outputs are
documented in docs/COMFYUI_INTERFACE.md (the tests check the two agree).
"""

import io
import json
import logging
import os

import numpy as np

from .core import audio as core_audio
from .core import blend, faceprobe, lipsync, motion, pack, patches
from .core.errors import InputError, PackImportError, PackMissingError
from .core.image import check_frames, parse_hex_colour

log = logging.getLogger("vidax_wav2lip")

CATEGORY = "vidax"
MAX_FRAMES = 100_000_000
MAX_SIZE = 16384
LIPSYNC_REPORT = "VIDAX_LIPSYNC_REPORT"  # the type of VIDAX_Wav2Lip's report output
UI_LIPSYNC = "vidax_lipsync"  # the ui keys /history carries (docs/COMFYUI_INTERFACE.md)
UI_FACE = "vidax_face"
UI_PATCHES = "vidax_patches"
PATCH_COMPRESS_LEVEL = 4  # as ComfyUI's SaveImage
FACE_DETECT_BATCH = 8


def to_numpy(x):
    """ComfyUI data (a torch tensor, or numpy where torch is absent) -> numpy float32, without a
    copy for CPU float32 tensors."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) != "torch.float32":
            x = x.float()
        return x.numpy()
    return np.asarray(x, dtype=np.float32)


def to_output(arr):
    """numpy -> a CPU torch tensor (numpy itself where torch is not installed, i.e. tests)."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    try:
        import torch
    except ImportError:
        return arr
    return torch.from_numpy(arr)


def _comfy_progress():
    """A ``progress(done, total)`` for ComfyUI's progress bar that also honours Cancel."""
    state = {"bar": None}

    def progress(done, total):
        try:
            import comfy.model_management as mm

            mm.throw_exception_if_processing_interrupted()
        except ImportError:
            pass
        except AttributeError:
            pass
        try:
            import comfy.utils

            if state["bar"] is None:
                state["bar"] = comfy.utils.ProgressBar(max(int(total), 1))
            state["bar"].update_absolute(int(done), max(int(total), 1))
        except Exception:  # noqa: BLE001 - no ComfyUI (tests) or a stub without it
            pass

    return progress


def _motion_inputs():
    """The inputs VIDAX_MotionChunk and VIDAX_MouthBlend share (same names, same meaning)."""
    return {
        "mode": (list(motion.MODES), {"default": "zoom_in"}),
        "strength": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 0.5, "step": 0.01}),
        "frames": ("INT", {"default": 1, "min": 1, "max": MAX_FRAMES}),
        "chunk_start": ("INT", {"default": 0, "min": 0, "max": MAX_FRAMES}),
    }


def _centre_inputs():
    return {
        "centre_x": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 100000.0, "step": 0.001, "round": False}),
        "centre_y": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 100000.0, "step": 0.001, "round": False}),
        "background": ("STRING", {"default": "#000000"}),
    }


class PackRuntime:
    """The pack's detector, mel and network for the numpy pipeline, loaded on first use (a run
    whose frames are all silent loads nothing)."""

    detector_name = "s3fd"

    def __init__(self, paths, detector_only=False):
        self.paths = paths
        self.detector_only = detector_only
        self._mods = None
        self._dev = None
        self._detect = None
        self._mel = None
        self._model = None

    def _backend(self):
        from . import backend

        return backend

    def _modules(self):
        if self._mods is None:
            self._mods = pack.import_pack(self.paths.root, self.detector_only)
            self._dev = self._backend().device()
            log.info("vidax_wav2lip: using %s on %s", self.paths.root, self._dev)
        return self._mods

    def detect(self, batch):
        if self._detect is None:
            b, mods = self._backend(), self._modules()
            self._detect = b.make_detect(mods, b.load_detector(mods, self.paths.s3fd, self._dev), self._dev)
        return self._detect(batch)

    def mel(self, wav):
        if self._mel is None:
            self._mel = self._backend().make_mel(self._modules())
        return self._mel(wav)

    def model(self, mels, faces):
        if self._model is None:
            b, mods = self._backend(), self._modules()
            self._model = b.make_model(b.load_model(mods, self.paths.checkpoint, self._dev), self._dev)
        return self._model(mels, faces)

    def on_oom(self):
        try:
            self._backend().free_memory()
        except ImportError:
            pass


def make_runtime(detector_only=False):
    """Checks the pack (raising an error that names a missing file and the ``va install`` step)
    and returns its lazy runtime; ``detector_only``: just what S3FD needs (VIDAX_FaceProbe).
    Tests replace this function with fakes."""
    return PackRuntime(pack.check_pack(pack.find_pack_dir(), detector_only), detector_only)


class VIDAX_Wav2Lip:
    """Lip-syncs frames to audio; exactly as many frames out as in."""

    DESCRIPTION = (
        "Wav2Lip lip-sync with frames in = frames out: mel windows aligned to each frame at the given "
        "fps, silent windows and faceless frames pass through unchanged. Reports per frame what it did "
        "(second output, and ui 'vidax_lipsync'). Needs the ComfyUI_wav2lip pack and its weights (va install)."
    )
    RETURN_TYPES = ("IMAGE", LIPSYNC_REPORT)
    RETURN_NAMES = ("images", "report")
    FUNCTION = "run"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "audio": ("AUDIO",),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001, "round": False}),
                "mode": (list(lipsync.MODES), {"default": "sequential"}),
                "face_detect_batch": ("INT", {"default": 8, "min": 1, "max": 256}),
                "on_no_face": (list(lipsync.ON_NO_FACE), {"default": "passthrough"}),
            },
            "optional": {
                "start_frame": ("INT", {"default": 0, "min": 0, "max": MAX_FRAMES}),
            },
        }

    def run(self, images, audio, fps, mode, face_detect_batch, on_no_face, start_frame=0):
        frames = check_frames(to_numpy(images))
        if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
            raise InputError("audio must be an AUDIO value {'waveform': [1, channels, samples], 'sample_rate': int}")
        runtime = make_runtime()
        wave = core_audio.to_mono(to_numpy(audio["waveform"]))
        wav16k = core_audio.resample(wave, int(audio["sample_rate"]), core_audio.WAV2LIP_RATE)
        out, report = lipsync.lipsync_frames(
            frames,
            wav16k,
            fps,
            detect=runtime.detect,
            mel=runtime.mel,
            model=runtime.model,
            mode=mode,
            face_detect_batch=face_detect_batch,
            on_no_face=on_no_face,
            start_frame=start_frame,
            on_oom=runtime.on_oom,
            progress=_comfy_progress(),
            log=log.warning,
        )
        log.info("VIDAX_Wav2Lip: %s", report.summary())
        if out.shape[0] != frames.shape[0]:  # the pipeline's promise, kept loud
            raise RuntimeError(f"VIDAX_Wav2Lip: {frames.shape[0]} frames in, {out.shape[0]} out")
        ui = report.to_ui(detector=getattr(runtime, "detector_name", "unknown"))
        return {"ui": {UI_LIPSYNC: [ui]}, "result": (to_output(out), ui)}


def resolve_input_path(path):
    """Absolute paths as given; other names through ComfyUI's input folder (with its
    ``[input]``/``[output]``/``[temp]`` annotations), else relative to the working directory."""
    p = str(path).strip()
    if not p:
        raise InputError("path is empty")
    if os.path.isabs(p):
        return p
    try:
        import folder_paths

        cand = folder_paths.get_annotated_filepath(p)
        if cand and os.path.exists(cand):
            return cand
    except Exception:  # noqa: BLE001 - no ComfyUI, or a stub
        pass
    return os.path.abspath(p)


class VIDAX_LoadAudio:
    """Reads an audio file from a path into ComfyUI's AUDIO (soundfile; no torchaudio)."""

    DESCRIPTION = "Loads an audio file from a path as AUDIO (float32 [1, channels, samples]); mono on request."
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "path": ("STRING", {"default": ""}),
                "mono": ("BOOLEAN", {"default": False}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, path):
        try:
            p = resolve_input_path(path)
        except InputError as e:
            return str(e)
        if not os.path.isfile(p):
            return f"VIDAX_BAD_INPUT: audio file not found: {p}"
        return True

    @classmethod
    def IS_CHANGED(cls, path, mono):
        try:
            p = resolve_input_path(path)
            st = os.stat(p)
            return f"{p}|{st.st_size}|{st.st_mtime_ns}|{bool(mono)}"
        except Exception:  # noqa: BLE001 - validation reports the problem
            return f"{path}|missing|{bool(mono)}"

    def run(self, path, mono):
        p = resolve_input_path(path)
        if not os.path.isfile(p):
            raise InputError(f"audio file not found: {p}")
        wave, rate = core_audio.load_audio_file(p, mono=bool(mono))
        return ({"waveform": to_output(wave), "sample_rate": int(rate)},)


class VIDAX_FaceProbe:
    """The face box and mouth ROI from the pack's S3FD detector, per frame (the size heuristic
    only as a recorded fallback when the pack or its weights are missing)."""

    DESCRIPTION = (
        "Detects the face in each frame with the ComfyUI_wav2lip pack's S3FD, padded exactly as "
        "VIDAX_Wav2Lip pads the box it pastes into; mouth ROI = the box's lower half. Reports every "
        "frame (ui 'vidax_face', face_meta); outputs describe the first face found. Without the pack "
        "or its weights it falls back to the size heuristic and says so (method size_heuristic)."
    )
    RETURN_TYPES = ("IMAGE", "INT", "INT", "INT", "INT", "INT", "INT", "INT", "STRING")
    RETURN_NAMES = ("face_crop", "face_x", "face_y", "face_size", "mouth_x", "mouth_y", "mouth_w", "mouth_h", "face_meta")
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def run(self, image):
        frames = check_frames(to_numpy(image), "image")
        if frames.shape[0] == 0:
            raise InputError("image is an empty batch")
        n, h, w = frames.shape[:3]
        try:
            runtime = make_runtime(detector_only=True)
            boxes, scores, _, _ = lipsync.detect_boxes(
                frames, runtime.detect, None, FACE_DETECT_BATCH, on_oom=runtime.on_oom, log=log.warning
            )
            report = faceprobe.from_boxes(
                w, h, [boxes[k] for k in range(n)], [scores[k] for k in range(n)],
                method=getattr(runtime, "detector_name", "unknown"),
            )
        except (PackMissingError, PackImportError) as e:
            log.warning("VIDAX_FaceProbe: no detector, using the size heuristic: %s", e)
            report = faceprobe.from_size(w, h, n, str(e))
        meta = report.as_dict()
        first, k = report.first, report.first_index
        if first is None:
            crop, ints = frames[:1], (0, 0, 0, 0, 0, 0, 0)
        else:
            f, m = first.face, first.mouth
            crop = frames[k:k + 1, f.y:f.y + f.h, f.x:f.x + f.w]
            ints = (f.x, f.y, max(f.w, f.h), m.x, m.y, m.w, m.h)
        log.info("VIDAX_FaceProbe: %s, %d of %d frames with a face", report.method,
                 sum(1 for x in report.faces if x.face is not None), n)
        return {"ui": {UI_FACE: [meta]}, "result": (to_output(np.array(crop)), *ints, json.dumps(meta))}


class VIDAX_MotionChunk:
    """Frames chunk_start..chunk_start+chunk_frames of the motion fallback's sub-pixel zoom."""

    DESCRIPTION = (
        "Renders a chunk of the slow zoom of the Rust motion fallback (same curve and crop window, "
        "sub-pixel, no jitter)."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        req = {"image": ("IMAGE",)}
        req.update(_motion_inputs())
        req.update(
            {
                "chunk_frames": ("INT", {"default": 1, "min": 1, "max": 100000}),
                "width": ("INT", {"default": 0, "min": 0, "max": MAX_SIZE}),
                "height": ("INT", {"default": 0, "min": 0, "max": MAX_SIZE}),
            }
        )
        req.update(_centre_inputs())
        return {"required": req}

    def run(self, image, mode, strength, frames, chunk_start, chunk_frames, width, height, centre_x, centre_y, background):
        src = check_frames(to_numpy(image), "image")
        out = motion.render_chunk(
            src,
            mode,
            strength,
            frames,
            chunk_start,
            chunk_frames,
            width,
            height,
            motion.centre_from_inputs(centre_x, centre_y),
            parse_hex_colour(background),
        )
        return (to_output(out),)


class VIDAX_MouthBlend:
    """Pastes the lip-synced mouth ROI into motion frames with a feathered mask."""

    DESCRIPTION = (
        "Blends the mouth ROI of lip-synced frames (source geometry), seen through each motion frame's "
        "crop window, into the motion frames; pixels outside the ROI stay unchanged. With "
        "lipsync_report (VIDAX_Wav2Lip's report) frame k's ROI is the lower half of the box Wav2Lip "
        "pasted into for it; frames it did not lip-sync are left as they are."
    )
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    FUNCTION = "run"
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        req = {
            "motion_frames": ("IMAGE",),
            "lipsync_frames": ("IMAGE",),
            "mouth_x": ("INT", {"default": 0, "min": 0, "max": MAX_SIZE}),
            "mouth_y": ("INT", {"default": 0, "min": 0, "max": MAX_SIZE}),
            "mouth_w": ("INT", {"default": 1, "min": 1, "max": MAX_SIZE}),
            "mouth_h": ("INT", {"default": 1, "min": 1, "max": MAX_SIZE}),
            "feather": ("INT", {"default": -1, "min": -1, "max": 4096}),
        }
        req.update(_motion_inputs())
        req.update(_centre_inputs())
        return {"required": req, "optional": {"lipsync_report": (LIPSYNC_REPORT,)}}

    def run(
        self,
        motion_frames,
        lipsync_frames,
        mouth_x,
        mouth_y,
        mouth_w,
        mouth_h,
        feather,
        mode,
        strength,
        frames,
        chunk_start,
        centre_x,
        centre_y,
        background,
        lipsync_report=None,
    ):
        base = check_frames(to_numpy(motion_frames), "motion_frames")
        synced = check_frames(to_numpy(lipsync_frames), "lipsync_frames")
        rois = None if lipsync_report is None else blend.rois_from_report(lipsync_report, base.shape[0])
        out = blend.mouth_blend(
            base,
            synced,
            (mouth_x, mouth_y, mouth_w, mouth_h),
            feather,
            mode,
            strength,
            frames,
            chunk_start,
            motion.centre_from_inputs(centre_x, centre_y),
            parse_hex_colour(background),
            rois=rois,
        )
        return (to_output(out),)


def _comfy_output_paths():
    """ComfyUI's ``folder_paths`` (the output folder and SaveImage's file naming)."""
    try:
        import folder_paths
    except ImportError as e:
        raise RuntimeError("VIDAX_SavePatches saves into ComfyUI's output folder: run it inside ComfyUI "
                           f"(its folder_paths module does not import: {e})") from e
    return folder_paths


def save_patch_png(path, patch, x0, y0):
    """Writes the uint8 ``[h, w, 3]`` patch as an 8-bit RGB PNG (compress level 4, not
    interlaced) whose ``oFFs`` chunk, right after ``IHDR``, says it lies at ``(x0, y0)``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(patch, "RGB").save(buf, format="PNG", compress_level=PATCH_COMPRESS_LEVEL)
    with open(path, "wb") as fh:
        fh.write(patches.with_offs(buf.getvalue(), x0, y0))


class VIDAX_SavePatches:
    """Saves, per frame, only the rectangle that differs from a reference picture, as a small PNG
    that carries its position (``oFFs``); files named and placed as ComfyUI's SaveImage does."""

    DESCRIPTION = (
        "Saves each frame as a PNG of just the box of pixels that differ from the reference picture "
        "(both rounded to 8 bits), its position in the PNG's oFFs chunk; an unchanged frame gives a "
        "1x1 patch at (0, 0). Laid over the reference, a patch gives back the whole frame. Files go "
        "to the output folder, named as SaveImage names them; ui 'vidax_patches' sums it up."
    )
    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "reference": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "vidax_patch"}),
            }
        }

    def run(self, images, reference, filename_prefix):
        frames = patches.as_batch(to_numpy(images), "images")
        ref = patches.as_batch(to_numpy(reference), "reference")
        n, h, w = frames.shape[:3]
        if n == 0:
            raise InputError("images is an empty batch")
        patches.check_reference(frames.shape, ref.shape)
        folder_paths = _comfy_output_paths()
        full_output_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), w, h
        )
        ref_u8 = patches.quantise(ref[0])
        progress = _comfy_progress()
        saved, changed = [], 0
        for k in range(n):  # frame by frame: one frame's uint8 copy at a time
            patch, x0, y0, differs = patches.cut_patch(patches.quantise(frames[k]), ref_u8)
            changed += int(differs)
            file = f"{filename.replace('%batch_num%', str(k))}_{counter:05}_.png"
            save_patch_png(os.path.join(full_output_folder, file), patch, x0, y0)
            saved.append({"filename": file, "subfolder": subfolder, "type": "output"})
            counter += 1
            progress(k + 1, n)
        log.info("VIDAX_SavePatches: %d of %d frames differ from the reference", changed, n)
        summary = {"width": int(w), "height": int(h), "frames": int(n), "changed": int(changed)}
        return {"ui": {"images": saved, UI_PATCHES: [summary]}}


NODE_CLASS_MAPPINGS = {
    "VIDAX_Wav2Lip": VIDAX_Wav2Lip,
    "VIDAX_LoadAudio": VIDAX_LoadAudio,
    "VIDAX_FaceProbe": VIDAX_FaceProbe,
    "VIDAX_MotionChunk": VIDAX_MotionChunk,
    "VIDAX_MouthBlend": VIDAX_MouthBlend,
    "VIDAX_SavePatches": VIDAX_SavePatches,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "VIDAX_Wav2Lip": "VIDAX Wav2Lip (frame-exact)",
    "VIDAX_LoadAudio": "VIDAX Load Audio (path)",
    "VIDAX_FaceProbe": "VIDAX Face Probe",
    "VIDAX_MotionChunk": "VIDAX Motion Chunk",
    "VIDAX_MouthBlend": "VIDAX Mouth Blend",
    "VIDAX_SavePatches": "VIDAX Save Patches",
}
