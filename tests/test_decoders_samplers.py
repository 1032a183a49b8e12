"""ODE samplers: the analytic Gaussian flow, step-for-step agreement with diffusers, classifier-free guidance.

Gaussian toy. Data x1 ~ N(mu, s^2) per dimension, noise x0 ~ N(0, 1), x_t = t x1 + (1 - t) x0. Then x_t ~
N(t mu, sigma_t^2) with sigma_t^2 = t^2 s^2 + (1 - t)^2, and Cov(x1 - x0, x_t) = t s^2 - (1 - t), so the exact
(marginal) velocity is the Gaussian regression
    v(x, t) = E[x1 - x0 | x_t = x] = mu + (t s^2 - (1 - t)) / sigma_t^2 * (x - t mu).
Its flow is x(t) = t mu + sigma_t x(0) (differentiate: sigma_t' = (t s^2 - (1 - t)) / sigma_t), so the ODE carries
noise x0 to exactly mu + s x0: the analytic endpoint the samplers must reach.
"""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from armkit.decoders.samplers import euler, guided, heun, solve, time_grid

MU = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
S = torch.tensor([0.5, 1.5, 0.2], dtype=torch.float64)


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.to(x.dtype)[:, None]
    var = t ** 2 * S ** 2 + (1 - t) ** 2
    return MU + (t * S ** 2 - (1 - t)) / var * (x - t * MU)


def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """An arbitrary smooth nonlinear velocity field for the trajectory comparisons."""
    t = t.view(-1, *([1] * (x.ndim - 1)))
    return torch.sin(3 * x) * (1 + t) - x * t ** 2 + 0.3


def test_samplers_reach_the_analytic_endpoint():
    x0 = torch.randn(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = MU + S * x0
    errors = {}
    for name, method in (("euler", euler), ("heun", heun)):
        errors[name] = [(method(gaussian_velocity, x0, time_grid(n).double()) - exact).abs().max().item()
                        for n in (8, 16, 32)]
    assert errors["euler"][-1] < 0.25 and errors["heun"][-1] < 0.003
    for n in range(3):
        assert errors["heun"][n] < errors["euler"][n] / 10  # Heun beats Euler at equal steps
    for a, b in zip(errors["euler"], errors["euler"][1:]):
        assert 1.7 < a / b < 2.3  # first order: halving the step halves the error
    for a, b in zip(errors["heun"], errors["heun"][1:]):
        assert 3.0 < a / b < 5.0  # second order: halving the step quarters it


def test_sampled_distribution_matches_data():
    x0 = torch.randn(20000, 3, generator=torch.Generator().manual_seed(1))
    x1 = solve(lambda x, t: gaussian_velocity(x.double(), t).float(), x0, steps=20, sampler="heun", shift=3.0)
    torch.testing.assert_close(x1.mean(0).double(), MU, atol=0.03, rtol=0)
    torch.testing.assert_close(x1.std(0).double(), S, atol=0.03, rtol=0)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_time_grid_matches_diffusers(shift):
    steps = 7
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=torch.linspace(1, 1 / steps, steps).tolist())
    torch.testing.assert_close(time_grid(steps, shift=shift), 1 - scheduler.sigmas, atol=1e-6, rtol=0)


def test_euler_follows_diffusers_trajectory():
    """diffusers: x = (1 - sigma) data + sigma noise, model output noise - data = -v, sigma = 1 - t."""
    steps, shift = 6, 3.0
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=torch.linspace(1, 1 / steps, steps).tolist())
    ts = time_grid(steps, shift=shift)
    sample = x
    for i, timestep in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        sample = scheduler.step(-field(sample, (1 - sigma).expand(4)), timestep, sample).prev_sample
        torch.testing.assert_close(euler(field, x, ts[:i + 2]), sample, atol=1e-5, rtol=1e-5)


def test_heun_follows_diffusers_trajectory():
    """diffusers' Heun scheduler on its own grid: Heun steps, then a plain Euler step into sigma = 0."""
    steps, shift = 5, 2.0
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    scheduler = FlowMatchHeunDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas  # [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]
    ts = 1 - torch.cat([sigmas[:1], sigmas[1:-1:2], sigmas[-1:]])  # steps + 1 grid points
    assert len(ts) == steps + 1 and len(scheduler.timesteps) == 2 * steps - 1
    sample = x
    for i, timestep in enumerate(scheduler.timesteps):
        sample = scheduler.step(-field(sample, (1 - sigmas[i]).expand(4)), timestep, sample).prev_sample
        if i % 2 == 1:  # a Heun interval completed
            torch.testing.assert_close(heun(field, x, ts[:(i + 1) // 2 + 1]), sample, atol=1e-5, rtol=1e-5)
    last = euler(field, heun(field, x, ts[:-1]), ts[-2:])
    torch.testing.assert_close(last, sample, atol=1e-5, rtol=1e-5)


def test_guidance_one_is_the_plain_conditional_velocity():
    calls = []

    def model(x, t, c):
        calls.append(x.shape[0])
        return torch.tanh(x * c.mean(dim=(1, 2)).view(-1, 1, 1, 1)) + t.view(-1, 1, 1, 1)

    x, t = torch.randn(2, 3, 4, 4), torch.rand(2)
    cond, uncond = torch.randn(2, 5, 8), torch.zeros(2, 5, 8)
    torch.testing.assert_close(guided(model, cond, uncond, 1.0)(x, t), model(x, t, cond))
    assert calls == [2, 2]  # no unconditional pass, no doubled batch
    calls.clear()
    v_c, v_u = model(x, t, cond), model(x, t, uncond)
    torch.testing.assert_close(guided(model, cond, uncond, 1.5)(x, t), v_u + 1.5 * (v_c - v_u))
    assert calls[-1] == 4  # both branches in one batch
    torch.testing.assert_close(guided(model, cond, uncond, 0.0)(x, t), v_u)


def test_solve_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sampler"):
        solve(field, torch.zeros(1, 2), steps=2, sampler="rk4")
    with pytest.raises(ValueError, match="steps"):
        time_grid(0)
