"""The decoder interface: quantized embeddings Z [B, N, D] -> images, trained with a flow objective.

Images outside a decoder are always float [B, 3, H, W] in [0, 1]; a decoder maps to its own working range.
"""

from __future__ import annotations

import torch
from torch import nn

from armkit.common.buildable import Buildable


class Decoder(Buildable, nn.Module):
    """Base class. Subclasses set `cond_dim` (D, checked against the tokenizer) and `image_size` (H, W)."""

    cond_dim: int
    image_size: tuple[int, int]

    def loss(self, images: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss on images [B, 3, H, W] in [0, 1] given cond [B, N, D] -> (loss, logs)."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, *, steps: int = 25, sampler: str = "euler", guidance: float = 1.0,
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """cond [B, N, D] -> images [B, 3, H, W] in [0, 1]; `noise` (the t=0 sample) fixes the start, else it is
        drawn from `generator`."""
        raise NotImplementedError
