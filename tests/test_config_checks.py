"""`armkit train` refuses a bad config in one line naming the key, before any model is built (issue 14, item 9)."""

from __future__ import annotations

import functools

import pytest
from test_recipes_train import TINY

LOSSES = "--model.losses.init_args.losses"
ALL_OFF = [f"{LOSSES}.{name}.init_args.enabled=false" for name in ("caption", "pixel", "sigmoid", "distill")]


def refused(monkeypatch, capsys, shards, *overrides: str) -> str:
    """Runs `armkit train` on the tiny recipe and real shards with `overrides` (so that only the override is wrong);
    asserts exit status 2, nothing built, one line on stderr and nothing on stdout."""
    from armkit.recipes.commands import train
    from armkit.recipes.tokenizer.module import TokenizerModule

    built, original = [], TokenizerModule.__init__

    @functools.wraps(original)  # keeps the signature jsonargparse reads
    def spy(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(TokenizerModule, "__init__", spy)
    code = train.main(["--config", TINY, f"--data.train={shards}", f"--data.val={shards}", "--trainer.max_steps=1",
                       "--trainer.limit_val_batches=0", "--trainer.logger=false",
                       f"--trainer.default_root_dir={shards.parent / 'runs'}", *overrides])
    out, err = capsys.readouterr()
    assert not built, "a model was built before the config was checked"
    assert code == 2
    assert not [line for line in out.splitlines() if line.strip() and not line.startswith("Seed set")], out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("overrides, key", [
    (["--model.lr=-1"], "model.lr"),
    (["--model.lr=0"], "model.lr"),
    (["--model.lr=.nan"], "model.lr"),
    (["--data.batch_size=0"], "data.batch_size"),
    (["--data.num_workers=-1"], "data.num_workers"),
    (["--model.betas=[2, -1]"], "model.betas"),
    (["--model.warmup_steps=-5"], "model.warmup_steps"),
    (["--model.tokenizer.init_args.num_codebooks=0"], "model.tokenizer.init_args.num_codebooks"),
    (["--model.tokenizer.init_args.decoder.init_args.patch_size=7"], "decoder.init_args.patch_size"),
    (ALL_OFF, "model.losses.init_args.losses"),
    ([f"{LOSSES}.pixel.init_args.weight=.nan"], "losses.pixel.init_args.weight"),
    (["--data.image_size=64"], "data.image_size"),
])
def test_bad_value_is_one_line_naming_the_key(overrides, key, monkeypatch, capsys, tiny_shards):
    line = refused(monkeypatch, capsys, tiny_shards, *overrides)
    assert line.startswith("config error: ") and key in line, line


@pytest.mark.parametrize("override, unknown, closest", [
    ("--model.tokenizer.init_args.levelz=[8,5]", "model.tokenizer.init_args.levelz",
     "model.tokenizer.init_args.levels"),
    ("--data.batch_sise=3", "data.batch_sise", "data.batch_size"),
    ("--model.weight_decai=0.1", "model.weight_decai", "model.weight_decay"),
])
def test_mistyped_key_names_the_closest_valid_key(override, unknown, closest, monkeypatch, capsys, tiny_shards):
    line = refused(monkeypatch, capsys, tiny_shards, override)
    assert line == f"config error: unknown key {unknown}; did you mean {closest}?"


def test_mistyped_key_in_the_yaml_file(tmp_path, monkeypatch, capsys, tiny_shards):
    from pathlib import Path

    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(TINY).read_text().replace("  batch_size: 8", "  batch_sise: 8"))
    monkeypatch.setattr("test_config_checks.TINY", str(bad))
    line = refused(monkeypatch, capsys, tiny_shards)
    assert line == "config error: unknown key data.batch_sise; did you mean data.batch_size?"
