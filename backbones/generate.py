"""Sampling from an `ARModel`: filter -> sample -> prefill -> decode one token -> decode n tokens -> generate.

Images: every prompt ends in `BOI H W` (sequence.py), and the sampler emits exactly h*w visual tokens from the visual
head, then the image is closed. Classifier-free guidance runs all branches as one batch (the condition rows, then
each weaker condition's rows) and mixes the logits each step:

    text-to-image   l = u + s * (c - u)                                   (ARM: s = 1.5)
    editing         l = u + s_img * (i - u) + s_txt * (c - i)             (ARM: s_txt = 1.5, s_img = 1.25)

with c the full condition, i the source image without the instruction, u neither (InstructPix2Pix's two scales). The
factorized head mixes and samples each FSQ dimension's logits separately. KV cache: transformers' `StaticCache`
sized once for prompt + image (or `DynamicCache`, cache="dynamic"), with the ids, attention mask and position ids
preallocated (nothing is concatenated per token), and optionally the one-token step under `torch.compile`
(compile=True; CUDA graphs on CUDA); `use_cache=False` recomputes the whole sequence each step (the reference the
cache is tested against, greedy codes equal). Every random
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
    logits = logits.float()
    if sampling.temperature != 1.0:  # x / 1.0 == x exactly: temperature 1 skips one pass over the V logits
        logits = logits / sampling.temperature
    logits = filter_logits(logits, top_k=sampling.top_k, top_p=sampling.top_p)
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


CACHES = ("static", "dynamic")


def new_cache(cache_class: type, model: ARModel, **kwargs):
    """An empty transformers cache (releases before 4.56 take no config)."""
    try:
        return cache_class(config=model.lm.config, **kwargs)
    except TypeError:
        return cache_class(**kwargs)


class TokenStream:
    """One batch of prompts decoded token by token, with or without the KV cache.

    max_new_tokens: how many ids `feed` will append at most; the ids, the attention mask and the position ids are
    allocated once for prompt + max_new_tokens (no per-token torch.cat), and with cache="static" the KV cache is a
    transformers `StaticCache` of that length (written in place; the one `torch.compile` can capture). Without it
    (None) the buffers grow by doubling and the cache is a `DynamicCache`. compile: the one-token decode step runs
    under `torch.compile` (static cache only; CUDA graphs on CUDA). use_cache=False recomputes the whole sequence
    each step from the same buffers (the reference the cache is tested against).
    """

    def __init__(self, model: ARModel, prompts: list[list[int]], *, use_cache: bool = True,
                 max_new_tokens: int | None = None, cache: str = "static", compile: bool = False) -> None:
        if cache not in CACHES:
            raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
        self.model, self.use_cache = model, use_cache
        ids, mask = left_pad(model.vocab, prompts)
        device = next(model.parameters()).device
        self.length = self.prompt_length = ids.shape[1]  # ids written so far (every row: the prompts are left-padded)
        self.static = use_cache and cache == "static" and max_new_tokens is not None
        room = 16 if max_new_tokens is None else max_new_tokens
        self._allocate(ids.to(device), mask.to(device), self.length + room)
        self.cache = None
        if use_cache:
            if self.static:
                from transformers import StaticCache

                try:
                    self.cache = new_cache(StaticCache, model, max_cache_len=self.capacity)
                except TypeError:  # releases before 4.56 size it by batch, device and dtype too: the dynamic one
                    self.static = False
            if not self.static:
                from transformers import DynamicCache

                self.cache = new_cache(DynamicCache, model)
        self._step, self.compiled = self._decode, compile
        if compile:
            if not self.static:
                raise ValueError("compile needs the static cache (cache='static' and max_new_tokens)")
            mode = "reduce-overhead" if device.type == "cuda" else None  # reduce-overhead: CUDA graphs
            self._step = torch.compile(self._decode, mode=mode, dynamic=False, fullgraph=False)
        length = self.length
        step = model.trunk(self.ids[:, :length], self._mask(length), self.pos[:, :length], cache=self.cache,
                           use_cache=use_cache)  # prefill
        self.hidden = step.hidden[:, -1]  # [B, H] at the last position
        self.cache = step.cache if use_cache else None

    def _allocate(self, ids: torch.Tensor, mask: torch.Tensor, capacity: int) -> None:
        """ids / mask / position buffers [B, capacity]: the prompt, then ones (future tokens are real tokens)."""
        rows, length = ids.shape
        self.capacity = capacity
        self.ids = ids.new_full((rows, capacity), self.model.vocab.pad)
        self.ids[:, :length] = ids
        self.mask = mask.new_ones((rows, capacity))
        self.mask[:, :length] = mask
        self.pos = positions(self.mask)  # the same ids as positions() of every prefix

    def _mask(self, length: int) -> torch.Tensor:
        # a static cache spans the whole capacity (transformers reads the mask up to it); otherwise the seen ids
        return self.mask if self.static else self.mask[:, :length]

    def _decode(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.model.trunk(ids, mask, pos, cache=self.cache, use_cache=True).hidden[:, -1]

    def feed(self, ids: torch.Tensor) -> torch.Tensor:
        """Append ids [B] and return the new last hidden state [B, H]."""
        c = self.length
        if c == self.capacity:
            if self.static:
                raise ValueError(f"TokenStream: more than the {self.capacity - self.prompt_length} new tokens it "
                                 "was sized for")
            self._allocate(self.ids, self.mask, 2 * self.capacity)
        self.ids[:, c] = ids
        self.length = c + 1
        if self.use_cache:
            hidden = self._step(ids[:, None], self._mask(c + 1), self.pos[:, c: c + 1])
            self.hidden = hidden.clone() if self.compiled else hidden  # a CUDA graph reuses its output buffer
        else:
            n = c + 1
            self.hidden = self.model.trunk(self.ids[:, :n], self.mask[:, :n], self.pos[:, :n]).hidden[:, -1]
        return self.hidden


class _VisualSampler:
    """Mixed logits of every branch -> one code per sample [B] (the factorized head's basis made once)."""

    def __init__(self, model: ARModel, branches: int, scales: list[float], sampling: Sampling,
                 generator: torch.Generator | None, device: torch.device) -> None:
        self.model, self.branches, self.scales, self.sampling, self.generator = (model, branches, scales, sampling,
                                                                                 generator)
        if model.head_kind != "full":
            self.basis = torch.cumprod(torch.tensor([1, *model.levels[:-1]], device=device), 0).tolist()

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.visual_logits(hidden).float()  # [branches * B, C or sum(levels)]
        mixed = mix(list(logits.chunk(self.branches)), self.scales) if self.branches > 1 else logits
        if self.model.head_kind == "full":
            return sample(mixed, self.sampling, self.generator)
        digits = [sample(part, self.sampling, self.generator) for part in self.model.split_levels(mixed)]  # K x [B]
        return sum(d * b for d, b in zip(digits, self.basis))


@torch.no_grad()
def generate_image(model: ARModel, prompts: list[list[int]], grid: tuple[int, int], *,
                   weaker: list[list[list[int]]] = (), scales: list[float] = (), sampling: Sampling = SAMPLE,
                   generator: torch.Generator | None = None, use_cache: bool = True, cache: str = "static",
                   compile: bool = False) -> torch.Tensor:
    """Codes [B, h*w] of one image per prompt (each prompt ends in `BOI H W` for `grid`).

    weaker: for guidance, the same prompts with conditions removed, strongest first, the unconditional last (one list
    of B prompts per branch); scales: one per consecutive pair (see `mix`). No weaker prompts: no guidance. All
    branches decode as one batch. cache / compile: see `TokenStream` (the codes do not depend on them).
    """
    v = model.vocab
    tail = [v.boi, v.height(grid[0]), v.width(grid[1])]
    rows = [*prompts, *(p for branch in weaker for p in branch)]
    bad = [i for i, p in enumerate(rows) if p[-3:] != tail]
    if bad:
        raise ValueError(f"prompt {bad[0]} does not end in BOI H{grid[0]} W{grid[1]} (sequence.image_prompt)")
    if any(len(branch) != len(prompts) for branch in weaker):
        raise ValueError("every guidance branch needs one prompt per conditional prompt")
    branches, n = 1 + len(weaker), grid[0] * grid[1]
    if len(scales) != branches - 1:
        raise ValueError(f"{branches} guidance branches need {branches - 1} scales, got {len(scales)}")
    decoder = TokenStream(model, rows, use_cache=use_cache, max_new_tokens=n - 1, cache=cache, compile=compile)
    step = _VisualSampler(model, branches, list(scales), sampling, generator, decoder.ids.device)
    codes = decoder.ids.new_empty((len(prompts), n))
    for t in range(n):
        code = step(decoder.hidden)  # [B]
        codes[:, t] = code
        if t + 1 < n:
            decoder.feed((code + v.visual_start).repeat(branches))
    return codes  # [B, h*w]


@torch.no_grad()
def generate_text(model: ARModel, prompts: list[list[int]], *, max_new_tokens: int = 64,
                  sampling: Sampling = GREEDY, generator: torch.Generator | None = None,
                  use_cache: bool = True, cache: str = "static") -> list[list[int]]:
    """Text ids after each prompt (understanding: the prompt is `UND BOI H W v... EOI`), up to the codec's
    end-of-text (excluded) or max_new_tokens. Only text ids can be sampled."""
    v, eos = model.vocab, model.codec.eos
    decoder = TokenStream(model, prompts, use_cache=use_cache, max_new_tokens=max(max_new_tokens - 1, 0),
                          cache=cache)
    new = decoder.ids.new_full((len(prompts), max_new_tokens), eos)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=new.device)
    steps = 0
    for t in range(max_new_tokens):
        logits = model.text_logits(decoder.hidden).float()[:, : v.text_size]
        ids = sample(logits, sampling, generator).masked_fill(done, eos)
        new[:, t] = ids
        done |= ids == eos
        steps = t + 1
        if t + 1 == max_new_tokens or bool(done.all()):
            break
        decoder.feed(ids)
    out = []
    for row in new[:, :steps].tolist():
        out.append(row[: row.index(eos)] if eos in row else row)
    return out
