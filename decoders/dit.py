"""A DiT velocity network conditioned on token sequences, and `PixelDiT`: the decoder that runs it in pixel space.

    x_t [B, C, H, W] --patchify--> [B, h*w, W] + pos --blocks(c, ctx)--> final(c) --unpatchify--> v [B, C, H, W]
    t [B] --sinusoid, MLP--> [B, W] --+--> c (adaLN-zero: shift, scale, gate per block)
    Z [B, N, D] --LN, Linear--> [B, N, W] --mean, Linear--^      + pos --> ctx (cross-attention keys/values)

Token conditioning is cross-attention, not Z upsampled and concatenated: cross-attention works for any token count
and grid (a 1-D tokenizer, a square token grid under a non-square image, a different token/patch ratio) without
resampling the tokens, keeps each token whole (a nearest/bilinear upsample would smear or duplicate codes), makes the
CFG null condition a clean substitute input, and is how the paper's latent decoder (FLUX with Z in place of text)
reads Z. The price is a cross-attention per block, small next to self-attention since N <= the patch count. Because
FSQ leaves little position information in a token, the tokens and the patches get 2-D sin-cos positions in the same
normalised frame, so token (i, j) of a 16x16 grid and the patches under it start with nearby codes.

`cond_spatial=True` adds a second, direct path for tokens that lie on a grid over the image: each patch's input gets
the (linearly mapped) embedding of the token over it, the token grid resized to the patch grid. Cross-attention
still reads every token; the added path spares the network from learning where each token lies before it can copy
the token's colour into its patch. On the demo (8x8 tokens over 8x8 patches, FSQ between) it gave +1.4 dB after 100
decoder steps and +3.3 dB at 300 with stages 2+3 (benchmarks/teacher_stages.py, RESULTS.md section 10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch import nn

from armkit.decoders.attention import Attention
from armkit.decoders.flow import FlowDecoder

SIZES: dict[str, tuple[int, int, int]] = {  # width, depth, heads: DiT's S/B/L/XL; "tiny" for tests and CPU demos
    "tiny": (64, 2, 4), "S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}


def dit_dims(size: str, width: int | None, depth: int | None, heads: int | None) -> tuple[int, int, int]:
    """A named size, with any of width/depth/heads given explicitly overriding it."""
    if size not in SIZES:
        raise ValueError(f"DiT size must be one of {sorted(SIZES)} (or set width/depth/heads), got size={size!r}")
    w, d, h = SIZES[size]
    return int(width or w), int(depth or d), int(heads or h)


def as_hw(size: int | Sequence[int], what: str = "image_size") -> tuple[int, int]:
    """An int (square) or [H, W] -> (H, W)."""
    hw = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"{what} must be an int or [H, W] of positive ints, got {size!r}")
    return hw


def sincos_2d(grid: tuple[int, int], dim: int, *, extent: float = 32.0,
              device: torch.device | str | None = None) -> torch.Tensor:
    """[h*w, dim] sin-cos codes of the cell centres of an h x w grid, in coordinates normalised to [0, extent]."""
    h, w = grid
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (extent / h)
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (extent / w)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    ay, ax = yy.reshape(-1, 1) * omega, xx.reshape(-1, 1) * omega  # [h*w, quarter]
    emb = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)
    return nnf.pad(emb, (0, dim - emb.shape[1]))


def token_grid(n: int, cond_grid: tuple[int, int] | None) -> tuple[int, int]:
    """The grid N condition tokens lie on: `cond_grid` if given, else square if N is a square, else one row."""
    if cond_grid is not None:
        if cond_grid[0] * cond_grid[1] != n:
            raise ValueError(f"cond_grid={list(cond_grid)} holds {cond_grid[0] * cond_grid[1]} tokens, cond has {n}")
        return cond_grid
    side = math.isqrt(n)
    return (side, side) if side * side == n else (1, n)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """t in [0, 1] [B] -> [B, W]: sinusoid of 1000*t (DiT's frequencies), then an MLP."""

    def __init__(self, width: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000 * t.float()[:, None] * freqs[None]  # [B, half]
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1).to(self.mlp[0].weight.dtype))


