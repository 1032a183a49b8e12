"""`armkit rl-seeds "seed 0=RUN0" "seed 1=RUN1" ... --out DIR`: GRPO's held-out reward before -> after over seeds.

Paired 95 % intervals per task (recipes/rl/seeds.py); writes DIR/seeds.json, seeds.md, seeds.png and
before-after.png (the first run's held-out samples before | after).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="LABEL=RUN_DIR (or RUN_DIR): GRPO run folders with samples/*.json")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--grid-rows", type=int, default=8, help="prompts in before-after.png (from the first run)")
    p.add_argument("--prompt-classes", type=Path, help="{prompt: class} JSON (a CategoryProbe's prompt_classes.json)")


def run(args: argparse.Namespace) -> int:
    from armkit.recipes.rl.seeds import before_after, markdown, plot, summarise

    runs = {}
    for spec in args.runs:
        label, _, folder = spec.rpartition("=") if "=" in spec else (spec, "", spec)
        runs[label] = Path(folder)
    classes = json.loads(args.prompt_classes.read_text()) if args.prompt_classes else None
    result = summarise(runs, classes)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seeds.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "seeds.md").write_text(markdown(result))
    plot(result, args.out / "seeds.png")
    before_after(next(iter(runs.values())), args.out / "before-after.png", rows=args.grid_rows)
    print(markdown(result))
    return 0
