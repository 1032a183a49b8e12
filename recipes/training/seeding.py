"""The one per-step seeding scheme: every random draw of a training or validation step comes from a seed that is a
function of (the recipe's seed, where the step is), never of what ran before it.

    step_seed(seed, *key)          hash((seed, *key)) % 2**63: key is e.g. (global_step, micro-batch, rank)
    seed_step(seed, *key)          torch.manual_seed(step_seed(seed, *key)): the global generator of the step
    step_generator(seed, *key)     a torch.Generator seeded with step_seed(seed, *key)

Keys are ints (tuples of ints hash the same in every process, PYTHONHASHSEED or not), so a run resumed from a
checkpoint (which falls on a step boundary) draws exactly what an uninterrupted one would, and every rank and every
micro-batch of an accumulation window draws differently.
"""

from __future__ import annotations

import torch


def step_seed(seed: int, *key: int) -> int:
    """The seed of the step named by `key` under the recipe's `seed`: hash((seed, *key)) % 2**63."""
    return hash((seed, *key)) % 2**63


def seed_step(seed: int, *key: int) -> None:
    """Seed torch's global generator (CPU and every GPU) for the step named by `key`."""
    torch.manual_seed(step_seed(seed, *key))


def step_generator(seed: int, *key: int, device: torch.device | str | None = None) -> torch.Generator:
    """A generator on `device` seeded for the step named by `key` (draws that must not touch the global one)."""
    gen = torch.Generator(device=device) if device is not None else torch.Generator()
    return gen.manual_seed(step_seed(seed, *key))
