"""open_clip teachers: the patch tokens of an open_clip model's image tower (SigLIP2 among them).

open_clip builds every architecture it knows at random init without network; weights come from a local checkpoint
file (`weights`: safetensors, a weights-only torch file or a big_vision .npz), from a `local-dir:` folder as published
on the hub (open_clip_config.json + weights + tokenizer), or from a `pretrained` tag (downloads: network only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.factory import parse_model_name
from open_clip.timm_model import TimmModel
from open_clip.transformer import VisionTransformer
from torch import nn

from armkit.common.weights import local_path
from armkit.tokenizer.encoders.base import VisionEncoder


def create_open_clip(model_name: str, *, weights: str | None = None, pretrained: str | None = None,
                     image_size: int | None = None, model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """An open_clip model (both towers) from a local file, a local-dir/hub name, a tag, or at random init."""
    weights = str(local_path(weights)) if weights is not None else None
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"open_clip weights file not found: {weights}")
    if weights is not None and pretrained is not None:
        raise ValueError("give open_clip weights as either `weights` (a local file) or `pretrained` (a tag), not both")
    return open_clip.create_model(
        model_name, pretrained=weights or pretrained, weights_only=True, pretrained_text=False,
        force_image_size=image_size, **dict(model_kwargs or {}))


def default_norm(model_name: str, visual: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's own mean/std: a built-in name's pretrained tags (a local weights file carries none), else the
    preprocessing config open_clip attached to the tower (local-dir and hub folders carry theirs)."""
    schema, name = parse_model_name(model_name)
    cfg: dict[str, Any] = dict(getattr(visual, "preprocess_cfg", {}) or {})
    if schema is None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if tags:
            tag_cfg = open_clip.get_pretrained_cfg(name, tags[0])
            cfg.update({k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg})
    return tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)), tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))


class OpenCLIPEncoder(VisionEncoder):
    """An open_clip image tower as a teacher: patch tokens [B, N, C] before any pooling.

    timm trunks (SigLIP/SigLIP2 `ViT-*-SigLIP2*`): `trunk.forward_features` minus its prefix tokens. open_clip's own
    VisionTransformer (`ViT-B-32`, ...): its token output after `ln_post`, class token dropped. `pooled(images)` gives
    the tower's pooled output (SigLIP2: the attention-pool head; equals `encode_image`, unnormalised);
    `pool_tokens(tokens)` runs that head on tokens given directly (e.g. reconstructed features, for zero-shot).
    Only the image tower is kept. `model_kwargs` override open_clip's config keys (tests build tiny towers this way).
    """

    def __init__(self, model_name: str, *, weights: str | None = None, pretrained: str | None = None,
                 image_size: int | None = None, mean: tuple[float, float, float] | None = None,
                 std: tuple[float, float, float] | None = None, frozen: bool = True,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        model = create_open_clip(model_name, weights=weights, pretrained=pretrained, image_size=image_size,
                                 model_kwargs=model_kwargs)
        self.visual = model.visual
        del model  # drop the text tower
        if isinstance(self.visual, TimmModel):
            trunk = self.visual.trunk
            if not hasattr(trunk, "patch_embed") or not hasattr(trunk, "forward_features"):
                raise ValueError(f"{model_name}: timm trunk {type(trunk).__name__} is not a ViT; use TimmEncoder")
            self.grid = tuple(int(g) for g in trunk.patch_embed.grid_size)
            self.image_size = tuple(int(s) for s in trunk.patch_embed.img_size)
            self.width = int(trunk.num_features)
        elif isinstance(self.visual, VisionTransformer):
            if self.visual.attn_pool is not None:
                raise ValueError(f"{model_name}: attentional-pool towers (CoCa) give no patch tokens")
            self.visual.output_tokens = True
            self.grid = tuple(int(g) for g in self.visual.grid_size)
            self.image_size = tuple(int(s) for s in self.visual.image_size)
            self.width = int(self.visual.transformer.width)
        else:
            raise TypeError(f"{model_name}: image tower {type(self.visual).__name__} is not supported "
                             "(ResNet towers: use TimmEncoder)")
        own_mean, own_std = default_norm(model_name, self.visual)
        self.mean = tuple(float(v) for v in (mean or own_mean))
        self.std = tuple(float(v) for v in (std or own_std))
        self.freeze_if(frozen)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised batch -> (patch tokens [B, N, C], pooled output [B, D]) from one pass."""
        if isinstance(self.visual, TimmModel):
            trunk = self.visual.trunk
            feats = trunk.forward_features(x)  # [B, prefix + N, C]
            return feats[:, trunk.num_prefix_tokens:], self.visual.head(trunk.forward_head(feats))
        pooled, tokens = self.visual(x)
        return tokens, pooled

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.visual, TimmModel):
            trunk = self.visual.trunk
            return trunk.forward_features(x)[:, trunk.num_prefix_tokens:]  # [B, N, C]
        return self.visual(x)[1]

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the tower's pooled output [B, D] (open_clip's encode_image, unnormalised)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.encode(self.preprocess(images))[1]

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens [B, N, C] -> the tower's pooled output [B, D], as if the trunk had produced them.

        Works for timm trunks whose head ignores prefix tokens (SigLIP/SigLIP2 have none)."""
        trunk = getattr(self.visual, "trunk", None)
        if trunk is None:
            raise NotImplementedError("pool_tokens needs a timm trunk (open_clip's ViT pools its class token)")
        prefix = trunk.num_prefix_tokens
        if prefix and (trunk.global_pool == "token" or getattr(trunk, "pool_include_prefix", False)):
            raise NotImplementedError(f"{type(trunk).__name__} pools its prefix tokens; cannot pool patch tokens alone")
        if prefix:  # the head slices prefix tokens away: placeholders keep the layout it expects
            tokens = torch.cat([tokens.new_zeros(tokens.shape[0], prefix, tokens.shape[2]), tokens], dim=1)
        return self.visual.head(trunk.forward_head(tokens))
