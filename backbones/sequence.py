"""The one sequence format of the AR stage: a single id space for text, special and visual tokens, and the three tasks.

Id space (T text ids of the LM, S special ids, C visual codes of the image tokenizer):

    [0, T)            text: the LM's own vocabulary, kept as it is (its tokenizer, its end-of-text id)
    [T, T + S)        special: BOI, EOI, PAD, GEN, UND, EDIT, then height tokens H1..Hmax, width tokens W1..Wmax
    [T + S, T + S + C) visual: code c of the tokenizer is id T + S + c

An image is written `BOI H<h> W<w> v_1 ... v_{h*w} EOI`: the shape tokens give the token grid (any aspect ratio up to
`max_grid` a side) and exactly h*w visual tokens follow, row-major. The three tasks (loss only on the part marked ^):

    text-to-image   GEN  text  BOI H W  v ... v EOI
                                        ^^^^^^^^^^^
    understanding   UND  BOI H W v ... v EOI  caption eos
                                              ^^^^^^^^^^^
    editing         EDIT  BOI H W src ... EOI  instruction  BOI H W  tgt ... EOI
                                                                     ^^^^^^^^^^^

Condition dropout (for classifier-free guidance) removes the condition but keeps the task token and the target's
`BOI H W`: text-to-image without its text is `GEN BOI H W v ... EOI`; editing drops the instruction, the source
image, or both. The unconditional prompts at inference are exactly these sequences cut before the first target token.

Example, T = 258 (bytes), max_grid 4, C = 500: S = 6 + 2*4 = 14; "cat" at grid 2x2 with codes [7, 0, 3, 499] gives
`[261, 99, 97, 116, 258, 265, 269, 279, 272, 275, 771, 259]` with the loss on the last five ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

SPECIAL_NAMES = ("boi", "eoi", "pad", "gen", "und", "edit")
IGNORE = -100  # label of positions that carry no loss (torch's cross_entropy ignore_index)


@dataclass(frozen=True)
class Vocab:
    """The unified id space; see the module docstring."""

    text_size: int
    codebook_size: int
    max_grid: int

    def __post_init__(self) -> None:
        if self.text_size < 1 or self.codebook_size < 2 or self.max_grid < 1:
            raise ValueError(f"Vocab needs text_size >= 1, codebook_size >= 2, max_grid >= 1; got {self}")

    @property
    def num_special(self) -> int:
        return len(SPECIAL_NAMES) + 2 * self.max_grid

    @property
    def visual_start(self) -> int:
        return self.text_size + self.num_special

    @property
    def size(self) -> int:
        return self.visual_start + self.codebook_size

    def special(self, name: str) -> int:
        return self.text_size + SPECIAL_NAMES.index(name)

    boi = property(lambda self: self.special("boi"))
    eoi = property(lambda self: self.special("eoi"))
    pad = property(lambda self: self.special("pad"))
    gen = property(lambda self: self.special("gen"))
    und = property(lambda self: self.special("und"))
    edit = property(lambda self: self.special("edit"))

    def height(self, h: int) -> int:
        if not 1 <= h <= self.max_grid:
            raise ValueError(f"grid height {h} is outside 1..max_grid={self.max_grid}")
        return self.text_size + len(SPECIAL_NAMES) + h - 1

    def width(self, w: int) -> int:
        if not 1 <= w <= self.max_grid:
            raise ValueError(f"grid width {w} is outside 1..max_grid={self.max_grid}")
        return self.text_size + len(SPECIAL_NAMES) + self.max_grid + w - 1

    def grid_of(self, height_id: int, width_id: int) -> tuple[int, int]:
        """(h, w) from a height token and a width token."""
        h = height_id - self.height(1) + 1
        w = width_id - self.width(1) + 1
        if not (1 <= h <= self.max_grid and 1 <= w <= self.max_grid):
            raise ValueError(f"ids {height_id}, {width_id} are not a height and a width token")
        return h, w

    def visual(self, codes: list[int] | torch.Tensor) -> list[int] | torch.Tensor:
        """Tokenizer codes -> visual ids (a list or a tensor, whichever was given)."""
        if isinstance(codes, torch.Tensor):
            return codes + self.visual_start
        bad = [c for c in codes if not 0 <= c < self.codebook_size]
        if bad:
            raise ValueError(f"code {bad[0]} is outside the codebook [0, {self.codebook_size})")
        return [self.visual_start + int(c) for c in codes]

    def is_visual(self, ids: torch.Tensor) -> torch.Tensor:
        return ids >= self.visual_start


class Sequence(NamedTuple):
    ids: list[int]
    loss: list[bool]  # loss[i]: ids[i] is a target (predicted from ids[:i])


class SeqBatch(NamedTuple):
    ids: torch.Tensor  # [B, L] right-padded with PAD
    attention_mask: torch.Tensor  # [B, L] 1 on real tokens
    labels: torch.Tensor  # [B, L]: ids where the loss applies, IGNORE elsewhere (unshifted)


def image(vocab: Vocab, codes: list[int], grid: tuple[int, int]) -> list[int]:
    """`BOI H W v ... v EOI` for codes of a grid (row-major, exactly h*w of them)."""
    h, w = grid
    if len(codes) != h * w:
        raise ValueError(f"an image of grid {h}x{w} needs {h * w} codes, got {len(codes)}")
    return [vocab.boi, vocab.height(h), vocab.width(w), *vocab.visual(codes), vocab.eoi]


def image_prompt(vocab: Vocab, grid: tuple[int, int]) -> list[int]:
    """`BOI H W`: what precedes the visual tokens of a generated image."""
    return [vocab.boi, vocab.height(grid[0]), vocab.width(grid[1])]


def _seq(condition: list[int], target: list[int]) -> Sequence:
    return Sequence(condition + target, [False] * len(condition) + [True] * len(target))


def text_to_image(vocab: Vocab, text: list[int], codes: list[int], grid: tuple[int, int], *,
                  drop_text: bool = False) -> Sequence:
    """`GEN text BOI H W v... EOI`, loss on `v... EOI`; drop_text removes the text (condition dropout)."""
    img = image(vocab, codes, grid)
    return _seq([vocab.gen, *([] if drop_text else text), *img[:3]], img[3:])


def understanding(vocab: Vocab, codes: list[int], grid: tuple[int, int], caption: list[int], eos: int) -> Sequence:
    """`UND BOI H W v... EOI caption eos`, loss on `caption eos`."""
    return _seq([vocab.und, *image(vocab, codes, grid)], [*caption, eos])


def editing(vocab: Vocab, source: list[int], source_grid: tuple[int, int], instruction: list[int],
            target: list[int], target_grid: tuple[int, int], *, drop_text: bool = False,
            drop_image: bool = False) -> Sequence:
    """`EDIT BOI H W src EOI instruction BOI H W tgt EOI`, loss on `tgt EOI`; the drops remove a condition."""
    tgt = image(vocab, target, target_grid)
    src = [] if drop_image else image(vocab, source, source_grid)
    return _seq([vocab.edit, *src, *([] if drop_text else instruction), *tgt[:3]], tgt[3:])


def text_to_image_prompt(vocab: Vocab, text: list[int], grid: tuple[int, int]) -> list[int]:
    return text_to_image(vocab, text, [0] * grid[0] * grid[1], grid).ids[: 1 + len(text) + 3]


def editing_prompt(vocab: Vocab, source: list[int], source_grid: tuple[int, int], instruction: list[int],
                   grid: tuple[int, int], *, drop_text: bool = False, drop_image: bool = False) -> list[int]:
    seq = editing(vocab, source, source_grid, instruction, [0] * grid[0] * grid[1], grid, drop_text=drop_text,
                  drop_image=drop_image)
    return seq.ids[: seq.loss.index(True)]


def understanding_prompt(vocab: Vocab, codes: list[int], grid: tuple[int, int]) -> list[int]:
    return [vocab.und, *image(vocab, codes, grid)]


def collate(vocab: Vocab, seqs: list[Sequence]) -> SeqBatch:
    """Right-pad sequences into a training batch; padding is masked out and carries no loss."""
    if not seqs:
        raise ValueError("collate needs at least one sequence")
    length = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), length), vocab.pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    labels = torch.full((len(seqs), length), IGNORE, dtype=torch.long)
    for i, s in enumerate(seqs):
        row = torch.tensor(s.ids, dtype=torch.long)
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
        labels[i, : len(row)] = row.masked_fill(~torch.tensor(s.loss, dtype=torch.bool), IGNORE)
    return SeqBatch(ids, mask, labels)


def left_pad(vocab: Vocab, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (ids [B, L], attention_mask [B, L]) left-padded, so every row's next token is at the end."""
    if not prompts or any(not p for p in prompts):
        raise ValueError("left_pad needs non-empty prompts")
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), vocab.pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, length - len(p):] = 1
    return ids, mask


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 at each row's first real token (left padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
