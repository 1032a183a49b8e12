"""A tiny built-in GPT over bytes (nanoGPT-like), so tests and smoke runs need no downloaded LM.

Tokens are UTF-8 bytes (ids 0..255) plus END (256, closes every text) and PAD (257, right padding). The model reads
continuous prefix embeddings then the text tokens, with causal attention over the whole sequence (torch SDPA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

from armkit.backbones.base import CausalLM, LMOutput

END, PAD = 256, 257
VOCAB = 258


def byte_tokenize(texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """texts -> (ids [B, T], mask [B, T]): UTF-8 bytes cut to max_length - 1, then END, right-padded with PAD to the
    longest text of the batch (T <= max_length)."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    rows = [list(str(t).encode("utf-8"))[: max_length - 1] + [END] for t in texts]
    length = max((len(r) for r in rows), default=1)
    ids = torch.full((len(rows), length), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


class Block(nn.Module):
    """Pre-norm transformer block: SDPA attention (causal, or masked by `attn_mask`) and a GELU MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, *, causal: bool = False, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, w = x.shape  # [B, N, W]
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        y = nnf.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)  # [B, H, N, W/H]
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, w))
        return x + self.mlp(self.ln2(x))


def check_heads(owner: str, width: int, heads: int) -> None:
    if width < 1 or heads < 1 or width % heads:
        raise ValueError(f"{owner}: width={width} must be a positive multiple of heads={heads}")


def byte_trunk(module: nn.Module, *, width: int, depth: int, heads: int, max_length: int, seed: int | None,
               init_std: float | None = None) -> None:
    """Give `module` the byte-level trunk both tiny models share: wte, wpe, `depth` blocks, ln_f. A `seed` makes the
    init reproducible without touching the global generator; `init_std` re-draws every matrix from N(0, init_std)."""
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        module.wte = nn.Embedding(VOCAB, width)
        module.wpe = nn.Embedding(max_length, width)
        module.blocks = nn.ModuleList([Block(width, heads) for _ in range(depth)])
        module.ln_f = nn.LayerNorm(width)
        if init_std is not None:
            for p in module.parameters():
                if p.ndim == 2:
                    nn.init.normal_(p, std=init_std)


class TinyCausalLM(CausalLM):
    """A small GPT with byte tokens. `seed` makes the random init reproducible; `max_length` bounds prefix + text."""

    def __init__(self, *, width: int = 64, depth: int = 2, heads: int = 4, max_length: int = 96,
                 seed: int | None = 0, frozen: bool = True) -> None:
        super().__init__()
        check_heads("TinyCausalLM", width, heads)
        self.hidden_size = width
        self.vocab_size = VOCAB
        self.max_length = max_length
        # N(0, 1/width) weights: at these small widths nanoGPT's std 0.02 leaves a frozen LM deaf to its prefix
        byte_trunk(self, width=width, depth=depth, heads=heads, max_length=max_length, seed=seed,
                   init_std=width**-0.5)
        self.freeze_if(frozen)

    def tokenize(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = byte_tokenize(texts, max_length)
        return ids.to(self.device), mask.to(self.device)

    def forward(self, prefix: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> LMOutput:
        p = prefix.shape[1]
        t = input_ids.shape[1]
        if prefix.shape[-1] != self.hidden_size:
            raise ValueError(f"TinyCausalLM: prefix width {prefix.shape[-1]} != hidden_size {self.hidden_size}")
        if p < 1:
            raise ValueError("TinyCausalLM needs a prefix of at least one position (it predicts the first text token)")
        if p + t > self.max_length:
            raise ValueError(f"TinyCausalLM: prefix {p} + text {t} positions exceed max_length={self.max_length}")
        x = torch.cat([prefix.to(self.wte.weight.dtype), self.wte(input_ids)], dim=1)  # [B, P+T, W]
        x = x + self.wpe(torch.arange(p + t, device=x.device))
        for block in self.blocks:
            x = block(x, causal=True)
        # position P-1+i predicts text token i: the last prefix position predicts the first token
        logits = self.ln_f(x[:, p - 1: p - 1 + t]) @ self.wte.weight.T  # [B, T, V] (tied output head)
        targets = input_ids.masked_fill(attention_mask == 0, -100)  # padding carries no loss
        loss = nnf.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return LMOutput(loss, logits)
