"""The GRPO objective against a hand-computed example (group advantages, clipping, k3 KL, visual-token mask)."""

from __future__ import annotations

import math

import pytest
import torch

from armkit.recipes.rl.objective import group_advantages, grpo_loss


def test_group_advantages_by_hand():
    adv = group_advantages(torch.tensor([1.0, 0.0, 2.0, 2.0, 3.0, 0.0]), group_size=3, eps=1e-4)
    # group 1: mean 1, unbiased std 1 -> (0, -1, 1)/(1 + 1e-4); group 2: mean 5/3, std sqrt(7/3)
    s = math.sqrt(7 / 3) + 1e-4
    expected = [0.0, -1 / 1.0001, 1 / 1.0001, (2 - 5 / 3) / s, (3 - 5 / 3) / s, (0 - 5 / 3) / s]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(5), group_size=2)


def test_grpo_loss_matches_a_hand_computed_example():
    ln2 = math.log(2.0)
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0], [-1.0, -2.0, -3.0]],
                        requires_grad=True)
    ratios = torch.tensor([[1.5, 1.0, 9.0], [0.5, 1.1, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    old = logp.detach() - ratios.log()
    ref = logp.detach().clone()
    ref[2, 0] += ln2  # kl = 2 - ln2 - 1
    ref[3, 0] -= ln2  # kl = 1/2 + ln2 - 1
    ref[0, 2] += 5.0  # masked out: must not count
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 0]])
    rewards = torch.tensor([1.0, 0.0, 2.0, 2.0])
    out = grpo_loss(logp, old, ref, rewards, mask, group_size=2, clip=0.2, beta=0.01, eps=1e-4)

    a = 0.5 / (math.sqrt(0.5) + 1e-4)  # rows 0/1 get +a / -a; rows 2/3 (equal rewards) get 0
    row0 = (-1.2 * a - 1.0 * a) / 2  # ratio 1.5 clipped to 1.2; ratio 1 -> -A
    row1 = (0.8 * a + 1.1 * a + 1.0 * a) / 3  # A < 0: ratio 0.5 clipped up to 0.8; ratio 1.1 kept
    row2 = 0.01 * (1 - ln2) / 3
    row3 = 0.01 * (ln2 - 0.5) / 2
    assert out.loss.item() == pytest.approx((row0 + row1 + row2 + row3) / 4, rel=1e-6)
    assert out.logs["clip_fraction"].item() == pytest.approx(2 / 10)
    assert out.logs["kl"].item() == pytest.approx(((1 - ln2) + (ln2 - 0.5)) / 10, rel=1e-6)

    out.loss.backward()
    g = logp.grad
    assert g[0, 0] == 0 and g[1, 0] == 0  # clipped tokens pass no policy gradient (and KL is 0 there)
    assert g[0, 2] == 0  # a masked token gets no gradient at all
    assert g[0, 1].item() == pytest.approx(-a / 2 / 4, rel=1e-6)  # d/dlogp of -ratio*A, ratio 1, mean over 2, then 4
    assert g[1, 1].item() == pytest.approx(1.1 * a / 3 / 4, rel=1e-6)
    assert g[2, 0].item() == pytest.approx(0.01 * (1 - 2.0) / 3 / 4, rel=1e-6)  # d kl/d logp = 1 - exp(ref - logp)


def test_grpo_loss_rejects_bad_shapes_and_empty_masks():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        grpo_loss(z, z, torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3), group_size=2)
    with pytest.raises(ValueError, match="visual token"):
        grpo_loss(z, z, z, torch.zeros(2), torch.tensor([[1, 1, 1], [0, 0, 0]]), group_size=2)
