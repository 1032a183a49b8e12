"""`armkit demo`: the README's main job, on the embedded default (emoji + EfficientNet-Lite0/MiniLM/SmolLM2).

Writes the emoji shards and converts the frozen models if they are missing, then, each stage for a fixed number of
steps (so the result does not depend on the machine's load):
1. trains the tokenizer (`recipes/tokenizer/demo.yaml`) and exports it to OUT/tokenizer;
2. trains ARM's second decoder alone on that frozen tokenizer (`recipes/decoder/demo.yaml`), evaluates this run's
   checkpoint on the held-out emoji and exports it, with its metrics, to OUT/export;
3. trains the AR model on the export's codes and generates emoji from held-out names and skin-tone edits (OUT/ar).
It prints where the reconstruction grid, the summary (curves + grid), the metrics, the export and the samples are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from armkit.recipes.commands.cli import main as armkit
from armkit.recipes.training.schedule import cosine_for

RECIPE = Path(__file__).resolve().parents[1] / "tokenizer" / "demo.yaml"
DECODER_RECIPE = Path(__file__).resolve().parents[1] / "decoder" / "demo.yaml"
# torch threads when --threads is not given: matmul and conv reductions sum in an order that depends on the thread
# count, so the weights (and PSNR, zero-shot) reproduce only at a fixed count (docs/demo.md, "Reproducibility");
# one thread was also the faster on the busy 2-core machine
THREADS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--stage", choices=("tokenizer", "ar"), default="tokenizer",
                        help="tokenizer (default): the emoji tokenizer and decoder stages; ar: the AR model on "
                        "Fashion-MNIST (its own tokenizer, text-to-image, captions, edits, judged by an independent "
                        "classifier; recipes/commands/demo_fmnist_ar.py)")
    parser.add_argument("--threads", type=int, default=None, help=f"torch threads (default {THREADS}, both stages): "
                        "float sums depend on it, so a run reproduces the weights of another run at the same count "
                        "only; recorded in metrics.json as protocol.demo.threads")
    parser.add_argument("--results", type=Path, help="--stage ar: also copy the metrics JSON and grids here")
    parser.add_argument("--steps", type=int, help="tokenizer steps (default: the recipe's trainer.max_steps)")
    parser.add_argument("--decoder-steps", type=int, help="decoder-stage steps (default: its recipe's max_steps; "
                        "0 skips the stage and keeps the tokenizer's own decoder)")
    parser.add_argument("--decoder-config", type=Path, default=DECODER_RECIPE,
                        help=f"decoder-stage recipe (default {DECODER_RECIPE.parent.name}/{DECODER_RECIPE.name})")
    parser.add_argument("--ar-steps", type=int, default=None, help="AR steps (--stage ar: default the recipe's; "
                        "--stage tokenizer: default 0, N > 0 adds the older emoji AR stage, recipes/ar/demo.yaml)")
    parser.add_argument("--config", type=Path, default=RECIPE, help=f"tokenizer recipe (default {RECIPE.name})")
    parser.add_argument("--data", type=Path, help="shard folder, made if missing (default data/emoji; --stage ar: "
                        "data/fmnist-ar)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/demo; --stage ar: runs/demo-ar)")
    parser.add_argument("--eval-limit", type=int, default=338, help="validation images to evaluate (default all 338)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("train_args", nargs="*", help="extra LightningCLI overrides after `--`, e.g. "
                        "-- --data.batch_size=16")


def step(title: str) -> float:
    print(f"\n== armkit demo: {title}", flush=True)
    return time.time()


def train_stage(argv: list[str], resume: bool) -> tuple[object, Path] | None:
    """Fit one recipe; (trainer, this run's last checkpoint), or None after printing why not. Lightning names the
    last checkpoint `last-v1.ckpt` when an older run's `last.ckpt` is there, so the trainer says which is ours."""
    from armkit.recipes.training.fit import ConfigCheckError, fit  # here: `armkit demo --help` stays light

    try:
        trainer = fit([*argv, *(["--ckpt_path", "last"] if resume else [])]).trainer
    except ConfigCheckError as e:
        print(e.code, file=sys.stderr)
        return None
    ckpt = Path(trainer.checkpoint_callback.last_model_path) if trainer.checkpoint_callback else None
    if ckpt is None or not ckpt.is_file():
        print("armkit demo: the recipe saved no last checkpoint (a ModelCheckpoint with save_last: true is needed)")
        return None
    return trainer, ckpt


def grid_of(trainer) -> Path | None:
    return next((cb.last_path for cb in trainer.callbacks if isinstance(getattr(cb, "last_path", None), Path)), None)


def run_ar_stage(args: argparse.Namespace) -> int:
    from armkit.recipes.commands.demo_fmnist_ar import run_fmnist_ar_demo, summary_lines

    out = args.out or Path("runs/demo-ar")
    try:
        report = run_fmnist_ar_demo(out=out, data=args.data or Path("data/fmnist-ar"), tokenizer_steps=args.steps,
                                    ar_steps=args.ar_steps, threads=args.threads or 1, results=args.results)
    except FileExistsError as e:
        print(f"armkit demo: {e}", file=sys.stderr)
        return 2
    print("\n== armkit demo --stage ar: done")
    for line in summary_lines(report):
        print(line)
    print(f"metrics: {out / 'ar-demo-metrics.json'}; grids: {out}/t2i-train.png, t2i-heldout.png, captions.png, "
          "edits.png")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.stage == "ar":
        return run_ar_stage(args)
    args.data, args.out = args.data or Path("data/emoji"), args.out or Path("runs/demo")
    args.ar_steps = args.ar_steps or 0
    import torch

    args.threads = args.threads or THREADS
    torch.set_num_threads(args.threads)  # pinned: the reductions' float order, and so the weights, depend on it
    started = time.time()
    if not (args.data / "meta.json").is_file():
        step(f"writing emoji shards to {args.data}")
        if armkit(["data", "emoji", "--out", str(args.data)]) != 0:
            return 1
    if "asset:" in args.config.read_text():
        step("frozen models (armkit assets)")
        if armkit(["assets"]) != 0:
            return 1
    from armkit.recipes.training.summary import write_summary

    data = [f"--data.train={args.data}", f"--data.val={args.data}"]
    steps = f"{args.steps} steps" if args.steps else "the recipe's max_steps"
    t = step(f"1/3 training the tokenizer ({args.config.name}) for {steps}")
    train = ["--config", str(args.config), *data, f"--trainer.default_root_dir={args.out}", "--trainer.max_time=null",
             *([f"--trainer.max_steps={args.steps}", f"--model.cosine_steps={cosine_for(args.config, args.steps)}"]
               if args.steps else []),
             *args.train_args]  # train_args win
    fitted = train_stage(train, args.resume)
    if fitted is None:
        return 2
    trainer, ckpt = fitted
    stages = [(f"tokenizer, {trainer.global_step} steps", time.time() - t, trainer)]
    tokenizer = args.out / "tokenizer"
    if armkit(["export", "--ckpt", str(ckpt), "--out", str(tokenizer)]) != 0:
        return 1

    if args.decoder_steps != 0:
        t = step(f"2/3 training the decoder alone on the frozen tokenizer ({args.decoder_config.name})")
        train = ["--config", str(args.decoder_config), f"--model.init_args.tokenizer={tokenizer}",
                 *(f"--data.init_args.{a[len('--data.'):]}" for a in data),
                 f"--trainer.default_root_dir={args.out / 'decoder'}"]
        if args.decoder_steps:
            n = args.decoder_steps
            train += [f"--trainer.max_steps={n}",
                      f"--model.init_args.cosine_steps={cosine_for(args.decoder_config, n)}"]
        fitted = train_stage(train, args.resume)
        if fitted is None:
            return 2
        trainer, ckpt = fitted
        stages.append((f"decoder, {trainer.global_step} steps", time.time() - t, trainer))

    step("evaluating on the validation shards")
    metrics = args.out / "metrics.json"
    if armkit(["eval", "--tokenizer", str(ckpt), "--data", str(args.data), "--limit", str(args.eval_limit),
               "--out", str(metrics)]) != 0:
        return 1
    report = json.loads(metrics.read_text())
    if isinstance(report.get("protocol"), dict):  # what the weights depend on beyond the recipes and the data
        report["protocol"]["demo"] = {"threads": args.threads, "tokenizer_steps": stages[0][2].global_step,
                                      "decoder_steps": stages[1][2].global_step if len(stages) > 1 else 0,
                                      "config": str(args.config), "decoder_config": str(args.decoder_config)}
        metrics.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    step("exporting")
    export = args.out / "export"
    if armkit(["export", "--ckpt", str(ckpt), "--out", str(export), "--metrics", str(metrics)]) != 0:
        return 1
    found = json.loads(metrics.read_text())
    shown = {k: v for k, v in found.get("metrics", found).items() if isinstance(v, (int, float))}
    headline = ", ".join(f"{k} {shown[k]:.3g}" for k in ("psnr", "zeroshot_top1_balanced") if k in shown)
    logs = [Path(tr.loggers[0].log_dir) / "metrics.csv" for _, _, tr in stages if tr.loggers]
    grid = grid_of(stages[-1][2])
    title = f"armkit demo: {' + '.join(name for name, _, _ in stages)}; held-out {headline}"
    summary = write_summary(logs, grid, args.out / "summary.png", title=title)

    ar_grid = None
    if args.ar_steps:
        from armkit.recipes.commands.demo_ar import run_ar_demo

        t = step(f"3/3 the AR model on the export's codes, {args.ar_steps} steps (recipes/ar/demo.yaml)")
        ar_grid = run_ar_demo(tokenizer=export, data=args.data, out=args.out / "ar", steps=args.ar_steps)
        stages.append(("AR model", time.time() - t, None))

    total_minutes = (time.time() - started) / 60
    print(f"\n== armkit demo: done in {total_minutes:.1f} min (" +
          ", ".join(f"{name}: {seconds / 60:.1f} min" for name, seconds, _ in stages) + ")")
    print(f"reconstruction grid : {grid or '(none)'}")
    print(f"summary (curves+grid): {summary}")
    print(f"metrics             : {metrics}")
    for k, v in shown.items():
        print(f"    {k:<28} {v:.4g}")
    print(f"export              : {export}  (Tokenizer.from_pretrained('{export}'))")
    print(f"checkpoint          : {ckpt}")
    if ar_grid is not None:
        print(f"AR samples          : {ar_grid}  (held-out names, one row each; edits in {args.out / 'ar'})")
    return 0
