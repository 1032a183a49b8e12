"""The AR model: any transformers causal LM reading and writing text, special and visual tokens (ARM's design).

    ids [B, L] (sequence.py's id space) --embed--> [B, L, H] --the LM's decoder (its own KV cache)--> hidden [B, L, H]
        text head:   the LM's lm_head (text vocabulary kept) + a special-token head    -> [.., T + S]
        visual head: "full"       Linear(H, C): one softmax over every code (the paper's, 65,536 codes included)
                     "factorized" Linear(H, sum(levels)): one softmax per FSQ dimension; log p(code) is the sum of
                                  its digits' log-probs (as Open-MAGVIT2 splits its LFQ index), far smaller for big C

Inputs: text ids use the LM's embedding table, special and visual ids their own new tables. Training is one next-token
loss over all target positions: a target that is a visual token is scored by the visual head (a position inside an
image only ever emits visual tokens), any other target by the text head. The backbone is `config:` (any transformers
`model_type`, e.g. qwen2, qwen3, llama, at random init) or `path:` (a local model folder with its tokenizer); the
rest of the code path is the same for both, so swapping the backbone is a YAML change.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as nnf
from torch import nn

from armkit.backbones.codec import ByteCodec, HFCodec
from armkit.backbones.sequence import IGNORE, Vocab
from armkit.common.buildable import Buildable
from armkit.common.remote_code import no_remote_code
from armkit.common.weights import local_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HEADS = ("full", "factorized")


class AROutput(NamedTuple):
    loss: torch.Tensor  # scalar: mean NLL over every target token (text and visual together)
    text_loss: torch.Tensor  # mean NLL of text/special targets (0 when there are none)
    visual_loss: torch.Tensor  # mean NLL of visual targets (0 when there are none)
    num_text: int
    num_visual: int


class Step(NamedTuple):
    hidden: torch.Tensor  # [B, L, H]: the last layer's states
    cache: Any  # the LM's cache (a transformers Cache) or None


def fsq_digits(indices: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """FSQ indices [...] -> level index per dimension [..., K], in vector-quantize-pytorch's order
    (index = sum_k digit_k * prod(levels[:k]))."""
    basis = torch.cumprod(torch.tensor([1, *levels[:-1]], device=indices.device), 0)
    return (indices.unsqueeze(-1) // basis) % torch.tensor(levels, device=indices.device)


class ARModel(Buildable, nn.Module):
    """Causal LM + visual embedding table + visual head. Construct with keywords; see the module docstring.

    codebook_size: the image tokenizer's C. levels: its FSQ levels (needed by the factorized head, checked against
    C). head: "full" or "factorized". config: kwargs of `transformers.AutoConfig.for_model` (must hold
    `model_type`), or path: a local model folder (weights + tokenizer). max_grid: the largest token-grid side the
    shape tokens can say. seed: the random init (without touching the global generator). dtype: of the weights.
    text_tokenizer: with config:, a folder holding a transformers tokenizer to use instead of UTF-8 bytes (exports
    of a model first loaded from path: are rebuilt this way).
    """

    def __init__(self, *, codebook_size: int, levels: list[int] | None = None, head: str = "full",
                 config: dict[str, Any] | None = None, path: str | None = None, max_grid: int = 32,
                 seed: int | None = 0, dtype: str = "float32", text_tokenizer: str | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        if (config is None) == (path is None):
            raise ValueError("ARModel: give exactly one of config: (random init) or path: (local weights)")
        if head not in HEADS:
            raise ValueError(f"ARModel: head must be one of {HEADS}, got {head!r}")
        if dtype not in DTYPES:
            raise ValueError(f"ARModel: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if levels is not None and math.prod(levels) != codebook_size:
            raise ValueError(f"ARModel: levels {list(levels)} give {math.prod(levels)} codes, not codebook_size="
                             f"{codebook_size}")
        if head == "factorized" and levels is None:
            raise ValueError("ARModel: the factorized head needs the tokenizer's FSQ `levels`")
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            if path is not None:
                folder = local_path(path)
                if not (folder / "config.json").is_file():
                    raise FileNotFoundError(f"ARModel: no transformers model folder (config.json) at {folder}")
                self.codec: ByteCodec | HFCodec = HFCodec(folder)
                self.lm = AutoModelForCausalLM.from_pretrained(no_remote_code(folder), dtype=DTYPES[dtype],
                                                               trust_remote_code=False)
            else:
                if "model_type" not in config:
                    raise ValueError("ARModel: config needs a model_type (e.g. qwen2, qwen3, llama)")
                args = dict(config)
                self.codec = HFCodec(local_path(text_tokenizer)) if text_tokenizer else ByteCodec()
                args.setdefault("vocab_size", self.codec.min_vocab)
                self.lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(**args), dtype=DTYPES[dtype])
            text_size = int(self.lm.get_output_embeddings().out_features)
            if text_size < self.codec.min_vocab:
                raise ValueError(f"ARModel: the LM's vocabulary ({text_size}) is smaller than its text codec's "
                                 f"({self.codec.min_vocab}); for byte text at random init set vocab_size >= 258")
            self.vocab = Vocab(text_size=text_size, codebook_size=codebook_size, max_grid=max_grid)
            self.levels = list(levels) if levels is not None else None
            self.head_kind = head
            width = int(self.lm.get_input_embeddings().embedding_dim)
            std = float(getattr(self.lm.config, "initializer_range", 0.02))
            self.hidden_size = width
            # transformers >= 5.x names the cache argument and output `cache`; earlier releases `past_key_values`
            params = inspect.signature(self.lm.base_model.forward).parameters
            self._cache_arg = "cache" if "cache" in params else "past_key_values"
            self.special_embed = nn.Embedding(self.vocab.num_special, width)
            self.visual_embed = nn.Embedding(codebook_size, width)
            self.special_head = nn.Linear(width, self.vocab.num_special, bias=False)
            outputs = codebook_size if head == "full" else sum(self.levels)
            self.visual_head = nn.Linear(width, outputs, bias=False)
            for module in (self.special_embed, self.visual_embed, self.special_head, self.visual_head):
                nn.init.normal_(module.weight, std=std)
                module.to(DTYPES[dtype])

    # -- the trunk --------------------------------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] in the unified space -> input embeddings [B, L, H]."""
        v = self.vocab
        text = self.lm.get_input_embeddings()(ids.clamp(max=v.text_size - 1))
        special = self.special_embed((ids - v.text_size).clamp(0, v.num_special - 1))
        visual = self.visual_embed((ids - v.visual_start).clamp(0, v.codebook_size - 1))
        out = torch.where((ids < v.text_size).unsqueeze(-1), text, special.to(text.dtype))
        return torch.where((ids >= v.visual_start).unsqueeze(-1), visual.to(text.dtype), out)

    def trunk(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              position_ids: torch.Tensor | None = None, cache: Any = None, use_cache: bool = False) -> Step:
        """Run the LM's decoder (no heads) on ids [B, L]; with a transformers `cache`, only the new ids are given."""
        name = self._cache_arg
        out = self.lm.base_model(inputs_embeds=self.embed(ids), attention_mask=attention_mask,
                                 position_ids=position_ids, use_cache=use_cache, **{name: cache})
        return Step(out.last_hidden_state, getattr(out, name) if use_cache else None)

    # -- the heads --------------------------------------------------------------------------------------------------
    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] -> logits over text and special ids [..., T + S]."""
        return torch.cat([self.lm.get_output_embeddings()(hidden), self.special_head(hidden)], dim=-1)

    def visual_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] -> "full": logits over codes [..., C]; "factorized": per-dimension logits [..., sum(levels)]."""
        return self.visual_head(hidden)

    def split_levels(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """Factorized logits [..., sum(levels)] -> one [..., L_k] per FSQ dimension."""
        return list(logits.split(self.levels, dim=-1))

    def visual_nll(self, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """-log p(code | hidden) per position: hidden [N, H], codes [N] -> [N] (float32)."""
        logits = self.visual_logits(hidden).float()
        if self.head_kind == "full":
            return nnf.cross_entropy(logits, codes, reduction="none")
        digits = fsq_digits(codes, self.levels)  # [N, K]
        return sum(nnf.cross_entropy(part, digits[:, k], reduction="none")
                   for k, part in enumerate(self.split_levels(logits)))

    def visual_log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] -> log p over every code [..., C] (the factorized head composes its per-dimension terms)."""
        logits = self.visual_logits(hidden).float()
        if self.head_kind == "full":
            return logits.log_softmax(-1)
        codes = torch.arange(self.vocab.codebook_size, device=hidden.device)
        digits = fsq_digits(codes, self.levels)  # [C, K]
        return sum(part.log_softmax(-1)[..., digits[:, k]] for k, part in enumerate(self.split_levels(logits)))

    # -- training ---------------------------------------------------------------------------------------------------
    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> AROutput:
        """ids / attention_mask / labels [B, L] from `sequence.collate` (labels unshifted, IGNORE where no loss)."""
        hidden = self.trunk(ids, attention_mask).hidden[:, :-1]  # position i predicts token i + 1
        targets = labels[:, 1:]
        v = self.vocab
        is_visual = targets >= v.visual_start
        is_text = (targets != IGNORE) & ~is_visual
        zero = hidden.new_zeros((), dtype=torch.float32)
        text_sum = visual_sum = zero
        if is_text.any():
            text_sum = nnf.cross_entropy(self.text_logits(hidden[is_text]).float(), targets[is_text],
                                         reduction="sum")
        if is_visual.any():
            visual_sum = self.visual_nll(hidden[is_visual], targets[is_visual] - v.visual_start).sum()
        n_text, n_visual = int(is_text.sum()), int(is_visual.sum())
        if n_text + n_visual == 0:
            raise ValueError("ARModel.forward: the batch has no target token (every label is IGNORE)")
        loss = (text_sum + visual_sum) / (n_text + n_visual)
        return AROutput(loss, text_sum / max(n_text, 1), visual_sum / max(n_visual, 1), n_text, n_visual)
