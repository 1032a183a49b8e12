"""The rectified-flow objective: path and target conventions, timestep sampling."""

import math

import pytest
import torch

from armkit.decoders.transport import RectifiedFlow

MU = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
S = torch.tensor([0.5, 1.5, 0.2], dtype=torch.float64)


def exact_velocity(x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
    """E[x1 - x0 | x_t = x] for x1 ~ N(MU, S^2), x0 ~ N(0, 1), x_t = t x1 + (1 - t) x0 (see test_decoders_samplers)."""
    t = t.to(x.dtype)[:, None]
    var = t ** 2 * S ** 2 + (1 - t) ** 2
    return MU + (t * S ** 2 - (1 - t)) / var * (x - t * MU)


def test_path_endpoints_and_target():
    x0, x1 = torch.randn(4, 3), torch.randn(4, 3)
    xt, target = RectifiedFlow.path(x0, x1, torch.tensor([0.0, 1.0, 0.25, 0.5]))
    torch.testing.assert_close(xt[0], x0[0])
    torch.testing.assert_close(xt[1], x1[1])
    torch.testing.assert_close(xt[2], 0.25 * x1[2] + 0.75 * x0[2])
    torch.testing.assert_close(target, x1 - x0)


@pytest.mark.parametrize("time_sampling", ["uniform", "logit_normal"])
def test_exact_velocity_minimises_the_loss(time_sampling):
    """The conditional expectation E[x1 - x0 | x_t] is the unique minimiser of the flow loss: with the same noise and
    times (one seed), any perturbation of it must score worse. Fails if the path, the time convention or the target's
    sign were wrong."""
    flow = RectifiedFlow(time_sampling=time_sampling)
    x1 = MU + S * torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def score(fn):
        return flow.loss(fn, x1, None, generator=torch.Generator().manual_seed(1))[0].item()

    best = score(exact_velocity)
    for worse in (lambda x, t, c: 0.9 * exact_velocity(x, t), lambda x, t, c: exact_velocity(x, t) + 0.05,
                  lambda x, t, c: exact_velocity(x, 1 - t), lambda x, t, c: -exact_velocity(x, t)):
        assert score(worse) > best
    assert best < 0.5 * score(lambda x, t, c: torch.zeros_like(x))


def test_loss_returns_detached_logs():
    flow = RectifiedFlow()
    w = torch.ones(1, requires_grad=True)
    loss, logs = flow.loss(lambda x, t, c: w * x, torch.randn(2, 3, 4, 4), None)
    assert loss.ndim == 0 and loss.requires_grad and not logs["flow_mse"].requires_grad
    loss.backward()
    assert w.grad is not None


def test_uniform_times():
    t = RectifiedFlow().sample_t(100000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 1
    assert abs(t.mean().item() - 0.5) < 0.01 and abs(t.var().item() - 1 / 12) < 0.005


def test_logit_normal_times():
    t = RectifiedFlow(time_sampling="logit_normal", logit_mean=0.5, logit_std=0.8).sample_t(
        100000, generator=torch.Generator().manual_seed(0)).double()
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item() - 0.5) < 0.02 and abs(logit.std().item() - 0.8) < 0.02
    median = 1 / (1 + math.exp(-0.5))
    assert abs(t.median().item() - median) < 0.01


def test_bad_options():
    with pytest.raises(ValueError, match="time_sampling"):
        RectifiedFlow(time_sampling="cosine")
    with pytest.raises(ValueError, match="logit_std"):
        RectifiedFlow(time_sampling="logit_normal", logit_std=0.0)
