"""ARM image generation with a plain transformers `generate()`: logits processors for an armkit Hugging Face export.

Standalone on purpose: this file imports torch and transformers only, so an exported model samples images where
armkit is not installed: copy this file beside your code (an export folder itself never holds code) and

    import importlib.util, json, torch
    from transformers import AutoModelForCausalLM
    spec = importlib.util.spec_from_file_location("armkit_processors", "armkit_processors.py")  # this file
    P = importlib.util.module_from_spec(spec); spec.loader.exec_module(P)
    lm, meta = AutoModelForCausalLM.from_pretrained(EXPORT), P.read_meta(EXPORT)
    rows = [P.text_to_image_prompt(meta, text_ids, (16, 16))]          # text_ids: the LM's tokenizer's ids
    weaker = [[P.text_to_image_prompt(meta, [], (16, 16))]]             # classifier-free guidance: unconditional
    ids, mask = P.left_pad([*rows, *weaker[0]], meta["ids"]["pad"])
    kwargs = P.image_generate_kwargs(meta, (16, 16), prompt_length=ids.shape[1], batch=1, scales=[1.5],
                                     temperature=1.0, top_k=0, generator=torch.Generator().manual_seed(0))
    out = lm.generate(input_ids=ids, attention_mask=mask, **kwargs)
    codes = P.codes_of(out, meta, (16, 16), prompt_length=ids.shape[1], batch=1)   # [1, 256] tokenizer codes

Id space (armkit_sequence.json): [0, T) the LM's text ids, [T, T + S) armkit's special ids (BOI, EOI, PAD, GEN, UND,
EDIT, H1..Hmax, W1..Wmax), [T + S, T + S + C) visual ids (code c is T + S + c). An image is `BOI H W v_1 .. v_hw EOI`.

Rows: guidance runs every branch in one batch, B rows per branch, branches stacked in backbones/generate.py's order,
strongest condition first, unconditional last:

    text-to-image   [cond, uncond]                            l = u + s * (c - u)
    editing         [full condition, image only, neither]     l = u + s_img * (i - u) + s_txt * (c - i)

`Guidance` takes the scales as armkit's `mix` does (one per consecutive pair of branches: text-to-image [s], editing
[s_txt, s_img]). The processors run in this order (`image_processors` builds the list): Guidance (mixes the branches'
raw logits, writes the mix to every branch's rows) -> ImageGrid (exactly h*w visual ids, then EOI) -> Sampler (draws
one id per prompt as armkit's `backbones.generate.sample` does, from the visual ids only and with its own
`generator`, and leaves only that id allowed on every branch's rows). Greedy `generate()` (do_sample=False) then keeps
the drawn id, so every branch follows the same image, and the codes equal armkit's `generate_image` for the same
prompts, scales, sampling and seed. Without guidance, ImageGrid alone also works with transformers' own sampling
(do_sample=True), whose random draws differ from armkit's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

META_NAME = "armkit_sequence.json"
NEG_INF = float("-inf")


def read_meta(folder: str | Path) -> dict:
    """The export's armkit_sequence.json."""
    return json.loads((Path(folder) / META_NAME).read_text())


# -- prompts (the same ids as armkit's backbones/sequence.py) --------------------------------------------------------
def height_id(meta: dict, h: int) -> int:
    if not 1 <= h <= meta["max_grid"]:
        raise ValueError(f"grid height {h} is outside 1..{meta['max_grid']}")
    return meta["ids"]["height_1"] + h - 1


def width_id(meta: dict, w: int) -> int:
    if not 1 <= w <= meta["max_grid"]:
        raise ValueError(f"grid width {w} is outside 1..{meta['max_grid']}")
    return meta["ids"]["width_1"] + w - 1


def image_prompt(meta: dict, grid: tuple[int, int]) -> list[int]:
    """`BOI H W`."""
    return [meta["ids"]["boi"], height_id(meta, grid[0]), width_id(meta, grid[1])]


def image_ids(meta: dict, codes: Sequence[int], grid: tuple[int, int]) -> list[int]:
    """`BOI H W v .. v EOI` of tokenizer codes."""
    if len(codes) != grid[0] * grid[1]:
        raise ValueError(f"a {grid[0]}x{grid[1]} image needs {grid[0] * grid[1]} codes, got {len(codes)}")
    start, size = meta["visual_start"], meta["codebook_size"]
    if any(not 0 <= int(c) < size for c in codes):
        raise ValueError(f"a code is outside the codebook [0, {size})")
    return [*image_prompt(meta, grid), *(start + int(c) for c in codes), meta["ids"]["eoi"]]


def text_to_image_prompt(meta: dict, text: Sequence[int], grid: tuple[int, int]) -> list[int]:
    """`GEN text BOI H W` (text: the LM's own text ids; [] for the unconditional branch)."""
    return [meta["ids"]["gen"], *text, *image_prompt(meta, grid)]


def editing_prompt(meta: dict, source: Sequence[int] | None, source_grid: tuple[int, int],
                   instruction: Sequence[int] | None, grid: tuple[int, int]) -> list[int]:
    """`EDIT BOI H W src EOI instruction BOI H W`; source None drops the image, instruction None the text."""
    src = image_ids(meta, source, source_grid) if source is not None else []
    return [meta["ids"]["edit"], *src, *(instruction or []), *image_prompt(meta, grid)]


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (input_ids [N, L], attention_mask [N, L]), left-padded as generate() expects."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, length - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[i, length - len(r):] = 1
    return ids, mask


# -- sampling (the same draws as armkit's backbones/generate.py) -----------------------------------------------------
def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the top-k logits and the smallest set whose probability reaches top_p (the most likely always stays)."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), NEG_INF)
    return logits


def sample(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, V] -> ids [B]; temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


