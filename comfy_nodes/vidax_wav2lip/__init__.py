"""vidax_wav2lip: the vidax project's ComfyUI custom nodes (SPEC §6, docs/COMFYUI_INTERFACE.md).

ComfyUI loads this folder with ``importlib`` under a path-based module name, so everything
inside is imported relatively. Importing it needs numpy only: torch and the ComfyUI_wav2lip pack
are imported when a node runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
