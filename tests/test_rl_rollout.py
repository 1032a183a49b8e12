"""Rollouts: reproducible from the seed, and log-probs that match the sampler's own step-by-step distribution."""

from __future__ import annotations

import pytest
import torch

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.backbones.generate import Sampling, TokenStream
from armkit.recipes.rl.rollout import sample_groups, visual_logprobs

TINY = dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=128)


@pytest.fixture(params=["full", "factorized"])
def model(request):
    return ARModel(codebook_size=40, levels=[5, 8], head=request.param, max_grid=4, config=TINY, seed=3).eval()


def prompts(m: ARModel) -> list[list[int]]:
    return [S.text_to_image_prompt(m.vocab, m.codec.encode(t), (2, 2)) for t in ("a red circle", "sq")]


def test_rollouts_repeat_from_the_seed_and_differ_across_seeds(model):
    s = Sampling(temperature=0.7, top_k=10)
    a = sample_groups(model, prompts(model), (2, 2), group_size=3, sampling=s,
                      generator=torch.Generator().manual_seed(5))
    b = sample_groups(model, prompts(model), (2, 2), group_size=3, sampling=s,
                      generator=torch.Generator().manual_seed(5))
    c = sample_groups(model, prompts(model), (2, 2), group_size=3, sampling=s,
                      generator=torch.Generator().manual_seed(6))
    assert a.codes.shape == (6, 4) and torch.equal(a.codes, b.codes) and not torch.equal(a.codes, c.codes)
    assert a.prompts[0] == a.prompts[2] != a.prompts[3]  # groups are consecutive rows


def test_visual_logprobs_match_the_decoders_step_by_step_distribution(model):
    rows = prompts(model)
    roll = sample_groups(model, rows, (2, 2), group_size=2, sampling=Sampling(temperature=1.0),
                         generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = visual_logprobs(model, roll.prompts, roll.codes, temperature=0.5)
        decoder = TokenStream(model, roll.prompts, use_cache=False)
        for t in range(roll.codes.shape[1]):
            logits = model.visual_logits(decoder.hidden).float() / 0.5
            if model.head_kind == "full":
                ref = logits.log_softmax(-1)
            else:  # independent of the head's own composition: enumerate every code's digits by hand
                a, b = logits.split([5, 8], -1)
                ref = torch.stack([a.log_softmax(-1)[:, c % 5] + b.log_softmax(-1)[:, c // 5] for c in range(40)], 1)
            expected = ref.gather(1, roll.codes[:, t: t + 1]).squeeze(1)
            assert torch.allclose(got[:, t], expected, atol=1e-5), t
            decoder.feed(model.vocab.visual(roll.codes[:, t]))
