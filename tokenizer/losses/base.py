"""The loss interface: each loss is a small module returning (loss, logs)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from armkit.common.buildable import Buildable

if TYPE_CHECKING:
    from armkit.tokenizer.model import Tokenizer, TokenizerOutput

Batch = dict[str, Any]  # "image": [B,3,H,W] float in [0,1]; "txt", "tags", "key": list[str]; "cls": LongTensor [B]


class Loss(Buildable, nn.Module):
    """Base class. `weight` scales it inside `LossSet`; `enabled=False` skips it (no compute, no parameters used).

    `forward(out, batch, tokenizer)` returns the *unweighted* loss and a dict of detached scalars to log.
    Trainable parameters a loss owns (adapters, heads, the sigmoid scalars) are trained with the tokenizer.
    """

    def __init__(self, *, weight: float = 1.0, enabled: bool = True) -> None:
        super().__init__()
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{type(self).__name__}: weight {weight!r} must be a finite number >= 0 (0 keeps the "
                             "loss in the logs without training on it; enabled: false skips it)")
        if not isinstance(enabled, bool):
            raise ValueError(f"{type(self).__name__}: enabled {enabled!r} must be true or false")
        self.weight = float(weight)
        self.enabled = enabled

    def forward(self, out: "TokenizerOutput", batch: Batch, tokenizer: "Tokenizer") -> tuple[torch.Tensor, dict]:
        raise NotImplementedError
