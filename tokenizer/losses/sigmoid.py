"""Sigmoid contrastive loss (SigLIP) between pooled Z and a frozen text tower's embeddings.

    image_head="trained" (default):
      Z [B, N, D] --pool ("mean", or "attn": SigLIP's MAP head, timm's AttentionPoolLatent)--> [B, D]
                  --Linear--> [B, E] --L2--> image features
    image_head="teacher" (the paper's reading: only the scalars train):
      Z [B, N, D] --the frozen teacher's own pooling head (encoder.pool_tokens, e.g. SigLIP2's)--> [B, E] --L2-->
    texts --text tower--> [B, E] --L2--> text features
    loss = open_clip's SigLipLoss(image, text, exp(logit_scale), logit_bias)

Trained: `logit_scale` (log space) and `logit_bias`, plus the pool and the Linear with image_head="trained". The
default is "trained" because it works with any teacher: the demo's EfficientNet-Lite0 has no pooling head aligned to a
text tower. With a SigLIP2 teacher and its own text tower, "teacher" is what the paper describes.

The pairwise loss is open_clip's; it sums over all pairs and divides by the local batch size. Under DDP call
`set_distributed(rank, world_size)`: open_clip then exchanges text features with neighbouring ranks through
torch.distributed (a process group must be initialised).
Equal texts within a batch (e.g. two images of one class) count as negatives, as in SigLIP.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as nnf
from open_clip.loss import SigLipLoss
from timm.layers import AttentionPoolLatent
from torch import nn

from armkit.tokenizer.losses.base import Batch, Loss
from armkit.tokenizer.losses.caption import batch_texts
from armkit.tokenizer.text.base import TextTower

if TYPE_CHECKING:
    from armkit.tokenizer.model import Tokenizer, TokenizerOutput

POOLS = ("mean", "attn")
IMAGE_HEADS = ("trained", "teacher")


class SigmoidLoss(Loss):
    """SigLIP loss of Z against batch[text_key] through `text_tower`; see the module docstring."""

    def __init__(self, *, text_tower: TextTower, embed_dim: int, text_key: str = "tags", pool: str = "mean",
                 pool_heads: int = 4, image_head: str = "trained", init_logit_scale: float = math.log(10.0),
                 init_logit_bias: float = -10.0, cache_texts: int = 0, weight: float = 1.0,
                 enabled: bool = True) -> None:
        super().__init__(weight=weight, enabled=enabled)
        if not isinstance(text_tower, TextTower):
            raise TypeError(f"SigmoidLoss: text_tower must be a TextTower, got {type(text_tower).__name__}")
        if pool not in POOLS:
            raise ValueError(f"SigmoidLoss: pool must be one of {POOLS}, got pool={pool!r}")
        if image_head not in IMAGE_HEADS:
            raise ValueError(f"SigmoidLoss: image_head must be one of {IMAGE_HEADS}, got image_head={image_head!r}")
        if pool == "attn" and embed_dim % pool_heads and image_head == "trained":
            raise ValueError(f"SigmoidLoss: embed_dim={embed_dim} is not divisible by pool_heads={pool_heads}")
        self.text_tower = text_tower
        self.embed_dim = embed_dim
        self.text_key = text_key
        self.pool = pool
        self.image_head = image_head
        own = image_head == "trained"
        self.attn_pool = (AttentionPoolLatent(embed_dim, num_heads=pool_heads, norm_layer=nn.LayerNorm)
                          if pool == "attn" and own else None)
        self.head = nn.Linear(embed_dim, text_tower.width) if own else None
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias)))
        self.siglip = SigLipLoss(rank=0, world_size=1)
        self.cache_texts = cache_texts if text_tower.frozen else 0  # a trained tower's outputs change: no cache
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def set_distributed(self, rank: int, world_size: int) -> None:
        """Called by the trainer in setup: under DDP open_clip adds the negatives held by the other ranks."""
        self.siglip.rank, self.siglip.world_size = int(rank), int(world_size)

    def image_embedding(self, z: torch.Tensor, tokenizer: Tokenizer | None = None) -> torch.Tensor:
        """Z [B, N, D] -> L2-normalised image features [B, E]; image_head="teacher" needs the tokenizer (its
        encoder's pooling head)."""
        if z.ndim != 3 or z.shape[-1] != self.embed_dim:
            raise ValueError(f"SigmoidLoss: expects Z [B, N, {self.embed_dim}] (embed_dim), got {tuple(z.shape)}")
        if self.head is None:
            pool = getattr(getattr(tokenizer, "encoder", None), "pool_tokens", None)
            if not callable(pool):
                raise ValueError("SigmoidLoss(image_head='teacher') needs a tokenizer whose encoder has a pooling head "
                                 f"(pool_tokens, e.g. OpenCLIPEncoder on SigLIP2); got {type(tokenizer).__name__}"
                                 f"{'' if tokenizer is None else ' with ' + type(tokenizer.encoder).__name__}")
            pooled = pool(z)  # [B, E]: the frozen teacher's head
            if pooled.shape[-1] != self.text_tower.width:
                raise ValueError(f"SigmoidLoss(image_head='teacher'): the teacher pools to width {pooled.shape[-1]}, "
                                 f"the text tower gives {self.text_tower.width}")
            return nnf.normalize(pooled, dim=-1)
        pooled = self.attn_pool(z) if self.attn_pool is not None else z.mean(dim=1)  # [B, D]
        return nnf.normalize(self.head(pooled), dim=-1)  # [B, E]

    def text_embedding(self, texts: list[str]) -> torch.Tensor:
        """texts -> L2-normalised text features [B, E] from the text tower."""
        text = self._tower(list(texts))  # [B, E]
        if text.shape[-1] != self.text_tower.width:
            raise ValueError(f"SigmoidLoss: the text tower gave width {text.shape[-1]} but declares "
                             f"width={self.text_tower.width}")
        return nnf.normalize(text.float(), dim=-1)

    def _tower(self, texts: list[str]) -> torch.Tensor:
        """The frozen tower's embeddings, from an LRU cache of `cache_texts` entries when that is > 0 (captions and
        tags repeat every epoch; the tower's output for a text never changes)."""
        if not self.cache_texts:
            return self.text_tower(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            with torch.no_grad():
                for t, e in zip(missing, self.text_tower(missing)):
                    self._cache[t] = e.detach()
        for t in texts:
            self._cache.move_to_end(t)
        out = torch.stack([self._cache[t] for t in texts])
        while len(self._cache) > self.cache_texts:
            self._cache.popitem(last=False)
        return out

    def logits(self, z: torch.Tensor, texts: list[str], tokenizer: Tokenizer | None = None) -> torch.Tensor:
        """[B, T] = exp(logit_scale) * image @ text.T + logit_bias: sigmoid gives P(image i matches text j)."""
        image, text = self.image_embedding(z, tokenizer), self.text_embedding(texts)
        return self.logit_scale.exp() * image.float() @ text.to(image.device).T + self.logit_bias

    def forward(self, out: TokenizerOutput, batch: Batch, tokenizer: Tokenizer) -> tuple[torch.Tensor, dict]:
        image = self.image_embedding(out.z, tokenizer).float()  # [B, E]
        texts = batch_texts("SigmoidLoss", batch, self.text_key, image.shape[0])
        text = self.text_embedding(texts).to(image.device)  # [B, E]
        scale = self.logit_scale.exp()
        with torch.autocast(device_type=image.device.type, enabled=False):  # the pairwise loss in fp32
            loss = self.siglip(image, text, scale, self.logit_bias)
        return loss, {"logit_scale": scale.detach(), "logit_bias": self.logit_bias.detach()}
