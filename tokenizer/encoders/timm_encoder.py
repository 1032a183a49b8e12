"""timm teachers: ViT patch tokens, or CNN feature maps (one stage, or several folded onto one grid) as tokens."""

from __future__ import annotations

from typing import Any

import timm
import torch

from armkit.common.weights import load_state_dict_file, local_path
from armkit.tokenizer.encoders.base import VisionEncoder


class TimmEncoder(VisionEncoder):
    """Any timm model as a teacher.

    ViTs (models with `patch_embed`) give their patch tokens (prefix tokens dropped) from `forward_features`. CNNs give
    the feature map of `stage` (an index into `forward_intermediates`, default the last) flattened row-major. A list
    of stages, e.g. [2, 3], gives one token per cell of the coarsest stage's grid holding every listed stage's
    features over that cell: finer maps are folded space-to-depth (a 16x16x40 map onto an 8x8 grid gives 8x8x160),
    then concatenated on channels. Shallow stages keep the colour and layout that deep ones pool away (on the demo's
    emoji, a ridge regression from EfficientNet-Lite0's stage 3 alone reads 32-px pixels back at 17.6 dB, from stage
    2 at 19.6 dB), so a pixel decoder gets them without more tokens (benchmarks/RESULTS.md, section 10).
    Weights come from `weights` (a local safetensors or state-dict file with timm's key names); `pretrained=True` asks
    timm's hub instead and is for machines with network only. At random init otherwise (tests).
    """

    def __init__(self, model_name: str, *, weights: str | None = None, pretrained: bool = False,
                 image_size: int | None = None, stage: int | list[int] = -1, frozen: bool = True,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        kwargs = dict(model_kwargs or {})
        self.is_vit = "vit" in model_name or "deit" in model_name or "eva" in model_name
        if image_size is not None and self.is_vit:
            kwargs["img_size"] = image_size
        self.model = timm.create_model(model_name, pretrained=pretrained, **kwargs)
        if weights is not None:
            self.model.load_state_dict(load_state_dict_file(local_path(weights)), strict=True)
        cfg = self.model.pretrained_cfg
        size = image_size or cfg.get("input_size", (3, 224, 224))[-1]
        self.image_size = (int(size), int(size))
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.stage = stage
        if isinstance(stage, (list, tuple)) and (self.is_vit or not stage):
            raise ValueError(f"stage={stage}: a list of stages needs a CNN and at least one stage")
        self.model.eval()  # the probe below must not touch BatchNorm running statistics
        with torch.no_grad():  # read width and grid off one dummy forward: works for every timm family
            probe = self.features(torch.zeros(1, 3, *self.image_size), keep_grid=True)
        self.width = int(probe.shape[1])
        self.grid = (int(probe.shape[2]), int(probe.shape[3]))
        self.freeze_if(frozen)

    def features(self, x: torch.Tensor, keep_grid: bool = False) -> torch.Tensor:
        if self.is_vit:
            tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens:]  # [B, N, C]
            if not keep_grid:
                return tokens
            h, w = self.model.patch_embed.dynamic_feat_size(x.shape[-2:]) if hasattr(
                self.model.patch_embed, "dynamic_feat_size") else self.model.patch_embed.grid_size
            return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        stages = list(self.stage) if isinstance(self.stage, (list, tuple)) else [self.stage]
        maps = self.model.forward_intermediates(x, indices=stages, intermediates_only=True)  # each [B, C, h, w]
        fmap = fold(maps) if len(maps) > 1 else maps[0]
        return fmap if keep_grid else fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]


def fold(maps: list[torch.Tensor]) -> torch.Tensor:
    """Feature maps [B, C_i, h_i, w_i] -> [B, sum C_i * r_i^2, h, w] on the coarsest grid (h, w), each finer map
    folded space-to-depth by its ratio r_i (which must be a whole number)."""
    h, w = min(m.shape[-2] for m in maps), min(m.shape[-1] for m in maps)
    out = []
    for m in maps:
        r = m.shape[-2] // h
        if m.shape[-2] != r * h or m.shape[-1] != r * w:
            raise ValueError(f"stage map {tuple(m.shape[-2:])} does not fold onto the {h}x{w} grid by a whole ratio")
        out.append(torch.nn.functional.pixel_unshuffle(m, r) if r > 1 else m)
    return torch.cat(out, dim=1)
