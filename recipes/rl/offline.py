"""Rewards that run offline on frozen parts the policy never trains.

    TextImageAgreement  cosine(text_tower(prompt), pooled image_encoder(image)), through optional fixed linear maps
    CategoryProbe       p(class named in the prompt | image) from a linear probe on frozen image features
    EditReward          closeness of the edit to the reference target and preservation of the source (cosines)

Image features come from any `VisionEncoder` (tokens mean-pooled) or `PixelFeatures` (downsampled, centred pixels:
no model at all). Probe and projection weights are safetensors files fitted outside the policy's training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

from armkit.common.buildable import Buildable
from armkit.common.weights import local_path
from armkit.recipes.evaluation import probe as shared
from armkit.recipes.rl.reward import Reward


class PixelFeatures(Buildable, nn.Module):
    """images [B, 3, H, W] in [0, 1] -> pixels resized to size x size, centred at 0 and flattened [B, 3*size*size]."""

    def __init__(self, *, size: int = 16) -> None:
        super().__init__()
        self.size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = nnf.interpolate(images.float(), size=(self.size, self.size), mode="area")
        return (x - 0.5).flatten(1)


def image_vectors(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """One vector per image: token features [B, N, C] are mean-pooled; [B, D] is kept."""
    device = next(iter(encoder.parameters()), images).device
    out = encoder(images.to(device)).float()
    return out.mean(1) if out.dim() == 3 else out


def _load(path: str, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(local_path(path)))
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise KeyError(f"{path}: missing tensors {missing} (has {sorted(tensors)})")
    return tensors


class TextImageAgreement(Reward):
    """cosine(P_t text_tower(prompt), P_i pool(image_encoder(image))). projection: a safetensors file with
    `text.weight` [E, Dt] and `image.weight` [E, Di] (e.g. fitted contrastively on the SFT data); without it the two
    widths must match. Both towers are frozen (an aligned pair such as a CLIP's is the meaningful choice)."""

    def __init__(self, *, text_tower: nn.Module, image_encoder: nn.Module, projection: str | None = None) -> None:
        super().__init__()
        self.text_tower, self.image_encoder = text_tower.requires_grad_(False), image_encoder.requires_grad_(False)
        t = _load(projection, ("text.weight", "image.weight")) if projection is not None else {}
        self.register_buffer("text_proj", t["text.weight"].float() if t else None)
        self.register_buffer("image_proj", t["image.weight"].float() if t else None)

    def score(self, images, prompts, sources=None, targets=None) -> torch.Tensor:
        text = self.text_tower(prompts).float()
        image = image_vectors(self.image_encoder, images)
        if self.text_proj is not None:
            text, image = text @ self.text_proj.T, image @ self.image_proj.T
        if text.shape[-1] != image.shape[-1]:
            raise ValueError(f"TextImageAgreement: text width {text.shape[-1]} != image width {image.shape[-1]}; "
                             "give projection: (text.weight, image.weight)")
        return nnf.cosine_similarity(text, image.to(text.device), dim=-1).cpu()


class CategoryProbe(Reward):
    """softmax(W f(image) + b)[class of the prompt]. The prompt's class: `prompt_classes`, a JSON file {prompt: class
    index} (e.g. emoji names -> their category, written by `recipes/rl/probe.py`), or else the longest of `classes`
    (the probe's class names, in its output order) that the prompt contains, case-insensitive. probe: safetensors
    with `weight` [K, D] and `bias` [K], fitted on real images' features, never on the policy's samples. unknown:
    the score of a prompt with no class (None: an error); any constant is neutral for GRPO (zero advantage)."""

    def __init__(self, *, image_encoder: nn.Module, probe: str, classes: list[str] | None = None,
                 prompt_classes: str | None = None, unknown: float | None = None) -> None:
        super().__init__()
        import json

        if (classes is None) == (prompt_classes is None):
            raise ValueError("CategoryProbe: give classes: (names found in prompts) or prompt_classes: (a JSON file)")
        self.image_encoder = image_encoder.requires_grad_(False)
        self.unknown = unknown
        self.classes = [c.lower() for c in classes] if classes is not None else None
        self.prompt_classes = (json.loads(local_path(prompt_classes).read_text()) if prompt_classes is not None
                               else None)
        t = _load(probe, ("weight", "bias"))
        k = t["weight"].shape[0]
        if t["bias"].shape != (k,) or (classes is not None and k != len(classes)):
            raise ValueError(f"probe {probe}: weight {tuple(t['weight'].shape)} / bias {tuple(t['bias'].shape)} do "
                             f"not match {len(classes) if classes else k} classes")
        self.register_buffer("weight", t["weight"].float())
        self.register_buffer("bias", t["bias"].float())

    def class_of(self, prompt: str) -> int:
        """The prompt's class index, or -1 (scored `unknown`) when it has none and `unknown` is set."""
        if self.prompt_classes is not None:
            found = [(0, int(self.prompt_classes[prompt]))] if prompt in self.prompt_classes else []
        else:
            found = [(len(c), i) for i, c in enumerate(self.classes) if c in prompt.lower()]
        if found:
            return max(found)[1]
        if self.unknown is None:
            raise ValueError(f"CategoryProbe: prompt {prompt!r} has no class (not in prompt_classes / names none of "
                             f"{self.classes}); set unknown: to score such prompts with a constant")
        return -1

    def score(self, images, prompts, sources=None, targets=None) -> torch.Tensor:
        feats = image_vectors(self.image_encoder, images).to(self.weight.device)
        probs = (feats @ self.weight.T + self.bias).softmax(-1)
        idx = torch.tensor([self.class_of(p) for p in prompts], device=probs.device)
        scores = probs.gather(1, idx.clamp(min=0)[:, None]).squeeze(1)
        return scores.masked_fill(idx < 0, self.unknown if self.unknown is not None else 0.0).cpu()


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, out: str, *, steps: int = 300,
              lr: float = 0.1, weight_decay: float = 1e-3, seed: int = 0) -> float:
    """Fit evaluation/probe.py's linear probe (its seeded full-batch AdamW solver, on the raw features [N, D]) and
    write it for `CategoryProbe`; returns its training accuracy."""
    from safetensors.torch import save_file

    probe = shared.fit_probe(features, labels, num_classes, solver="adamw", steps=steps, lr=lr, l2=weight_decay,
                             seed=seed, standardise=False)
    layer = shared.to_linear(probe)
    save_file({"weight": layer.weight.detach().contiguous(), "bias": layer.bias.detach().contiguous()}, out)
    return probe.train_top1 / 100.0


