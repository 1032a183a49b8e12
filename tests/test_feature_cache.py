"""TeacherFeatureCache: cached features equal the live teacher's, are keyed by its fingerprint, and training with the
cache gives the same losses as training without it."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_recipes_train import common, losses, train_here  # tests/ is on sys.path under pytest


def test_cached_features_equal_the_teachers_and_follow_its_fingerprint(tiny_encoder, tiny_shards, tmp_path):
    from armkit.recipes.data.reader import ShardReader, expand_shards
    from armkit.recipes.tokenizer.feature_cache import FeatureTable, build_split, shard_count, teacher_fingerprint

    shards = expand_shards(str(tiny_shards), split="train")
    assert shard_count(shards) == 36  # the progress bar's total, from meta.json
    path = tmp_path / "train.safetensors"
    build_split(tiny_encoder, shards, 32, path, batch_size=5)
    table = FeatureTable(path)
    batch = next(iter(ShardReader(shards, image_size=32, batch_size=7)))
    with torch.no_grad():
        live = tiny_encoder(batch["image"])
    torch.testing.assert_close(table.lookup(list(batch["key"])), live, rtol=0, atol=1e-6)
    assert table.lookup(["no-such-key"]) is None

    fp = teacher_fingerprint(tiny_encoder, 32)
    assert teacher_fingerprint(tiny_encoder, 32) == fp and teacher_fingerprint(tiny_encoder, 40) != fp
    with torch.no_grad():
        next(tiny_encoder.parameters()).add_(1e-3)
    assert teacher_fingerprint(tiny_encoder, 32) != fp, "a changed teacher must not reuse the old features"


def test_training_with_the_cache_matches_training_without(tiny_shards, tmp_path, capfd):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    live, cached = tmp_path / "live", tmp_path / "cached"
    callback = "--trainer.callbacks+=armkit.recipes.tokenizer.feature_cache.TeacherFeatureCache"
    for root, extra in ((live, []), (cached, [callback])):
        code, _, err = train_here(capfd, *common(shards, root), "--trainer.max_steps=10", *extra)
        assert code == 0, err[-3000:]
    made = sorted(p.name for p in (shards / "features").glob("*/*.safetensors"))
    assert made == ["train.safetensors", "val.safetensors"], made
    a, b = losses(live), losses(cached)
    assert a.keys() == b.keys() and a
    assert [b[k] for k in sorted(b)] == pytest.approx([a[k] for k in sorted(a)], rel=1e-5)


def test_a_split_past_max_gib_is_not_cached_and_training_runs_the_teacher(tiny_shards, tmp_path, capfd):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    code, out, err = train_here(capfd, *common(shards, tmp_path / "capped"), "--trainer.max_steps=4",
                                "--trainer.callbacks+=armkit.recipes.tokenizer.feature_cache.TeacherFeatureCache",
                                "--trainer.callbacks.max_gib=1e-9")
    assert code == 0, err[-3000:]
    assert "not caching train" in out and "not caching val" in out, out[-2000:]
    assert not list(shards.glob("features/*/*.safetensors")), "a split past max_gib must not be built"


def test_a_cache_built_from_fewer_shards_says_so_and_is_still_used(tiny_shards, tmp_path, capfd):
    from armkit.recipes.data.reader import expand_shards

    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    first = expand_shards(str(shards), split="train")[0]
    callback = "--trainer.callbacks+=armkit.recipes.tokenizer.feature_cache.TeacherFeatureCache"
    code, _, err = train_here(capfd, *common(shards, tmp_path / "one"), f"--data.train={first}",
                              "--trainer.max_steps=2", callback)
    assert code == 0, err[-3000:]
    code, out, err = train_here(capfd, *common(shards, tmp_path / "all"), "--trainer.max_steps=2", callback)
    assert code == 0, err[-3000:]
    assert "was built from 1 shards and lacks" in out, out[-2000:]


def test_features_need_a_frozen_encoder(tiny_encoder):
    from armkit.tokenizer import Tokenizer

    tok = Tokenizer(encoder=tiny_encoder, levels=[8, 5], projection="mlp", proj_width=16)
    feats = torch.randn(2, tiny_encoder.num_tokens, tiny_encoder.width)
    out = tok(torch.zeros(2, 3, 32, 32), features=feats)
    torch.testing.assert_close(out.features, feats)
    tiny_encoder.frozen = False
    with pytest.raises(ValueError, match="frozen encoder"):
        tok(torch.zeros(2, 3, 32, 32), features=feats)
