"""The fast decode path (backbones/generate.py): StaticCache, preallocated buffers, optional torch.compile, all
giving the codes of the recomputation reference (use_cache=False) under greedy decoding and the same seeded samples
as the DynamicCache path."""

from __future__ import annotations

import pytest
import torch

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.backbones.generate import Sampling, TokenStream, generate_image, generate_text

LM = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2)


def tiny(head: str = "full") -> ARModel:
    return ARModel(codebook_size=100, levels=[5, 4, 5], head=head, max_grid=4, config=LM, seed=2).eval()


def prompts(m: ARModel, grid):
    cond = [S.text_to_image_prompt(m.vocab, m.codec.encode(t), grid) for t in ("a blue square", "cat")]
    return cond, [[S.text_to_image_prompt(m.vocab, [], grid)] * 2]


@pytest.mark.parametrize("head", ["full", "factorized"])
def test_static_dynamic_and_recomputation_agree(head):
    m, grid = tiny(head), (3, 3)
    cond, weaker = prompts(m, grid)
    greedy = Sampling(0.0)
    ref = generate_image(m, cond, grid, weaker=weaker, scales=[2.0], sampling=greedy, use_cache=False)
    for cache in ("static", "dynamic"):
        assert torch.equal(generate_image(m, cond, grid, weaker=weaker, scales=[2.0], sampling=greedy, cache=cache),
                           ref)
    seeded = [generate_image(m, cond, grid, weaker=weaker, scales=[1.5], sampling=Sampling(1.0, top_k=30),
                             generator=torch.Generator().manual_seed(7), cache=cache)
              for cache in ("static", "dynamic")]
    assert torch.equal(*seeded)
    und = [S.understanding_prompt(m.vocab, ref[0].tolist(), grid), [m.vocab.und, *S.image(m.vocab, [1] * 4, (2, 2))]]
    texts = [generate_text(m, und, max_new_tokens=6, cache=c) for c in ("static", "dynamic")]
    assert texts[0] == texts[1] == generate_text(m, und, max_new_tokens=6, use_cache=False)


def test_buffers_grow_without_a_size_and_a_static_stream_refuses_overflow():
    m = tiny()
    rows = [[m.vocab.gen, 5, 6, 7], [m.vocab.gen, 9]]
    ref = TokenStream(m, rows, use_cache=False)
    grow = TokenStream(m, rows, use_cache=True, cache="dynamic")  # no max_new_tokens: buffers double past 16
    for t in range(20):
        ids = torch.tensor([m.vocab.visual_start + t, m.vocab.visual_start + 2 * t])
        torch.testing.assert_close(grow.feed(ids), ref.feed(ids), atol=1e-5, rtol=1e-5)
    assert grow.capacity >= 24 and torch.equal(grow.ids[:, : grow.length], ref.ids[:, : ref.length])
    fixed = TokenStream(m, rows, max_new_tokens=1)
    fixed.feed(torch.tensor([m.vocab.visual_start] * 2))
    with pytest.raises(ValueError, match="new tokens"):
        fixed.feed(torch.tensor([m.vocab.visual_start] * 2))
    with pytest.raises(ValueError, match="cache must be"):
        TokenStream(m, rows, cache="paged")


@pytest.mark.slow
def test_compiled_decode_step_gives_the_reference_codes():
    m, grid = tiny(), (3, 3)
    cond, weaker = prompts(m, grid)
    ref = generate_image(m, cond, grid, weaker=weaker, scales=[1.5], sampling=Sampling(0.0), use_cache=False)
    for _ in range(2):  # the second call reuses the compiled step
        assert torch.equal(generate_image(m, cond, grid, weaker=weaker, scales=[1.5], sampling=Sampling(0.0),
                                          compile=True), ref)
