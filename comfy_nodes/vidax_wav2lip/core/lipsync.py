"""The Wav2Lip pipeline over numpy frames, with the detector, mel and network injected.

Owns: which frames are synced (not silent, face found), face boxes (padding, smoothing),
batching with out-of-memory halving, the 6-channel face input and the paste-back, the guarantee
that frames in = frames out and that untouched frames are bit-identical. Must not: import torch
or the pack (the node hands in callables: ``detect``, ``mel``, ``model``), so it runs in tests
with fakes.

Callables:
- ``detect(batch)``: uint8 RGB ``[B, H, W, 3]`` -> B items, each ``(x1, y1, x2, y2)`` or
  ``(x1, y1, x2, y2, score)`` (unpadded), or None.
- ``mel(wav)``: float32 16 kHz ``[S]`` -> ``[80, T]`` (the pack's ``audio.melspectrogram``).
- ``model(mels, faces)``: float32 ``[B, 1, 80, 16]`` and ``[B, 6, 96, 96]`` (0..1, BGR, masked
  half first) -> ``[B, 3, 96, 96]`` in 0..1, BGR.
"""

import hashlib
from dataclasses import dataclass, field

import numpy as np

from . import frames as fr
from .audio import peak_normalise
from .errors import BatchOutOfMemoryError, InputError, NoFaceError
from .image import check_frames, resize_bilinear, to_uint8

IMG_SIZE = 96
MODEL_BATCH = 128  # the pack's batch for the network
SMOOTH_T = 5  # the pack's box smoothing window
PAD_BOTTOM = 10  # the pack's box padding [top, bottom, left, right] = [0, 10, 0, 0]
MODES = ("sequential", "repetitive")
ON_NO_FACE = ("passthrough", "error")


def is_oom_error(exc):
    """True for out-of-memory errors: MemoryError, torch.cuda.OutOfMemoryError (matched by name,
    torch is not imported here) and RuntimeErrors whose message says "out of memory"."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_batched(n, batch_size, step, what, is_oom=is_oom_error, on_oom=None, log=None):
    """Calls ``step(start, stop)`` over ``0..n`` in batches. An out-of-memory error halves the
    batch and retries the same range (``step`` must only commit its results after it returned);
    the smaller size is kept for the rest. Returns the final batch size."""
    bs = max(1, int(batch_size))
    i = 0
    while i < n:
        stop = min(n, i + bs)
        try:
            step(i, stop)
        except Exception as e:  # noqa: BLE001 - only OOM is handled, the rest re-raised
            if not is_oom(e):
                raise
            if bs == 1:
                if on_oom is not None:
                    on_oom()
                raise BatchOutOfMemoryError(f"{what}: out of memory even with a batch of 1 ({e})") from e
            bs = max(1, bs // 2)
            if log is not None:
                log(f"{what}: out of memory, retrying with a batch of {bs}")
        else:
            i = stop
            continue
        # Outside the except block: the exception (and the tensors its traceback holds) is gone,
        # so freeing cached GPU memory can actually give it back before the retry.
        if on_oom is not None:
            on_oom()
    return bs


SYNCED, SILENT, NO_FACE = "synced", "silent", "no_face"
REPORT_VERSION = 1


@dataclass
class LipsyncReport:
    """What the pipeline did, per frame: ``outcome[k]`` is ``synced``, ``silent`` or ``no_face``;
    ``boxes[k]`` the half-open ``(x1, y1, x2, y2)`` the network's face was pasted into (after
    padding and smoothing), None where nothing was pasted. Silence is decided first: a silent
    frame is ``silent`` whether or not it has a face."""

    frames: int = 0
    synced: int = 0
    silent: int = 0
    no_face: int = 0
    detected_unique: int = 0
    detect_batch: int = 0
    model_batch: int = 0
    no_face_frames: list = field(default_factory=list)
    start_frame: int = 0
    width: int = 0
    height: int = 0
    outcome: list = field(default_factory=list)
    boxes: list = field(default_factory=list)

    def box_summary(self):
        """``{"count": n, "x1": [min, max], ...}`` over the non-null boxes; just the count when
        there are none."""
        got = [b for b in self.boxes if b is not None]
        out = {"count": len(got)}
        if got:
            for i, name in enumerate(("x1", "y1", "x2", "y2")):
                vals = [int(b[i]) for b in got]
                out[name] = [min(vals), max(vals)]
        return out

    def to_ui(self, node="VIDAX_Wav2Lip", detector="s3fd"):
        """The ``vidax_lipsync`` object of docs/COMFYUI_INTERFACE.md: plain JSON values only."""
        return {
            "version": REPORT_VERSION,
            "node": node,
            "frames": int(self.frames),
            "start_frame": int(self.start_frame),
            "width": int(self.width),
            "height": int(self.height),
            "synced": int(self.synced),
            "silent": int(self.silent),
            "no_face": int(self.no_face),
            "detector": detector,
            "detected_unique": int(self.detected_unique),
            "outcome": list(self.outcome),
            "boxes": [None if b is None else [int(v) for v in b] for b in self.boxes],
            "box_summary": self.box_summary(),
        }

    def summary(self):
        return (
            f"{self.frames} frames: {self.synced} lip-synced, {self.silent} silent (passed through), "
            f"{self.no_face} without a face (passed through); {self.detected_unique} distinct frames "
            f"searched for faces; final batches: detector {self.detect_batch}, network {self.model_batch}"
        )


def pad_box(box, h, w):
    """The pack's padding (10 px down) and clamping; None for an empty box."""
    if box is None:
        return None
    x1, y1, x2, y2 = (int(v) for v in box[:4])
    y1 = max(0, y1)
    y2 = min(h, y2 + PAD_BOTTOM)
    x1 = max(0, x1)
    x2 = min(w, x2)
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def smooth_boxes(indices, boxes, t=SMOOTH_T):
    """The pack's temporal smoothing (mean over the next ``t`` boxes, the last ``t`` at the end),
    applied within each run of consecutive frame indices, from the unsmoothed boxes."""
    out = {}
    run = []

    def flush():
        n = len(run)
        arr = np.array([boxes[i] for i in run], dtype=np.float64)
        for k, i in enumerate(run):
            win = arr[k:k + t] if k + t <= n else arr[max(0, n - t):]
            out[i] = tuple(int(v) for v in win.mean(axis=0))

    prev = None
    for i in indices:
        if prev is not None and i != prev + 1 and run:
            flush()
            run = []
        run.append(i)
        prev = i
    if run:
        flush()
    return out


