"""Exceptions the nodes raise. Each message starts with a stable tag (``VIDAX_NO_FACE: ...``) so
the Rust client can classify ComfyUI's ``execution_error`` without parsing prose; the tags are
listed in docs/COMFYUI_INTERFACE.md."""


class VidaxError(Exception):
    """Base class; ``tag`` is the message prefix."""

    tag = "VIDAX_ERROR"

    def __init__(self, message, tag=None):
        if tag is not None:
            self.tag = tag
        super().__init__(f"{self.tag}: {message}")


class InputError(VidaxError, ValueError):
    tag = "VIDAX_BAD_INPUT"


class NoFaceError(VidaxError, ValueError):
    tag = "VIDAX_NO_FACE"


class PackMissingError(VidaxError, FileNotFoundError):
    """A file of the ComfyUI_wav2lip pack (code or weights) is missing."""

    tag = "VIDAX_PACK_MISSING"

    def __init__(self, message, missing, tag=None):
        self.missing = missing
        super().__init__(message, tag)


class PackImportError(VidaxError, ImportError):
    tag = "VIDAX_PACK_DEPENDENCY"


class BatchOutOfMemoryError(VidaxError, RuntimeError):
    tag = "VIDAX_OUT_OF_MEMORY"
