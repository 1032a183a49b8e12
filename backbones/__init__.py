"""Causal LMs: the caption loss's frozen reader and, later, the AR model's backbone."""

from armkit.backbones.base import CausalLM, LMOutput
from armkit.backbones.hf_lm import HFCausalLM
from armkit.backbones.tiny_lm import TinyCausalLM

__all__ = ["CausalLM", "HFCausalLM", "LMOutput", "TinyCausalLM"]
