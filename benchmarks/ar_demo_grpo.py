"""GRPO on the Fashion-MNIST SFT model, judged by a measure it was not trained on (issue 26, part 3).

For each seed, `armkit rl-stages --recipe recipes/rl/fmnist.yaml --judge fmnist` runs t2i -> edit -> joint from the
SFT export of `armkit demo --stage ar` (rewards: a linear probe on pixels fitted on real training images, and pixel
closeness of edits; no network) and evaluates every model with `recipes/ar/demo_eval.evaluate_demo`'s independent
SmallCNN judge (trained on real pixels; no reward uses it). Then, over seeds, each measure's change from the model
before (paired by seed, `recipes/evaluation/stats.py`: mean and 95 % t interval of the differences, verdict):

- held-out reward (SampleGrid's 20 held-out prompts x 4 samples, the same draws before and after each stage):
  text-to-image (over the prompts that name a class) SFT -> after t2i -> after joint; editing, from the model the
  edit stage starts from (after t2i) -> after edit -> after joint;
- the judge: t2i_class_accuracy (CFG 2, one training prompt per class), t2i_heldout_prompt_accuracy,
  caption_accuracy, edit_closer_fraction: SFT -> after each stage;
- with --sample-judge, the judge's accuracy on the samples the t2i reward scored (SampleGrid's before / after codes,
  decoded again at 25 steps, seed 0): does the independent classifier agree with the reward on the reward's own
  samples (no CFG, temperature 0.7), where the judge's t2i_class_accuracy uses CFG 2 and temperature 1?

    OMP_NUM_THREADS=1 python benchmarks/ar_demo_grpo.py --seeds 0 1 2 --parallel 3 --out runs/rl-fmnist \
        --sft-eval runs/demo-ar/ar-demo-metrics.json
    OMP_NUM_THREADS=1 python benchmarks/ar_demo_grpo.py --summary-only --sample-judge --out runs/rl-fmnist

writes OUT/summary.json / summary.md, and with --results DIR (default benchmarks/results) DIR/ar-demo-grpo.json,
.md, -before.png / -after.png (the first seed's held-out t2i samples before t2i and after joint, one row per prompt)
and -judge-sft.png / -judge-joint.png (evaluate_demo's t2i-train grids: one row per class, * = the judge agrees).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from armkit.recipes.evaluation.provenance import git_state
from armkit.recipes.evaluation.stats import mean_std, paired, verdict

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "rl" / "fmnist.yaml"
MODELS = ("sft", "t2i", "edit", "joint")
JUDGE_KEYS = ("t2i_class_accuracy", "t2i_heldout_prompt_accuracy", "caption_accuracy", "edit_closer_fraction")
# (measure, model after, model before): the comparisons of the summary, each paired by seed
COMPARISONS = (
    [("reward_t2i", "t2i", "sft"), ("reward_t2i", "joint", "sft"),
     ("reward_edit", "edit", "t2i"), ("reward_edit", "joint", "t2i")]
    + [(k, m, "sft") for k in JUDGE_KEYS for m in ("t2i", "edit", "joint")]
    + [("judge_on_reward_samples", m, "sft") for m in ("t2i", "joint")])


def held_out(samples: Path, task: str, classes: dict[str, int] | None) -> float | None:
    """Mean reward of `task` rows in SampleGrid's JSON; t2i only over prompts with a class (the others score the
    reward's constant `unknown`)."""
    if not samples.is_file():
        return None
    rows = [r for r in json.loads(samples.read_text())["samples"] if r["task"] == task]
    if task == "t2i" and classes is not None:
        rows = [r for r in rows if r["prompt"] in classes]
    return statistics.fmean(r["reward"] for r in rows) if rows else None


def seed_measures(folder: Path, classes: dict[str, int] | None) -> dict[str, dict[str, float]]:
    """{measure: {model: value}} of one seed's `armkit rl-stages` folder."""
    s = lambda stage, name: folder / stage / "run" / "samples" / f"{name}.json"  # noqa: E731
    out: dict[str, dict[str, float]] = {
        "reward_t2i": {"sft": held_out(s("t2i", "before"), "t2i", classes),
                       "t2i": held_out(s("t2i", "after"), "t2i", classes),
                       "joint": held_out(s("joint", "after"), "t2i", classes)},
        "reward_edit": {"t2i": held_out(s("edit", "before"), "edit", None),
                        "edit": held_out(s("edit", "after"), "edit", None),
                        "joint": held_out(s("joint", "after"), "edit", None)}}
    for model in MODELS:
        path = folder / f"eval-{model}.json"
        if path.is_file():
            result = json.loads(path.read_text())
            for key in JUDGE_KEYS:
                out.setdefault(key, {})[model] = result.get(key)
    judged = folder / "judge-on-reward-samples.json"
    if judged.is_file():
        out["judge_on_reward_samples"] = json.loads(judged.read_text())
    return {k: {m: v for m, v in d.items() if v is not None} for k, d in out.items()}


