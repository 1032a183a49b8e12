"""The text-tower interface for the sigmoid loss: list of strings -> one embedding per string [B, width]."""

from __future__ import annotations

import torch

from armkit.common.buildable import Buildable
from armkit.common.freezable import Freezable


class TextTower(Buildable, Freezable):
    """Base class. Subclasses set `width`, build the model, call `self.freeze_if(frozen)`, and implement
    `embed(texts) -> [B, width]` (not normalised; the loss normalises)."""

    width: int

    def embed(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, texts: list[str]) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.embed(list(texts))
