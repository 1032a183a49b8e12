"""L_pix: the tokenizer's decoder renders the image back from Z under the rectified-flow objective."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from armkit.tokenizer.losses.base import Batch, Loss

if TYPE_CHECKING:
    from armkit.tokenizer.model import Tokenizer, TokenizerOutput


class PixelLoss(Loss):
    """E||D(x_t, t | Z) - (x1 - x0)||^2 through `tokenizer.decoder.loss(batch["image"], out.z)`; its gradient trains
    the decoder and, through Z, the projections. The paper weights it 5 (set `weight`)."""

    def forward(self, out: TokenizerOutput, batch: Batch, tokenizer: Tokenizer) -> tuple[torch.Tensor, dict]:
        if tokenizer.decoder is None:
            raise RuntimeError("PixelLoss needs a tokenizer with a decoder: build Tokenizer(..., decoder=PixelDiT(...))"
                               " or disable the pixel loss")
        if "image" not in batch:
            raise KeyError(f"PixelLoss needs batch['image'] [B, 3, H, W]; the batch has keys {sorted(batch)}")
        return tokenizer.decoder.loss(batch["image"], out.z)