def summarise(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """per_seed: {seed: {measure: {model: value}}} -> per measure and model mean/std over seeds, and per comparison
    (measure, after, before) the paired difference after - before over the seeds that have both (95 % t interval,
    verdict of "after > before")."""
    measures = sorted({k for d in per_seed.values() for k in d})
    table: dict[str, Any] = {}
    for key in measures:
        models = [m for m in MODELS if any(m in d.get(key, {}) for d in per_seed.values())]
        table[key] = {m: mean_std([d[key][m] for d in per_seed.values() if m in d.get(key, {})]) for m in models}
    comparisons = []
    for key, after, before in COMPARISONS:
        a = {s: d[key][after] for s, d in per_seed.items() if after in d.get(key, {})}
        b = {s: d[key][before] for s, d in per_seed.items() if before in d.get(key, {})}
        diff = paired(a, b)
        if diff is not None:
            comparisons.append({"measure": key, "after": after, "before": before, "after_minus_before": diff,
                                "verdict_after_gt_before": verdict(diff)})
    return {"seeds": sorted(per_seed), "per_seed": {str(s): d for s, d in per_seed.items()}, "table": table,
            "comparisons": comparisons}


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"seeds: {summary['seeds']}", "",
             "| measure | " + " | ".join(MODELS) + " |", "|---" * (len(MODELS) + 1) + "|"]
    for key, row in summary["table"].items():
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" if m in row else "–" for m in MODELS]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "mean ± std over seeds (models: the SFT model, then after each stage, each from the previous).", "",
              "| measure | after − before | seeds | mean | 95 % interval | verdict (after > before) |",
              "|---|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        d = c["after_minus_before"]
        ci = "–" if d["ci95"] is None else f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        lines.append(f"| {c['measure']} | {c['after']} − {c['before']} | {d['n']} | {d['mean']:+.3f} | {ci} | "
                     f"{c['verdict_after_gt_before']} |")
    return "\n".join(lines) + "\n"


