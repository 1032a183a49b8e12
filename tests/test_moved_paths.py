"""recipes/ was laid out again: saved configs, checkpoints and scripts that name the old module paths still load
(recipes/moved.py), and they load the same classes, not second copies."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from armkit.recipes.commands.cli import main
from armkit.recipes.moved import OLD_TO_NEW, new_name

ROOT = Path(__file__).resolve().parents[1]
# what the recipes named before the new layout (the YAML written by earlier runs' config.yaml)
OLD_NAMES = {
    "armkit.recipes.training.checkpoint_io.": "armkit.recipes.checkpoint_io.",
    "armkit.recipes.training.checkpoints.": "armkit.recipes.checkpoints.",
    "armkit.recipes.training.callbacks.": "armkit.recipes.callbacks.",
    "armkit.recipes.ar.": "armkit.recipes.autoregressive.",
}


@pytest.mark.parametrize("old", sorted(OLD_TO_NEW))
def test_every_old_module_imports_as_the_new_one(old):
    assert importlib.import_module(old) is importlib.import_module(OLD_TO_NEW[old])


def test_old_submodules_and_classes_are_the_same_objects():
    from armkit.recipes.ar.codes import CodeDataModule
    from armkit.recipes.autoregressive.codes import CodeDataModule as Old
    from armkit.recipes.module import TokenizerModule as OldModule
    from armkit.recipes.tokenizer.module import TokenizerModule

    assert Old is CodeDataModule and OldModule is TokenizerModule
    assert TokenizerModule.__module__ == "armkit.recipes.tokenizer.module"
    assert importlib.import_module("armkit.recipes.tokenizer.module").__spec__.name == "armkit.recipes.tokenizer.module"
    assert new_name("armkit.recipes.autoregressive.codes") == "armkit.recipes.ar.codes"
    assert new_name("armkit.recipes.tokenizer.module") is None  # a current name is left alone


@pytest.mark.parametrize("stage", ["ar", "rl"])
def test_a_recipe_naming_old_class_paths_still_parses(stage, tmp_path, monkeypatch, capsys):
    """The recipe with every class path written the old way gets as far as the new one: the missing data, after
    every class_path has been resolved (an unknown class would be a 'Does not validate' error instead)."""
    text = (ROOT / "recipes" / stage / "tiny.yaml").read_text()
    for new, old in OLD_NAMES.items():
        text = text.replace(new, old)
    assert "armkit.recipes.autoregressive." in text
    old = tmp_path / "old.yaml"
    old.write_text(text)
    monkeypatch.chdir(tmp_path)
    missing = "--data.init_args.train=nowhere/codes"
    assert main(["train", "--config", str(old), missing, "--trainer.default_root_dir=runs"]) == 2
    err = capsys.readouterr().err
    assert "config error: data.init_args.train = 'nowhere/codes' does not exist" in err, err