def detect_boxes(frames, detect, indices=None, batch_size=8, is_oom=is_oom_error, on_oom=None, log=None, tick=None, on_plan=None):
    """Runs ``detect`` once per distinct frame among ``indices`` (default: all), in batches
    (halved on out-of-memory), and pads each box with :func:`pad_box` -> (``{k: box or None}``,
    ``{k: score or None}``, distinct frames, final batch size). The box VIDAX_FaceProbe reports
    and the box VIDAX_Wav2Lip pastes into (before smoothing) come from here. ``on_plan(count)``
    hears the number of distinct frames before detection starts, ``tick(done)`` each batch."""
    n, h, w = frames.shape[:3]
    indices = list(range(n)) if indices is None else list(indices)
    first_of, key_of = {}, {}
    for k in indices:
        key = _frame_key(frames[k])
        key_of[k] = key
        first_of.setdefault(key, k)
    unique = list(first_of.values())
    if on_plan is not None:
        on_plan(len(unique))
    found, score = {}, {}

    def step(a, b):
        idx = unique[a:b]
        batch = np.stack([to_uint8(frames[k]) for k in idx])
        res = list(detect(batch))
        if len(res) != len(idx):
            raise InputError(f"face detector returned {len(res)} results for {len(idx)} frames")
        for k, r in zip(idx, res):
            found[k] = pad_box(r, h, w)
            score[k] = float(r[4]) if found[k] is not None and len(r) > 4 else None
        if tick is not None:
            tick(len(idx))

    final = run_batched(len(unique), batch_size, step, "face detection", is_oom, on_oom, log) if unique else int(batch_size)
    boxes = {k: found[first_of[key_of[k]]] for k in indices}
    scores = {k: score[first_of[key_of[k]]] for k in indices}
    return boxes, scores, len(unique), final


def face_input(crops_rgb):
    """96×96 RGB face crops (0..1) -> the network's ``[B, 6, 96, 96]``: BGR, lower half masked,
    then the unmasked reference."""
    faces = np.stack(crops_rgb).astype(np.float32)[..., ::-1]  # RGB -> BGR
    masked = faces.copy()
    masked[:, IMG_SIZE // 2:] = 0.0
    both = np.concatenate([masked, faces], axis=3)
    return np.ascontiguousarray(both.transpose(0, 3, 1, 2))


def _frame_key(frame):
    return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).digest()


