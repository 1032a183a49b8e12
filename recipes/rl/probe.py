"""Fit the category probe a `CategoryProbe` reward reads, on *real* training images only (never on samples).

    armkit rl-probe --images data/emoji --out runs/rl-demo/probe [--weights asset:efficientnet_lite0]

writes OUT/probe.safetensors (weight, bias; the feature standardisation folded in, so the reward applies it to raw
pooled features) and OUT/prompt_classes.json ({caption: label}), and prints the probe's accuracy on real train and
val images. The features are `PretrainedFeatures` (the AR evaluation's), so reward and evaluation use one network.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from armkit.recipes.ar.evaluate import train_probe
from armkit.recipes.data.reader import ShardReader


@torch.no_grad()
def _features(features: torch.nn.Module, shards: str, split: str, size: int, limit: int | None):
    feats, labels, captions = [], [], []
    for batch in ShardReader(shards, image_size=size, batch_size=64, limit=limit, split=split):
        feats.append(features(batch["image"]))
        labels.append(batch["cls"])
        captions += batch["txt"]
    return torch.cat(feats), torch.cat(labels), captions


def write_probe(*, images: str, out: str | Path, features: torch.nn.Module, size: int = 64,
                limit: int | None = None, steps: int = 300, seed: int = 0) -> dict[str, float]:
    """Fit on the train split, fold the standardisation into the weights, write the files; returns accuracies."""
    from safetensors.torch import save_file

    f, y, captions = _features(features, images, "train", size, limit)
    keep = y >= 0
    f, y = f[keep], y[keep]
    captions = [c for c, k in zip(captions, keep.tolist()) if k]
    mu, sd = f.mean(0), f.std(0) + 1e-6
    probe = train_probe((f - mu) / sd, y, classes=int(y.max()) + 1, steps=steps, seed=seed)
    weight = (probe.weight / sd).detach()  # W ((x - mu) / sd) + b = (W / sd) x + (b - (W / sd) mu)
    bias = (probe.bias - weight @ mu).detach()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({"weight": weight.contiguous(), "bias": bias.contiguous()}, str(out / "probe.safetensors"))
    labels = dict(zip(captions, y.tolist()))
    fv, yv, captions_v = _features(features, images, "val", size, limit)
    labels.update({c: label for c, label in zip(captions_v, yv.tolist()) if label >= 0})
    fv, yv = fv[yv >= 0], yv[yv >= 0]
    (out / "prompt_classes.json").write_text(json.dumps(labels, indent=0, sort_keys=True) + "\n")
    acc = {"train": float(((f @ weight.T + bias).argmax(-1) == y).float().mean())}
    if len(yv):
        acc["val"] = float(((fv @ weight.T + bias).argmax(-1) == yv).float().mean())
    return acc
