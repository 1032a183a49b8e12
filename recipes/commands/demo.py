"""`armkit demo`: the README's main job, on the embedded default (emoji + EfficientNet-Lite0/MiniLM/SmolLM2).

Writes the emoji shards and converts the frozen models if they are missing, trains `recipes/tokenizer/demo.yaml`
for a fixed number of steps (so the result does not depend on the machine's load), evaluates the checkpoint of
the step this run ended on, exports it, and prints where the reconstruction grid, the metrics and the export are.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from armkit.recipes.cli import main as armkit

RECIPE = Path(__file__).resolve().parents[1] / "tokenizer" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--steps", type=int, help="training steps (default: the recipe's trainer.max_steps)")
    parser.add_argument("--config", type=Path, default=RECIPE, help=f"training recipe (default {RECIPE.name})")
    parser.add_argument("--data", type=Path, default=Path("data/emoji"), help="emoji shard folder (made if missing)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    parser.add_argument("--eval-limit", type=int, default=338, help="validation images to evaluate (default all 338)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("train_args", nargs="*", help="extra LightningCLI overrides after `--`, e.g. "
                        "-- --data.batch_size=16")


def step(title: str) -> float:
    print(f"\n== armkit demo: {title}", flush=True)
    return time.time()


def run(args: argparse.Namespace) -> int:
    started = time.time()
    if not (args.data / "meta.json").is_file():
        step(f"writing emoji shards to {args.data}")
        if armkit(["data", "emoji", "--out", str(args.data)]) != 0:
            return 1
    if "asset:" in args.config.read_text():
        step("frozen models (armkit assets)")
        if armkit(["assets"]) != 0:
            return 1

    steps = f"{args.steps} steps" if args.steps else "the recipe's max_steps"
    t = step(f"training {args.config.name} for {steps}")
    train = ["--config", str(args.config), f"--data.train={args.data}", f"--data.val={args.data}",
             f"--trainer.default_root_dir={args.out}", "--trainer.max_time=null", *args.train_args]
    if args.steps:
        train.insert(2, f"--trainer.max_steps={args.steps}")  # before train_args, so `-- --trainer.max_steps` wins
    if args.resume:
        train += ["--ckpt_path", "last"]
    from armkit.recipes.commands.train import ConfigCheckError, fit  # here: `armkit demo --help` stays light
    from armkit.recipes.summary import write_summary

    try:
        trainer = fit(train).trainer
    except ConfigCheckError as e:
        print(e.code)
        return 2
    train_minutes = (time.time() - t) / 60
    # This run's own files: Lightning names the last checkpoint `last-v1.ckpt` when an older run's `last.ckpt` is
    # there, and the CSV logger starts a new version_N folder per run.
    ckpt = Path(trainer.checkpoint_callback.last_model_path) if trainer.checkpoint_callback else None
    if ckpt is None or not ckpt.is_file():
        print("armkit demo: the recipe saved no last checkpoint (a ModelCheckpoint with save_last: true is needed)")
        return 1
    grid = next((cb.last_path for cb in trainer.callbacks if isinstance(getattr(cb, "last_path", None), Path)), None)
    log_dir = Path(trainer.loggers[0].log_dir) if trainer.loggers else args.out

    step("evaluating on the validation shards")
    metrics = args.out / "metrics.json"
    if armkit(["eval", "--tokenizer", str(ckpt), "--data", str(args.data), "--limit", str(args.eval_limit),
               "--out", str(metrics)]) != 0:
        return 1
    step("exporting")
    export = args.out / "export"
    if armkit(["export", "--ckpt", str(ckpt), "--out", str(export), "--metrics", str(metrics)]) != 0:
        return 1

    found = json.loads(metrics.read_text())
    shown = {k: v for k, v in found.get("metrics", found).items() if isinstance(v, (int, float))}
    total_minutes = (time.time() - started) / 60
    headline = ", ".join(f"{k} {shown[k]:.3g}" for k in ("psnr", "zeroshot_top1_balanced") if k in shown)
    summary = write_summary(log_dir / "metrics.csv", grid, args.out / "summary.png",
                            title=f"armkit demo: {args.config.name}, {trainer.global_step} steps; held-out {headline}")
    print(f"\n== armkit demo: done in {total_minutes:.1f} min (training {trainer.global_step} steps in "
          f"{train_minutes:.1f} min)")
    print(f"reconstruction grid : {grid or '(none)'}")
    print(f"summary (curves+grid): {summary}")
    print(f"metrics             : {metrics}")
    for k, v in shown.items():
        print(f"    {k:<28} {v:.4g}")
    print(f"export              : {export}  (Tokenizer.from_pretrained('{export}'))")
    print(f"checkpoint          : {ckpt}")
    return 0