def lipsync_frames(
    frames,
    wav16k,
    fps,
    *,
    detect,
    mel,
    model,
    mode="sequential",
    face_detect_batch=8,
    on_no_face="passthrough",
    model_batch=MODEL_BATCH,
    start_frame=0,
    is_oom=is_oom_error,
    on_oom=None,
    progress=None,
    log=None,
):
    """Lip-syncs ``frames`` (float32 ``[N, H, W, 3]``) to ``wav16k`` (mono, 16 kHz; time 0 is
    frame ``start_frame``) -> (float32 ``[N, H, W, 3]``, :class:`LipsyncReport`)."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if on_no_face not in ON_NO_FACE:
        raise InputError(f"on_no_face must be one of {ON_NO_FACE}, got {on_no_face!r}")
    fps = fr.fps_fraction(fps)
    frames = check_frames(frames)
    n, h, w = frames.shape[:3]
    out = frames.copy()
    start_frame = int(start_frame)
    if start_frame < 0:
        raise InputError(f"start_frame must be >= 0, got {start_frame}")
    report = LipsyncReport(
        frames=n,
        detect_batch=int(face_detect_batch),
        model_batch=int(model_batch),
        start_frame=start_frame,
        width=int(w),
        height=int(h),
        outcome=[SILENT] * n,
        boxes=[None] * n,
    )
    if n == 0:
        return out, report

    # Audio long enough that every frame has a full window; the padding is silence. At least one
    # zero sample is always appended, whatever the chunk: the pack's mel pre-emphasis
    # (y[i] = x[i] - 0.97·x[i-1]) reaches one sample past the audio's end, so without it the
    # last mel steps would depend on whether this chunk needed padding, and frame k would come
    # out differently depending on which chunk renders it.
    wav = np.asarray(wav16k, dtype=np.float32).reshape(-1)
    need = max(fr.samples_for_frames(start_frame + n - 1, fps), wav.size + 1)
    wav = np.concatenate([wav, np.zeros(need - wav.size, dtype=np.float32)])
    starts = [fr.mel_window_start_unclamped(start_frame + k, fps) for k in range(n)]
    silent = fr.silent_frames(wav, starts)
    report.silent = int(silent.sum())
    todo = [k for k in range(n) if not silent[k]]
    if not todo:
        return out, report

    total_steps = [0, 0]

    def tick(steps):
        total_steps[0] += steps
        if progress is not None:
            progress(total_steps[0], total_steps[1])

    def plan(distinct):
        total_steps[1] = distinct + len(todo)

    # Face detection, once per distinct frame.
    boxes, _, report.detected_unique, report.detect_batch = detect_boxes(
        frames, detect, todo, face_detect_batch, is_oom, on_oom, log, tick, plan
    )
    missing = [k for k in todo if boxes[k] is None]
    if missing and on_no_face == "error":
        k = missing[0]
        more = f"; {len(missing) - 1} more frames without a face" if len(missing) > 1 else ""
        raise NoFaceError(
            f"no face found in image {k} (timeline frame {start_frame + k}) of {n}{more}"
        )
    report.no_face = len(missing)
    report.no_face_frames = missing
    for k in missing:
        report.outcome[k] = NO_FACE
    synced = [k for k in todo if boxes[k] is not None]
    total_steps[1] = report.detected_unique + len(synced)
    if mode == "sequential" and synced:
        boxes.update(smooth_boxes(synced, boxes))
    if not synced:
        return out, report

    spec = np.asarray(mel(peak_normalise(wav)), dtype=np.float32)
    if spec.ndim != 2 or spec.shape[1] < 1:
        raise InputError(f"mel spectrogram must be [mels, steps], got shape {spec.shape}")
    mel_len = spec.shape[1]
    if mel_len < fr.MEL_WINDOW:
        spec = np.pad(spec, ((0, 0), (0, fr.MEL_WINDOW - mel_len)), mode="edge")
        mel_len = fr.MEL_WINDOW

    def model_step(a, b):
        idx = synced[a:b]
        crops, mels = [], []
        for k in idx:
            x1, y1, x2, y2 = boxes[k]
            crops.append(resize_bilinear(frames[k, y1:y2, x1:x2], IMG_SIZE, IMG_SIZE))
            s = fr.mel_window_start(start_frame + k, fps, mel_len)
            mels.append(spec[:, s:s + fr.MEL_WINDOW])
        mel_batch = np.ascontiguousarray(np.stack(mels)[:, None, :, :], dtype=np.float32)
        face_batch = face_input(crops)
        if len(idx) == 1:
            # A lone frame runs as a batch of two (itself twice): torch's CPU convolutions take
            # another code path for a batch of one, whose results differ in the last bit from
            # the same frame in any larger batch, so a frame would depend on how many synced
            # frames its chunk happened to have.
            mel_batch = np.concatenate([mel_batch, mel_batch])
            face_batch = np.concatenate([face_batch, face_batch])
        pred = np.asarray(model(mel_batch, face_batch), dtype=np.float32)
        if pred.shape != (len(mel_batch), 3, IMG_SIZE, IMG_SIZE):
            raise InputError(f"network returned shape {pred.shape}, expected {(len(mel_batch), 3, IMG_SIZE, IMG_SIZE)}")
        pred = pred[: len(idx)]
        # Commit only after the whole batch ran (an OOM retry must find the frames untouched).
        for k, p in zip(idx, pred):
            x1, y1, x2, y2 = boxes[k]
            face = np.clip(p.transpose(1, 2, 0)[..., ::-1], 0.0, 1.0)  # BGR -> RGB, [96, 96, 3]
            out[k, y1:y2, x1:x2] = resize_bilinear(face, y2 - y1, x2 - x1)
        tick(len(idx))

    report.model_batch = run_batched(len(synced), model_batch, model_step, "Wav2Lip network", is_oom, on_oom, log)
    report.synced = len(synced)
    for k in synced:
        report.outcome[k] = SYNCED
        report.boxes[k] = tuple(int(v) for v in boxes[k])
    return out, report