def run_seeds(args: argparse.Namespace) -> None:
    """The SFT model's evaluation once (OUT/eval-sft.json; the judge saved to OUT/judge.safetensors), then
    `armkit rl-stages` per seed, `--parallel` at a time (each one torch thread; logs in OUT/seedS.log), reusing both."""
    from armkit.recipes.commands import rl_stages

    judge, sft_eval = args.out / "judge.safetensors", args.out / "eval-sft.json"
    if args.sft_eval is not None and not sft_eval.is_file():  # the demo's own evaluation of the SFT model
        given = json.loads(args.sft_eval.read_text())
        sizes = (given["t2i_train"]["of_per_class"], given["captions"]["images"], given["edits"]["pairs"])
        if sizes != (args.judge_per_class, args.judge_captions, args.judge_edits):
            raise SystemExit(f"{args.sft_eval} was measured with (per_class, captions, edits) = {sizes}, not "
                             f"{(args.judge_per_class, args.judge_captions, args.judge_edits)}: not comparable")
        shutil.copyfile(args.sft_eval, sft_eval)
        (args.out / "eval-sft").mkdir(exist_ok=True)
        for name in ("t2i-train.png", "t2i-heldout.png", "captions.png", "edits.png"):
            if (args.sft_eval.parent / name).is_file():
                shutil.copyfile(args.sft_eval.parent / name, args.out / "eval-sft" / name)
    if not sft_eval.is_file():
        print("evaluating the SFT model with the judge", flush=True)
        rl_stages.evaluate_fmnist(args.sft, args.tokenizer, str(args.codes), sft_eval, per_class=args.judge_per_class,
                                  captions=args.judge_captions, edits=args.judge_edits, judge_file=judge)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running = list(args.seeds), []
    while pending or running:
        while pending and len(running) < args.parallel:
            seed = pending.pop(0)
            cmd = [sys.executable, "-m", "armkit.recipes.commands.cli", "rl-stages", "--recipe", str(args.recipe),
                   "--judge", "fmnist", "--judge-per-class", str(args.judge_per_class), "--judge-captions",
                   str(args.judge_captions), "--judge-edits", str(args.judge_edits), "--sft", str(args.sft),
                   "--tokenizer", str(args.tokenizer), "--codes", str(args.codes), "--images", str(args.images),
                   "--out", str(args.out / f"seed{seed}"), "--seed", str(seed), "--judge-cache", str(judge),
                   "--sft-eval", str(sft_eval),
                   *(["--rl-steps", str(args.rl_steps)] if args.rl_steps else []), "--stages", *args.stages,
                   "--", "--trainer.enable_progress_bar=false"]
            log = (args.out / f"seed{seed}.log").open("w")
            print(f"seed {seed}: {' '.join(cmd)}", flush=True)
            running.append((seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(5)
        for item in list(running):
            seed, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"seed {seed}: exit {proc.returncode}", flush=True)


def judge_reward_samples(folder: Path, tokenizer: Path, classes: dict[str, int],
                         judge_cache: Path | None = None) -> dict[str, float]:
    """The judge's accuracy on SampleGrid's t2i images (decoded from the recorded codes, decode seed 0): SFT (t2i
    stage before), after t2i, after joint. The same prompts, draws and images the t2i reward scored."""
    import torch

    from armkit.recipes.evaluation.classifier import fashion_mnist_judge, predict
    from armkit.tokenizer import Tokenizer

    judge = fashion_mnist_judge(file=judge_cache)
    tok = Tokenizer.from_pretrained(tokenizer).eval()
    out = {}
    for model, (stage, name) in {"sft": ("t2i", "before"), "t2i": ("t2i", "after"),
                                 "joint": ("joint", "after")}.items():
        path = folder / stage / "run" / "samples" / f"{name}.json"
        if not path.is_file():
            continue
        rows = [r for r in json.loads(path.read_text())["samples"] if r["task"] == "t2i" and r["prompt"] in classes]
        codes = torch.tensor([r["codes"] for r in rows])
        with torch.no_grad():
            images = tok.decode(codes, steps=25, generator=torch.Generator().manual_seed(0)).clamp(0, 1)
        want = torch.tensor([classes[r["prompt"]] for r in rows])
        out[model] = float((predict(judge, images) == want).float().mean())
    (folder / "judge-on-reward-samples.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sft", type=Path, default=Path("runs/demo-ar/ar/export"))
    p.add_argument("--tokenizer", type=Path, default=Path("runs/demo-ar/tokenizer/export"))
    p.add_argument("--codes", type=Path, default=Path("runs/demo-ar/codes"))
    p.add_argument("--images", type=Path, default=Path("data/fmnist-ar"))
    p.add_argument("--recipe", type=Path, default=RECIPE)
    p.add_argument("--prompt-classes", type=Path, default=Path("runs/rl-fmnist/probe/prompt_classes.json"))
    p.add_argument("--out", type=Path, default=Path("runs/rl-fmnist"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--parallel", type=int, default=1, help="seeds run at once (one torch thread each)")
    p.add_argument("--rl-steps", type=int, help="GRPO optimizer steps per stage (default: the recipe's)")
    p.add_argument("--stages", nargs="+", default=list(MODELS[1:]), choices=MODELS[1:],
                   help="the RL stages, in order (a shorter run: --stages t2i)")
    # evaluate_demo's sizes as `armkit demo --stage ar` calls it, so its ar-demo-metrics.json is the SFT evaluation
    p.add_argument("--judge-per-class", type=int, default=8)
    p.add_argument("--judge-captions", type=int, default=200)
    p.add_argument("--judge-edits", type=int, default=200, help="held-out edit pairs (the AR demo evaluates 200)")
    p.add_argument("--sft-eval", type=Path, help="an evaluate_demo JSON of --sft at these sizes (the demo's "
                   "runs/demo-ar/ar-demo-metrics.json; its grids beside it) instead of evaluating it again")
    p.add_argument("--summary-only", action="store_true", help="only summarise the seeds' folders already in OUT")
    p.add_argument("--sample-judge", action="store_true", help="also judge SampleGrid's t2i samples")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--name", default="ar-demo-grpo")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if not args.summary_only:
        run_seeds(args)
    classes = json.loads(args.prompt_classes.read_text())
    folders = {s: args.out / f"seed{s}" for s in args.seeds if (args.out / f"seed{s}").is_dir()}
    if args.sample_judge:
        for folder in folders.values():
            judge_reward_samples(folder, args.tokenizer, classes, args.out / "judge.safetensors")
    summary = summarise({s: seed_measures(f, classes) for s, f in folders.items()})
    summary["protocol"] = {
        "git": git_state(), "command": " ".join(sys.argv),
        "recipe": str(args.recipe), "sft": str(args.sft), "tokenizer": str(args.tokenizer), "codes": str(args.codes),
        "rl_steps": args.rl_steps, "judge": {"per_class": args.judge_per_class, "captions": args.judge_captions,
                                             "edits": args.judge_edits},
        "minutes": {str(s): [r.get("minutes") for r in json.loads((f / "table.json").read_text())]
                    for s, f in folders.items() if (f / "table.json").is_file()},
        "driver_minutes": round((time.time() - started) / 60, 1)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    if args.results and folders:
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / f"{args.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
        (args.results / f"{args.name}.md").write_text(markdown(summary))
        first = folders[min(folders)]
        copies = {"before.png": first / "t2i" / "run" / "samples" / "before.png",
                  "after.png": first / "joint" / "run" / "samples" / "after.png",
                  "judge-sft.png": first / "eval-sft" / "t2i-train.png",
                  "judge-joint.png": first / "eval-joint" / "t2i-train.png"}
        for suffix, source in copies.items():
            if source.is_file():
                shutil.copyfile(source, args.results / f"{args.name}-{suffix}")
        if copies["before.png"].is_file() and copies["after.png"].is_file():  # joint's grid: t2i rows, then edits
            from PIL import Image

            before, after = Image.open(copies["before.png"]), Image.open(copies["after.png"])
            after.crop((0, 0, after.width, before.height)).save(args.results / f"{args.name}-after.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
