"""The AR sequence format: ids, shape tokens, loss masks on targets only, condition dropout."""

from __future__ import annotations

import pytest
import torch

from armkit.backbones import sequence as S
from armkit.backbones.ar import fsq_digits

V = S.Vocab(text_size=258, codebook_size=500, max_grid=4)


def test_docstring_example():
    seq = S.text_to_image(V, list(b"cat"), [7, 0, 3, 499], (2, 2))
    assert seq.ids == [261, 99, 97, 116, 258, 265, 269, 279, 272, 275, 771, 259]
    assert seq.loss == [False] * 7 + [True] * 5


def test_shape_tokens_round_trip_every_grid():
    seen = set()
    for h in range(1, 5):
        for w in range(1, 5):
            hid, wid = V.height(h), V.width(w)
            assert V.text_size <= hid < V.visual_start and V.text_size <= wid < V.visual_start
            assert V.grid_of(hid, wid) == (h, w)
            seen |= {("h", hid), ("w", wid)}
    assert len({i for _, i in seen}) == 8  # 4 heights and 4 widths, all distinct ids
    with pytest.raises(ValueError, match="max_grid"):
        V.height(5)
    with pytest.raises(ValueError, match="needs 6 codes"):
        S.image(V, [1, 2, 3], (2, 3))


def labelled(seq: S.Sequence) -> list[int]:
    batch = S.collate(V, [seq, S.Sequence([V.gen], [False])])  # a short second row: padding must carry no loss
    labels = batch.labels[0]
    assert (batch.labels[1] == S.IGNORE).all() and batch.attention_mask[1].sum() == 1
    return labels[labels != S.IGNORE].tolist()


def test_loss_masks_cover_targets_only():
    text, caption, instr = list(b"a red circle"), list(b"a dog"), list(b"make it dark")
    src, tgt = list(range(6)), list(range(100, 106))
    assert labelled(S.text_to_image(V, text, tgt, (2, 3))) == [*V.visual(tgt), V.eoi]
    assert labelled(S.understanding(V, src, (3, 2), caption, 256)) == [*caption, 256]
    edit = S.editing(V, src, (2, 3), instr, tgt, (2, 3))
    assert labelled(edit) == [*V.visual(tgt), V.eoi]  # the source image's visual tokens are not targets
    assert sum(i >= V.visual_start for i in edit.ids) == 12


def test_condition_dropout_and_prompts():
    text, src, instr = list(b"cat"), [1, 2, 3, 4], list(b"invert")
    assert S.text_to_image(V, text, [5] * 4, (2, 2), drop_text=True).ids[:4] == [V.gen, *S.image_prompt(V, (2, 2))]
    assert S.text_to_image_prompt(V, text, (2, 2)) == [V.gen, *text, *S.image_prompt(V, (2, 2))]
    full = S.editing_prompt(V, src, (2, 2), instr, (2, 2))
    assert full == [V.edit, *S.image(V, src, (2, 2)), *instr, *S.image_prompt(V, (2, 2))]
    assert S.editing_prompt(V, src, (2, 2), instr, (2, 2), drop_text=True) == [V.edit, *S.image(V, src, (2, 2)),
                                                                               *S.image_prompt(V, (2, 2))]
    assert S.editing_prompt(V, src, (2, 2), instr, (2, 2), drop_text=True, drop_image=True) == [
        V.edit, *S.image_prompt(V, (2, 2))]


def test_left_pad_positions_start_at_each_rows_first_token():
    ids, mask = S.left_pad(V, [[1, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [V.pad, V.pad, 4]]
    assert S.positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


def test_fsq_digits_match_vector_quantize_pytorch():
    from vector_quantize_pytorch import FSQ

    levels = [8, 5, 5, 5]
    fsq = FSQ(levels=levels)
    indices = torch.randint(0, fsq.codebook_size, (64,))
    # FSQ's own split of an index into per-dimension level indices ("for a transformer with factorized embeddings")
    assert torch.equal(fsq_digits(indices, levels), fsq.indices_to_level_indices(indices).long())
    # and its inverse: FSQ maps the digits back to the same index
    assert torch.equal(fsq.codes_to_indices(fsq.indices_to_codes(indices)).long(), indices)
