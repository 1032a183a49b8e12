"""A standard Hugging Face causal-LM export of an `ARModel` with the full visual head.

The full head is an LM whose vocabulary grew: armkit's special and visual ids already sit after the LM's text ids
(backbones/sequence.py), so appending the special and visual embedding rows to the LM's input embeddings, and the
special and visual head rows to its lm_head, gives one transformers model of the same class whose logits over
T + S + C ids are armkit's text, special and visual logits side by side:

    embed_tokens   [T + S + C, H] = [LM text rows ; special_embed ; visual_embed]
    lm_head        [T + S + C, H] = [LM lm_head   ; special_head  ; visual_head ]    (untied: tie_word_embeddings off)

`save_hf(model, folder)` writes the transformers folder (config.json, generation_config.json, model.safetensors via
`save_pretrained`), the text tokenizer when the LM has one, `armkit_sequence.json` (the id layout, special ids, grid,
the codes' tokenizer and its fingerprint when known, and the guidance conventions). The folder holds no code (armkit's
own loaders refuse model folders with code, and so should anyone's): the logits processors that make `generate()`
sample armkit's images are backbones/hf_processors.py, a standalone file (torch and transformers only) to copy or
import. `AutoModelForCausalLM.from_pretrained(folder)` loads the export without armkit.

The factorized head scores a code as a sum over FSQ digits: no vocabulary row is its logit, so it stays an armkit
extension and `to_hf_causal_lm` refuses it. LMs whose forward changes the logits or the embeddings beyond a plain
lookup and linear head (logit soft-capping or scaling, scaled embeddings) are refused as well: their exported logits
would not be armkit's.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from armkit.backbones import hf_processors
from armkit.backbones.ar import ARModel
from armkit.backbones.codec import HFCodec
from armkit.backbones.sequence import SPECIAL_NAMES

META_NAME = hf_processors.META_NAME
META_FORMAT, META_VERSION = "armkit-ar-sequence", 1
# config attributes whose non-trivial value means the LM's forward transforms the lm_head output
LOGIT_TRANSFORMS = {"final_logit_softcapping": None, "logit_scale": 1.0, "logits_scaling": 1.0,
                    "output_multiplier_scale": 1.0}


class HFExportError(ValueError):
    """The model cannot be written as a plain transformers causal LM."""


def check_exportable(model: ARModel) -> None:
    if model.head_kind != "full":
        raise HFExportError(f"an ARModel with the {model.head_kind!r} head cannot be a standard Hugging Face causal "
                            "LM: a code's logit is a sum over FSQ digits, not one vocabulary row. Only head='full' "
                            "exports with --hf; the factorized head stays an armkit extension (use armkit's export)")
    config = model.lm.config
    for name, neutral in LOGIT_TRANSFORMS.items():
        value = getattr(config, name, neutral)
        if value is not None and value != neutral:
            raise HFExportError(f"{type(model.lm).__name__} applies {name}={value} to its logits: its exported "
                                "logits would not be armkit's (armkit reads the lm_head output directly)")
    embedding, head = model.lm.get_input_embeddings(), model.lm.get_output_embeddings()
    if type(embedding) is not nn.Embedding:
        raise HFExportError(f"{type(model.lm).__name__}'s input embedding is a {type(embedding).__name__} (not a "
                            "plain nn.Embedding lookup): the appended special and visual rows would be transformed")
    if not isinstance(head, nn.Linear):
        raise HFExportError(f"{type(model.lm).__name__}'s output embedding is not an nn.Linear")


@torch.no_grad()
def to_hf_causal_lm(model: ARModel) -> Any:
    """A new transformers model (the LM's own class) over armkit's whole id space; `model` is left unchanged."""
    check_exportable(model)
    v = model.vocab
    lm = copy.deepcopy(model.lm).eval()
    old_embed, old_head = model.lm.get_input_embeddings(), model.lm.get_output_embeddings()
    dtype, device = old_embed.weight.dtype, old_embed.weight.device
    embed = nn.Embedding(v.size, model.hidden_size, device=device, dtype=dtype)
    embed.weight.copy_(torch.cat([old_embed.weight, model.special_embed.weight.to(dtype),
                                  model.visual_embed.weight.to(dtype)]))
    has_bias = old_head.bias is not None
    head = nn.Linear(model.hidden_size, v.size, bias=has_bias, device=device, dtype=old_head.weight.dtype)
    head.weight.copy_(torch.cat([old_head.weight, model.special_head.weight.to(head.weight.dtype),
                                 model.visual_head.weight.to(head.weight.dtype)]))
    if has_bias:
        head.bias.zero_()
        head.bias[: v.text_size].copy_(old_head.bias)
    lm.config.tie_word_embeddings = False
    text_config = lm.config.get_text_config(decoder=True) if hasattr(lm.config, "get_text_config") else lm.config
    text_config.tie_word_embeddings = False
    text_config.vocab_size = lm.config.vocab_size = v.size
    lm.set_input_embeddings(embed)
    lm.set_output_embeddings(head)
    if hasattr(lm, "_tied_weights_keys") and isinstance(lm._tied_weights_keys, dict):
        lm._tied_weights_keys = {}  # transformers >= 5: declared ties are re-applied on load unless the config unties
    lm.config.pad_token_id = v.pad
    lm.config.eos_token_id = model.codec.eos
    lm.config.bos_token_id = None
    gen = lm.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = v.pad, model.codec.eos, None
    return lm


def sequence_meta(model: ARModel, *, tokenizer: dict[str, Any] | None = None,
                  grid: tuple[int, int] | list[int] | None = None) -> dict[str, Any]:
    """armkit_sequence.json: what a caller needs to write prompts and read codes without armkit."""
    v = model.vocab
    tokenizer = dict(tokenizer or {})
    grid = list(grid) if grid is not None else tokenizer.get("grid")
    ids = {name: v.special(name) for name in SPECIAL_NAMES}
    ids.update(height_1=v.height(1), width_1=v.width(1))
    return {
        "format": META_FORMAT, "format_version": META_VERSION,
        "vocab_size": v.size, "text_size": v.text_size, "num_special": v.num_special, "special_start": v.text_size,
        "visual_start": v.visual_start, "codebook_size": v.codebook_size, "max_grid": v.max_grid,
        "ids": ids, "text_eos": int(model.codec.eos),
        "text_codec": "transformers tokenizer (saved in this folder)" if isinstance(model.codec, HFCodec)
        else "utf-8 bytes: text id = byte value, end-of-text 256",
        "levels": model.levels, "grid": grid, "head": model.head_kind,
        "tokenizer": {k: tokenizer[k] for k in ("path", "fingerprint", "codebook_size", "levels", "grid",
                                                "image_size") if k in tokenizer} or None,
        "layout": "text [0, T) | special [T, T+S): boi eoi pad gen und edit H1..Hmax W1..Wmax | visual [T+S, T+S+C)",
        "image": "BOI H<h> W<w> v_1 .. v_(h*w) EOI (row-major; visual id = visual_start + code)",
        "prompts": {"text_to_image": "GEN text BOI H W", "editing": "EDIT BOI H W src.. EOI instruction BOI H W",
                    "understanding": "UND BOI H W v.. EOI"},
        "guidance": {"rows": "B rows per branch, branches stacked, strongest condition first, unconditional last",
                     "text_to_image": {"branches": ["cond", "uncond"], "formula": "u + s * (c - u)",
                                       "scales": "[s]"},
                     "editing": {"branches": ["full condition", "image only", "neither"],
                                 "formula": "u + s_img * (i - u) + s_txt * (c - i)", "scales": "[s_txt, s_img]"}},
        "processors": "backbones/hf_processors.py of armkit (standalone: imports only torch and transformers)",
    }


def save_hf(model: ARModel, folder: Path | str, meta: dict[str, Any] | None = None, *,
            tokenizer: dict[str, Any] | None = None, grid: tuple[int, int] | None = None) -> Path:
    """Write the standard export (see the module docstring) to `folder`; meta: extra keys for armkit_sequence.json."""
    folder = Path(folder)
    lm = to_hf_causal_lm(model)
    folder.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(str(folder))  # safetensors (the default since transformers 4.35)
    if isinstance(model.codec, HFCodec):
        model.codec.tokenizer.save_pretrained(str(folder))
    full = {**sequence_meta(model, tokenizer=tokenizer, grid=grid), **(meta or {})}
    (folder / META_NAME).write_text(json.dumps(full, indent=2) + "\n")
    return folder
