"""The causal-LM interface shared by the caption loss and the later AR stages.

A `CausalLM` reads continuous prefix embeddings (e.g. adapted visual tokens) followed by text token ids and returns
the next-token loss on the text tokens only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from armkit.common.buildable import Buildable
from armkit.common.freezable import Freezable


class LMOutput(NamedTuple):
    loss: torch.Tensor  # scalar: mean cross-entropy over (non-padding) text tokens
    logits: torch.Tensor  # [B, T, V]: logits predicting each text token (aligned with input_ids)


class CausalLM(Buildable, Freezable):
    """Base class. Subclasses set `hidden_size` and `vocab_size`, call `self.freeze_if(frozen)`, and implement
    `tokenize` and `forward`."""

    hidden_size: int
    vocab_size: int

    def tokenize(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (input_ids [B, T], attention_mask [B, T]) right-padded, ending with an end-of-text token."""
        raise NotImplementedError

    def forward(self, prefix: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> LMOutput:
        """prefix [B, P, hidden_size], input_ids/attention_mask [B, T] -> LMOutput.

        The prefix is always attended to; the loss is the cross-entropy of each text token given the prefix and the
        tokens before it (the first text token is predicted from the last prefix position); padding is ignored.
        """
        raise NotImplementedError
