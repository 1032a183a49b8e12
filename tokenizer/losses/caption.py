"""Caption loss (paper: L_cap = -sum_i log p(y_i | Z, y_<i)): a frozen causal LM reads Z through a trainable adapter
as a prefix and predicts the caption; cross-entropy on the caption tokens only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from backbones.base import CausalLM
from tokenizer.losses.base import Batch, Loss
from tokenizer.projections import KINDS, make_projection

if TYPE_CHECKING:
    from tokenizer.model import Tokenizer, TokenizerOutput


def batch_texts(owner: str, batch: Batch, key: str, size: int) -> list[str]:
    """batch[key] as a list of `size` strings, or a clear error naming the key."""
    if key not in batch:
        raise KeyError(f"{owner} reads texts from batch[{key!r}], but the batch has only {sorted(batch)}")
    texts = batch[key]
    if isinstance(texts, str) or len(texts) != size:
        got = "one string" if isinstance(texts, str) else f"{len(texts)} texts"
        raise ValueError(f"{owner}: batch[{key!r}] must hold one text per image ({size}), got {got}")
    return [str(t) for t in texts]


class CaptionLoss(Loss):
    """Z [B, N, embed_dim] -> adapter ("linear", "mlp" or "transformer") -> [B, N, lm.hidden_size] prefix -> the LM's
    next-token loss on batch[text_key] (cut to `max_length` tokens). The adapter trains; the LM stays as built."""

    def __init__(self, *, lm: CausalLM, embed_dim: int, text_key: str = "txt", max_length: int = 32,
                 adapter: str = "linear", weight: float = 1.0, enabled: bool = True) -> None:
        super().__init__(weight=weight, enabled=enabled)
        if not isinstance(lm, CausalLM):
            raise TypeError(f"CaptionLoss: lm must be a CausalLM, got {type(lm).__name__}")
        if adapter not in KINDS:
            raise ValueError(f"CaptionLoss: adapter must be one of {KINDS}, got adapter={adapter!r}")
        self.lm = lm
        self.embed_dim = embed_dim
        self.text_key = text_key
        self.max_length = max_length
        self.adapter = make_projection(embed_dim, lm.hidden_size, kind=adapter)

    def forward(self, out: TokenizerOutput, batch: Batch, tokenizer: Tokenizer) -> tuple[torch.Tensor, dict]:
        z = out.z  # [B, N, D]
        if z.shape[-1] != self.embed_dim:
            raise ValueError(f"CaptionLoss: Z has width {z.shape[-1]} but the loss was built with "
                             f"embed_dim={self.embed_dim} (set it to the tokenizer's embed_dim)")
        texts = batch_texts("CaptionLoss", batch, self.text_key, z.shape[0])
        ids, mask = self.lm.tokenize(texts, self.max_length)  # [B, T]
        prefix = self.adapter(z)  # [B, N, hidden_size]
        result = self.lm(prefix, ids.to(z.device), mask.to(z.device))
        return result.loss, {"tokens": mask.sum().detach().float()}
