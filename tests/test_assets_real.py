"""The real frozen models from `armkit assets` (skipped when the cache does not hold them)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from armkit.common.weights import sha256_file
from armkit.recipes.data.assets import AssetError, asset_path, asset_spec, load_manifest
from armkit.tokenizer import build

pytestmark = pytest.mark.assets


def need(name: str):
    try:
        return asset_path(name)
    except AssetError:
        pytest.skip(f"asset {name!r} absent: run `armkit assets`")


def photo(name: str) -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    return torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255  # [1, 3, H, W] in [0, 1]


@pytest.mark.parametrize("model_name", ["tf_efficientnet_lite0", "efficientnet_lite0"])
def test_efficientnet_recognises_a_cat_and_a_coffee_cup(model_name):
    from armkit.tokenizer.encoders.timm_encoder import TimmEncoder

    encoder = TimmEncoder(model_name, weights=str(need("efficientnet_lite0")))
    assert encoder(photo("chelsea")).shape == (1, 49, 320)
    with torch.no_grad():
        cat = encoder.model(encoder.preprocess(photo("chelsea"))).argmax(-1).item()
        cup = encoder.model(encoder.preprocess(photo("coffee"))).argmax(-1).item()
    assert 281 <= cat <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert cup in (504, 967, 968)  # coffee mug, espresso, cup


def test_manifest_spec_builds_the_image_encoder():
    need("efficientnet_lite0")
    encoder = build(asset_spec("efficientnet_lite0"))
    assert encoder.mean == (0.5, 0.5, 0.5) and encoder.grid == (7, 7)  # tf_efficientnet_lite0's own settings


def test_minilm_scores_paraphrases_above_unrelated_sentences():
    need("minilm")
    tower = build(asset_spec("minilm"))
    assert tower.width == 384
    emb = nnf.normalize(tower(["A cat is sleeping on the sofa.", "A kitten naps on a couch.",
                               "The stock market fell sharply today.", "Stocks dropped steeply this morning."]), dim=-1)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[0, 3] + 0.2
    assert sim[2, 3] > sim[2, 0] + 0.2 and sim[2, 3] > sim[2, 1] + 0.2


def test_smollm2_prefers_real_captions_to_shuffled_ones():
    need("smollm2")
    lm = build(asset_spec("smollm2"))
    assert (lm.hidden_size, lm.vocab_size) == (576, 49152)
    ids, mask = lm.tokenize(["A small cat is sleeping on a red sofa next to the window."], max_length=32)
    prefix_ids = lm.tokenizer("Caption:", add_special_tokens=False, return_tensors="pt").input_ids
    prefix = lm.embed_tokens(prefix_ids)
    n = int(mask.sum()) - 1  # shuffle the words' tokens, keep the final eos
    shuffled = ids.clone()
    shuffled[0, :n] = ids[0, :n][torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():  # both captions in one batch; per-row losses from the returned logits
        out = lm(prefix.expand(2, -1, -1), torch.cat([ids, shuffled]), torch.cat([mask, mask]))
        logits = lm.model(input_ids=torch.cat([prefix_ids, ids], 1)).logits  # the plain token sequence
    real, noise = (nnf.cross_entropy(out.logits[i], row) for i, row in enumerate([ids[0], shuffled[0]]))
    assert real < noise - 1.0
    torch.testing.assert_close(out.loss, (real + noise) / 2, rtol=1e-4, atol=1e-4)
    k = prefix_ids.shape[1]
    torch.testing.assert_close(real, nnf.cross_entropy(logits[0, k - 1:-1], ids[0]), rtol=1e-4, atol=1e-4)


def test_manifest_hashes_match_the_files():
    for name in ("efficientnet_lite0", "minilm", "smollm2"):
        need(name)
    root = asset_path("efficientnet_lite0").parent.parent
    for name, entry in load_manifest(root.parent)["assets"].items():
        assert entry["licence"] and entry["model_licence"] and entry["version"]
        for rel, info in entry["files"].items():
            assert sha256_file(root / name / rel) == info["sha256"], f"{name}/{rel}"
