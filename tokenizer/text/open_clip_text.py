"""open_clip text towers (SigLIP2's among them): texts -> open_clip's `encode_text`, unnormalised [B, width]."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.factory import parse_model_name
from open_clip.tokenizer import HFTokenizer

from armkit.tokenizer.encoders.open_clip_encoder import create_open_clip
from armkit.tokenizer.text.base import TextTower


def text_config(model_name: str, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The text_cfg open_clip will build from (built-in or local-dir config, `model_kwargs` overriding)."""
    if model_kwargs and "text_cfg" in model_kwargs:
        return dict(model_kwargs["text_cfg"])
    schema, name = parse_model_name(model_name)
    if schema == "local-dir":
        return dict(json.loads((Path(name) / "open_clip_config.json").read_text())["model_cfg"].get("text_cfg", {}))
    return dict((open_clip.get_model_config(name) or {}).get("text_cfg", {}))


class OpenCLIPTextTower(TextTower):
    """The text tower of an open_clip model, frozen by default; the image tower is dropped.

    Weights as for `OpenCLIPEncoder` (`weights` file, `local-dir:` folder, or a `pretrained` tag with network).
    Tokenizer: open_clip's bundled CLIP BPE for CLIP-style configs (offline); models whose config names a Hugging Face
    tokenizer (SigLIP2: Gemma) read it from `tokenizer_path` (a local tokenizer folder, or a hub id with network) or
    from the `local-dir:` folder. `self.model.logit_scale`/`logit_bias` are the model's own zero-shot scalars.
    """

    def __init__(self, model_name: str, *, weights: str | None = None, pretrained: str | None = None,
                 tokenizer_path: str | None = None, context_length: int | None = None, frozen: bool = True,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        cfg = text_config(model_name, model_kwargs)
        self.context_length = int(context_length or cfg.get("context_length", 77))
        self.tokenizer = self._make_tokenizer(model_name, cfg, tokenizer_path)
        model = create_open_clip(model_name, weights=weights, pretrained=pretrained, model_kwargs=model_kwargs)
        model.visual = None  # the image tower is not needed here
        self.model = model
        with torch.no_grad():
            self.width = int(self.model.encode_text(self.tokenizer([""])).shape[-1])
        self.freeze_if(frozen)

    def _make_tokenizer(self, model_name: str, cfg: dict[str, Any], tokenizer_path: str | None):
        kwargs = dict(cfg.get("tokenizer_kwargs", {}))
        if tokenizer_path is not None:
            folder = Path(tokenizer_path).expanduser()
            if not folder.is_dir() and tokenizer_path.startswith(("/", ".", "~")):
                raise FileNotFoundError(f"tokenizer folder not found: {tokenizer_path}")
            source = str(folder) if folder.is_dir() else tokenizer_path  # else a hub id (network only)
            return HFTokenizer(source, context_length=self.context_length, tokenizer_mode=cfg.get("tokenizer_mode"),
                               **kwargs)
        hub_name = cfg.get("hf_tokenizer_name")
        if hub_name and parse_model_name(model_name)[0] != "local-dir":  # fail now rather than after hub retries
            raise ValueError(f"{model_name}'s tokenizer is {hub_name!r} on the Hugging Face hub: pass "
                             f"tokenizer_path=<a local tokenizer folder> (or tokenizer_path={hub_name!r} with network)")
        return open_clip.get_tokenizer(model_name, context_length=self.context_length)

    def embed(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)  # [B, context_length]
        return self.model.encode_text(tokens, normalize=False)  # [B, width]
