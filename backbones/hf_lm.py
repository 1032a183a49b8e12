"""transformers causal LMs (Llama, Qwen2/3, SmolLM) from a local folder, read with a continuous prefix."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as nnf
from transformers import AutoModelForCausalLM, AutoTokenizer

from armkit.backbones.base import CausalLM, LMOutput
from armkit.common.remote_code import no_remote_code
from armkit.common.weights import local_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFCausalLM(CausalLM):
    """A local `AutoModelForCausalLM` folder (model + tokenizer), frozen by default.

    `forward` feeds `inputs_embeds = cat(prefix, token embeddings)`; only the logits of the positions that predict
    text tokens are computed (the first text token from the last prefix position). Gradients still reach the prefix
    when the LM is frozen. `dtype` is the weights' dtype; the loss is computed in float32.
    """

    def __init__(self, path: str, *, frozen: bool = True, dtype: str = "float32") -> None:
        super().__init__()
        folder = local_path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no transformers model folder (config.json) at {folder}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.tokenizer = AutoTokenizer.from_pretrained(no_remote_code(folder), trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(no_remote_code(folder), dtype=DTYPES[dtype],
                                                          trust_remote_code=False)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"{folder}: the tokenizer has no end-of-text (eos) token")
        self.eos_id = int(self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad_id = self.eos_id if pad is None else int(pad)  # padding is masked out, any id will do
        self.hidden_size = int(self.model.get_input_embeddings().embedding_dim)
        self.vocab_size = int(self.model.get_output_embeddings().out_features)
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.freeze_if(frozen)

    def tokenize(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        rows = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        rows = [row[: max_length - 1] + [self.eos_id] for row in rows]
        length = max(len(row) for row in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):  # right padding
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)  # [B, T], [B, T]

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] -> the LM's input embeddings [B, T, hidden_size]."""
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, prefix: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> LMOutput:
        if prefix.ndim != 3 or prefix.shape[1] < 1 or prefix.shape[2] != self.hidden_size:
            raise ValueError(f"prefix must be [B, P >= 1, {self.hidden_size}], got {tuple(prefix.shape)}")
        if input_ids.shape != attention_mask.shape or input_ids.shape[0] != prefix.shape[0]:
            raise ValueError(f"input_ids {tuple(input_ids.shape)} / attention_mask {tuple(attention_mask.shape)} "
                             f"do not match the prefix batch {prefix.shape[0]}")
        batch, num_prefix = prefix.shape[:2]
        num_text = input_ids.shape[1]
        tokens = self.embed_tokens(input_ids)  # [B, T, H]
        inputs = torch.cat([prefix.to(tokens.dtype), tokens], dim=1)  # [B, P + T, H]
        mask = torch.cat([attention_mask.new_ones(batch, num_prefix), attention_mask], dim=1)  # [B, P + T]
        if self._keeps_logits:  # positions P-1 .. P+T-1; the last one predicts past the text
            logits = self.model(inputs_embeds=inputs, attention_mask=mask, use_cache=False,
                                logits_to_keep=num_text + 1).logits[:, :-1]
        else:
            logits = self.model(inputs_embeds=inputs, attention_mask=mask, use_cache=False).logits[
                :, num_prefix - 1: num_prefix + num_text - 1]
        labels = input_ids.masked_fill(attention_mask == 0, -100)  # [B, T]
        loss = nnf.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        return LMOutput(loss=loss, logits=logits)  # logits [B, T, V]
