"""Condition dropout for text-to-image: the text of a captioned sample is dropped at the configured rate, counted among
captioned text-to-image rows only (an uncaptioned row has no text to drop, and must not dilute the rate)."""

from __future__ import annotations

import random

import pytest
import torch

from armkit.backbones.ar import ARModel
from armkit.recipes.ar.tasks import build_sequences

CONFIG = dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
              num_key_value_heads=1)


def sample(caption: str) -> dict:
    return {"codes": torch.arange(4), "grid": (2, 2), "caption": caption, "label": 0, "key": caption, "edit": None}


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_text_dropout_rate_is_counted_among_captioned_rows(rate):
    model = ARModel(codebook_size=10, max_grid=2, config=CONFIG)
    v = model.vocab
    # half the rows have no caption: a rate over all rows would drop ~rate/2 of the captioned ones
    samples = [sample("a red circle") if i % 2 else sample("") for i in range(1600)]
    seqs, counts = build_sequences(model, samples, tasks={"t2i": 1.0, "und": 1.0}, text_dropout=rate,
                                   image_dropout=0.0, max_text=64, rng=random.Random(0))
    assert len(seqs) == len(samples)  # every sample supports t2i: none is left out, in order
    text = model.codec.encode("a red circle")
    captioned_t2i = [seq for s, seq in zip(samples, seqs) if s["caption"] and seq.ids[0] == v.gen]
    uncaptioned = [seq for s, seq in zip(samples, seqs) if not s["caption"]]
    assert all(seq.ids[0] == v.gen and seq.ids[1] == v.boi for seq in uncaptioned)  # only t2i, with no text
    assert 300 < len(captioned_t2i) < 500  # t2i for about half of the 800 captioned rows (und for the rest)
    kept = [seq for seq in captioned_t2i if seq.ids[1:1 + len(text)] == text]
    dropped = [seq for seq in captioned_t2i if seq.ids[1] == v.boi]
    assert len(kept) + len(dropped) == len(captioned_t2i)  # the whole caption, or none of it
    # ~400 rows: the binomial's sd is <= 0.025; 0.06 is > 2.4 sd, and far from rate / 2 (0.15 at rate 0.3)
    assert len(dropped) / len(captioned_t2i) == pytest.approx(rate, abs=0.06)
    assert counts["t2i"] == len(captioned_t2i) + len(uncaptioned)
