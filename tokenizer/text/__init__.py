"""Text towers for the sigmoid loss: list of strings -> [B, width]."""

from armkit.tokenizer.text.base import TextTower
from armkit.tokenizer.text.hf_text import HFSentenceEncoder
from armkit.tokenizer.text.open_clip_text import OpenCLIPTextTower
from armkit.tokenizer.text.tiny import TinyTextTower

__all__ = ["HFSentenceEncoder", "OpenCLIPTextTower", "TextTower", "TinyTextTower"]
