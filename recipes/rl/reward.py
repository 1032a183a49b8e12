"""The reward interface: generated images (+ their prompts, and for editing the source and target images) -> one
score per image. Rewards are frozen: nothing in them is trained by the policy, and they never pass a gradient.

Built-ins: `offline.py` (text-image agreement, category probe, edit closeness/preservation), `judge.py` (an
OpenAI-compatible chat endpoint); `WeightedSum` combines any of them. YAML picks one with `class_path`/`init_args`.
"""

from __future__ import annotations

import torch
from torch import nn

from armkit.common.buildable import Buildable


class Reward(Buildable, nn.Module):
    """Subclasses implement `score`. images [B, 3, H, W] in [0, 1]; prompts: B strings (caption or instruction);
    sources / targets: editing's source and reference target images [B, 3, H', W'] (None for text-to-image)."""

    def score(self, images: torch.Tensor, prompts: list[str], sources: torch.Tensor | None = None,
              targets: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def parts(self, images: torch.Tensor, prompts: list[str], sources: torch.Tensor | None = None,
              targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Named scores [B] that make up the reward (for logging); a plain reward is its own only part."""
        return {type(self).__name__: self(images, prompts, sources, targets)}

    def forward(self, images: torch.Tensor, prompts: list[str], sources: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        if len(prompts) != len(images):
            raise ValueError(f"{type(self).__name__}: {len(images)} images but {len(prompts)} prompts")
        with torch.no_grad():
            out = self.score(images, list(prompts), sources, targets).float()
        if out.shape != (len(images),):
            raise ValueError(f"{type(self).__name__}.score must return one score per image [B], got {tuple(out.shape)}")
        return out

    def train(self, mode: bool = True) -> Reward:
        return super().train(False)  # always in eval mode: no dropout, no statistics updates


class WeightedSum(Reward):
    """sum_k weights[k] * rewards[k]; a reward without a weight counts 1."""

    def __init__(self, *, rewards: dict[str, Reward], weights: dict[str, float] | None = None) -> None:
        super().__init__()
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(rewards))
        if not rewards or unknown:
            raise ValueError(f"WeightedSum needs rewards; weights name unknown rewards {unknown} (have "
                             f"{sorted(rewards)})")
        self.rewards = nn.ModuleDict(rewards)
        self.weights = {k: float(weights.get(k, 1.0)) for k in rewards}

    def parts(self, images, prompts, sources=None, targets=None) -> dict[str, torch.Tensor]:
        return {k: r(images, prompts, sources, targets) for k, r in self.rewards.items()}

    def score(self, images, prompts, sources=None, targets=None) -> torch.Tensor:
        parts = self.parts(images, prompts, sources, targets)
        return sum(self.weights[k] * v for k, v in parts.items())
