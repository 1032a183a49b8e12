"""`armkit tokenize --edits upside-down` (pixel-space edit pairs) and the AR demo's judge and caption parser.

The pair's target must be the tokenizer's own encoding of the flipped pixels, one image in four, in the same shard,
counted in meta.json, and a resumed run must give the same meta; the independent classifier must be seeded (two
runs, the same weights) and actually learn; the caption parser must not confuse "a shirt" with "a t-shirt"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from armkit.recipes.ar.codes import CodeReader
from armkit.recipes.commands.cli import main
from tests.test_ar_recipes import tiny_tokenizer


@pytest.fixture(scope="module")
def flipped(tiny_shards, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flip")
    tok = tiny_tokenizer(root / "tok", seed=0)
    assert main(["tokenize", "--tokenizer", str(tok), "--data", str(tiny_shards), "--out", str(root / "codes"),
                 "--batch-size", "5", "--edits", "upside-down"]) == 0
    return root


def test_upside_down_pairs_target_the_flipped_pixels(flipped, tiny_shards):
    from armkit.recipes.data.reader import ShardReader
    from armkit.tokenizer import Tokenizer

    meta = json.loads((flipped / "codes" / "meta.json").read_text())
    samples = list(CodeReader(str(flipped / "codes"), image_size=1, split="val"))
    plain = {s["key"]: s for s in samples if s["edit"] is None}
    pairs = [s for s in samples if s["edit"] is not None]
    assert len(plain) == meta["splits"]["val"]["count"] == 12
    assert len(pairs) == meta["splits"]["val"]["edits"] == 3  # one image in four (one val shard of 12)
    assert meta["splits"]["train"]["edits"] == sum(-(-n // 4) for n in (8, 8, 8, 8, 4))  # per shard, 36 images
    tok = Tokenizer.from_pretrained(flipped / "tok")
    images = {k: im for batch in ShardReader(str(tiny_shards), image_size=32, batch_size=16, split="val")
              for k, im in zip(batch["key"], batch["image"])}
    for p in pairs:
        source = p["edit"]["source_key"]
        assert p["key"] == f"{source}-edit" and p["edit"]["instruction"] == "turn it upside down"
        assert torch.equal(p["edit"]["source"], plain[source]["codes"])
        assert p["caption"] == "upside down: " + plain[source]["caption"]
        want = tok.encode(images[source].flip(-2)[None])[0]
        assert torch.equal(p["codes"], want)
        assert not torch.equal(p["codes"], p["edit"]["source"])  # the shapes are not symmetric top to bottom


def test_resumed_tokenize_keeps_the_edit_counts(flipped, tiny_shards):
    before = json.loads((flipped / "codes" / "meta.json").read_text())["splits"]
    state = flipped / "codes" / "tokenize-state.json"
    state.unlink()  # a run that kept no record: the shards already there are counted by reading them
    assert main(["tokenize", "--tokenizer", str(flipped / "tok"), "--data", str(tiny_shards), "--out",
                 str(flipped / "codes"), "--edits", "upside-down"]) == 0
    after = json.loads((flipped / "codes" / "meta.json").read_text())["splits"]
    assert {s: (v["count"], v["edits"]) for s, v in after.items()} == \
        {s: (v["count"], v["edits"]) for s, v in before.items()}


def test_edit_every_sets_the_pair_rate_and_a_resume_must_keep_it(flipped, tiny_shards, tmp_path):
    args = ["tokenize", "--tokenizer", str(flipped / "tok"), "--data", str(tiny_shards), "--edits", "upside-down"]
    assert main([*args, "--out", str(tmp_path / "c2"), "--edit-every", "2"]) == 0
    meta = json.loads((tmp_path / "c2" / "meta.json").read_text())
    assert meta["edit_every"] == 2
    assert meta["splits"]["val"]["edits"] == 6  # one image in two of the val shard's 12
    assert meta["splits"]["train"]["edits"] == sum(-(-n // 2) for n in (8, 8, 8, 8, 4))
    with pytest.raises(ValueError, match="edit rule"):  # shards of another rate are not mixed in
        from armkit.recipes.ar.tokenize import tokenize
        tokenize(flipped / "tok", tiny_shards, tmp_path / "c2", splits=["val"], edits="upside-down")
    assert main([*args, "--out", str(tmp_path / "c3"), "--edit-every", "0"]) == 2  # a clear error, not a crash


def test_judge_is_seeded_and_learns():
    from armkit.recipes.evaluation.classifier import accuracy, train_classifier

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (300,), generator=g)
    images = torch.rand(300, 1, 32, 32, generator=g) * 0.2
    for c in range(3):  # a bright band whose row depends on the class
        images[labels == c, :, 8 * c + 4: 8 * c + 10] += 0.7
    a = train_classifier(images, labels, steps=40, batch_size=32, seed=3)
    b = train_classifier(images, labels, steps=40, batch_size=32, seed=3)
    c = train_classifier(images, labels, steps=40, batch_size=32, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert accuracy(a, images, labels) > 0.9
    assert accuracy(a, images.expand(-1, 3, -1, -1), labels) == accuracy(a, images, labels)  # RGB -> channel mean


@pytest.mark.parametrize("text, want", [
    ("a photo of a shirt.", 6), ("a photo of a t-shirt.", 0), ("upside down: a photo of a sneaker.", 7),
    ("a photo of a pair of trousers", 1), ("a photo of an ankle boot.", 9), ("a shirt and a bag", None),
    ("a photo of a shir", None), ("", None)])
def test_caption_names_one_class(text, want):
    from armkit.recipes.ar.demo_eval import class_named

    assert class_named(text) == want


def test_judge_file_is_read_back_only_for_the_same_steps_and_seed(tmp_path, monkeypatch):
    from armkit.recipes.evaluation import classifier

    g = torch.Generator().manual_seed(1)
    labels = torch.arange(40) % 10
    images = torch.rand(40, 1, 32, 32, generator=g)
    monkeypatch.setattr(classifier, "fashion_mnist_pixels", lambda split: (images, labels))
    classifier.fashion_mnist_judge.cache_clear()
    file = tmp_path / "judge.safetensors"
    trained = classifier.fashion_mnist_judge(steps=5, seed=0, file=file)
    classifier.fashion_mnist_judge.cache_clear()
    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("trained again"))
    read = classifier.fashion_mnist_judge(steps=5, seed=0, file=file)  # from the file, not trained
    assert read is not trained and all(torch.equal(a, b) for a, b in
                                       zip(trained.state_dict().values(), read.state_dict().values()))
    with pytest.raises(pytest.fail.Exception, match="trained again"):  # other steps: the file does not match
        classifier.fashion_mnist_judge(steps=6, seed=0, file=file)
    classifier.fashion_mnist_judge.cache_clear()
