"""transformers teachers: the patch tokens of a vision model saved in a local folder (SigLIP, CLIP, ViT, DINOv2)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel

from armkit.common.remote_code import no_remote_code
from armkit.common.weights import local_path
from armkit.tokenizer.encoders.base import VisionEncoder


def processor_settings(folder: Path) -> dict[str, Any]:
    """Image size and mean/std from the folder's `preprocessor_config.json`, when it has one."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    out: dict[str, Any] = {k: tuple(cfg[f"image_{k}"]) for k in ("mean", "std") if cfg.get(f"image_{k}") is not None}
    size = cfg.get("crop_size") if cfg.get("do_center_crop") else None
    size = size or cfg.get("size")
    if isinstance(size, int):
        out["image_size"] = size
    elif isinstance(size, dict):
        side = size.get("height") or size.get("shortest_edge")
        if side:
            out["image_size"] = int(side)
    return out


class HFVisionEncoder(VisionEncoder):
    """A transformers vision model from a local folder (`AutoModel`): `last_hidden_state` minus prefix tokens.

    Dual models (CLIPModel, SiglipModel) keep only their `vision_model`. The prefix (class and register tokens, none for
    SigLIP) is whatever `last_hidden_state` holds beyond the patch grid, always at the front. Size and mean/std: the
    arguments when given, else the folder's `preprocessor_config.json`, else the model config and ImageNet stats.
    """

    def __init__(self, path: str, *, image_size: int | None = None, mean: tuple[float, float, float] | None = None,
                 std: tuple[float, float, float] | None = None, frozen: bool = True) -> None:
        super().__init__()
        folder = local_path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no transformers model folder (config.json) at {folder}")
        settings = processor_settings(folder)
        model = AutoModel.from_pretrained(no_remote_code(folder), trust_remote_code=False)
        self.model = getattr(model, "vision_model", model)  # CLIPModel/SiglipModel -> their image tower
        config = getattr(model.config, "vision_config", model.config)
        size = int(image_size or settings.get("image_size") or config.image_size)
        patch = int(config.patch_size)
        if size % patch:
            raise ValueError(f"{folder}: image size {size} is not a multiple of the patch size {patch}")
        self.image_size = (size, size)
        self.grid = (size // patch, size // patch)
        self.width = int(config.hidden_size)
        self.mean = tuple(float(v) for v in (mean or settings.get("mean") or (0.485, 0.456, 0.406)))
        self.std = tuple(float(v) for v in (std or settings.get("std") or (0.229, 0.224, 0.225)))
        native = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        self._extra = {}
        if size != native and "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters:
            self._extra["interpolate_pos_encoding"] = True  # ViT/CLIP/SigLIP resample their position embeddings
        self.freeze_if(frozen)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.model(pixel_values=x, **self._extra).last_hidden_state  # [B, prefix + N, C]
        prefix = hidden.shape[1] - self.num_tokens
        if prefix < 0:
            raise ValueError(f"{type(self.model).__name__} gave {hidden.shape[1]} tokens for a {self.grid} grid")
        return hidden[:, prefix:]  # [B, N, C]
