"""Finding, checking and importing the installed ComfyUI_wav2lip pack.

Owns: where the pack is looked for, the files it must have (code and weights) with errors that
name the missing file and the ``va install`` step that provides it, and the import of its
``Wav2Lip`` package via ``sys.path`` with a guard against a foreign module of that name.
Must not: import torch or the pack at module import time (ComfyUI loads this package at start-up,
CI imports it without torch): everything here runs when a node executes.

Why ``sys.path``: ComfyUI registers each custom-node pack in ``sys.modules`` under its absolute
path, so ``import ComfyUI_wav2lip`` does not work, and packs load in no fixed order. The pack's
``Wav2Lip/`` folder has no ``__init__.py`` and uses relative imports inside, so with
``<custom_nodes>/ComfyUI_wav2lip`` on ``sys.path`` ``import Wav2Lip.models`` works, skipping the
pack's own ``__init__`` (which needs torchaudio and asserts the weights exist) — and it works
even when the pack itself failed to import.
"""

import importlib
import os
import sys
from dataclasses import dataclass

from .errors import PackImportError, PackMissingError

PACK_NAME = "ComfyUI_wav2lip"
PACK_REPO = "ShmuelRonen/ComfyUI_wav2lip"
ENV_PACK_DIR = "VIDAX_WAV2LIP_PACK_DIR"

# Code files the import needs (relative to the pack folder).
CODE_FILES = (
    "Wav2Lip/models/__init__.py",
    "Wav2Lip/models/wav2lip.py",
    "Wav2Lip/audio.py",
    "Wav2Lip/hparams.py",
    "Wav2Lip/face_detection/__init__.py",
    "Wav2Lip/face_detection/detection/sfd/net_s3fd.py",
    "Wav2Lip/face_detection/detection/sfd/detect.py",
    "Wav2Lip/face_detection/detection/sfd/bbox.py",
)
# Weights: (asset id in the assets manifest, path relative to the pack folder, what it is).
WEIGHTS = (
    ("wav2lip_gan", "Wav2Lip/checkpoints/wav2lip_gan.pth", "Wav2Lip GAN weights"),
    ("s3fd", "Wav2Lip/face_detection/detection/sfd/s3fd.pth", "S3FD face detector weights"),
)
# Modules imported from the pack, all of which must come from its Wav2Lip folder.
MODULES = (
    "Wav2Lip.models",
    "Wav2Lip.audio",
    "Wav2Lip.hparams",
    "Wav2Lip.face_detection.detection.sfd.net_s3fd",
    "Wav2Lip.face_detection.detection.sfd.detect",
    "Wav2Lip.face_detection.detection.sfd.bbox",
)
# What the face detector alone needs (VIDAX_FaceProbe): no network weights, no librosa.
DETECTOR_CODE_FILES = tuple(f for f in CODE_FILES if "/face_detection/" in f)
DETECTOR_WEIGHTS = ("s3fd",)
DETECTOR_MODULES = tuple(m for m in MODULES if ".face_detection." in m)


@dataclass(frozen=True)
class PackPaths:
    root: str
    checkpoint: object  # None when only the detector was checked
    s3fd: str


@dataclass(frozen=True)
class PackModules:
    """The imported modules; the network's and the mel's are None for a detector-only import."""

    net_s3fd: object
    detect: object
    bbox: object
    models: object = None
    audio: object = None
    hparams: object = None


def _package_dir():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def candidate_dirs():
    """Where the pack may be, in order: ``$VIDAX_WAV2LIP_PACK_DIR``; ``ComfyUI_wav2lip`` in every
    custom_nodes folder ComfyUI knows (``folder_paths``); next to this package."""
    out = []
    env = os.environ.get(ENV_PACK_DIR)
    if env:
        out.append(os.path.abspath(env))
    try:
        import folder_paths  # ComfyUI's; absent in tests and outside ComfyUI

        for base in folder_paths.get_folder_paths("custom_nodes"):
            out.append(os.path.join(os.path.abspath(base), PACK_NAME))
    except Exception:  # noqa: BLE001 - a stub or an old ComfyUI without that folder key
        pass
    out.append(os.path.join(os.path.dirname(_package_dir()), PACK_NAME))
    seen, uniq = set(), []
    for d in out:
        if d not in seen:
            seen.add(d)
            uniq.append(d)
    return uniq


