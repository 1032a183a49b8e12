"""Text codecs of the AR model: strings <-> the LM's text ids.

A model from local weights uses the tokenizer saved beside them (`HFCodec`); a model built from a config at random
init has no trained tokenizer, so it reads UTF-8 bytes (`ByteCodec`: ids 0..255, end-of-text 256, the same ids as
`TinyCausalLM`), which needs a config vocabulary of at least 258.
"""

from __future__ import annotations

from pathlib import Path

from armkit.backbones.tiny_lm import END, VOCAB


class ByteCodec:
    """UTF-8 bytes; `eos` = 256."""

    eos = END
    min_vocab = VOCAB

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFCodec:
    """The tokenizer in a transformers model folder; `eos` is its end-of-text id."""

    def __init__(self, folder: str | Path) -> None:
        from transformers import AutoTokenizer

        from armkit.common.remote_code import no_remote_code

        self.tokenizer = AutoTokenizer.from_pretrained(no_remote_code(folder), trust_remote_code=False)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"{folder}: the tokenizer has no end-of-text (eos) token")
        self.eos = int(self.tokenizer.eos_token_id)
        self.min_vocab = len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i != self.eos], skip_special_tokens=True)
