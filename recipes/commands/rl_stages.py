"""`armkit rl-stages --sft AR_EXPORT --tokenizer EXPORT --codes CODES --images SHARDS --out DIR`: ARM's RL schedule.

ARM's RL schedule as one command: evaluate the SFT model, then for each stage (t2i, edit, joint) run GRPO from the
previous stage's export, export, and evaluate again with the AR stage's evaluation, so the synergy between the tasks
(or its absence) is a table, not a claim.

    armkit rl-stages --sft runs/ar-demo/export --tokenizer runs/demo/export \
        --codes data/emoji-codes --images data/emoji --out runs/rl-stages [--rl-steps 60] [--seed 1]

writes OUT/<stage>/ (run, export, samples/before|after.json), OUT/eval-<model>.json and OUT/table.md / table.json:
per model the held-out GRPO reward (SampleGrid's fixed prompts and seed, before -> after) and the AR evaluation
(text-to-image probe accuracy and Fréchet distance, caption NLL, edit distance to the target). Each stage trains a
fixed number of steps (the recipe's trainer.max_steps, or --rl-steps), not minutes, so the table does not depend on
the machine's load; --seed sets the run's seed (rollouts, and so the spread between seeds), not the held-out draws.

--judge fmnist (the Fashion-MNIST SFT model of `armkit demo --stage ar`, recipes/rl/fmnist.yaml) evaluates each model
with `recipes/ar/demo_eval.evaluate_demo` instead: the independent SmallCNN judge trained on real pixels
(t2i_class_accuracy, caption_accuracy, edit_closer_fraction; grids in OUT/eval-<model>/), no `armkit assets` needed.
--judge-per-class / --judge-captions / --judge-edits size it. The judge is trained once per process (fixed steps and
seed, so every evaluation would train the same network), or read from --judge-cache FILE (written there when missing);
--sft-eval FILE reuses an earlier evaluation of the same SFT export (seeds share it) instead of evaluating again.

    armkit rl-stages --recipe recipes/rl/fmnist.yaml --judge fmnist --sft runs/demo-ar/ar/export \
        --tokenizer runs/demo-ar/tokenizer/export --codes runs/demo-ar/codes --images data/fmnist-ar \
        --out runs/rl-fmnist/seed0 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from armkit.recipes.commands.cli import main as armkit
from armkit.recipes.rl.seeds import rewards

RECIPE = Path(__file__).resolve().parents[1] / "rl" / "demo.yaml"
STAGES = ("t2i", "edit", "joint")


def held_out_reward(samples: Path, name: str) -> dict[str, float]:
    """Mean reward per task in SampleGrid's `name`.json ({} when the run wrote none)."""
    return rewards(samples.parent, name) if (samples / f"{name}.json").is_file() else {}


def evaluate(model: Path, tokenizer: Path, codes: str, images: str, features: Any, out: Path, *, limit: int,
             steps: int) -> dict[str, Any]:
    from armkit.recipes.ar.evaluate import evaluate_ar
    from armkit.recipes.ar.export import load_ar
    from armkit.recipes.ar.generation import load_tokenizer

    ar, record = load_ar(model)
    tok = load_tokenizer(record, tokenizer)
    result = evaluate_ar(model=ar, tok=tok, codes=codes, images=images, features=features, limit=limit, steps=steps)
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


def evaluate_fmnist(model: Path, tokenizer: Path, codes: str, out: Path, *, per_class: int = 10,
                    captions: int = 100, edits: int = 50, judge_file: Path | None = None) -> dict[str, Any]:
    """demo_eval.evaluate_demo (the independent SmallCNN judge, trained once per process or read from `judge_file`)
    on an AR export; writes `out` (JSON) and its grids into out without the suffix (t2i-train.png, ...)."""
    from armkit.recipes.ar.demo_eval import evaluate_demo
    from armkit.recipes.ar.export import load_ar
    from armkit.recipes.evaluation.classifier import fashion_mnist_judge
    from armkit.tokenizer import Tokenizer

    result = evaluate_demo(model=load_ar(model).model, tok=Tokenizer.from_pretrained(tokenizer).eval(),
                           codes=Path(codes), out=out.with_suffix(""), per_class=per_class, captions=captions,
                           edits=edits, judge=fashion_mnist_judge(file=judge_file))
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


JUDGE_KEYS = ("t2i_class_accuracy", "t2i_heldout_prompt_accuracy", "caption_accuracy", "edit_closer_fraction")


