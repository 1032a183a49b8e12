"""`Freezable`: what every frozen-by-default part (teacher, text tower, caption LM) shares."""

from __future__ import annotations

import torch
from torch import nn


class Freezable(nn.Module):
    """A module that, once `freeze_if(True)` ran, has no trainable parameters and stays in eval mode (no dropout,
    no BatchNorm statistic updates) even when its parent is put in train mode."""

    frozen: bool = True

    def freeze_if(self, frozen: bool) -> None:
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> "Freezable":
        return super().train(mode and not self.frozen)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
