"""A linear probe on frozen features: the head-independent semantic measurement tokenizer papers use.

    train features [n, D] --standardise (train mean / std)--> multinomial logistic regression W [D, C], b [C]
    fitted by full-batch L-BFGS from zero for a fixed budget (`steps`, `l2`)  --> val top-1 / per-class top-1

Zero initialisation and full-batch L-BFGS make the fit deterministic (no random draw at all), so the score depends
only on the features, the labels and the budget recorded in the protocol. `fit_probe` is armkit's one linear probe:
with solver="adamw" it is the probe the AR evaluation and the RL category reward record (full-batch AdamW from a
normal(0, 0.01) initialisation drawn from `seed`, decoupled weight decay `l2`, float32), and `to_linear` gives any
probe as an nn.Linear on raw features (the standardisation folded into its weights). The probe reads pooled Z, never
a loss's head, so every ablation variant is measured the same way. `linear_probe` runs it for `evaluate`: it encodes
the shards' `probe_split` (never the eval shards) and scores the eval samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as nnf
from torch import nn

from armkit.recipes.data.reader import ShardReader, expand_shards
from armkit.recipes.evaluation.metrics import balanced_top1, topk_correct
from armkit.recipes.evaluation.protocol import Protocol
from armkit.recipes.evaluation.provenance import shards_fingerprint


class Probe(NamedTuple):
    weight: torch.Tensor  # [D, C] on standardised features
    bias: torch.Tensor  # [C]
    mean: torch.Tensor  # [D] train mean (0 when not standardised)
    std: torch.Tensor  # [D] train std (floored; 1 when not standardised)
    train_top1: float  # % of the train rows it classifies right
    loss: float  # final objective: mean cross-entropy (+ l2 * ||W||^2 / 2 for L-BFGS; AdamW's decay is decoupled)


class ProbeScore(NamedTuple):
    top1: float  # % of rows right
    top1_balanced: float  # mean per-class recall, %
    count: int


SOLVERS = ("lbfgs", "adamw")


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, l2: float = 1e-3,
              steps: int = 100, solver: str = "lbfgs", lr: float = 1e-2, seed: int = 0,
              standardise: bool = True) -> Probe:
    """Fit the probe on features [n, D] and labels [n] in [0, num_classes); see the module docstring. solver:
    "lbfgs" (float64, zero init, `steps` L-BFGS iterations, L2 penalty `l2`; deterministic) or "adamw" (float32,
    normal(0, 0.01) init from `seed`, `steps` full-batch AdamW steps of learning rate `lr`, weight decay `l2`).
    standardise: first map the features to zero mean, unit std (the train statistics, kept in the Probe)."""
    if solver not in SOLVERS:
        raise ValueError(f"fit_probe: solver must be one of {SOLVERS}, got {solver!r}")
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"fit_probe expects features [n, D] and labels [n], got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    if features.shape[0] < 2 or labels.unique().numel() < 2:
        raise ValueError(f"fit_probe needs at least 2 samples of 2 classes, got {features.shape[0]} samples of "
                         f"{labels.unique().numel()} class(es)")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"fit_probe: labels must lie in [0, {num_classes}), got [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    x = features.double() if solver == "lbfgs" else features.float()
    if standardise:
        mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
        x = (x - mean) / std
    else:
        mean, std = torch.zeros(x.shape[1], dtype=x.dtype), torch.ones(x.shape[1], dtype=x.dtype)
    with torch.enable_grad():
        weight, bias, loss = (_lbfgs if solver == "lbfgs" else _adamw)(x, labels, num_classes, l2=l2, steps=steps,
                                                                      lr=lr, seed=seed)
    right = float(((x @ weight + bias).argmax(dim=1) == labels).double().mean())
    return Probe(weight, bias, mean, std, 100.0 * right, loss)


def _lbfgs(x: torch.Tensor, labels: torch.Tensor, num_classes: int, *, l2: float, steps: int, lr: float,
           seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Zero init, full-batch L-BFGS on cross-entropy + l2 ||W||^2 / 2: no random draw (lr and seed unused)."""
    weight = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=int(steps), history_size=20,
                            tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        loss = nnf.cross_entropy(x @ weight + bias, labels) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(objective)
    loss = float(objective().detach())
    return weight.detach(), bias.detach(), loss


