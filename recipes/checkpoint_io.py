"""Checkpoint I/O that never unpickles code.

Saving stays Lightning's own: `TorchCheckpointIO` writes through `_atomic_save`, an fsspec transaction (temp file,
then a move), so a run killed mid-save leaves the previous checkpoint intact. Loading is forced to
`torch.load(weights_only=True)`, which is why armkit stores only tensors and plain values in checkpoints.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO


class SafeCheckpointIO(TorchCheckpointIO):
    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        if weights_only is False:
            raise ValueError(f"refusing to load {path} with weights_only=False: armkit checkpoints hold no code")
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
