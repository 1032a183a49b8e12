"""ODE samplers for rectified flow: integrate dx/dt = v(x, t) from t=0 (noise) to t=1 (data).

Conventions: t is the data fraction of the path x_t = t*x1 + (1-t)*x0. diffusers' flow-match schedulers use the noise
fraction sigma = 1 - t and a model output of noise - data = -v; `time_grid` reproduces their shifted grid, and the
tests check that `euler` and `heun` follow diffusers' FlowMatchEuler/HeunDiscreteScheduler step for step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from armkit.decoders.transport import VelocityFn

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B, ...], t [B]) -> dx/dt like x


def time_grid(steps: int, *, shift: float = 1.0, device: torch.device | str | None = None) -> torch.Tensor:
    """steps + 1 times from 0 (noise) to 1 (data), float32.

    shift > 1 spends more steps near the noise end (SD3 uses 3): with sigma = 1 - t it maps
    sigma -> shift*sigma / (1 + (shift - 1)*sigma), as FlowMatchEulerDiscreteScheduler(shift=shift) does.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    sigma = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    sigma = shift * sigma / (1 + (shift - 1) * sigma)
    return (1 - sigma).to(device=device, dtype=torch.float32)


def euler(velocity: Velocity, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Explicit Euler over the grid ts [S+1]: S velocity evaluations."""
    for t0, t1 in itertools.pairwise(ts):
        x = x + (t1 - t0) * velocity(x, t0.expand(x.shape[0]))
    return x


def heun(velocity: Velocity, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Heun's second-order method (trapezoid with an Euler predictor) over ts [S+1]: 2S velocity evaluations.

    The flow's velocity is finite at t=1, so the last interval is a full Heun step too (diffusers' Heun scheduler,
    written for denoisers that are undefined at sigma=0, takes a plain Euler step there).
    """
    for t0, t1 in itertools.pairwise(ts):
        h = t1 - t0
        d0 = velocity(x, t0.expand(x.shape[0]))
        d1 = velocity(x + h * d0, t1.expand(x.shape[0]))
        x = x + 0.5 * h * (d0 + d1)
    return x


SAMPLERS: dict[str, Callable[[Velocity, torch.Tensor, torch.Tensor], torch.Tensor]] = {"euler": euler, "heun": heun}


def guided(model: VelocityFn, cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> Velocity:
    """Classifier-free guidance on the token condition: v = v_u + scale * (v_c - v_u).

    scale == 1 is plain conditional sampling and skips the unconditional pass; otherwise both run as one batch.
    """
    if scale == 1.0:
        return lambda x, t: model(x, t, cond)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_c, v_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond])).chunk(2)
        return v_u + scale * (v_c - v_u)

    return velocity


def solve(velocity: Velocity, noise: torch.Tensor, *, steps: int, sampler: str = "euler",
          shift: float = 1.0) -> torch.Tensor:
    """noise (the t=0 end) -> the t=1 end, with `sampler` over `time_grid(steps, shift)`."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    return SAMPLERS[sampler](velocity, noise, time_grid(steps, shift=shift, device=noise.device))