def row(name: str, result: dict[str, Any], before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    t2i, und, edit = result.get("text_to_image", {}), result.get("understanding", {}), result.get("editing", {})
    return {"model": name, "reward_before": before, "reward_after": after,
            "probe_accuracy_generated": t2i.get("probe_accuracy_generated"),
            "frechet_distance": t2i.get("frechet_distance"), "caption_nll": und.get("caption_nll"),
            "edit_feature_distance": edit.get("feature_distance_edit_to_target"),
            **{k: result[k] for k in JUDGE_KEYS if k in result}}


def markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(x: Any) -> str:
        if isinstance(x, dict):
            return ", ".join(f"{k} {v:.3f}" for k, v in x.items()) or "–"
        return "–" if x is None else f"{x:.3f}"

    keys = ["reward_before", "reward_after", "probe_accuracy_generated", "frechet_distance", "caption_nll",
            "edit_feature_distance", *JUDGE_KEYS]
    keys = keys[:2] + [k for k in keys[2:] if any(r.get(k) is not None for r in rows)]  # the evaluation's own
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {r['model']} | " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run_stages(*, sft: Path, tokenizer: Path, codes: str, images: str, out: Path, features: Any,
               stages: tuple[str, ...] = STAGES, rl_steps: int | None = None, seed: int | None = None,
               recipe: Path = RECIPE, limit: int = 64, steps: int = 25,
               extra: list[str] = (), evaluator: Callable[[Path, Path], dict] | None = None) -> list[dict[str, Any]]:
    """evaluator(model export, OUT/eval-<name>.json) -> result: default the AR evaluation in `features`."""
    out.mkdir(parents=True, exist_ok=True)
    if evaluator is None:
        def evaluator(model: Path, target: Path) -> dict[str, Any]:
            return evaluate(model, tokenizer, codes, images, features, target, limit=limit, steps=steps)
    rows = [row("sft", evaluator(sft, out / "eval-sft.json"), {}, {})]
    previous = sft
    for stage in stages:
        started = time.time()
        run = out / stage / "run"
        budget = [f"--trainer.max_steps={rl_steps}"] if rl_steps else []
        seeded = [f"--seed_everything={seed}", f"--model.init_args.seed={seed}"] if seed is not None else []
        if armkit(["train", "--config", str(recipe), f"--model.init_args.stage={stage}",
                   f"--model.init_args.init_from={previous}", f"--model.init_args.tokenizer={tokenizer}",
                   f"--data.init_args.train={codes}", f"--data.init_args.val={codes}",
                   f"--trainer.default_root_dir={run}", *budget, *seeded, *extra]) != 0:
            raise RuntimeError(f"armkit train (RL stage {stage}) failed")
        export = out / stage / "export"
        if armkit(["export", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(export)]) != 0:
            raise RuntimeError(f"armkit export (RL stage {stage}) failed")
        result = evaluator(export, out / f"eval-{stage}.json")
        name = f"{rows[-1]['model']} → {stage}" if len(rows) > 1 else f"sft → {stage}"
        rows.append(row(name, result, held_out_reward(run / "samples", "before"),
                        held_out_reward(run / "samples", "after")))
        rows[-1]["minutes"] = round((time.time() - started) / 60, 1)
        previous = export
    (out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "table.md").write_text(markdown(rows))
    print(markdown(rows))
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sft", required=True, type=Path, help="the AR (SFT) export the first stage starts from")
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--codes", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--rl-steps", type=int, help="GRPO steps per stage (default: the recipe's trainer.max_steps)")
    p.add_argument("--seed", type=int, help="the RL runs' seed (default: the recipe's)")
    p.add_argument("--recipe", type=Path, default=RECIPE)
    p.add_argument("--features", default="asset:efficientnet_lite0")
    p.add_argument("--limit", type=int, default=64)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--judge", choices=("features", "fmnist"), default="features",
                   help="features: the AR evaluation in --features; fmnist: demo_eval's independent SmallCNN judge")
    p.add_argument("--judge-per-class", type=int, default=10, help="--judge fmnist: t2i samples per class")
    p.add_argument("--judge-captions", type=int, default=100, help="--judge fmnist: held-out images captioned")
    p.add_argument("--judge-edits", type=int, default=50, help="--judge fmnist: held-out edit pairs")
    p.add_argument("--judge-cache", type=Path,
                   help="--judge fmnist: a safetensors file of the judge (read, or written)")
    p.add_argument("--sft-eval", type=Path, help="an evaluation JSON of --sft to reuse (its grids beside it)")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="more `armkit train` overrides, after `--`")


def run(args: argparse.Namespace) -> int:
    extra = [a for a in args.extra if a != "--"]
    features, evaluator = None, None
    if args.judge == "fmnist":
        def evaluator(model: Path, target: Path) -> dict[str, Any]:
            if args.sft_eval and model == args.sft:
                import shutil

                shutil.copyfile(args.sft_eval, target)
                if args.sft_eval.with_suffix("").is_dir():
                    shutil.copytree(args.sft_eval.with_suffix(""), target.with_suffix(""), dirs_exist_ok=True)
                return json.loads(target.read_text())
            return evaluate_fmnist(model, args.tokenizer, args.codes, target, per_class=args.judge_per_class,
                                   captions=args.judge_captions, edits=args.judge_edits,
                                   judge_file=args.judge_cache)
    else:
        from armkit.recipes.ar.evaluate import PretrainedFeatures

        features = PretrainedFeatures(weights=args.features)
    run_stages(sft=args.sft, tokenizer=args.tokenizer, codes=args.codes, images=args.images, out=args.out,
               features=features, stages=tuple(args.stages), rl_steps=args.rl_steps, seed=args.seed,
               recipe=args.recipe, limit=args.limit, steps=args.steps, extra=extra, evaluator=evaluator)
    return 0
