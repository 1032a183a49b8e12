"""Trainable projections between the teacher's width and the quantizer's width: linear, MLP, or transformer blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

KINDS = ("linear", "mlp", "transformer")


class Block(nn.Module):
    """Pre-norm transformer block; attention through torch SDPA."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"projection width {width} is not divisible by heads={heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, W]
        b, n, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(nnf.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, w))
        return x + self.mlp(self.norm2(x))


def make_projection(in_dim: int, out_dim: int, *, kind: str = "linear", width: int | None = None, depth: int = 1,
                    heads: int = 4) -> nn.Module:
    """[B, N, in_dim] -> [B, N, out_dim].

    kind="linear": one Linear. kind="mlp": Linear -> GELU -> Linear through `width`. kind="transformer": Linear to
    `width`, `depth` transformer blocks, LayerNorm, Linear to out_dim (the paper: 6 blocks each way).
    """
    if kind not in KINDS:
        raise ValueError(f"projection kind must be one of {KINDS}, got kind={kind!r}")
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    width = width or max(in_dim, out_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.Linear(width, out_dim))
    blocks = [Block(width, heads) for _ in range(depth)]
    return nn.Sequential(nn.Linear(in_dim, width), *blocks, nn.LayerNorm(width), nn.Linear(width, out_dim))
