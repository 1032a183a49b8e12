"""AR backbone and sampler: KV cache == recomputation, guidance 1.0 == conditional, exactly h*w codes, heads."""

from __future__ import annotations

import math

import pytest
import torch

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.backbones.generate import Sampling, filter_logits, generate_image, generate_text, mix

TINY = {
    "qwen2": dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
    "llama": dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
}
LEVELS = [5, 4, 5]  # 100 codes


def model(family: str = "qwen2", head: str = "full") -> ARModel:
    return ARModel(codebook_size=100, levels=LEVELS, head=head, max_grid=4, config=TINY[family], seed=1).eval()


def prompts(m: ARModel, grid=(2, 3)) -> tuple[list[list[int]], list[list[int]]]:
    texts = ["a red circle", "dog"]  # different lengths: left padding is exercised
    cond = [S.text_to_image_prompt(m.vocab, m.codec.encode(t), grid) for t in texts]
    return cond, [S.text_to_image_prompt(m.vocab, [], grid)] * len(texts)


@pytest.mark.parametrize("family,head", [("qwen2", "full"), ("llama", "factorized"), ("qwen2", "factorized")])
def test_kv_cache_equals_full_recomputation_greedy(family, head):
    m = model(family, head)
    cond, uncond = prompts(m, (3, 3))
    greedy = Sampling(temperature=0.0)
    cached = generate_image(m, cond, (3, 3), weaker=[uncond], scales=[1.5], sampling=greedy)
    full = generate_image(m, cond, (3, 3), weaker=[uncond], scales=[1.5], sampling=greedy, use_cache=False)
    assert torch.equal(cached, full)
    assert len(set(cached.flatten().tolist())) > 1  # not a degenerate constant
    und = [S.understanding_prompt(m.vocab, cached[0].tolist(), (3, 3))]
    assert generate_text(m, und, max_new_tokens=8) == generate_text(m, und, max_new_tokens=8, use_cache=False)


@pytest.mark.parametrize("head", ["full", "factorized"])
def test_guidance_one_equals_conditional(head):
    m = model("qwen2", head)
    cond, uncond = prompts(m)
    c, u = torch.randn(2, 7), torch.randn(2, 7)
    assert torch.allclose(mix([c, u], [1.0]), c, atol=1e-6)
    assert torch.allclose(mix([c, u], [0.0]), u)
    i = torch.randn(2, 7)
    assert torch.allclose(mix([c, i, u], [1.0, 1.0]), c, atol=1e-6)  # editing: both scales 1 -> full condition
    for sampling in (Sampling(0.0), Sampling(1.0, top_k=20, top_p=0.9)):
        plain = generate_image(m, cond, (2, 3), sampling=sampling, generator=torch.Generator().manual_seed(3))
        guided = generate_image(m, cond, (2, 3), weaker=[uncond], scales=[1.0], sampling=sampling,
                                generator=torch.Generator().manual_seed(3))
        assert torch.equal(plain, guided)
    strong = generate_image(m, cond, (2, 3), weaker=[uncond], scales=[4.0], sampling=Sampling(0.0))
    assert not torch.equal(strong, plain)  # guidance does act


@pytest.mark.parametrize("grid", [(1, 4), (3, 2), (4, 4)])
def test_shape_tokens_give_the_grid_asked_for(grid):
    m = model()
    cond, uncond = prompts(m, grid)
    codes = generate_image(m, cond, grid, weaker=[uncond], scales=[1.5], sampling=Sampling(1.0),
                           generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, grid[0] * grid[1])
    assert ((codes >= 0) & (codes < 100)).all()
    with pytest.raises(ValueError, match="does not end in BOI"):
        generate_image(m, cond, (2, 2))


def test_seeds_reproduce_and_differ():
    m = model()
    cond, _ = prompts(m)
    run = [generate_image(m, cond, (2, 3), sampling=Sampling(1.0), generator=torch.Generator().manual_seed(s))
           for s in (0, 0, 1)]
    assert torch.equal(run[0], run[1]) and not torch.equal(run[0], run[2])


def test_filter_logits_top_k_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.79)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.1)).tolist() == [[True, False, False, False]]


@pytest.mark.parametrize("head", ["full", "factorized"])
def test_visual_head_is_a_distribution_and_loss_uses_it(head):
    m = model("llama", head)
    h = torch.randn(5, m.hidden_size)
    logp = m.visual_log_probs(h)  # [5, 100]
    assert torch.allclose(logp.logsumexp(-1), torch.zeros(5), atol=1e-5)
    codes = torch.randint(0, 100, (5,))
    assert torch.allclose(m.visual_nll(h, codes), -logp.gather(1, codes[:, None]).squeeze(1), atol=1e-5)
    assert m.visual_head.out_features == (100 if head == "full" else sum(LEVELS))


def test_loss_is_the_mean_nll_of_target_tokens():
    m = model("qwen2", "full")
    v = m.vocab
    seqs = [S.text_to_image(v, m.codec.encode("cat"), list(range(6)), (2, 3)),
            S.understanding(v, list(range(4)), (2, 2), m.codec.encode("a dog"), m.codec.eos)]
    batch = S.collate(v, seqs)
    out = m(*batch)
    assert (out.num_visual, out.num_text) == (6, 1 + 6)  # t2i: 6 codes + EOI (text head); und: 5 bytes + eos
    # independent recomputation, one sequence at a time, without padding
    total, count = 0.0, 0
    for s in seqs:
        ids = torch.tensor([s.ids])
        hidden = m.trunk(ids).hidden[0]
        for i in range(1, len(s.ids)):
            if s.loss[i]:
                if s.ids[i] >= v.visual_start:
                    total -= m.visual_log_probs(hidden[i - 1])[s.ids[i] - v.visual_start].item()
                else:
                    total -= m.text_logits(hidden[i - 1]).log_softmax(-1)[s.ids[i]].item()
                count += 1
    assert count == 13 and math.isclose(out.loss.item(), total / count, rel_tol=1e-4)


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="exactly one of config"):
        ARModel(codebook_size=100)
    with pytest.raises(ValueError, match="levels"):
        ARModel(codebook_size=99, levels=LEVELS, config=TINY["qwen2"])
    with pytest.raises(ValueError, match="needs the tokenizer's FSQ"):
        ARModel(codebook_size=100, head="factorized", config=TINY["qwen2"])
    with pytest.raises(ValueError, match="vocab_size >= 258"):
        ARModel(codebook_size=100, config={**TINY["qwen2"], "vocab_size": 100})
