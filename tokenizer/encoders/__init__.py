"""Vision-encoder plugins: each maps images in [0, 1] to patch tokens [B, N, C]."""

from tokenizer.encoders.base import VisionEncoder
from tokenizer.encoders.timm_encoder import TimmEncoder

__all__ = ["TimmEncoder", "VisionEncoder"]