# -- the processors --------------------------------------------------------------------------------------------------
class Guidance(LogitsProcessor):
    """Classifier-free guidance over branches stacked in the batch (see the module docstring): the mix
    u + sum_k s_k * (b_k - b_{k+1}) of the branches' logits, written to every branch's rows."""

    def __init__(self, scales: Sequence[float]) -> None:
        if not scales:
            raise ValueError("Guidance needs at least one scale (two branches)")
        self.scales = [float(s) for s in scales]
        self.branches = len(self.scales) + 1

    @classmethod
    def text_to_image(cls, scale: float) -> Guidance:
        """Rows [cond, uncond]."""
        return cls([scale])

    @classmethod
    def editing(cls, text_scale: float, image_scale: float) -> Guidance:
        """Rows [full condition, image only, neither]: l = u + s_img * (i - u) + s_txt * (c - i)."""
        return cls([text_scale, image_scale])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] % self.branches:
            raise ValueError(f"{scores.shape[0]} rows do not split into {self.branches} guidance branches")
        parts = scores.float().chunk(self.branches)
        out = parts[-1]
        for k, s in enumerate(self.scales):
            out = out + s * (parts[k] - parts[k + 1])
        out = torch.nan_to_num(out, nan=NEG_INF)  # ids masked (-inf) in every branch stay masked
        return out.repeat(self.branches, 1)


class ImageGrid(LogitsProcessor):
    """Exactly `num_tokens` (h*w) visual ids after the prompt, then EOI: every other id gets -inf."""

    def __init__(self, *, prompt_length: int, num_tokens: int, visual_start: int, codebook_size: int,
                 eoi: int) -> None:
        self.prompt_length, self.num_tokens, self.eoi = prompt_length, num_tokens, eoi
        self.start, self.stop = visual_start, visual_start + codebook_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(scores, NEG_INF)
        if input_ids.shape[1] - self.prompt_length < self.num_tokens:
            out[:, self.start: self.stop] = scores[:, self.start: self.stop]
        else:
            out[:, self.eoi] = 0.0
        return out


class Sampler(LogitsProcessor):
    """Draws one visual id per prompt from the first `batch` rows (the guided mix after `Guidance`) as armkit does,
    and returns logits that allow only that id (0, else -inf) on every branch's rows. Past the image, the one
    allowed id (EOI after ImageGrid) is kept without a draw."""

    def __init__(self, *, prompt_length: int, num_tokens: int, visual_start: int, codebook_size: int, batch: int,
                 branches: int = 1, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        self.prompt_length, self.num_tokens, self.batch, self.branches = prompt_length, num_tokens, batch, branches
        self.start, self.stop = visual_start, visual_start + codebook_size
        self.temperature, self.top_k, self.top_p, self.generator = temperature, top_k, top_p, generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != self.batch * self.branches:
            raise ValueError(f"{scores.shape[0]} rows, expected {self.batch} prompts x {self.branches} branches")
        first = scores[: self.batch]
        if input_ids.shape[1] - self.prompt_length < self.num_tokens:
            ids = self.start + sample(first[:, self.start: self.stop], temperature=self.temperature,
                                      top_k=self.top_k, top_p=self.top_p, generator=self.generator)
        else:
            ids = first.argmax(-1)
        out = torch.full_like(first, NEG_INF)
        out.scatter_(1, ids[:, None], 0.0)
        return out.repeat(self.branches, 1)


def image_processors(meta: dict, grid: tuple[int, int], *, prompt_length: int, batch: int,
                     scales: Sequence[float] = (), temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                     generator: torch.Generator | None = None) -> LogitsProcessorList:
    """[Guidance (when scales are given)] + ImageGrid + Sampler for prompts of `prompt_length` (left-padded) ids,
    `batch` prompts per branch and len(scales) + 1 branches."""
    n = grid[0] * grid[1]
    common = dict(prompt_length=prompt_length, num_tokens=n, visual_start=meta["visual_start"],
                  codebook_size=meta["codebook_size"])
    out = LogitsProcessorList([Guidance(scales)] if scales else [])
    out.append(ImageGrid(**common, eoi=meta["ids"]["eoi"]))
    out.append(Sampler(**common, batch=batch, branches=len(scales) + 1, temperature=temperature, top_k=top_k,
                       top_p=top_p, generator=generator))
    return out


def image_generate_kwargs(meta: dict, grid: tuple[int, int], *, prompt_length: int, batch: int,
                          scales: Sequence[float] = (), temperature: float = 0.0, top_k: int = 0,
                          top_p: float = 1.0, generator: torch.Generator | None = None) -> dict:
    """The keyword arguments of `generate()` (besides input_ids and attention_mask) for one image per prompt."""
    return dict(logits_processor=image_processors(meta, grid, prompt_length=prompt_length, batch=batch,
                                                  scales=scales, temperature=temperature, top_k=top_k, top_p=top_p,
                                                  generator=generator),
                do_sample=False, num_beams=1, max_new_tokens=grid[0] * grid[1] + 1, eos_token_id=meta["ids"]["eoi"],
                pad_token_id=meta["ids"]["pad"])


def codes_of(output: torch.Tensor, meta: dict, grid: tuple[int, int], *, prompt_length: int,
             batch: int) -> torch.Tensor:
    """generate()'s ids [branches * B, L + h*w + 1] -> tokenizer codes [B, h*w] (the first branch's rows)."""
    n = grid[0] * grid[1]
    new = output[:batch, prompt_length: prompt_length + n]
    start, stop = meta["visual_start"], meta["visual_start"] + meta["codebook_size"]
    if new.shape[1] != n or ((new < start) | (new >= stop)).any():
        raise ValueError("the generated ids are not h*w visual ids (were the processors of image_processors used?)")
    return new - start
