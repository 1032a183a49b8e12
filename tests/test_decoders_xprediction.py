"""x-prediction ("Back to Basics", Li & He 2025): the network outputs the clean image, the loss stays on velocity.

Checked against closed forms on the Gaussian toy of test_decoders_samplers (x1 ~ N(MU, S^2), x0 ~ N(0, 1)), where
E[x1 | x_t = x] = x + (1 - t) E[x1 - x0 | x_t = x], and against diffusers' FlowMatchEulerDiscreteScheduler, whose
own relation between its model output and the clean sample is data = sample - sigma * model_output.
"""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from armkit.decoders import PixelDiT
from armkit.decoders.samplers import time_grid
from armkit.decoders.transport import RectifiedFlow, rand

MU = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
S = torch.tensor([0.5, 1.5, 0.2], dtype=torch.float64)


def exact_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.to(x.dtype)[:, None]
    return MU + (t * S ** 2 - (1 - t)) / (t ** 2 * S ** 2 + (1 - t) ** 2) * (x - t * MU)


def exact_clean(x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
    """E[x1 | x_t = x]: the posterior mean the x-predicting network should learn."""
    return x + (1 - t.to(x.dtype))[:, None] * exact_velocity(x, t)


@pytest.mark.parametrize("time_sampling", ["uniform", "logit_normal"])
def test_posterior_mean_minimises_the_x_prediction_loss(time_sampling):
    flow = RectifiedFlow(time_sampling=time_sampling, logit_mean=-0.8, logit_std=0.8, prediction="x")
    x1 = MU + S * torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def score(fn):
        return flow.loss(fn, x1, None, generator=torch.Generator().manual_seed(1))[0].item()

    best = score(exact_clean)
    for worse in (lambda x, t, c: exact_clean(x, t) + 0.05, lambda x, t, c: 0.95 * exact_clean(x, t),
                  lambda x, t, c: exact_clean(x, 1 - t), lambda x, t, c: x,  # "x_t is already clean"
                  lambda x, t, c: x + (1 - t.double())[:, None] * exact_velocity(x, t) * 0.9):
        assert score(worse) > best
    # the paper's velocity network is the wrong answer here: the output is read as an image
    assert score(lambda x, t, c: exact_velocity(x, t)) > 2 * best


def test_loss_is_the_velocity_error_with_the_clamped_denominator():
    """Recomputed by hand from the same draws (noise first, then t): ||(x_hat - x1) / max(1 - t, 0.05)||^2."""
    flow = RectifiedFlow(prediction="x", t_clamp=0.05)
    x1 = torch.randn(4096, 2, generator=torch.Generator().manual_seed(2))
    net = lambda x, t, c: 0.5 * x + 0.1  # noqa: E731
    loss, logs = flow.loss(net, x1, None, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    x0 = rand(tuple(x1.shape), generator=g, normal=True)
    t = rand((x1.shape[0],), generator=g)[:, None]
    xt = t * x1 + (1 - t) * x0
    expected = (((net(xt, t, None) - x1) / (1 - t).clamp_min(0.05)) ** 2).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    assert (t > 0.95).any()  # the clamp was exercised
    torch.testing.assert_close(logs["x_mse"], ((net(xt, t, None) - x1) ** 2).mean(), rtol=1e-4, atol=1e-6)


def test_to_velocity_is_the_exact_velocity_for_the_posterior_mean():
    x = torch.randn(64, 3, dtype=torch.float64)
    t = torch.rand(64, dtype=torch.float64) * 0.9
    flow = RectifiedFlow(prediction="x")
    torch.testing.assert_close(flow.to_velocity(exact_clean(x, t), x, t), exact_velocity(x, t))
    assert RectifiedFlow().to_velocity(x, x * 2, t) is x  # velocity: the output as it is


def test_x_predicting_decoder_samples_like_diffusers_euler():
    """PixelDiT(prediction="x").sample == diffusers FlowMatchEuler fed model_output = (sample - x_hat) / sigma."""
    torch.manual_seed(0)
    dec = PixelDiT(size="tiny", image_size=8, patch_size=4, cond_dim=16, prediction="x").eval()
    for p in dec.net.parameters():  # leave the zero init: a network that predicts something
        p.data.add_(0.05 * torch.randn_like(p))
    cond = torch.randn(2, 4, 16)
    steps, shift = 6, 2.0
    dec.sample_shift = shift
    ours = dec.sample(cond, steps=steps, generator=torch.Generator().manual_seed(5))
    noise = rand((2, 3, 8, 8), generator=torch.Generator().manual_seed(5), normal=True)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=torch.linspace(1, 1 / steps, steps).tolist())
    sample = noise
    with torch.no_grad():
        for i, timestep in enumerate(scheduler.timesteps):
            sigma = scheduler.sigmas[i]
            x_hat = dec.net(sample, (1 - sigma).expand(2), cond)
            sample = scheduler.step((sample - x_hat) / sigma, timestep, sample).prev_sample
    torch.testing.assert_close(ours, dec.from_space(sample), atol=1e-5, rtol=1e-5)
    assert torch.allclose(time_grid(steps, shift=shift), 1 - scheduler.sigmas, atol=1e-6)


def test_bad_prediction_options():
    with pytest.raises(ValueError, match="prediction"):
        RectifiedFlow(prediction="eps")
    with pytest.raises(ValueError, match="t_clamp"):
        RectifiedFlow(prediction="x", t_clamp=0.0)
