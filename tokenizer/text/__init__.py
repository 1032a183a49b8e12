"""Text towers for the sigmoid loss: list of strings -> [B, width]."""

from tokenizer.text.base import TextTower
from tokenizer.text.hf_text import HFSentenceEncoder
from tokenizer.text.open_clip_text import OpenCLIPTextTower
from tokenizer.text.tiny import TinyTextTower

__all__ = ["HFSentenceEncoder", "OpenCLIPTextTower", "TextTower", "TinyTextTower"]
