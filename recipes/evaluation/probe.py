"""A linear probe on frozen features: the head-independent semantic measurement tokenizer papers use.

    train features [n, D] --standardise (train mean / std)--> multinomial logistic regression W [D, C], b [C]
    fitted by full-batch L-BFGS from zero for a fixed budget (`steps`, `l2`)  --> val top-1 / per-class top-1

Zero initialisation and full-batch L-BFGS make the fit deterministic (no random draw at all), so the score depends
only on the features, the labels and the budget recorded in the protocol. The probe reads pooled Z, never a loss's
head, so every ablation variant is measured the same way.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as nnf

from armkit.recipes.evaluation.metrics import balanced_top1, topk_correct


class Probe(NamedTuple):
    weight: torch.Tensor  # [D, C] on standardised features
    bias: torch.Tensor  # [C]
    mean: torch.Tensor  # [D] train mean
    std: torch.Tensor  # [D] train std (floored)
    train_top1: float  # % of the train rows it classifies right
    loss: float  # final objective: mean cross-entropy + l2 * ||W||^2 / 2


class ProbeScore(NamedTuple):
    top1: float  # % of rows right
    top1_balanced: float  # mean per-class recall, %
    count: int


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, l2: float = 1e-3,
              steps: int = 100) -> Probe:
    """Fit the probe on features [n, D] and labels [n] in [0, num_classes); see the module docstring."""
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"fit_probe expects features [n, D] and labels [n], got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    if features.shape[0] < 2 or labels.unique().numel() < 2:
        raise ValueError(f"fit_probe needs at least 2 samples of 2 classes, got {features.shape[0]} samples of "
                         f"{labels.unique().numel()} class(es)")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"fit_probe: labels must lie in [0, {num_classes}), got [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    x = features.double()
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=int(steps), history_size=20,
                            tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = nnf.cross_entropy(x @ weight + bias, labels) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
        loss = float(objective().detach())
    weight, bias = weight.detach(), bias.detach()
    right = float(((x @ weight + bias).argmax(dim=1) == labels).double().mean())
    return Probe(weight, bias, mean, std, 100.0 * right, loss)


def score_probe(probe: Probe, features: torch.Tensor, labels: torch.Tensor) -> ProbeScore:
    """Top-1 and per-class top-1 (%) of the probe on features [m, D], labels [m]."""
    scores = ((features.double() - probe.mean) / probe.std) @ probe.weight + probe.bias  # [m, C]
    m = int(labels.numel())
    if m == 0:
        raise ValueError("score_probe needs at least one labelled sample")
    return ProbeScore(100.0 * topk_correct(scores, labels, 1) / m, 100.0 * balanced_top1(scores, labels), m)
