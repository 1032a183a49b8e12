"""Vision-encoder plugins: each maps images in [0, 1] to patch tokens [B, N, C].

open_clip and transformers encoders load lazily, so loading an exported timm tokenizer imports neither.
"""

from armkit.tokenizer.encoders.base import VisionEncoder
from armkit.tokenizer.encoders.timm_encoder import TimmEncoder

_LAZY = {"HFVisionEncoder": "armkit.tokenizer.encoders.hf_encoder",
         "OpenCLIPEncoder": "armkit.tokenizer.encoders.open_clip_encoder"}

__all__ = ["HFVisionEncoder", "OpenCLIPEncoder", "TimmEncoder", "VisionEncoder"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'armkit.tokenizer.encoders' has no attribute {name!r}")