class EditReward(Reward):
    """(target_weight * cos(f(edit), f(target)) + preserve_weight * cos(f(edit), f(source))) / (sum of weights):
    the edit should look like the instruction's reference target and keep the source. f: `image_encoder` (pooled),
    by default `PixelFeatures`."""

    def __init__(self, *, image_encoder: nn.Module | None = None, target_weight: float = 1.0,
                 preserve_weight: float = 0.5) -> None:
        super().__init__()
        if target_weight < 0 or preserve_weight < 0 or target_weight + preserve_weight <= 0:
            raise ValueError("EditReward: weights must be >= 0 with a positive sum")
        self.image_encoder = (image_encoder or PixelFeatures()).requires_grad_(False)
        self.target_weight, self.preserve_weight = float(target_weight), float(preserve_weight)

    def score(self, images, prompts, sources=None, targets=None) -> torch.Tensor:
        if sources is None or targets is None:
            raise ValueError("EditReward scores edits: it needs the source and the reference target images")
        f = image_vectors(self.image_encoder, images)
        close = nnf.cosine_similarity(f, image_vectors(self.image_encoder, targets), dim=-1)
        keep = nnf.cosine_similarity(f, image_vectors(self.image_encoder, sources), dim=-1)
        total = self.target_weight + self.preserve_weight
        return ((self.target_weight * close + self.preserve_weight * keep) / total).cpu()
