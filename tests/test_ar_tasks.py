"""Mixed-task batches, code samples and edit pairs."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from armkit.backbones.ar import ARModel
from armkit.recipes.ar.codes import BadSample, code_sample, decode_codes
from armkit.recipes.ar.tasks import build_sequences, check_tasks
from armkit.recipes.ar.tokenize import skin_tone_pairs

CONFIG = dict(model_type="llama", hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
              num_key_value_heads=1)


def sample(caption: str, edit: bool = False) -> dict:
    codes = torch.arange(4)
    return {"codes": codes, "grid": (2, 2), "caption": caption, "label": 0, "key": caption,
            "edit": {"source": codes + 1, "source_grid": (2, 2), "instruction": "make it dark"} if edit else None}


def test_task_ratios_support_and_dropout():
    model = ARModel(codebook_size=10, max_grid=2, config=CONFIG)
    v = model.vocab
    samples = [sample("cat")] * 300 + [sample("")] * 100 + [sample("dog", edit=True)] * 300
    seqs, counts = build_sequences(model, samples, tasks={"t2i": 0.5, "und": 0.5, "edit": 1.0}, text_dropout=0.5,
                                   image_dropout=0.0, max_text=64, rng=random.Random(0))
    assert len(seqs) == 700
    # uncaptioned samples can only be t2i; edit samples pick edit with weight 1 of 2
    assert counts["edit"] == pytest.approx(150, abs=35) and counts["und"] == pytest.approx(150 + 75, abs=45)
    first = Counter(s.ids[0] for s in seqs)
    assert first[v.edit] == counts["edit"] and first[v.und] == counts["und"] and first[v.gen] == counts["t2i"]
    gen_rows = [s for s in seqs if s.ids[0] == v.gen and s.ids[1] != v.boi]
    dropped = [s for s in seqs if s.ids[0] == v.gen and s.ids[1] == v.boi]  # text dropped (or no caption)
    assert len(dropped) >= 100 and len(gen_rows) > 0
    only_t2i, _ = build_sequences(model, samples, tasks={"t2i": 1.0}, text_dropout=0.0, image_dropout=0.0,
                                  max_text=64, rng=random.Random(0))
    assert all(s.ids[0] == v.gen for s in only_t2i)
    with pytest.raises(ValueError, match="tasks must map"):
        check_tasks({"t2i": 1.0, "vqa": 1.0})


def test_code_sample_round_trip_and_bad_samples():
    codes, source = torch.arange(6), torch.arange(6) + 100
    raw = code_sample("k", codes, (2, 3), caption="cat: dark skin tone", label=3, tags="t",
                      edit={"source": source, "source_grid": (2, 3), "instruction": "make it dark skin tone",
                            "source_key": "s"})
    raw = {k: v for k, v in raw.items()}
    got = decode_codes(raw)
    assert torch.equal(got["codes"], codes) and got["grid"] == (2, 3) and got["label"] == 3
    assert torch.equal(got["edit"]["source"], source) and got["edit"]["instruction"] == "make it dark skin tone"
    with pytest.raises(BadSample, match="needs 6"):
        decode_codes({**raw, "codes": raw["codes"][:-4]})
    with pytest.raises(BadSample, match="needs .codes"):
        decode_codes({"json": raw["json"]})


def test_skin_tone_pairs():
    caps = {c: {"caption": c} for c in ["waving hand", "waving hand: dark skin tone", "cat: light skin tone",
                                        "kiss: light skin tone, dark skin tone"]}
    pairs = skin_tone_pairs(caps)
    assert [(s["caption"], t["caption"], i) for s, t, i in pairs] == [
        ("waving hand", "waving hand: dark skin tone", "make it dark skin tone")]
