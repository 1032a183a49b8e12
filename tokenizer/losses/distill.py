"""Feature distillation (paper: L_feat): 1 - cosine(Z, F) per token, averaged; F is the frozen teacher's (no grad)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as nnf

from armkit.tokenizer.losses.base import Batch, Loss

if TYPE_CHECKING:
    from armkit.tokenizer.model import Tokenizer, TokenizerOutput


class DistillLoss(Loss):
    """Pulls each quantized token Z [B, N, D] towards the teacher's token F [B, N, C]; needs D == C."""

    def __init__(self, *, weight: float = 1.0, enabled: bool = True) -> None:
        super().__init__(weight=weight, enabled=enabled)

    def forward(self, out: TokenizerOutput, batch: Batch, tokenizer: Tokenizer) -> tuple[torch.Tensor, dict]:
        z, f = out.z, out.features.detach()  # [B, N, D], [B, N, C]
        if z.shape[-1] != f.shape[-1]:
            raise ValueError(f"DistillLoss compares Z (width D={z.shape[-1]}) with the teacher's features (width "
                             f"C={f.shape[-1]}); build the tokenizer with embed_dim equal to the encoder width")
        if z.shape[:-1] != f.shape[:-1]:
            raise ValueError(f"DistillLoss: Z has tokens {tuple(z.shape[:-1])}, features {tuple(f.shape[:-1])}")
        cos = nnf.cosine_similarity(z.float(), f.float(), dim=-1)  # [B, N]
        return (1 - cos).mean(), {"cos": cos.mean().detach()}
