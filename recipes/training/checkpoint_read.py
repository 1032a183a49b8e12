"""`read_checkpoint`: the one reader of a finished checkpoint outside training (export, eval, AR loading).

Weights only (`torch.load(weights_only=True)`: never unpickles code), errors that name the file. It imports no
Lightning, so `armkit eval`, `armkit export` and the AR loader read checkpoints without it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from armkit.tokenizer.hub import ExportError


def read_checkpoint(path: Path | str, *, spec: str | None = None, writer: str = "armkit",
                    state_dict: bool = True) -> dict:
    """A Lightning checkpoint loaded on the CPU with `torch.load(weights_only=True)`: never unpickles code. `spec`:
    the entry checkpoint["armkit"][spec] must be a mapping (e.g. "tokenizer" for TokenizerModule's checkpoints, "ar"
    for ARModule's and GRPOModule's; `writer` names the module in the error). `state_dict`: require a mapping
    checkpoint["state_dict"] (False: the caller checks it itself). FileNotFoundError for a missing file,
    `tokenizer.hub.ExportError` (a ValueError) naming the file for anything else it refuses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- code or a broken file: refused either way
        raise ExportError(f"{path} is not a plain checkpoint (refused to unpickle: {e})") from None
    if state_dict and (not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict)):
        raise ExportError(f"{path} has no 'state_dict': not a Lightning checkpoint")
    armkit = checkpoint.get("armkit") if isinstance(checkpoint, dict) else None
    if spec is not None and (not isinstance(armkit, dict) or not isinstance(armkit.get(spec), dict)):
        raise ExportError(f"{path} has no checkpoint['armkit'][{spec!r}] spec: not written by armkit's {writer}")
    return checkpoint
