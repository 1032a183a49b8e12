"""The vision-encoder interface: images in [0, 1] -> patch tokens F [B, N, C]."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from armkit.common.buildable import Buildable
from armkit.common.freezable import Freezable


class VisionEncoder(Buildable, Freezable):
    """Base class for frozen (by default) teachers.

    Subclasses set `width` (C), `image_size` (H, W the encoder wants), `grid` (token rows, cols), `mean`/`std`
    (normalisation), build the network in `__init__`, call `self.freeze_if(frozen)` last, and implement
    `features(x) -> [B, N, C]` on an already resized and normalised batch.
    """

    width: int
    image_size: tuple[int, int]
    grid: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, h, w] in [0, 1] -> [B, 3, H, W] resized (bicubic, antialiased) and normalised."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} expects images [B, 3, H, W], got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != tuple(self.image_size):
            images = nnf.interpolate(images, size=self.image_size, mode="bicubic", antialias=True, align_corners=False)
        mean = images.new_tensor(self.mean).view(1, 3, 1, 1)
        std = images.new_tensor(self.std).view(1, 3, 1, 1)
        return (images - mean) / std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.features(self.preprocess(images))  # [B, N, C]
