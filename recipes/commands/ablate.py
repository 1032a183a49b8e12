"""`armkit ablate --config recipes/tokenizer/ablation.yaml --out DIR`: the loss-ablation table in one command.

Trains every variant (a named set of losses and weights) for every seed with `armkit train`, evaluates each with the
pinned protocol of `armkit eval`, and writes DIR/table.md (beside the ARM paper's Table 7, with paired 95% intervals
against the reference row and a verdict per claim of the paper), DIR/table.json (the same, every metric) and
DIR/plot.png. A rerun skips finished runs and resumes interrupted ones. The flags override the config: e.g.
`--data data/fmnist --seeds 0 1 2 --max-steps 50 --variants cap+pix all`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--config", required=True, type=Path, help="ablation YAML (recipes/tokenizer/ablation.yaml)")
    parser.add_argument("--out", required=True, type=Path, help="output folder: one subfolder per variant and seed")
    parser.add_argument("--data", help="one shard folder for training, validation and evaluation (overrides the "
                                        "config's data and eval.data)")
    parser.add_argument("--variants", nargs="+", help="only these variants of the config")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the config's)")
    parser.add_argument("--max-steps", type=int, help="training steps per run (default: the config's)")
    parser.add_argument("--minutes", type=float, help="training minutes per run (default: the config's)")
    parser.add_argument("--cosine", help="'end' (the config's default: each run's LR reaches the cosine's floor at "
                                          "its last step), 'recipe' (the recipe's cosine_steps) or a number of steps")
    parser.add_argument("--limit", type=int, help="eval samples per run (default: the config's eval.protocol.limit)")
    parser.add_argument("--steps", type=int, help="decoder sampler steps in eval (default: the config's)")
    parser.add_argument("--ar-probe-steps", type=int, help="AR-friendliness probe steps per run (0: off; default: "
                                                            "the config's eval.ar_probe.steps)")
    parser.add_argument("--dry-run", action="store_true", help="print each run's `armkit train` arguments and stop")


def run(args: argparse.Namespace) -> int:
    from armkit.recipes.evaluation.ablation import AblationError, load_config, run_ablation, run_dir, train_argv
    from armkit.recipes.evaluation.protocol import ProtocolError

    try:
        cfg = load_config(args.config, seeds=args.seeds, variants=args.variants, max_steps=args.max_steps,
                          minutes=args.minutes, limit=args.limit, steps=args.steps, data=args.data,
                          cosine=args.cosine, ar_probe_steps=args.ar_probe_steps)
    except (AblationError, ProtocolError) as e:
        print(f"armkit ablate: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for variant in cfg.variants:
            for seed in cfg.seeds:
                root = str(run_dir(args.out, variant, seed))
                words = [a.replace("{RUN}", root) for a in train_argv(cfg, variant, seed)]
                print(f"{variant} seed {seed}: armkit train {shlex.join(words)}")
        return 0
    started = time.time()
    try:
        run_ablation(cfg, args.out, log=lambda msg: print(msg, flush=True))
    except (AblationError, ProtocolError, FileNotFoundError) as e:
        print(f"armkit ablate: {e}", file=sys.stderr)
        return 1
    print(f"done in {(time.time() - started) / 60:.1f} min: {args.out / 'table.md'}, table.json, plot.png")
    print((args.out / "table.md").read_text())
    return 0
