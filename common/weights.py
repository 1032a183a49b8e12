"""Loading weight files without ever unpickling code: safetensors, or torch.load(weights_only=True)."""

from __future__ import annotations

import hashlib
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


def local_path(value: str | Path) -> Path:
    """A user-given weights path: `asset:NAME` is the converted asset of `armkit assets` (under $ARMKIT_CACHE or
    ~/.cache/armkit, so recipes stay portable); anything else is a path, with `~` expanded."""
    text = str(value)
    if text.startswith("asset:"):
        from armkit.common.cache import find_asset

        return find_asset(text.removeprefix("asset:"))
    return Path(text).expanduser()


def sha256_file(path: Path | str) -> str:
    """sha256 of a file, or of a folder (its files' relative names and bytes, in sorted order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
