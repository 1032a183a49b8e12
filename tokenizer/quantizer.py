"""Finite scalar quantization through vector-quantize-pytorch's `FSQ`, kept in fp32 under any autocast."""

from __future__ import annotations

import operator
from typing import NamedTuple

import torch
from torch import nn
from vector_quantize_pytorch import FSQ

from armkit.common.buildable import Buildable

BOUNDS = ("tanh", "ifsq")


class QuantizerOutput(NamedTuple):
    codes: torch.Tensor  # [B, N, G*K] quantized values in [-1, 1] (straight-through gradients)
    indices: torch.Tensor  # [B, N] (one codebook) or [B, N, G] int64, each in [0, codebook_size)


class FSQQuantizer(Buildable, nn.Module):
    """FSQ over `num_codebooks` groups of `len(levels)` dimensions each.

    bound="tanh" is FSQ's own bound. bound="ifsq" is iFSQ's 2*sigmoid(1.6x) - 1; since 2*sigmoid(a) - 1 = tanh(a/2),
    that is FSQ's tanh applied to 0.8*x, so it is done by scaling the input and leaves the quantizer untouched (for odd
    levels this is exact; even levels keep FSQ's half-step shift).
    """

    def __init__(self, *, levels: list[int], num_codebooks: int = 1, bound: str = "tanh",
                 preserve_symmetry: bool | None = None) -> None:
        super().__init__()
        try:  # operator.index: ints (numpy's too), never a float such as 8.5, which int() would truncate to 8
            levels = [operator.index(v) for v in levels]
            num_codebooks = operator.index(num_codebooks)
        except TypeError:
            raise ValueError(f"FSQ levels and num_codebooks must be integers, got levels={list(levels)}, "
                             f"num_codebooks={num_codebooks!r}") from None
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 2, got levels={levels}")
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got num_codebooks={num_codebooks}")
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {BOUNDS}, got bound={bound!r}")
        if preserve_symmetry is None:  # FSQ requires it for any level of 2 (the paper's [2]*16)
            preserve_symmetry = any(v == 2 for v in levels)
        elif not preserve_symmetry and any(v == 2 for v in levels):
            raise ValueError(f"levels={levels} contain 2, which FSQ only supports with preserve_symmetry=True")
        self.levels = levels
        self.num_codebooks = num_codebooks
        self.bound = bound
        self.fsq = FSQ(levels=levels, num_codebooks=num_codebooks, preserve_symmetry=preserve_symmetry,
                       keep_num_codebooks_dim=num_codebooks > 1)

    @property
    def dim(self) -> int:
        """Width of the continuous input (and of the codes): num_codebooks * len(levels)."""
        return self.num_codebooks * len(self.levels)

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    @property
    def bits_per_token(self) -> float:
        return self.num_codebooks * float(torch.tensor(self.levels, dtype=torch.float64).log2().sum())

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z [B, N, dim] -> codes [B, N, dim] (input dtype), indices [B, N(, G)]."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQQuantizer expects width {self.dim} (num_codebooks x len(levels)), got {z.shape[-1]}")
        dtype = z.dtype
        with torch.autocast(device_type=z.device.type, enabled=False):
            x = z.float()
            if self.bound == "ifsq":
                x = 0.8 * x
            codes, indices = self.fsq(x)
        return QuantizerOutput(codes.to(dtype), indices.long())

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, N(, G)] -> codes [B, N, dim] float32."""
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(f"indices must lie in [0, {self.codebook_size}), got [{int(indices.min())}, "
                             f"{int(indices.max())}]")
        return self.fsq.indices_to_codes(indices.to(torch.int32))
