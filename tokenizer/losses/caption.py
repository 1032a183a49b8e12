"""Caption loss (paper: L_cap = -sum_i log p(y_i | Z, y_<i)): a frozen causal LM reads Z through a trainable adapter
as a prefix and predicts the caption; cross-entropy on the caption tokens only."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as nnf

from armkit.backbones.base import CausalLM
from armkit.tokenizer.losses.base import Batch, Loss
from armkit.tokenizer.projections import KINDS, make_projection

if TYPE_CHECKING:
    from armkit.tokenizer.model import Tokenizer, TokenizerOutput


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
    next-token loss on batch[text_key] (cut to `max_length` tokens). The adapter trains; the LM stays as built.

    Cost knobs (the LM dominates a CPU step): `prefix_tokens=k` average-pools Z's token grid to about k tokens
    (k a square, e.g. 16 -> 4x4) before the adapter; `max_samples=m` computes the loss on the first m images only.
    The paper uses neither (None, None)."""

    def __init__(self, *, lm: CausalLM, embed_dim: int, text_key: str = "txt", max_length: int = 32,
                 adapter: str = "linear", prefix_tokens: int | None = None, max_samples: int | None = None,
                 weight: float = 1.0, enabled: bool = True) -> None:
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
        side = math.isqrt(prefix_tokens) if prefix_tokens else 0
        if prefix_tokens is not None and side * side != prefix_tokens:
            raise ValueError(f"CaptionLoss: prefix_tokens={prefix_tokens} must be a square (e.g. 16, 64)")
        self.prefix_side = side
        self.max_samples = max_samples

    def prefix(self, z: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Z [B, N, D] -> (optionally pooled) [B, P, D]."""
        if not self.prefix_side:
            return z
        b, n, d = z.shape
        fmap = z.transpose(1, 2).reshape(b, d, *grid)  # [B, D, h, w]
        return nnf.adaptive_avg_pool2d(fmap, self.prefix_side).flatten(2).transpose(1, 2)  # [B, k, D]

    def forward(self, out: TokenizerOutput, batch: Batch, tokenizer: Tokenizer) -> tuple[torch.Tensor, dict]:
        z = out.z  # [B, N, D]
        if z.shape[-1] != self.embed_dim:
            raise ValueError(f"CaptionLoss: Z has width {z.shape[-1]} but the loss was built with "
                             f"embed_dim={self.embed_dim} (set it to the tokenizer's embed_dim)")
        texts = batch_texts("CaptionLoss", batch, self.text_key, z.shape[0])
        if self.max_samples:
            z, texts = z[: self.max_samples], texts[: self.max_samples]
        ids, mask = self.lm.tokenize(texts, self.max_length)  # [B, T]
        prefix = self.adapter(self.prefix(z, tokenizer.grid))  # [B, P, hidden_size]
        result = self.lm(prefix, ids.to(z.device), mask.to(z.device))
        return result.loss, {"tokens": mask.sum().detach().float()}
