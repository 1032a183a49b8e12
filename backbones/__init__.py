"""Causal LMs: the caption loss's frozen reader and, later, the AR model's backbone."""

from backbones.base import CausalLM, LMOutput
from backbones.hf_lm import HFCausalLM
from backbones.tiny_lm import TinyCausalLM

__all__ = ["CausalLM", "HFCausalLM", "LMOutput", "TinyCausalLM"]
