"""`armkit` console command: one subcommand per module in `recipes/commands/`.

Each command module defines `add_arguments(parser)` and `run(args) -> int`; `train` hands its arguments to
LightningCLI instead. Modules are imported only when their command runs, so `armkit data` never imports lightning.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "data": ("armkit.recipes.commands.data", "write WebDataset shards from emoji, fashion-mnist or a folder"),
    "assets": ("armkit.recipes.commands.assets", "fetch and convert the real frozen models of the embedded default"),
    "train": ("armkit.recipes.commands.train", "train a tokenizer from a LightningCLI YAML recipe"),
    "eval": ("armkit.recipes.commands.eval", "evaluate a tokenizer with the pinned protocol"),
    "ablate": ("armkit.recipes.commands.ablate", "train and evaluate loss variants; write the ablation table and plot"),
    "export": ("armkit.recipes.commands.export", "export a checkpoint as a self-contained safetensors folder"),
    "tokenize": ("armkit.recipes.commands.tokenize", "encode image shards once into code shards for the AR model"),
    "generate": ("armkit.recipes.commands.generate", "text-to-image, editing or captioning with a trained AR model"),
    "eval-ar": ("armkit.recipes.autoregressive.evaluate", "evaluate an AR model (FD, probe accuracy, captions, edits)"),
    "demo": ("armkit.recipes.commands.demo", "the main job: data, assets, train, eval, export on the embedded default"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":  # LightningCLI parses its own arguments (--config, overrides, --ckpt_path)
        return importlib.import_module(COMMANDS["train"][0]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="armkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if argv and argv[0] == name:
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
