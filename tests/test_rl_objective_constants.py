"""`grpo_loss` is differentiable through `logp` only: `old_logp` (the sampling policy's log-probs) and `ref_logp` are
constants even when the caller passes tensors still attached to a graph, e.g. on-policy, where old_logp is logp."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

from armkit.recipes.rl.objective import grpo_loss

B, T, G = 4, 6, 2


def inputs():
    torch.manual_seed(0)
    theta = torch.randn(B, T, requires_grad=True)  # the policy's parameters: logp = logsigmoid(theta)
    source = torch.randn(B, T, requires_grad=True)  # another graph that old_logp / ref_logp come from
    rewards = torch.tensor([1.0, 0.0, 0.2, 0.9])
    mask = torch.ones(B, T)
    mask[:, :2] = 0  # text positions
    return theta, source, rewards, mask


def grads(loss: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, tensors, allow_unused=True))


def test_attached_old_and_ref_logp_get_no_gradient_and_do_not_change_the_policy_gradient():
    theta, source, rewards, mask = inputs()
    logp = nnf.logsigmoid(theta)
    old = logp.detach() + 0.3 * torch.tanh(source)  # attached to `source`; ratios away from 1, some clipped
    ref = logp.detach() - 0.5 * source.sigmoid()
    attached = grpo_loss(logp, old, ref, rewards, mask, group_size=G).loss
    g_theta, g_source = grads(attached, theta, source)
    assert g_source is None or not g_source.any()
    detached = grpo_loss(nnf.logsigmoid(theta), old.detach(), ref.detach(), rewards, mask, group_size=G).loss
    torch.testing.assert_close(attached, detached)
    torch.testing.assert_close(g_theta, grads(detached, theta)[0])


def test_on_policy_old_logp_equal_to_logp_still_gives_the_policy_gradient():
    """old_logp = logp (the same tensor, as in the first update after sampling): the ratio is 1, but its gradient is
    d exp(logp - const) = 1 * d logp, not 0 as it would be if old_logp were differentiated too."""
    theta, _, rewards, mask = inputs()
    logp = nnf.logsigmoid(theta)
    g_same = grads(grpo_loss(logp, logp, logp.detach(), rewards, mask, group_size=G).loss, theta)[0]
    logp2 = nnf.logsigmoid(theta)
    g_want = grads(grpo_loss(logp2, logp2.detach(), logp2.detach(), rewards, mask, group_size=G).loss, theta)[0]
    assert g_want[:, 2:].abs().sum() > 0 and not g_want[:, :2].any()  # visual tokens only
    torch.testing.assert_close(g_same, g_want)
