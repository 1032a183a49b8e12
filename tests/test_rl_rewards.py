"""The offline rewards against independent computations, and weighted sums."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as nnf
from safetensors.torch import save_file

from armkit.recipes.rl.offline import CategoryProbe, EditReward, PixelFeatures, TextImageAgreement, fit_probe
from armkit.recipes.rl.reward import WeightedSum


def solid(rgb: tuple[float, float, float], n: int = 1, size: int = 8) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(n, 3, size, size).clone()


def test_text_image_agreement_is_the_cosine_of_the_frozen_towers(tmp_path):
    from armkit.tokenizer.encoders import TimmEncoder
    from armkit.tokenizer.text import TinyTextTower

    text = TinyTextTower(width=32, heads=2, seed=1)
    image = TimmEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=dict(depth=1, patch_size=8,
                                                                                 embed_dim=64, num_heads=2))
    proj_t, proj_i = torch.randn(16, 32), torch.randn(16, 64)
    save_file({"text.weight": proj_t, "image.weight": proj_i}, tmp_path / "proj.safetensors")
    reward = TextImageAgreement(text_tower=text, image_encoder=image, projection=str(tmp_path / "proj.safetensors"))
    images, prompts = torch.rand(3, 3, 32, 32), ["a red circle", "a blue square", "a green circle"]
    got = reward(images, prompts)
    with torch.no_grad():
        expected = nnf.cosine_similarity(text(prompts) @ proj_t.T, image(images).mean(1) @ proj_i.T, dim=-1)
    assert torch.allclose(got, expected, atol=1e-5)
    assert got[1] == pytest.approx(reward(images[1:2], prompts[1:2])[0].item(), abs=1e-5)  # per-image, batch-free
    assert not any(p.requires_grad for p in reward.parameters())  # nothing the policy could train
    with pytest.raises(ValueError, match="projection"):
        TextImageAgreement(text_tower=text, image_encoder=image)(images, prompts)


def test_category_probe_scores_the_prompts_class_by_hand(tmp_path):
    classes = ["red", "green", "blue"]
    save_file({"weight": 4.0 * torch.eye(3), "bias": torch.zeros(3)}, tmp_path / "probe.safetensors")
    reward = CategoryProbe(image_encoder=PixelFeatures(size=1), classes=classes,
                           probe=str(tmp_path / "probe.safetensors"))
    images = torch.cat([solid((1.0, 0.0, 0.0)), solid((1.0, 0.0, 0.0)), solid((0.0, 0.0, 1.0))])
    got = reward(images, ["a red circle", "a Green square", "a blue circle"])
    # features are mean pixels - 0.5: red image -> (0.5, -0.5, -0.5) -> logits (2, -2, -2)
    right, wrong = math.exp(2) / (math.exp(2) + 2 * math.exp(-2)), math.exp(-2) / (math.exp(2) + 2 * math.exp(-2))
    assert got.tolist() == pytest.approx([right, wrong, right], rel=1e-5)
    with pytest.raises(ValueError, match="no class"):
        reward(images[:1], ["a purple star"])
    lenient = CategoryProbe(image_encoder=PixelFeatures(size=1), classes=classes, unknown=0.0,
                            probe=str(tmp_path / "probe.safetensors"))
    assert lenient(images[:2], ["a purple star", "a red circle"]).tolist() == pytest.approx([0.0, right], rel=1e-5)


def test_fit_probe_separates_colours_and_feeds_the_reward(tmp_path):
    torch.manual_seed(0)
    colours = torch.eye(3)
    labels = torch.arange(3).repeat(20)
    images = (colours[labels].view(-1, 3, 1, 1) * 0.8 + 0.1 * torch.rand(60, 3, 8, 8))
    feats = PixelFeatures(size=2)(images)
    acc = fit_probe(feats, labels, 3, str(tmp_path / "p.safetensors"), steps=100)
    assert acc == 1.0
    reward = CategoryProbe(image_encoder=PixelFeatures(size=2), classes=["red", "green", "blue"],
                           probe=str(tmp_path / "p.safetensors"))
    r = reward(images[:3], ["red", "green", "blue"])
    assert (r > 0.5).all() and (reward(images[:3], ["green", "blue", "red"]) < 0.5).all()


def test_edit_reward_rewards_reaching_the_target_and_keeping_the_source():
    reward = EditReward(target_weight=1.0, preserve_weight=0.5)
    source, target = solid((1.0, 0.0, 0.0), 2), solid((0.0, 0.0, 1.0), 2)
    f = PixelFeatures()
    edits = torch.cat([target[:1], source[:1]])
    got = reward(edits, ["make it blue"] * 2, sources=source, targets=target)
    cos_st = nnf.cosine_similarity(f(source), f(target), dim=-1)[0].item()  # (.5,-.5,-.5)·(-.5,-.5,.5) / .75
    assert cos_st == pytest.approx(-1 / 3, rel=1e-5)
    assert got.tolist() == pytest.approx([(1.0 + 0.5 * cos_st) / 1.5, (cos_st + 0.5) / 1.5], rel=1e-5)
    assert got[0] > got[1]  # the edit that reached the target scores higher
    with pytest.raises(ValueError, match="source"):
        reward(edits, ["x", "y"])


def test_weighted_sum_combines_parts():
    probe_free = EditReward(target_weight=1.0, preserve_weight=0.0)
    keep = EditReward(target_weight=0.0, preserve_weight=1.0)
    total = WeightedSum(rewards={"close": probe_free, "keep": keep}, weights={"close": 2.0})
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    images = torch.rand(2, 3, 8, 8)
    parts = total.parts(images, ["p", "q"], sources=a, targets=b)
    assert torch.allclose(total(images, ["p", "q"], sources=a, targets=b), 2 * parts["close"] + parts["keep"])
    with pytest.raises(ValueError, match="unknown"):
        WeightedSum(rewards={"close": probe_free}, weights={"nope": 1.0})


def test_written_probe_is_the_evaluations_probe_on_raw_features(tiny_shards, tmp_path):
    from armkit.recipes.ar.evaluate import train_probe
    from armkit.recipes.data.reader import ShardReader
    from armkit.recipes.rl.probe import write_probe

    features = PixelFeatures(size=2)
    acc = write_probe(images=str(tiny_shards), out=tmp_path / "probe", features=features, size=16, steps=100)
    assert acc["train"] == 1.0 and acc["val"] == 1.0  # colours are linearly separable from mean pixels
    batch = next(iter(ShardReader(str(tiny_shards), image_size=16, batch_size=64, split="train")))
    reward = CategoryProbe(image_encoder=features, probe=str(tmp_path / "probe" / "probe.safetensors"),
                           prompt_classes=str(tmp_path / "probe" / "prompt_classes.json"))
    got = reward(batch["image"], batch["txt"])
    f = features(batch["image"])
    mu, sd = f.mean(0), f.std(0) + 1e-6
    probe = train_probe((f - mu) / sd, batch["cls"], classes=4, steps=100, seed=0)
    with torch.no_grad():
        expected = probe((f - mu) / sd).softmax(-1).gather(1, batch["cls"][:, None]).squeeze(1)
    assert torch.allclose(got, expected, atol=1e-4)  # the folded standardisation changes nothing
