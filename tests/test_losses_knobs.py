"""Cost knobs: the caption prefix pooling / sample cap and the frozen text-embedding cache change cost, not values."""

from __future__ import annotations

import torch

from armkit.backbones import TinyCausalLM
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.losses import CaptionLoss, SigmoidLoss
from armkit.tokenizer.text import TinyTextTower


def test_sigmoid_text_cache_gives_identical_loss_and_calls_the_tower_once(tiny_encoder):
    tok = Tokenizer(encoder=tiny_encoder, levels=[8, 5, 5, 5])
    plain = SigmoidLoss(text_tower=TinyTextTower(width=32), embed_dim=tiny_encoder.width)
    cached = SigmoidLoss(text_tower=TinyTextTower(width=32), embed_dim=tiny_encoder.width, cache_texts=100)
    cached.load_state_dict(plain.state_dict())
    calls = []
    cached.text_tower.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    batch = {"image": torch.rand(4, 3, 32, 32), "tags": ["a", "b", "a", "c"]}
    out = tok(batch["image"])
    for _ in range(3):
        assert torch.allclose(plain(out, batch, tok)[0], cached(out, batch, tok)[0])
    assert calls == [3]  # three distinct texts, embedded once


def test_caption_prefix_pooling_and_sample_cap(tiny_encoder):
    tok = Tokenizer(encoder=tiny_encoder, levels=[8, 5, 5, 5])  # grid 2x2 at 32 px
    lm = TinyCausalLM(width=32, heads=2)
    full = CaptionLoss(lm=lm, embed_dim=tiny_encoder.width)
    pooled = CaptionLoss(lm=lm, embed_dim=tiny_encoder.width, prefix_tokens=1, max_samples=2)
    pooled.adapter.load_state_dict(full.adapter.state_dict())
    images = torch.rand(4, 3, 32, 32)
    out = tok(images)
    batch = {"image": images, "txt": ["one", "two", "three", "four"]}
    # reference: mean-pool Z over all tokens by hand, keep the first two samples
    z1 = out.z[:2].mean(dim=1, keepdim=True)
    ids, mask = lm.tokenize(batch["txt"][:2], full.max_length)
    expected = lm(full.adapter(z1), ids, mask).loss
    assert torch.allclose(pooled(out, batch, tok)[0], expected, atol=1e-6)
    assert not torch.allclose(full(out, batch, tok)[0], expected)
