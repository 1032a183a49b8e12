"""Fit the category probe a `CategoryProbe` reward reads, on *real* training images only (never on samples).

    armkit rl-probe --images data/emoji --out runs/rl-demo/probe [--weights asset:efficientnet_lite0]
    armkit rl-probe --images data/fmnist-ar --out runs/rl-fmnist/probe --pixels 16 --size 32   # no network

writes OUT/probe.safetensors (weight, bias; the feature standardisation folded in, so the reward applies it to raw
pooled features) and OUT/prompt_classes.json ({caption: label}), and prints the probe's accuracy on real train and
val images. The features are `PretrainedFeatures` (the AR evaluation's), so reward and evaluation use one network;
with --pixels SIZE they are `offline.PixelFeatures(size=SIZE)` (downsampled centred pixels, no network at all), fitted
without standardisation by `offline.fit_probe` (a near-constant border pixel would otherwise get a weight of 1 / its
tiny std, which a generated image with a bright border exploits).
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
                limit: int | None = None, steps: int = 300, seed: int = 0,
                standardise: bool = True) -> dict[str, float]:
    """Fit on the train split, fold the standardisation into the weights, write the files; returns accuracies.
    standardise=False: `offline.fit_probe` on the raw features (for `PixelFeatures`)."""
    from safetensors.torch import load_file, save_file

    from armkit.recipes.rl.offline import fit_probe

    f, y, captions = _features(features, images, "train", size, limit)
    keep = y >= 0
    f, y = f[keep], y[keep]
    captions = [c for c, k in zip(captions, keep.tolist()) if k]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if standardise:
        mu, sd = f.mean(0), f.std(0) + 1e-6
        probe = train_probe((f - mu) / sd, y, classes=int(y.max()) + 1, steps=steps, seed=seed)
        weight = (probe.weight / sd).detach()  # W ((x - mu) / sd) + b = (W / sd) x + (b - (W / sd) mu)
        bias = (probe.bias - weight @ mu).detach()
        save_file({"weight": weight.contiguous(), "bias": bias.contiguous()}, str(out / "probe.safetensors"))
    else:
        fit_probe(f.float(), y, int(y.max()) + 1, str(out / "probe.safetensors"), steps=steps, seed=seed)
        written = load_file(str(out / "probe.safetensors"))
        weight, bias = written["weight"], written["bias"]
    labels = dict(zip(captions, y.tolist()))
    fv, yv, captions_v = _features(features, images, "val", size, limit)
    labels.update({c: label for c, label in zip(captions_v, yv.tolist()) if label >= 0})
    fv, yv = fv[yv >= 0], yv[yv >= 0]
    (out / "prompt_classes.json").write_text(json.dumps(labels, indent=0, sort_keys=True) + "\n")
    acc = {"train": float(((f @ weight.T + bias).argmax(-1) == y).float().mean())}
    if len(yv):
        acc["val"] = float(((fv @ weight.T + bias).argmax(-1) == yv).float().mean())
    return acc
