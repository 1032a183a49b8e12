"""LossSet: the weighted sum of named losses (paper Eq. 4: 1·caption + 5·pixel + 5·sigmoid + 1·distillation).

It knows only the `Loss` interface: a new loss is one new file plus one config block. Disabled losses are never
called, and their parameters are frozen so that optimisers and DDP never see them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from armkit.common.buildable import Buildable
from armkit.tokenizer.losses.base import Batch, Loss

if TYPE_CHECKING:
    from armkit.tokenizer.model import Tokenizer, TokenizerOutput


class LossSet(Buildable, nn.Module):
    """`losses` maps a name (used in the logs) to a Loss. forward -> (total, logs) with logs "loss/<name>" (unweighted),
    "loss/total", and each loss's own logs as "<name>/<key>"."""

    def __init__(self, *, losses: dict[str, Loss]) -> None:
        super().__init__()
        for name, loss in losses.items():
            if not isinstance(loss, Loss):
                raise TypeError(f"LossSet: losses[{name!r}] must be a Loss, got {type(loss).__name__}")
            if not name or "." in name or "/" in name:
                raise ValueError(f"LossSet: loss name {name!r} must be non-empty, without '.' or '/'")
            if not loss.enabled:
                loss.requires_grad_(False)
        if not any(loss.enabled for loss in losses.values()):
            raise ValueError(f"LossSet: no loss is enabled among {sorted(losses)}")
        self.losses = nn.ModuleDict(losses)

    def __iter__(self) -> Iterator[str]:
        return iter(self.losses)

    def __len__(self) -> int:
        return len(self.losses)

    def __getitem__(self, name: str) -> Loss:
        return self.losses[name]

    def items(self, *, enabled_only: bool = False) -> list[tuple[str, Loss]]:
        return [(n, loss) for n, loss in self.losses.items() if loss.enabled or not enabled_only]

    def of_type(self, cls: type) -> list[tuple[str, Loss]]:
        """The (name, loss) pairs whose loss is an instance of `cls`, e.g. the SigmoidLoss for zero-shot eval."""
        return [(n, loss) for n, loss in self.losses.items() if isinstance(loss, cls)]

    def set_distributed(self, rank: int, world_size: int) -> None:
        """Passes the trainer's rank and world size to every loss that has `set_distributed`."""
        for loss in self.losses.values():
            if hasattr(loss, "set_distributed"):
                loss.set_distributed(rank, world_size)

    def forward(self, out: TokenizerOutput, batch: Batch, tokenizer: Tokenizer) -> tuple[torch.Tensor, dict]:
        values, logs = {}, {}
        for name, loss in self.items(enabled_only=True):
            value, extra = loss(out, batch, tokenizer)
            if value.ndim != 0:
                raise ValueError(f"LossSet: loss {name!r} returned shape {tuple(value.shape)}, not a scalar")
            values[name] = value
            logs.update({f"{name}/{k}": v.detach() if torch.is_tensor(v) else v for k, v in extra.items()})
        weighted = {n: self.losses[n].weight * v for n, v in values.items()}
        total = sum(weighted.values())
        if not torch.isfinite(total.detach()).all():  # one device sync per step; the weighted total is what trains
            raise FloatingPointError(f"LossSet: the weighted total is {float(total.detach())}: "
                                     f"{self._culprits(values)}")
        logs.update({f"loss/{n}": v.detach() for n, v in values.items()})
        logs["loss/total"] = total.detach()
        return total, logs

    def _culprits(self, values: dict[str, torch.Tensor]) -> str:
        """Which terms made the total non-finite: a non-finite term, a non-finite weight, or weight x term overflow."""
        found = []
        for name, value in values.items():
            term, weight = float(value.detach()), self.losses[name].weight
            if not math.isfinite(term):
                found.append(f"non-finite loss term(s) {{{name!r}: {term}}}")
            elif not math.isfinite(weight):
                found.append(f"loss {name!r} has weight {weight} (term {term:.4g})")
            elif not math.isfinite(float((weight * value.detach()).float())):
                found.append(f"loss {name!r}: weight {weight} x term {term:.4g} overflows")
        return "; ".join(found) or "the sum of finite weighted terms overflows " + str(
            {n: float(self.losses[n].weight * v.detach()) for n, v in values.items()})
