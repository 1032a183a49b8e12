"""Sampling from an `ARModel`: filter -> sample -> prefill -> decode one token -> decode n tokens -> generate.

Images: every prompt ends in `BOI H W` (sequence.py), and the sampler emits exactly h*w visual tokens from the visual
head, then the image is closed. Classifier-free guidance runs all branches as one batch (the condition rows, then
each weaker condition's rows) and mixes the logits each step:

    text-to-image   l = u + s * (c - u)                                   (ARM: s = 1.5)
    editing         l = u + s_img * (i - u) + s_txt * (c - i)             (ARM: s_txt = 1.5, s_img = 1.25)

with c the full condition, i the source image without the instruction, u neither (InstructPix2Pix's two scales). The
factorized head mixes and samples each FSQ dimension's logits separately. KV cache: transformers' `DynamicCache`;
`use_cache=False` recomputes the whole sequence each step (the reference the cache is tested against). Every random
draw takes `generator=`, never the global generator. Text (understanding) decodes greedily or by sampling until the
codec's end-of-text.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from armkit.backbones.ar import ARModel
from armkit.backbones.sequence import left_pad, positions


class Sampling(NamedTuple):
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off


SAMPLE, GREEDY = Sampling(), Sampling(temperature=0.0)


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the top-k logits and the smallest set whose probability reaches top_p (the most likely always stays)."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # the tokens before this one already reach top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, V] -> ids [B]."""
    if sampling.temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def mix(branches: list[torch.Tensor], scales: list[float]) -> torch.Tensor:
    """CFG over branches [strongest condition, ..., unconditional]: u + sum_k s_k * (b_k - b_{k+1}), with one scale
    per consecutive pair. One branch: returned as is."""
    if len(scales) != len(branches) - 1:
        raise ValueError(f"{len(branches)} guidance branches need {len(branches) - 1} scales, got {len(scales)}")
    out = branches[-1]
    for k, s in enumerate(scales):
        out = out + s * (branches[k] - branches[k + 1])
    return out


def new_cache(cache_class: type, model: ARModel):
    """An empty transformers cache (releases before 4.56 take no config)."""
    try:
        return cache_class(config=model.lm.config)
    except TypeError:
        return cache_class()


class Decoder:
    """One batch of prompts decoded token by token, with or without the KV cache."""

    def __init__(self, model: ARModel, prompts: list[list[int]], *, use_cache: bool = True) -> None:
        from transformers import DynamicCache

        self.model, self.use_cache = model, use_cache
        self.ids, self.mask = left_pad(model.vocab, prompts)
        device = next(model.parameters()).device
        self.ids, self.mask = self.ids.to(device), self.mask.to(device)
        self.cache = new_cache(DynamicCache, model) if use_cache else None
        self.hidden = self._run(self.ids, positions(self.mask))  # prefill: [B, H] at the last position

    def _run(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        step = self.model.trunk(ids, self.mask, pos, cache=self.cache, use_cache=self.use_cache)
        self.cache = step.cache
        return step.hidden[:, -1]

    def feed(self, ids: torch.Tensor) -> torch.Tensor:
        """Append ids [B] and return the new last hidden state [B, H]."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(ids), 1)], dim=1)
        self.ids = torch.cat([self.ids, ids[:, None]], dim=1)
        pos = positions(self.mask)
        if self.use_cache:
            self.hidden = self._run(ids[:, None], pos[:, -1:])
        else:
            self.hidden = self._run(self.ids, pos)
        return self.hidden


def _visual_step(model: ARModel, hidden: torch.Tensor, branches: int, scales: list[float], sampling: Sampling,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Mixed logits of every branch -> one code per sample [B]."""
    logits = model.visual_logits(hidden).float()  # [branches * B, C or sum(levels)]
    mixed = mix(list(logits.chunk(branches)), scales)
    if model.head_kind == "full":
        return sample(mixed, sampling, generator)
    digits = [sample(part, sampling, generator) for part in model.split_levels(mixed)]  # K x [B]
    basis = torch.cumprod(torch.tensor([1, *model.levels[:-1]], device=mixed.device), 0)
    return sum(d * b for d, b in zip(digits, basis))


@torch.no_grad()
def generate_image(model: ARModel, prompts: list[list[int]], grid: tuple[int, int], *,
                   weaker: list[list[list[int]]] = (), scales: list[float] = (), sampling: Sampling = SAMPLE,
                   generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
    """Codes [B, h*w] of one image per prompt (each prompt ends in `BOI H W` for `grid`).

    weaker: for guidance, the same prompts with conditions removed, strongest first, the unconditional last (one list
    of B prompts per branch); scales: one per consecutive pair (see `mix`). No weaker prompts: no guidance.
    """
    v = model.vocab
    tail = [v.boi, v.height(grid[0]), v.width(grid[1])]
    rows = [*prompts, *(p for branch in weaker for p in branch)]
    bad = [i for i, p in enumerate(rows) if p[-3:] != tail]
    if bad:
        raise ValueError(f"prompt {bad[0]} does not end in BOI H{grid[0]} W{grid[1]} (sequence.image_prompt)")
    if any(len(branch) != len(prompts) for branch in weaker):
        raise ValueError("every guidance branch needs one prompt per conditional prompt")
    branches = 1 + len(weaker)
    decoder = Decoder(model, rows, use_cache=use_cache)
    codes = []
    for t in range(grid[0] * grid[1]):
        code = _visual_step(model, decoder.hidden, branches, list(scales), sampling, generator)  # [B]
        codes.append(code)
        if t + 1 < grid[0] * grid[1]:
            decoder.feed(v.visual(code).repeat(branches))
    return torch.stack(codes, dim=1)  # [B, h*w]


@torch.no_grad()
def generate_text(model: ARModel, prompts: list[list[int]], *, max_new_tokens: int = 64,
                  sampling: Sampling = GREEDY, generator: torch.Generator | None = None,
                  use_cache: bool = True) -> list[list[int]]:
    """Text ids after each prompt (understanding: the prompt is `UND BOI H W v... EOI`), up to the codec's
    end-of-text (excluded) or max_new_tokens. Only text ids can be sampled."""
    v, eos = model.vocab, model.codec.eos
    decoder = Decoder(model, prompts, use_cache=use_cache)
    out: list[list[int]] = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool)
    for _ in range(max_new_tokens):
        logits = model.text_logits(decoder.hidden).float()[:, : v.text_size]
        ids = sample(logits, sampling, generator)
        for i, tok in enumerate(ids.tolist()):
            if not done[i]:
                if tok == eos:
                    done[i] = True
                else:
                    out[i].append(tok)
        if done.all():
            break
        decoder.feed(ids)
    return out
