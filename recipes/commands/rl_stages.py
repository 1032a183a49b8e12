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
"""

from __future__ import annotations

import argparse
import json
import time
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


def row(name: str, result: dict[str, Any], before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    t2i, und, edit = result.get("text_to_image", {}), result.get("understanding", {}), result.get("editing", {})
    return {"model": name, "reward_before": before, "reward_after": after,
            "probe_accuracy_generated": t2i.get("probe_accuracy_generated"),
            "frechet_distance": t2i.get("frechet_distance"), "caption_nll": und.get("caption_nll"),
            "edit_feature_distance": edit.get("feature_distance_edit_to_target")}


def markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(x: Any) -> str:
        if isinstance(x, dict):
            return ", ".join(f"{k} {v:.3f}" for k, v in x.items()) or "–"
        return "–" if x is None else f"{x:.3f}"

    keys = ["reward_before", "reward_after", "probe_accuracy_generated", "frechet_distance", "caption_nll",
            "edit_feature_distance"]
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {r['model']} | " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run_stages(*, sft: Path, tokenizer: Path, codes: str, images: str, out: Path, features: Any,
               stages: tuple[str, ...] = STAGES, rl_steps: int | None = None, seed: int | None = None,
               recipe: Path = RECIPE, limit: int = 64, steps: int = 25,
               extra: list[str] = ()) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    rows = [row("sft", evaluate(sft, tokenizer, codes, images, features, out / "eval-sft.json", limit=limit,
                                steps=steps), {}, {})]
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
        result = evaluate(export, tokenizer, codes, images, features, out / f"eval-{stage}.json", limit=limit,
                          steps=steps)
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
    p.add_argument("extra", nargs=argparse.REMAINDER, help="more `armkit train` overrides, after `--`")


def run(args: argparse.Namespace) -> int:
    from armkit.recipes.ar.evaluate import PretrainedFeatures

    extra = [a for a in args.extra if a != "--"]
    run_stages(sft=args.sft, tokenizer=args.tokenizer, codes=args.codes, images=args.images, out=args.out,
               features=PretrainedFeatures(weights=args.features), stages=tuple(args.stages), rl_steps=args.rl_steps,
               seed=args.seed, recipe=args.recipe, limit=args.limit, steps=args.steps, extra=extra)
    return 0
