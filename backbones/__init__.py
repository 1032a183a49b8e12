"""Causal LMs: the caption loss's frozen reader, and the AR model (text + visual tokens) with its sampler."""

from armkit.backbones.ar import ARModel, AROutput
from armkit.backbones.base import CausalLM, LMOutput
from armkit.backbones.hf_lm import HFCausalLM
from armkit.backbones.tiny_lm import TinyCausalLM

__all__ = ["ARModel", "AROutput", "CausalLM", "HFCausalLM", "LMOutput", "TinyCausalLM"]
