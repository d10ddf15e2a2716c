"""The nodes' logic as plain numpy functions (no torch, no ComfyUI imports), testable alone."""
