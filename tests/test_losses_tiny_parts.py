"""The built-in TinyCausalLM and TinyTextTower: the CausalLM/TextTower contracts the losses rely on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from armkit.backbones import TinyCausalLM
from armkit.backbones.tiny_lm import END, PAD
from armkit.tokenizer.text import TinyTextTower


def test_tokenize_bytes_end_and_right_padding():
    lm = TinyCausalLM(width=32, depth=1, heads=4)
    ids, mask = lm.tokenize(["ab", "héllo world"], max_length=5)
    assert ids.tolist()[0] == [97, 98, END, PAD, PAD]
    assert ids.tolist()[1] == list("héllo".encode())[:4] + [END]  # cut to max_length - 1 bytes, then END
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_lm_loss_ignores_padding():
    lm = TinyCausalLM(width=32, depth=2, heads=4)
    prefix = torch.randn(1, 3, 32)
    ids, mask = lm.tokenize(["a small cat"], max_length=32)
    short = lm(prefix, ids, mask)
    padded_ids = nnf.pad(ids, (0, 7), value=PAD)
    padded_mask = nnf.pad(mask, (0, 7), value=0)
    long = lm(prefix, padded_ids, padded_mask)
    assert torch.allclose(short.loss, long.loss, atol=1e-6)
    assert torch.allclose(short.logits, long.logits[:, : ids.shape[1]], atol=1e-5)
    # the same caption inside a batch with a longer one: the same per-token losses
    ids2, mask2 = lm.tokenize(["a small cat", "a much longer caption about a dog"], max_length=64)
    both = lm(prefix.expand(2, -1, -1), ids2, mask2)
    assert torch.allclose(both.logits[:1, : ids.shape[1]], short.logits, atol=1e-5)


def test_lm_loss_is_on_text_tokens_only_and_starts_at_last_prefix_position():
    lm = TinyCausalLM(width=32, depth=2, heads=4)
    prefix = torch.randn(2, 4, 32)
    ids, mask = lm.tokenize(["red", "a blue bird"], max_length=32)
    out = lm(prefix, ids, mask)
    assert out.logits.shape == (2, ids.shape[1], lm.vocab_size)
    keep = mask.bool()
    assert torch.allclose(out.loss, nnf.cross_entropy(out.logits[keep], ids[keep]), atol=1e-6)
    # the first text token is predicted from the prefix alone; later logits see earlier tokens, never later ones
    other = lm(prefix, torch.randint(0, 256, ids.shape), mask)
    assert torch.allclose(out.logits[:, 0], other.logits[:, 0], atol=1e-6)
    assert not torch.allclose(out.logits[:, 1:], other.logits[:, 1:])
    moved = lm(torch.randn_like(prefix), ids, mask)
    assert not torch.allclose(out.logits[:, 0], moved.logits[:, 0])


def test_lm_seed_frozen_and_limits():
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a, b = TinyCausalLM(width=32, heads=4, seed=3), TinyCausalLM(width=32, heads=4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded build leaves the global generator alone
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not any(p.requires_grad for p in a.parameters())
    a.train()
    assert not a.training
    with pytest.raises(ValueError, match="width=30.*heads=4"):
        TinyCausalLM(width=30, heads=4)
    ids, mask = a.tokenize(["x" * 50], max_length=64)
    with pytest.raises(ValueError, match="prefix width 16 != hidden_size 32"):
        a(torch.randn(1, 2, 16), ids, mask)
    with pytest.raises(ValueError, match="max_length=96"):
        a(torch.randn(1, 60, 32), ids, mask)


def test_text_tower_padding_invariant_and_frozen():
    tower = TinyTextTower(width=32, depth=2, heads=4)
    alone = tower(["cat"])
    batch = tower(["cat", "a very long tag list: dog, tree, sky, river"])
    assert batch.shape == (2, 32)
    assert torch.allclose(alone[0], batch[0], atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])
    assert not any(p.requires_grad for p in tower.parameters())
    assert torch.isfinite(tower([""])).all()  # an empty text still has its END token
    with pytest.raises(ValueError, match="width=10.*heads=4"):
        TinyTextTower(width=10, heads=4)
