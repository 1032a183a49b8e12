"""`armkit demo`: the README's main job, on the embedded default (emoji + EfficientNet-Lite0/MiniLM/SmolLM2).

Writes the emoji shards and converts the frozen models if they are missing, trains `recipes/tokenizer/demo.yaml`
for a bounded time, evaluates the last checkpoint on the validation shards, exports it, and prints where the
reconstruction grid, the metrics and the export are.
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
    parser.add_argument("--minutes", type=float, default=10.0, help="training time budget (default 10)")
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
    step("frozen models (armkit assets)")
    if armkit(["assets"]) != 0:
        return 1

    t = step(f"training {RECIPE.name} for at most {args.minutes:g} minutes")
    h, m = divmod(int(args.minutes * 60), 3600)
    train = ["train", "--config", str(RECIPE), f"--data.train={args.data}", f"--data.val={args.data}",
             f"--trainer.default_root_dir={args.out}", "--trainer.max_steps=100000",
             f"--trainer.max_time=00:{h:02d}:{m // 60:02d}:{m % 60:02d}", *args.train_args]
    if args.resume:
        train += ["--ckpt_path", "last"]
    if armkit(train) != 0:
        return 1
    train_minutes = (time.time() - t) / 60
    ckpt = args.out / "checkpoints" / "last.ckpt"

    step("evaluating on the validation shards")
    metrics = args.out / "metrics.json"
    if armkit(["eval", "--tokenizer", str(ckpt), "--data", str(args.data), "--limit", str(args.eval_limit),
               "--out", str(metrics)]) != 0:
        return 1
    step("exporting")
    export = args.out / "export"
    if armkit(["export", "--ckpt", str(ckpt), "--out", str(export), "--metrics", str(metrics)]) != 0:
        return 1

    grids = sorted(args.out.glob("csv/version_*/grids/last.png"), key=lambda p: p.stat().st_mtime)
    found = json.loads(metrics.read_text())
    shown = {k: v for k, v in found.get("metrics", found).items() if isinstance(v, (int, float))}
    total_minutes = (time.time() - started) / 60
    print(f"\n== armkit demo: done in {total_minutes:.1f} min (training {train_minutes:.1f} min)")
    print(f"reconstruction grid : {grids[-1] if grids else '(none)'}")
    print(f"metrics             : {metrics}")
    for k, v in shown.items():
        print(f"    {k:<28} {v:.4g}")
    print(f"export              : {export}  (Tokenizer.from_pretrained('{export}'))")
    print(f"checkpoint          : {ckpt}")
    return 0