def _adamw(x: torch.Tensor, labels: torch.Tensor, num_classes: int, *, l2: float, steps: int, lr: float,
           seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """normal(0, 0.01) init from `seed`, `steps` full-batch AdamW steps on cross-entropy, weight decay l2 (weight
    [C, D] as nn.Linear holds it, so the fit is an nn.Linear's)."""
    weight = torch.empty(num_classes, x.shape[1], dtype=x.dtype).normal_(0.0, 0.01,
                                                                         generator=torch.Generator().manual_seed(seed))
    weight.requires_grad_(True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=l2)
    for _ in range(int(steps)):
        loss = nnf.cross_entropy(nnf.linear(x, weight, bias), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss = nnf.cross_entropy(nnf.linear(x, weight, bias), labels)
    return weight.detach().T, bias.detach(), float(loss)


def to_linear(probe: Probe) -> nn.Linear:
    """The probe as an nn.Linear (eval mode) on raw features: W ((x - mean) / std) + b = (W / std) x + (b - (W / std)
    mean). Exact (no rounding) for a probe fitted with standardise=False."""
    weight = (probe.weight / probe.std[:, None]).T  # [C, D]
    layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(probe.bias - weight @ probe.mean)
    return layer.eval()


def score_probe(probe: Probe, features: torch.Tensor, labels: torch.Tensor) -> ProbeScore:
    """Top-1 and per-class top-1 (%) of the probe on features [m, D], labels [m]."""
    scores = ((features.to(probe.weight.dtype) - probe.mean) / probe.std) @ probe.weight + probe.bias  # [m, C]
    m = int(labels.numel())
    if m == 0:
        raise ValueError("score_probe needs at least one labelled sample")
    return ProbeScore(100.0 * topk_correct(scores, labels, 1) / m, 100.0 * balanced_top1(scores, labels), m)


def linear_probe(tok: Any, data: str | Path, protocol: Protocol, val_features: torch.Tensor, val_labels: torch.Tensor,
                 device: str, metrics: dict[str, Any], skipped: dict[str, str], *, eval_shards: list[str],
                 image_size: int) -> dict[str, Any]:
    """Fits the probe on the mean-pooled Z of the `probe_split` shards, scores it on the eval samples; fills
    probe_top1(_balanced) in `metrics` (or the reason in `skipped`); returns what the protocol records."""
    keys = ("probe_top1", "probe_top1_balanced")
    record: dict[str, Any] = {"features": "mean over tokens of Z", "split": protocol.probe_split,
                              "limit": protocol.probe_limit, "steps": protocol.probe_steps, "l2": protocol.probe_l2,
                              "init": "zeros (deterministic: no seed needed)"}
    if protocol.probe_limit == 0:
        skipped.update(dict.fromkeys(keys, "probe_limit is 0"))
        return record
    try:
        shards = expand_shards(str(data), split=protocol.probe_split)
    except FileNotFoundError as e:
        skipped.update(dict.fromkeys(keys, f"no probe training shards: {e}"))
        return record
    if set(shards) & set(eval_shards) or not Path(str(data)).expanduser().is_dir():
        skipped.update(dict.fromkeys(keys, f"{data} has no {protocol.probe_split}-*.tar shards apart from the eval "
                                           "shards: the probe never trains on what it is scored on"))
        return record
    reader = ShardReader(shards, image_size=image_size, batch_size=protocol.batch_size, limit=protocol.probe_limit)
    feats, labels = [], []
    for batch in reader:
        feats.append(tok(batch["image"].to(device)).z.float().mean(dim=1).cpu())  # [B, D]
        labels.append(batch["cls"].cpu())
    train_x, train_y = (torch.cat(feats), torch.cat(labels)) if feats else (None, None)
    keep_train = train_y >= 0 if train_y is not None else None
    keep_val = val_labels >= 0
    if train_y is None or keep_train.sum() < 2 or train_y[keep_train].unique().numel() < 2 or not keep_val.any():
        skipped.update(dict.fromkeys(keys, "the probe needs labelled (.cls) samples of >= 2 classes in its train "
                                           "shards and labelled eval samples"))
        return record
    num_classes = int(max(train_y.max(), val_labels.max())) + 1
    probe = fit_probe(train_x[keep_train], train_y[keep_train], num_classes, l2=protocol.probe_l2,
                      steps=protocol.probe_steps)
    score = score_probe(probe, val_features[keep_val], val_labels[keep_val])
    metrics["probe_top1"], metrics["probe_top1_balanced"] = score.top1, score.top1_balanced
    record.update(train_count=int(keep_train.sum()), train_shards=[Path(s).name for s in shards],
                  train_fingerprint=shards_fingerprint(shards), train_top1=probe.train_top1,
                  objective=probe.loss, scored=score.count, classes=num_classes)
    return record
