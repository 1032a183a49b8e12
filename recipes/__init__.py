"""Recipes: one folder per stage (tokenizer/, decoder/, ar/, rl/) with its code and YAML, the shared Lightning
runtime (training/), evaluation/, data/, and every `armkit` command (commands/). Old module paths still import
(moved.py)."""

from armkit.recipes.moved import install

install()
