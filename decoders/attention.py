"""Multi-head attention through torch SDPA, or xformers' memory-efficient kernel on CUDA where installed."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as nnf
from torch import nn

BACKENDS = ("auto", "sdpa", "xformers")


@functools.cache
def xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # not installed, or built for another torch/CUDA
        return False
    return True


def resolve_backend(name: str) -> str:
    """"auto" -> "xformers" when importable, else "sdpa". Either way xformers only runs on CUDA tensors."""
    if name not in BACKENDS:
        raise ValueError(f"attention must be one of {BACKENDS}, got {name!r}")
    if name == "xformers" and not xformers_available():
        raise ImportError("attention='xformers' but xformers cannot be imported; install armkit[gpu] or use 'sdpa'")
    if name == "auto":
        return "xformers" if xformers_available() else "sdpa"
    return name


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    """q [B, H, Nq, Dh], k and v [B, H, Nk, Dh] -> [B, H, Nq, Dh]."""
    if backend == "xformers" and q.is_cuda:
        import xformers.ops as xops

        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, N, H, Dh]
        return out.transpose(1, 2)
    return nnf.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Self-attention over x, or cross-attention from x to `context` (tokens of width `context_dim`)."""

    def __init__(self, width: int, heads: int, *, context_dim: int | None = None, backend: str = "sdpa") -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by heads={heads}")
        self.heads = heads
        self.backend = resolve_backend(backend)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_dim or width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:  # [B, N, W]
        b, n, w = x.shape
        context = x if context is None else context
        q = self.q(x).view(b, n, self.heads, w // self.heads).transpose(1, 2)  # [B, H, N, Dh]
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(attend(q, k, v, self.backend).transpose(1, 2).reshape(b, n, w))
