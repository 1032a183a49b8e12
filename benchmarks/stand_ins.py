"""Random-init stand-ins for a recipe's weight files, so its shapes can be measured with no weights at hand.

Speed and FLOPs depend on shapes, not on weight values. `random_init(tree, folder)` takes a recipe's YAML tree and
returns a copy that builds the same architecture at random init:
- every `weights: FILE` becomes null (open_clip and timm build their architectures at random init, offline);
- every `tokenizer_path` becomes a byte-level tokenizer folder (one token per UTF-8 byte: the token count of a text
  is its byte count, capped by the recipe's context or max_length);
- every `backbones.HFCausalLM` `path` becomes a random-init folder of a preset architecture (`LM_PRESETS`, by the
  folder's name), with the byte-level tokenizer.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

# Published config.json values (architecture only; weights are drawn at random).
LM_PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
                     "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                     "tie_word_embeddings": True, "hidden_act": "silu"},
}
SPECIALS = ["<pad>", "<eos>", "<unk>"]


def byte_tokenizer_folder(folder: Path) -> Path:
    """A transformers tokenizer folder whose tokens are the 256 bytes (byte-level BPE with no merges) + SPECIALS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if (folder / "tokenizer.json").is_file():
        return folder
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({s: len(vocab) + i for i, s in enumerate(SPECIALS)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                            unk_token="<unk>").save_pretrained(str(folder))
    return folder


def random_lm_folder(folder: Path, preset: str, *, seed: int = 0) -> Path:
    """A random-init causal LM of `preset`'s architecture (bf16 safetensors) + the byte tokenizer, in `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if preset not in LM_PRESETS:
        raise ValueError(f"no LM preset {preset!r}; known: {sorted(LM_PRESETS)}")
    if not (folder / "config.json").is_file():
        cfg = dict(LM_PRESETS[preset])
        config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        with torch.random.fork_rng(devices=[]):  # a reproducible draw that leaves the caller's generator alone
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(str(folder))
    byte_tokenizer_folder(folder)
    return folder


def lm_preset_for(path: str) -> str:
    """The preset whose name the weights folder's name contains ('/data/Qwen2.5-0.5B' -> 'qwen2.5-0.5b')."""
    name = Path(path).name.lower()
    for preset in LM_PRESETS:
        if preset in name:
            return preset
    raise ValueError(f"no LM preset matches {path!r}; known: {sorted(LM_PRESETS)} (add its config to LM_PRESETS)")


def _blocks(node: Any):
    """Every dict under `node`, outermost first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _blocks(value)


def random_init(tree: dict, folder: Path) -> dict:
    """A copy of a recipe's YAML tree whose weight files are replaced by random-init stand-ins written under `folder`.
    (A tree, not command-line overrides: LightningCLI reads `--key=null` as the string 'None' for nested keys.)"""
    tree = copy.deepcopy(tree)
    folder.mkdir(parents=True, exist_ok=True)
    for node in _blocks(tree.get("model", {})):
        if isinstance(node.get("weights"), str):
            node["weights"] = None
        if isinstance(node.get("tokenizer_path"), str):
            node["tokenizer_path"] = str(byte_tokenizer_folder(folder / "byte-tokenizer"))
        if node.get("class_path") == "armkit.backbones.HFCausalLM":
            preset = lm_preset_for(node["init_args"]["path"])
            node["init_args"]["path"] = str(random_lm_folder(folder / preset, preset))
    return tree
