"""The AR and RL recipes go through the same config checks as the tokenizer's (recipes/training/config_checks.py):
a bad value is one `config error:` line naming the key, exit status 2, before anything is built."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from armkit.recipes.training.config_checks import ConfigCheckError, check_values

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {name: yaml.safe_load((ROOT / "recipes" / name).read_text())
           for name in ("ar/tiny.yaml", "ar/demo.yaml", "ar/paper.yaml", "ar/fmnist.yaml", "rl/tiny.yaml",
                        "rl/demo.yaml")}
ARGS = "model.init_args"
LM = f"{ARGS}.model.init_args"


def with_value(tree: dict, key: str, value) -> dict:
    tree = copy.deepcopy(tree)
    node = tree
    *parents, last = key.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = value
    return tree


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_recipes_pass(name):
    check_values(RECIPES[name])


BAD = [  # (recipe, key, value, what the line names)
    ("ar/tiny.yaml", f"{ARGS}.lr", -1, f"{ARGS}.lr = -1"),
    ("ar/tiny.yaml", f"{ARGS}.lr", float("nan"), f"{ARGS}.lr"),
    ("ar/tiny.yaml", f"{ARGS}.betas", [2, -1], f"{ARGS}.betas"),
    ("ar/tiny.yaml", f"{ARGS}.warmup_steps", -5, f"{ARGS}.warmup_steps"),
    ("ar/tiny.yaml", f"{ARGS}.tasks", {"t2i": -1}, f"{ARGS}.tasks"),
    ("ar/tiny.yaml", f"{ARGS}.tasks", {"draw": 1.0}, f"{ARGS}.tasks"),
    ("ar/tiny.yaml", f"{ARGS}.text_dropout", 1.5, f"{ARGS}.text_dropout"),
    ("ar/tiny.yaml", f"{ARGS}.max_text", 0, f"{ARGS}.max_text"),
    ("ar/tiny.yaml", f"{LM}.codebook_size", 0, f"{LM}.codebook_size"),
    ("ar/tiny.yaml", f"{LM}.head", "banana", f"{LM}.head"),
    ("ar/tiny.yaml", f"{LM}.config.num_attention_heads", 0, f"{LM}.config.num_attention_heads"),
    ("ar/tiny.yaml", f"{LM}.config.hidden_size", -64, f"{LM}.config.hidden_size"),
    ("ar/tiny.yaml", f"{LM}.config.hidden_size", 66, "divisible by the 4 attention heads"),
    ("ar/tiny.yaml", f"{LM}.config.vocab_size", 0, f"{LM}.config.vocab_size"),
    ("ar/tiny.yaml", f"{LM}.config.hidden_size", 2**20, "ARMKIT_MAX_MODEL_GB"),
    ("ar/tiny.yaml", "data.init_args.batch_size", 0, "data.init_args.batch_size"),
    ("ar/tiny.yaml", "data.init_args.num_workers", -1, "data.init_args.num_workers"),
    ("rl/tiny.yaml", f"{ARGS}.lr", -1, f"{ARGS}.lr"),
    ("rl/tiny.yaml", f"{ARGS}.group_size", 1, f"{ARGS}.group_size"),
    ("rl/tiny.yaml", f"{ARGS}.t2i_temperature", 0, f"{ARGS}.t2i_temperature"),
    ("rl/tiny.yaml", f"{ARGS}.clip", float("inf"), f"{ARGS}.clip"),
    ("rl/tiny.yaml", f"{ARGS}.beta", -0.1, f"{ARGS}.beta"),
    ("rl/tiny.yaml", f"{ARGS}.top_k", -1, f"{ARGS}.top_k"),
    ("rl/tiny.yaml", f"{ARGS}.decode_steps", 0, f"{ARGS}.decode_steps"),
    ("rl/tiny.yaml", f"{ARGS}.stage", "final", f"{ARGS}.stage"),
    ("rl/tiny.yaml", f"{LM}.config.num_key_value_heads", 3, f"{LM}.config.num_key_value_heads"),
]


@pytest.mark.parametrize("recipe, key, value, name", BAD, ids=[f"{b[0]}:{b[1]}={b[2]}" for b in BAD])
def test_bad_value_is_one_line_naming_the_key(recipe, key, value, name):
    with pytest.raises(ConfigCheckError) as e:
        check_values(with_value(RECIPES[recipe], key, value))
    line = str(e.value.code)
    assert line.startswith("config error: ") and name in line and "\n" not in line, line


@pytest.mark.parametrize("recipe, override, key", [
    ("ar/tiny.yaml", f"--{ARGS}.lr=-1", f"{ARGS}.lr"),
    ("rl/tiny.yaml", f"--{LM}.config.num_attention_heads=0", f"{LM}.config.num_attention_heads"),
])
def test_armkit_train_refuses_in_one_line(recipe, override, key, capsys, tmp_path, monkeypatch):
    from armkit.recipes.commands.cli import main

    monkeypatch.chdir(tmp_path)  # no data here: the value is refused before the data is looked for
    assert main(["train", "--config", str(ROOT / "recipes" / recipe), override]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip() and not line.startswith("Seed set")]
    assert len(lines) == 1 and lines[0].startswith("config error: ") and key in lines[0], lines
