"""What stops an RL run instead of letting it train on, or save, broken numbers.

`RLHalt` is the base of the errors after which a GRPO run cannot go on: the judge failing every retry (`JudgeError`),
or a non-finite reward, loss or parameter (`NonFiniteError`). `armkit train` prints such an error as one line and
exits 2 (recipes/training/fit.py). The run stops: a group is never skipped silently, and nothing non-finite reaches an
optimizer step or a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


class RLHalt(RuntimeError):
    """An RL run cannot go on; the message is one line naming what failed."""


class NonFiniteError(RLHalt, FloatingPointError):
    """A reward, advantage, loss or parameter is NaN or infinite."""


def check_finite(where: str, values: Mapping[str, torch.Tensor]) -> None:
    """Raise NonFiniteError naming the first tensor of `values` (name -> tensor) holding a NaN or an infinity."""
    for name, value in values.items():
        value = torch.as_tensor(value).detach()
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise NonFiniteError(f"{where}: {name} holds {bad} non-finite value(s) of {value.numel()}; refusing to "
                                 "train on it (check the reward: a judge or model giving NaN/inf)")


def check_finite_state(where: str, state: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
    """Raise NonFiniteError naming the first non-finite tensor of a state dict (refuse to save it)."""
    items = state.items() if isinstance(state, Mapping) else state
    for name, value in items:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise NonFiniteError(f"{where}: parameter {name} holds non-finite values; refusing to write it to a "
                                 "checkpoint (the last good checkpoint is kept)")
