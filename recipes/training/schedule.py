"""The learning-rate schedule every recipe uses (warmup, cosine to 0.1x, then flat) and the cosine length that ends a
run of a given number of steps at its floor. No torch or Lightning here, so commands can plan runs without them."""

from __future__ import annotations

import math
from pathlib import Path

import yaml


def lr_factor(step: int, *, warmup_steps: int, cosine_steps: int) -> float:
    """The LR multiplier after `step` optimizer steps: linear warmup (step + 1) / warmup_steps over the first
    warmup_steps steps, then a cosine from 1 down to 0.1 over cosine_steps steps, then 0.1 (no cosine_steps: 1)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if cosine_steps <= 0:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / cosine_steps)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))


def recipe_schedule(config: Path) -> tuple[int, int]:
    """(warmup_steps, cosine_steps) of an `armkit train` recipe's model block (0 where it sets none)."""
    model = (yaml.safe_load(Path(config).read_text()) or {}).get("model") or {}
    model = model.get("init_args") or model
    return int(model.get("warmup_steps") or 0), int(model.get("cosine_steps") or 0)


def cosine_for(config: Path, steps: int) -> int:
    """The cosine length that ends a `steps`-step run at the schedule's floor: steps minus the recipe's warmup, as
    the recipes themselves set it (demo.yaml: 20 + 480 = 500 steps)."""
    return max(1, steps - recipe_schedule(config)[0])
