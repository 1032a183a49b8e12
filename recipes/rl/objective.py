"""The GRPO objective on visual tokens, as one pure function over tensors (no model, no backbone).

For G rollouts per prompt with rewards r (groups are consecutive rows), token log-probs under the policy (logp),
under the policy that sampled them (old) and under the frozen reference (ref), and a mask of the visual tokens:

    A_i     = (r_i - mean_group(r)) / (std_group(r) + eps)                   group-normalised advantage (per rollout)
    ratio_t = exp(logp_t - old_t)
    pg_t    = -min(ratio_t * A_i, clip(ratio_t, 1 - clip, 1 + clip) * A_i)   PPO's clipped surrogate
    kl_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1                     k3 estimator of KL(policy || ref), >= 0
    loss    = mean_i [ sum_t mask * (pg_t + beta * kl_t) / sum_t mask ]      per-rollout token mean, then batch mean

This is TRL's `GRPOTrainer` loss (loss_type "grpo", std unbiased as torch.std, eps 1e-4) with ARM's settings as
defaults: clip 0.2, beta 0.01. Only masked (visual) tokens count; text, special and padding positions are ignored.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class GRPOLoss(NamedTuple):
    loss: torch.Tensor  # scalar, differentiable through logp
    logs: dict[str, torch.Tensor]  # detached scalars: kl, clip_fraction, ratio, advantage_abs, pg_loss


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """rewards [B] (B = prompts * group_size, groups consecutive) -> advantages [B]; equal rewards give 0."""
    if group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"GRPO needs group_size >= 2 dividing the batch; got {rewards.numel()} rewards, "
                         f"group_size={group_size}")
    groups = rewards.float().view(-1, group_size)
    adv = (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + eps)
    return adv.view(-1)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor,
              mask: torch.Tensor, *, group_size: int, clip: float = 0.2, beta: float = 0.01,
              eps: float = 1e-4) -> GRPOLoss:
    """logp / old_logp / ref_logp / mask [B, T] (mask 1 on visual tokens), rewards [B] -> (loss, logs); see module."""
    if not (logp.shape == old_logp.shape == ref_logp.shape == mask.shape) or logp.dim() != 2:
        raise ValueError(f"logp, old_logp, ref_logp and mask must share one [B, T] shape; got {tuple(logp.shape)}, "
                         f"{tuple(old_logp.shape)}, {tuple(ref_logp.shape)}, {tuple(mask.shape)}")
    if rewards.shape != logp.shape[:1]:
        raise ValueError(f"rewards must be [B]={logp.shape[0]}, got {tuple(rewards.shape)}")
    mask = mask.to(logp.dtype)
    count = mask.sum(1)
    if (count == 0).any():
        raise ValueError("every rollout needs at least one visual token in the mask")
    adv = group_advantages(rewards, group_size, eps).to(logp.dtype)[:, None]  # [B, 1]
    ratio = torch.exp(logp - old_logp.detach())
    clipped = ratio.clamp(1 - clip, 1 + clip)
    pg = -torch.min(ratio * adv, clipped * adv)
    delta = ref_logp.detach() - logp
    kl = torch.exp(delta) - delta - 1
    per_token = pg + beta * kl
    loss = ((per_token * mask).sum(1) / count).mean()
    was_clipped = ((ratio < 1 - clip) & (adv < 0)) | ((ratio > 1 + clip) & (adv > 0))

    def masked_mean(x: torch.Tensor) -> torch.Tensor:
        return ((x.detach().to(logp.dtype) * mask).sum() / mask.sum())

    logs = {"kl": masked_mean(kl), "clip_fraction": masked_mean(was_clipped), "ratio": masked_mean(ratio),
            "pg_loss": masked_mean(pg), "advantage_abs": adv.detach().abs().mean()}
    return GRPOLoss(loss, logs)
