"""armkit: train, evaluate and export discrete image tokenizers (the ARM tokenizer as reusable parts).

Each subcommand is a module in armkit.recipes.commands with `add_arguments(parser)` and `run(args) -> int`; `train`
hands its arguments to LightningCLI instead. A module is imported only when its command runs, so `armkit --help`
and `armkit data` never import Lightning.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys

COMMANDS = {
    "data": ("armkit.recipes.commands.data", "write WebDataset shards from emoji, fashion-mnist or a folder"),
    "assets": ("armkit.recipes.commands.assets", "fetch and convert the real frozen models of the embedded default"),
    "train": ("armkit.recipes.commands.train", "train from a LightningCLI YAML recipe (`train --help` for more)"),
    "eval": ("armkit.recipes.commands.eval", "evaluate a tokenizer with the pinned protocol"),
    "ablate": ("armkit.recipes.commands.ablate", "train and evaluate loss variants; write the ablation table and plot"),
    "export": ("armkit.recipes.commands.export", "export a checkpoint as a self-contained safetensors folder"),
    "tokenize": ("armkit.recipes.commands.tokenize", "encode image shards once into code shards for the AR model"),
    "generate": ("armkit.recipes.commands.generate", "text-to-image, editing or captioning with a trained AR model"),
    "eval-ar": ("armkit.recipes.commands.eval_ar", "evaluate an AR model (FD, probe accuracy, captions, edits)"),
    "rl-probe": ("armkit.recipes.commands.rl_probe", "fit the GRPO demo's category-probe reward on real images"),
    "rl-stages": ("armkit.recipes.commands.rl_stages", "GRPO stages t2i -> edit -> joint from an SFT export; a table"),
    "rl-seeds": ("armkit.recipes.commands.rl_seeds", "GRPO's held-out reward before -> after over seeds"),
    "demo": ("armkit.recipes.commands.demo", "the main job: data, assets, train, eval, export on the embedded default"),
    "demo-ar": ("armkit.recipes.commands.demo_ar", "the AR half of the demo alone, on a tokenizer export"),
}
# Commands that build classes named in a checkpoint or an export: they take --trust for the user's own packages.
TRUSTING = {"eval", "ablate", "export", "tokenize", "generate", "eval-ar"}

EPILOG = """typical run:
  armkit data emoji --out data/emoji
  armkit train --config recipes/tokenizer/demo.yaml
  armkit eval --tokenizer runs/demo/checkpoints/last.ckpt --data data/emoji --out metrics.json
  armkit export --ckpt runs/demo/checkpoints/last.ckpt --out export/
Run `armkit COMMAND --help` for a command's options."""

TRAIN_HELP = """usage: armkit train --config RECIPE.yaml [--KEY=VALUE ...] [--ckpt_path last|PATH] [--print_config]

Train from a LightningCLI recipe: every part (encoder, losses, decoder, data, callbacks, strategy) is a
class_path / init_args block in YAML, so a new part plugs in without editing the trainer. The recipe is checked
(weights files, shard folders, FSQ levels) before any model is built.

options:
  --config RECIPE.yaml   the recipe; shipped ones: recipes/tokenizer/{tiny,demo,paper,ablation}.yaml,
                         recipes/decoder/{tiny,demo}.yaml (a decoder on a frozen export), recipes/ar/*, recipes/rl/*
  --KEY=VALUE            override any key, e.g. --trainer.max_steps=200 --data.batch_size=32
                         --model.losses.init_args.losses.sigmoid.init_args.enabled=false
  --trainer.strategy=ddp|fsdp --trainer.devices=N --trainer.precision=bf16-mixed
                         scale out through Lightning's own strategies
  --ckpt_path last       resume exactly (optimizer, scheduler, step, data position)
  --print_config         print the fully resolved config and stop
  --help-all             LightningCLI's complete list of keys (slow: it imports every part)

examples:
  armkit train --config recipes/tokenizer/tiny.yaml
  armkit train --config recipes/tokenizer/demo.yaml --trainer.max_steps=400 --ckpt_path last"""


def describe(module_name: str) -> str:
    """The first paragraph of a command module's docstring, read without importing the module."""
    spec = importlib.util.find_spec(module_name)
    source = open(spec.origin, encoding="utf-8").read() if spec and spec.origin else ""
    doc = ast.get_docstring(ast.parse(source)) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The top-level parser; only `command`'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="armkit", description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=help_text)
            continue
        p = sub.add_parser(name, help=help_text)
        importlib.import_module(module).add_arguments(p)
        p.description = describe(module)  # the whole first paragraph, not a line cut mid-sentence
        if name in TRUSTING:
            p.add_argument("--trust", nargs="+", default=[], metavar="PACKAGE",
                           help="your own packages whose classes a checkpoint or export may use (e.g. a fifth loss "
                                "in `mylab`); nothing else named in a file is ever imported")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":  # LightningCLI parses its own arguments (--config, overrides, --ckpt_path)
        rest = argv[1:]
        if not rest or rest[0] in ("-h", "--help"):
            print(TRAIN_HELP)
            return 0
        if "--help-all" in rest:
            rest = ["--help" if a == "--help-all" else a for a in rest]
        return importlib.import_module(COMMANDS["train"][0]).main(rest)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    from armkit.common.buildable import trusted

    with trusted(getattr(args, "trust", None) or []):
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
