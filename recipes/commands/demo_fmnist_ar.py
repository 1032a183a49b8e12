"""`armkit demo --stage ar`: the AR half of ARM shown on Fashion-MNIST, end to end from armkit's own commands.

1. `armkit data fashion-mnist --limit 30000` (if the shards are missing);
2. trains the small tokenizer `recipes/tokenizer/fmnist-ar.yaml` (FSQ [8,5,5,5]: 1,000 codes, 8x8 tokens at 32 px:
   a vocabulary a small AR model learns in minutes on a CPU, FIELD-NOTES) and exports it;
3. `armkit tokenize --edits upside-down --edit-every 2` (one image in two also gives an edit pair with an exact real
   target: one in four left the edits at 54 %, RESULTS section 20);
4. trains the AR model `recipes/ar/fmnist.yaml` (text-to-image, captioning and editing in one next-token loss) and
   exports it;
5. measures it with an independent classifier (recipes/ar/demo_eval.py) and writes OUT/ar-demo-metrics.json and the
   grids OUT/t2i-train.png, t2i-heldout.png, captions.png, edits.png.

Every stage runs a fixed number of steps from fixed seeds on `threads` torch threads (default 1: on 2 cores one
thread is as fast as two and the numbers cannot depend on the thread count), so two runs from fresh folders give the
same weights and numbers. Each stage's minutes are recorded.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from armkit.recipes.commands.cli import main as armkit
from armkit.recipes.evaluation.provenance import git_state, package_versions

RECIPES = Path(__file__).resolve().parents[1]
TOKENIZER_RECIPE = RECIPES / "tokenizer" / "fmnist-ar.yaml"
AR_RECIPE = RECIPES / "ar" / "fmnist.yaml"
EDIT_EVERY = 2  # one upside-down pair per 2 training images
KEYS = ("t2i_class_accuracy", "real_class_accuracy", "t2i_fraction_of_real", "t2i_heldout_prompt_accuracy",
        "caption_accuracy", "edit_closer_fraction")


def _stage(title: str) -> float:
    print(f"\n== armkit demo --stage ar: {title}", flush=True)
    return time.time()


def _fit(argv: list[str]) -> tuple[Any, Path]:
    from armkit.recipes.training.fit import fit

    trainer = fit(argv).trainer
    return trainer, Path(trainer.checkpoint_callback.last_model_path)


def run_fmnist_ar_demo(*, out: Path = Path("runs/demo-ar"), data: Path = Path("data/fmnist-ar"),
                       tokenizer_steps: int | None = None, ar_steps: int | None = None, threads: int = 1,
                       per_class: int = 8, captions: int = 200, edits: int = 200, judge_steps: int = 600,
                       results: Path | None = None) -> dict[str, Any]:
    """Runs the five stages into `out` (which must not hold an earlier run: delete it first) and returns the
    metrics; with `results`, also copies the JSON and grids there."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: an earlier demo run is there (delete it or pass another --out)")
    torch.set_num_threads(threads)
    started, minutes, git = time.time(), {}, git_state()  # the code this run starts from
    if not (data / "meta.json").is_file():
        t = _stage(f"0/4 writing Fashion-MNIST shards to {data}")
        if armkit(["data", "fashion-mnist", "--out", str(data), "--limit", "30000"]) != 0:
            raise RuntimeError("armkit data fashion-mnist failed")
        minutes["data"] = time.time() - t

    t = _stage(f"1/4 training the tokenizer ({TOKENIZER_RECIPE.name})")
    steps = [f"--trainer.max_steps={tokenizer_steps}"] if tokenizer_steps else []
    trainer, ckpt = _fit(["--config", str(TOKENIZER_RECIPE), f"--data.train={data}", f"--data.val={data}",
                          f"--trainer.default_root_dir={out / 'tokenizer'}", "--trainer.max_time=null", *steps])
    tokenizer = out / "tokenizer" / "export"
    if armkit(["export", "--ckpt", str(ckpt), "--out", str(tokenizer)]) != 0:
        raise RuntimeError("armkit export (tokenizer) failed")
    minutes["tokenizer"], tokenizer_steps = time.time() - t, trainer.global_step

    t = _stage(f"2/4 tokenizing the shards once (with upside-down edit pairs, one per {EDIT_EVERY} images)")
    codes = out / "codes"
    if armkit(["tokenize", "--tokenizer", str(tokenizer), "--data", str(data), "--out", str(codes),
               "--edits", "upside-down", "--edit-every", str(EDIT_EVERY)]) != 0:
        raise RuntimeError("armkit tokenize failed")
    minutes["tokenize"] = time.time() - t

    t = _stage(f"3/4 training the AR model ({AR_RECIPE.name}: text-to-image, captions, edits)")
    steps = [f"--trainer.max_steps={ar_steps}", f"--model.init_args.cosine_steps={ar_steps}"] if ar_steps else []
    trainer, ckpt = _fit(["--config", str(AR_RECIPE), f"--data.init_args.train={codes}",
                          f"--data.init_args.val={codes}", f"--trainer.default_root_dir={out / 'ar'}",
                          "--trainer.max_time=null", *steps])
    model_dir = out / "ar" / "export"
    if armkit(["export", "--ckpt", str(ckpt), "--out", str(model_dir)]) != 0:
        raise RuntimeError("armkit export (AR) failed")
    minutes["ar"], ar_steps = time.time() - t, trainer.global_step

    t = _stage("4/4 measuring with an independent classifier (text-to-image, captions, edits)")
    from armkit.recipes.ar.demo_eval import evaluate_demo
    from armkit.recipes.ar.export import load_ar
    from armkit.tokenizer import Tokenizer

    report = evaluate_demo(model=load_ar(model_dir).model, tok=Tokenizer.from_pretrained(tokenizer).eval(),
                           codes=codes, out=out, per_class=per_class, captions=captions, edits=edits,
                           judge_steps=judge_steps)
    minutes["evaluate"] = time.time() - t
    minutes["total"] = time.time() - started
    report["protocol"] = {
        "git": git, "command": " ".join(["armkit", *sys.argv[1:]]) if sys.argv else None,
        "threads": threads, "tokenizer_recipe": str(TOKENIZER_RECIPE.relative_to(RECIPES.parent)),
        "tokenizer_steps": tokenizer_steps, "edit_every": EDIT_EVERY,
        "ar_recipe": str(AR_RECIPE.relative_to(RECIPES.parent)),
        "ar_steps": ar_steps, "data": "Fashion-MNIST (armkit data fashion-mnist --limit 30000): 30,000 training "
        "images; held out: the test images (val split)", "versions": package_versions(),
        "minutes": {k: round(v / 60, 2) for k, v in minutes.items()}}
    report = {**{k: report[k] for k in KEYS}, **{k: v for k, v in report.items() if k not in KEYS}}
    (out / "ar-demo-metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        for name in ("ar-demo-metrics.json", "t2i-train.png", "t2i-heldout.png", "captions.png", "edits.png"):
            target = name if name.startswith("ar-demo") else f"ar-demo-{name}"
            shutil.copyfile(out / name, results / target)
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    m = report["protocol"]["minutes"]
    return [
        f"text-to-image, training prompts: the independent CNN labels {report['t2i_class_accuracy']:.1%} of the "
        f"samples as their prompt's class ({report['t2i_fraction_of_real']:.2f} of its "
        f"{report['real_class_accuracy']:.1%} on real test images)",
        f"text-to-image, held-out prompts : {report['t2i_heldout_prompt_accuracy']:.1%}",
        f"captions of held-out images    : {report['caption_accuracy']:.1%} name the right class "
        f"(chance {report['chance']:.0%})",
        f"upside-down edits              : {report['edit_closer_fraction']:.1%} closer to the real target than "
        f"the source is",
        "minutes: " + ", ".join(f"{k} {v:.1f}" for k, v in m.items()),
    ]
