"""Sentence-transformers-style text towers: a BERT-like encoder, mean-pooled over the attention mask."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from armkit.common.remote_code import no_remote_code
from armkit.common.weights import local_path
from armkit.tokenizer.text.base import TextTower


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


class HFSentenceEncoder(TextTower):
    """A local sentence-transformers folder (e.g. all-MiniLM-L6-v2): AutoModel + AutoTokenizer, mean pooling.

    Returns the mean of the last hidden states over real (non-padding) tokens, as sentence-transformers' Pooling
    module does; unnormalised (the loss normalises). `max_length` defaults to the folder's
    `sentence_bert_config.json` `max_seq_length`, else the tokenizer's limit (at most 512).
    """

    def __init__(self, path: str, *, max_length: int | None = None, frozen: bool = True) -> None:
        super().__init__()
        folder = local_path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no transformers model folder (config.json) at {folder}")
        pooling = _read_json(folder / "1_Pooling" / "config.json")
        if pooling and not pooling.get("pooling_mode_mean_tokens", False):
            raise ValueError(f"{folder / '1_Pooling' / 'config.json'}: this model is not mean-pooled; "
                             "HFSentenceEncoder only does mean pooling")
        self.tokenizer = AutoTokenizer.from_pretrained(no_remote_code(folder), trust_remote_code=False)
        self.model = AutoModel.from_pretrained(no_remote_code(folder), trust_remote_code=False)
        limit = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
        self.max_length = int(max_length or limit or min(self.tokenizer.model_max_length, 512))
        self.width = int(self.model.config.hidden_size)
        self.freeze_if(frozen)

    def embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state  # [B, T, width]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # [B, width]
