"""Loading weight files without ever unpickling code: safetensors, or torch.load(weights_only=True)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def load_state_dict_file(path: Path | str) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` file, or from a torch file loaded with weights_only=True."""
    import torch  # here, not at the top: hashing and path helpers below must not cost a torch import
    from safetensors.torch import load_file

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


MAX_HASHED_FILES = 1000  # a model folder (config, weights, tokenizer) holds a few dozen files at most


def sha256_file(path: Path | str, *, max_files: int = MAX_HASHED_FILES) -> str:
    """sha256 of a file, or of a model folder (its files' relative names and bytes, in sorted order). A folder of
    more than `max_files` files is refused before any byte is read: it is not a model folder (a checkpoint record
    naming /usr/lib must not cost minutes of hashing)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        files = []
        for p in path.rglob("*"):
            if p.is_file():
                files.append(p)
                if len(files) > max_files:
                    raise ValueError(f"{path} holds more than {max_files} files: not a model folder; refusing to "
                                     "hash it")
        files.sort()
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{path} is neither a file nor a folder")
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
