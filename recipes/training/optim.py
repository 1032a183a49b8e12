"""The optimizer the tokenizer, decoder and AR stages share: AdamW over parameter groups with weight decay on
matrices only, and the warm-up + cosine learning-rate factor (schedule.py) stepped every optimizer step.

Matrices (any parameter of 2 or more dimensions) get `weight_decay`; everything under 2-D (norms, biases, scalars
such as the SigLIP logit scale and bias) gets none. Frozen parameters (requires_grad=False) are left out, so the
optimizer never holds them. Each group names its parameters ("names") for inspection.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch

from armkit.recipes.training.schedule import lr_factor


def param_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
                 weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: {"params", "names", "weight_decay"} for matrices (decayed) and for
    everything under 2-D (not decayed); empty groups are left out."""
    groups: dict[str, tuple[list, list]] = {"decay": ([], []), "no_decay": ([], [])}
    for name, p in named_parameters:
        if p.requires_grad:
            params, names = groups["decay" if p.ndim >= 2 else "no_decay"]
            params.append(p)
            names.append(name)
    return [{"params": params, "names": names, "weight_decay": weight_decay if key == "decay" else 0.0}
            for key, (params, names) in groups.items() if params]


def scheduled_adamw(module: torch.nn.Module) -> dict[str, Any]:
    """`configure_optimizers`' answer for a module with lr, betas, weight_decay, warmup_steps and cosine_steps
    attributes: AdamW over `param_groups` and a LambdaLR of `lr_factor`, stepped every optimizer step."""
    opt = torch.optim.AdamW(param_groups(module.named_parameters(), module.weight_decay), lr=module.lr,
                            betas=module.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, functools.partial(lr_factor, warmup_steps=module.warmup_steps, cosine_steps=module.cosine_steps))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