class Block(nn.Module):
    """adaLN-zero self-attention, cross-attention to the tokens, adaLN-zero MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, backend: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads, backend=backend)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.cross = Attention(width, heads, backend=backend)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, dim=-1)  # each [B, 1, W]
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + self.cross(self.norm2(x), ctx)
        return x + gate2 * self.mlp(modulate(self.norm3(x), shift2, scale2))


class DiT(nn.Module):
    """Velocity network v(x_t, t | Z): x [B, C, H, W], t [B] in [0, 1], Z [B, N, D] -> [B, C, H, W]."""

    def __init__(self, *, in_channels: int, input_size: tuple[int, int], patch_size: int, cond_dim: int, width: int,
                 depth: int, heads: int, mlp_ratio: float = 4.0, cond_grid: tuple[int, int] | None = None,
                 attention: str = "sdpa", cond_spatial: bool = False) -> None:
        super().__init__()
        h, w = input_size
        if h % patch_size or w % patch_size:
            raise ValueError(f"input size {h}x{w} is not divisible by patch_size={patch_size}")
        self.in_channels, self.patch_size, self.cond_grid = in_channels, patch_size, cond_grid
        self.grid = (h // patch_size, w // patch_size)
        self.patch = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self.register_buffer("pos", sincos_2d(self.grid, width), persistent=False)  # [h*w, W]
        self.t_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Sequential(nn.LayerNorm(cond_dim), nn.Linear(cond_dim, width))
        self.cond_pool = nn.Linear(width, width)
        # cond_spatial: each patch also gets, added to its input, the embedding of the tokens over it (the token grid
        # resized to the patch grid); cross-attention still reads every token
        self.cond_spatial = nn.Linear(width, width) if cond_spatial else None
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, attention) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.final = nn.Linear(width, patch_size * patch_size * in_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT's init: xavier linears, zero biases, N(0, 0.02) timestep MLP; adaLN, cross-attention output and the
        final layer at zero, so every block starts as the identity and the network predicts v = 0."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch.weight.view(self.patch.weight.shape[0], -1))
        nn.init.zeros_(self.patch.bias)
        for lin in (self.t_embed.mlp[0], self.t_embed.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        zero = [self.final_ada[1], self.final] + [m for b in self.blocks for m in (b.ada[1], b.cross.proj)]
        for lin in zero:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def spatial(self, ctx: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, N, W] on the token grid -> [B, h*w, W] on the patch grid: area-averaged when the tokens are finer than
        the patches, nearest-neighbour copies when coarser (each patch reads the one token it lies under)."""
        b, _, w = ctx.shape
        fmap = ctx.transpose(1, 2).reshape(b, w, *grid)
        mode = "area" if grid[0] >= self.grid[0] and grid[1] >= self.grid[1] else "nearest"
        return nnf.interpolate(fmap, size=self.grid, mode=mode).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.pos.to(x.dtype)  # [B, h*w, W]
        ctx = self.cond_embed(cond)  # [B, N, W]
        c = self.t_embed(t) + self.cond_pool(ctx.mean(dim=1))  # [B, W]
        grid = token_grid(cond.shape[1], self.cond_grid)
        if self.cond_spatial is not None:
            tokens = tokens + self.spatial(self.cond_spatial(ctx), grid)
        ctx = ctx + sincos_2d(grid, ctx.shape[-1], device=ctx.device).to(ctx.dtype)
        for block in self.blocks:
            tokens = block(tokens, c, ctx)
        shift, scale = self.final_ada(c)[:, None].chunk(2, dim=-1)
        out = self.final(modulate(self.final_norm(tokens), shift, scale))  # [B, h*w, p*p*C]
        p, (gh, gw) = self.patch_size, self.grid
        out = out.view(b, gh, gw, p, p, self.in_channels).permute(0, 5, 1, 3, 2, 4)  # [B, C, gh, p, gw, p]
        return out.reshape(b, self.in_channels, gh * p, gw * p)


class PixelDiT(FlowDecoder):
    """The paper's pixel decoder: a DiT on RGB pixels (no VAE), trained with rectified flow, conditioned on Z.

    size: "tiny" | "S" | "B" | "L" | "XL" (width/depth/heads override it). image_size: int or [H, W], each divisible
    by patch_size. cond_grid: the token grid [rows, cols] when N is not a square. cond_dropout: probability of
    replacing a sample's Z by the learned null condition while training (for classifier-free guidance).
    time_sampling/logit_mean/logit_std/prediction/t_clamp: see `RectifiedFlow` (prediction "x": the network
    outputs the clean image, the loss stays on velocity); sample_shift: see `time_grid`. attention:
    "auto" | "sdpa" | "xformers". Images are [0, 1] at the interface and [-1, 1] inside.
    """

    def __init__(self, *, image_size: int | list[int] = 256, patch_size: int = 16, cond_dim: int = 1152,
                 size: str = "S", width: int | None = None, depth: int | None = None, heads: int | None = None,
                 mlp_ratio: float = 4.0, cond_grid: list[int] | None = None, cond_dropout: float = 0.1,
                 time_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0,
                 sample_shift: float = 1.0, prediction: str = "velocity", t_clamp: float = 0.05,
                 attention: str = "auto", cond_spatial: bool = False) -> None:
        super().__init__(cond_dim=cond_dim, cond_dropout=cond_dropout, time_sampling=time_sampling,
                         logit_mean=logit_mean, logit_std=logit_std, sample_shift=sample_shift,
                         prediction=prediction, t_clamp=t_clamp)
        self.image_size = as_hw(image_size)
        width, depth, heads = dit_dims(size, width, depth, heads)
        self.net = DiT(in_channels=3, input_size=self.image_size, patch_size=patch_size, cond_dim=self.cond_dim,
                       width=width, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                       cond_grid=as_hw(cond_grid, "cond_grid") if cond_grid is not None else None, attention=attention,
                       cond_spatial=cond_spatial)

    @property
    def space_shape(self) -> tuple[int, int, int]:
        return (3, *self.image_size)

    def to_space(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return images * 2 - 1

    def from_space(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1)