def find_pack_dir():
    """The first candidate that is a folder, else the first candidate (for the error message)."""
    cands = candidate_dirs()
    for d in cands:
        if os.path.isdir(d):
            return d
    return cands[0]


def _install_hint_pack():
    return (
        f"run `va install` (its custom-nodes step clones {PACK_REPO} into "
        f"<COMFYUI_DIR>/custom_nodes/{PACK_NAME} and pip-installs its requirements), then restart ComfyUI"
    )


def check_pack(root=None, detector_only=False):
    """Checks that the pack's code and weights are there -> :class:`PackPaths`. A missing file
    raises :class:`PackMissingError` naming it and the ``va install`` step that provides it.
    ``detector_only``: only what the S3FD detector needs."""
    root = os.path.abspath(root or find_pack_dir())
    if not os.path.isdir(root):
        raise PackMissingError(
            f"the {PACK_NAME} pack is not installed: missing folder {root}; {_install_hint_pack()}",
            missing=root,
        )
    for rel in DETECTOR_CODE_FILES if detector_only else CODE_FILES:
        p = os.path.join(root, *rel.split("/"))
        if not os.path.isfile(p):
            raise PackMissingError(
                f"the {PACK_NAME} pack is incomplete: missing file {p}; {_install_hint_pack()}",
                missing=p,
            )
    found = {}
    for asset, rel, what in WEIGHTS:
        if detector_only and asset not in DETECTOR_WEIGHTS:
            continue
        p = os.path.join(root, *rel.split("/"))
        if not os.path.isfile(p):
            raise PackMissingError(
                f"missing {what}: {p}; run `va install` (its assets step fetches asset `{asset}` to "
                f"custom_nodes/{PACK_NAME}/{rel}), then run the workflow again",
                missing=p,
                tag="VIDAX_WEIGHTS_MISSING",
            )
        found[asset] = p
    return PackPaths(root, found.get("wav2lip_gan"), found["s3fd"])


def _module_origin(mod):
    f = getattr(mod, "__file__", None)
    if f:
        return os.path.abspath(f)
    paths = list(getattr(mod, "__path__", None) or [])
    return os.path.abspath(paths[0]) if paths else repr(mod)


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def _conflict(name, mod, wav2lip_dir):
    return PackImportError(
        f"another module named {name!r} is already loaded from {_module_origin(mod)}, not from "
        f"{wav2lip_dir}; remove or rename the custom node or package that provides it and restart ComfyUI",
        tag="VIDAX_PACK_CONFLICT",
    )


def _check_owned(name, mod, wav2lip_dir):
    """The module must come from the pack's Wav2Lip folder: for the (namespace) package its first
    search path, for modules their file."""
    if name == "Wav2Lip":
        if getattr(mod, "__file__", None) and not _inside(mod.__file__, wav2lip_dir):
            raise _conflict(name, mod, wav2lip_dir)
        paths = list(getattr(mod, "__path__", None) or [])
        if not paths or os.path.realpath(paths[0]) != os.path.realpath(wav2lip_dir):
            raise _conflict(name, mod, wav2lip_dir)
    else:
        f = getattr(mod, "__file__", None)
        if not f or not _inside(f, wav2lip_dir):
            raise _conflict(name, mod, wav2lip_dir)


def import_pack(root, detector_only=False):
    """Imports the pack's model, mel and detector modules (``detector_only``: the S3FD modules
    alone) -> :class:`PackModules`."""
    root = os.path.abspath(root)
    wav2lip_dir = os.path.join(root, "Wav2Lip")
    existing = sys.modules.get("Wav2Lip")
    if existing is not None:
        _check_owned("Wav2Lip", existing, wav2lip_dir)
    if root not in sys.path:
        sys.path.insert(0, root)
    importlib.invalidate_caches()
    mods = {}
    try:
        pkg = importlib.import_module("Wav2Lip")
        _check_owned("Wav2Lip", pkg, wav2lip_dir)
        for name in DETECTOR_MODULES if detector_only else MODULES:
            mod = importlib.import_module(name)
            _check_owned(name, mod, wav2lip_dir)
            mods[name.rsplit(".", 1)[1]] = mod
    except PackImportError:
        raise
    except ImportError as e:
        raise PackImportError(
            f"importing the {PACK_NAME} pack from {root} failed: {e}; {_install_hint_pack()}"
        ) from e
    return PackModules(**mods)
