"""`armkit train [fit|validate] --config recipes/tokenizer/NAME.yaml [--key=value ...] [--ckpt_path last]`.

LightningCLI underneath (recipes/training/fit.py): every part is a `class_path` / `init_args` block in YAML, checked
before any model is built. A bad config, an unusable checkpoint or a tokenizer mismatch ends in one line on stderr
and exit code 2.
"""

from __future__ import annotations

from armkit.recipes.training.fit import run_fit


def main(argv: list[str] | None = None) -> int:
    return run_fit(list(argv or []))
