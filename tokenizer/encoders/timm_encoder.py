"""timm teachers: ViT patch tokens, or one stage of a CNN's feature map flattened to tokens."""

from __future__ import annotations

from typing import Any

import timm
import torch

from armkit.common.weights import load_state_dict_file, local_path
from armkit.tokenizer.encoders.base import VisionEncoder


class TimmEncoder(VisionEncoder):
    """Any timm model as a teacher.

    ViTs (models with `patch_embed`) give their patch tokens (prefix tokens dropped) from `forward_features`. CNNs give
    the feature map of `stage` (an index into `forward_intermediates`, default the last) flattened row-major.
    Weights come from `weights` (a local safetensors or state-dict file with timm's key names); `pretrained=True` asks
    timm's hub instead and is for machines with network only. At random init otherwise (tests).
    """

    def __init__(self, model_name: str, *, weights: str | None = None, pretrained: bool = False,
                 image_size: int | None = None, stage: int = -1, frozen: bool = True,
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
        fmap = self.model.forward_intermediates(x, indices=[self.stage], intermediates_only=True)[0]  # [B, C, h, w]
        return fmap if keep_grid else fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]
