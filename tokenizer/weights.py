"""Loading weight files without ever unpickling code: safetensors, or torch.load(weights_only=True)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def load_state_dict_file(path: Path | str) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` file, or from a torch file loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # an unpicklable object means the file holds code, not just tensors
        raise ValueError(f"{path} is not a plain state dict (refused to unpickle: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat dict of tensors")
    return state
