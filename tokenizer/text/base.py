"""The text-tower interface for the sigmoid loss: list of strings -> one embedding per string [B, width]."""

from __future__ import annotations

import torch
from torch import nn

from tokenizer.buildable import Buildable


class TextTower(Buildable, nn.Module):
    """Base class. Subclasses set `width`, build the model, call `self.freeze_if(frozen)`, and implement
    `embed(texts) -> [B, width]` (not normalised; the loss normalises)."""

    width: int
    frozen: bool = True

    def freeze_if(self, frozen: bool) -> None:
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> "TextTower":
        return super().train(mode and not self.frozen)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def embed(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, texts: list[str]) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.embed(list(texts))
