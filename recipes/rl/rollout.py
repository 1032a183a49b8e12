"""Rollouts for GRPO: G sampled images per prompt from the AR stage's sampler, and the log-probs of their visual
tokens under any model (the policy now, the policy that sampled, the frozen reference).

Sampling reuses `backbones.generate.generate_image` (KV cache, temperature, top-k, `generator=`), so a rollout is a
pure function of (model weights, prompts, seed). Log-probs are those of the temperature-scaled distribution without
the top-k cut (as TRL scores its samples); the factorized head's log p(code) is the sum of its digits' log-probs.
No guidance in rollouts: the policy's own distribution is what GRPO optimises.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from armkit.backbones.ar import ARModel, fsq_digits
from armkit.backbones.generate import Sampling, generate_image
from armkit.backbones.sequence import left_pad, positions


class Rollout(NamedTuple):
    prompts: list[list[int]]  # [P * G] prompt ids, each prompt repeated G times (groups are consecutive rows)
    codes: torch.Tensor  # [P * G, h*w] sampled codes
    group_size: int


def sample_groups(model: ARModel, prompts: list[list[int]], grid: tuple[int, int], *, group_size: int,
                  sampling: Sampling, generator: torch.Generator) -> Rollout:
    """G images per prompt (prompts end in `BOI H W`), all drawn from `generator`."""
    rows = [p for p in prompts for _ in range(group_size)]
    was_training = model.training
    model.eval()
    codes = generate_image(model, rows, grid, sampling=sampling, generator=generator)
    model.train(was_training)
    return Rollout(rows, codes, group_size)


def visual_logprobs(model: ARModel, prompts: list[list[int]], codes: torch.Tensor, *,
                    temperature: float = 1.0) -> torch.Tensor:
    """log p(code_t | prompt, code_<t) / temperature-scaled, for every sampled code: [R, h*w] (float32).

    One forward pass over `left-padded prompt + codes`; position L-1+t (L the padded prompt length) predicts code t."""
    if temperature <= 0:
        raise ValueError("visual_logprobs needs temperature > 0 (greedy samples have no log-prob to ratio)")
    v = model.vocab
    ids, mask = left_pad(v, prompts)
    device = next(model.parameters()).device
    codes = codes.to(device)
    full = torch.cat([ids.to(device), codes + v.visual_start], dim=1)
    mask = torch.cat([mask.to(device), torch.ones_like(codes)], dim=1)
    n, start = codes.shape[1], ids.shape[1] - 1
    hidden = model.trunk(full, mask, positions(mask)).hidden[:, start: start + n]  # [R, N, H]
    logits = model.visual_logits(hidden).float() / temperature
    if model.head_kind == "full":
        return logits.log_softmax(-1).gather(-1, codes[..., None]).squeeze(-1)
    digits = fsq_digits(codes, model.levels)  # [R, N, K]
    return sum(part.log_softmax(-1).gather(-1, digits[..., k: k + 1]).squeeze(-1)
               for k, part in enumerate(model.split_levels(logits)))
