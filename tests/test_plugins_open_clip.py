"""OpenCLIPEncoder and OpenCLIPTextTower on tiny random-init open_clip models saved to tmp (no downloads)."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.tokenizer import HFTokenizer
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from armkit.tokenizer import build, to_spec
from armkit.tokenizer.encoders.open_clip_encoder import OpenCLIPEncoder
from armkit.tokenizer.text.open_clip_text import OpenCLIPTextTower

CLIP_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
# SigLIP2's layout (timm trunk, attention-pool head, custom text tower) with tiny timm test ViTs
SIGLIP2_LIKE = {
    "embed_dim": 96,
    "vision_cfg": {"timm_model_name": "test_vit3", "timm_pool": "map", "timm_proj": "none", "image_size": 160},
    "text_cfg": {**CLIP_TEXT, "width": 96, "vocab_size": 64, "no_causal_mask": True, "proj_bias": True,
                 "pool_type": "last", "hf_tokenizer_name": "timm/ViT-B-16-SigLIP2",
                 "tokenizer_kwargs": {"clean": "canonicalize"}},
}
NO_PREFIX = {
    "embed_dim": 48,
    "vision_cfg": {"timm_model_name": "test_vit_relpos", "timm_pool": "avg", "timm_proj": "linear", "image_size": 160},
    "text_cfg": CLIP_TEXT,
}
CLIP_VIT = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": CLIP_TEXT,
}


def saved_model(tmp_path, name: str, cfg: dict, seed: int = 0):
    """A random-init open_clip model (the reference) and its weights saved as safetensors."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained_text=False, **cfg).eval()
    path = tmp_path / f"{name}-{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, str(path)


def images(b: int = 2) -> torch.Tensor:
    return torch.rand(b, 3, 90, 120, generator=torch.Generator().manual_seed(1))


def word_tokenizer_folder(tmp_path, words: list[str]) -> str:
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / "tok"
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                            eos_token="<eos>").save_pretrained(str(folder))
    return str(folder)


def test_timm_trunk_tokens_and_attention_pool_match_open_clip(tmp_path):
    ref, weights = saved_model(tmp_path, "ViT-B-16-SigLIP2", SIGLIP2_LIKE)
    enc = OpenCLIPEncoder("ViT-B-16-SigLIP2", weights=weights, model_kwargs=SIGLIP2_LIKE)
    assert enc.mean == (0.5, 0.5, 0.5) and enc.std == (0.5, 0.5, 0.5)  # SigLIP2's own, from its pretrained tags
    assert enc.image_size == (160, 160) and enc.grid == (10, 10) and enc.width == 96
    x = images()
    tokens = enc(x)
    assert tokens.shape == (2, 100, 96)  # the class token of test_vit3 is dropped
    with torch.no_grad():
        pixels = enc.preprocess(x)
        last = ref.visual.trunk.forward_intermediates(pixels, indices=1, norm=True, output_fmt="NLC",
                                                      intermediates_only=True)[-1]
        torch.testing.assert_close(tokens, last)
        torch.testing.assert_close(enc.pooled(x), ref.encode_image(pixels))  # the attention-pool head output
    with pytest.raises(NotImplementedError, match="prefix"):  # test_vit3's map head also pools its class token
        enc.pool_tokens(tokens)


def test_pool_tokens_reproduces_the_towers_pooled_output(tmp_path):
    enc = OpenCLIPEncoder("ViT-B-16-SigLIP2", model_kwargs=NO_PREFIX)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(enc.pool_tokens(enc(x)), enc.pooled(x))
        assert enc.pooled(x).shape == (2, 48)


def test_open_clip_vit_tokens_and_pooled_match_open_clip(tmp_path):
    ref, weights = saved_model(tmp_path, "ViT-B-32", CLIP_VIT)
    enc = OpenCLIPEncoder("ViT-B-32", weights=weights, model_kwargs=CLIP_VIT)
    assert enc.mean == tuple(open_clip.OPENAI_DATASET_MEAN) and enc.grid == (4, 4) and enc.width == 32
    x = images()
    with torch.no_grad():
        pixels = enc.preprocess(x)
        last = ref.visual.forward_intermediates(pixels, indices=1, normalize_intermediates=True, output_fmt="NLC",
                                                intermediates_only=True)["image_intermediates"][-1]
        torch.testing.assert_close(enc(x), last)  # ln_post applied, class token dropped
        torch.testing.assert_close(enc.pooled(x), ref.encode_image(pixels))


def test_encoder_is_frozen_and_rebuilds_from_its_spec(tmp_path):
    _, weights = saved_model(tmp_path, "ViT-B-32", CLIP_VIT)
    enc = OpenCLIPEncoder("ViT-B-32", weights=weights, model_kwargs=CLIP_VIT, mean=(0.1, 0.2, 0.3))
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    assert enc.mean == (0.1, 0.2, 0.3)
    again = build(to_spec(enc))
    x = images(1)
    torch.testing.assert_close(again(x), enc(x))
    assert OpenCLIPEncoder("ViT-B-32", model_kwargs=CLIP_VIT, frozen=False).training
    with pytest.raises(FileNotFoundError, match="not found"):
        OpenCLIPEncoder("ViT-B-32", weights=str(tmp_path / "missing.safetensors"), model_kwargs=CLIP_VIT)


def test_clip_text_tower_matches_encode_text_with_bundled_bpe(tmp_path):
    ref, weights = saved_model(tmp_path, "ViT-B-32", CLIP_VIT, seed=3)
    tower = OpenCLIPTextTower("ViT-B-32", weights=weights, model_kwargs=CLIP_VIT)
    assert tower.width == 24 and tower.model.visual is None
    texts = ["a photo of a cat", "a red car on a road"]
    with torch.no_grad():
        expected = ref.encode_text(open_clip.tokenize(texts, context_length=16))
    got = tower(texts)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got[0], got[1])
    assert not any(p.requires_grad for p in tower.parameters())
    torch.testing.assert_close(build(to_spec(tower))(texts), got)


def test_siglip2_style_text_tower_reads_a_local_tokenizer(tmp_path):
    ref, weights = saved_model(tmp_path, "ViT-B-16-SigLIP2", SIGLIP2_LIKE, seed=4)
    folder = word_tokenizer_folder(tmp_path, ["cute", "smile", "panda", "cat", "image", "photo", "of", "a"])
    with pytest.raises(ValueError, match="tokenizer_path"):  # no silent trip to the hub
        OpenCLIPTextTower("ViT-B-16-SigLIP2", weights=weights, model_kwargs=SIGLIP2_LIKE)
    tower = OpenCLIPTextTower("ViT-B-16-SigLIP2", weights=weights, tokenizer_path=folder, model_kwargs=SIGLIP2_LIKE)
    texts = ["cute , smile , panda image", "a photo of a cat"]
    tokens = HFTokenizer(folder, context_length=16, clean="canonicalize")(texts)
    assert (tokens[0, :3] == torch.tensor([3, 4, 5])).all()  # "cute smile panda" (canonicalize drops punctuation)
    with torch.no_grad():
        torch.testing.assert_close(tower(texts), ref.encode_text(tokens))
    assert tower.width == 96


@pytest.mark.slow
def test_real_siglip2_b16_architecture_at_random_init():
    enc = OpenCLIPEncoder("ViT-B-16-SigLIP2")
    assert enc.grid == (14, 14) and enc.width == 768 and enc.mean == (0.5, 0.5, 0.5)
    assert enc(torch.rand(1, 3, 224, 224)).shape == (1, 196, 768)
