"""A tiny built-in text tower over bytes, so tests and smoke runs need no downloaded text model.

bytes (+ END) -> embeddings + positions -> bidirectional transformer blocks (padding masked) -> LayerNorm
-> mean over the real tokens -> [B, width].
"""

from __future__ import annotations

import torch

from armkit.backbones.tiny_lm import byte_tokenize, byte_trunk, check_heads
from armkit.tokenizer.text.base import TextTower


class TinyTextTower(TextTower):
    """A small byte-level transformer text encoder; `seed` makes the random init reproducible."""

    def __init__(self, *, width: int = 64, depth: int = 1, heads: int = 4, max_length: int = 32,
                 seed: int | None = 0, frozen: bool = True) -> None:
        super().__init__()
        check_heads("TinyTextTower", width, heads)
        self.width = width
        self.max_length = max_length
        byte_trunk(self, width=width, depth=depth, heads=heads, max_length=max_length, seed=seed)
        self.freeze_if(frozen)

    def embed(self, texts: list[str]) -> torch.Tensor:
        ids, mask = byte_tokenize(texts, self.max_length)
        ids, keep = ids.to(self.device), mask.to(self.device).bool()  # [B, T]
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))  # [B, T, W]
        attn_mask = keep[:, None, None, :]  # [B, 1, 1, T]: every token attends to the real tokens only
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        x = self.ln_f(x)
        weights = keep.unsqueeze(-1).to(x.dtype)  # [B, T, 1]
        return (x * weights).sum(1) / weights.sum(1)  # [B, W]; every text has at least END
