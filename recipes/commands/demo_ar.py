"""The AR half of `armkit demo`: tokenize the emoji once, train `recipes/ar/demo.yaml`, export, and generate
text-to-image samples for held-out emoji names and skin-tone edits of held-out variants.

`armkit demo` calls it after the tokenizer is exported; on its own, `armkit demo-ar --tokenizer runs/demo/export
--steps 600`, or from Python:

    from armkit.recipes.commands.demo_ar import run_ar_demo
    grid = run_ar_demo(tokenizer=Path("runs/demo/export"), data=Path("data/emoji"), out=Path("runs/demo/ar"),
                       steps=600)

It trains a fixed number of steps (not minutes), so its result does not depend on the machine's load.

Everything lands in `out`: codes/, run/ (checkpoints, CSV logs), export/, t2i/ (one PNG per sample, grid.png: one
row per held-out name), edit/ (source reconstruction, then the edits) and summary.json; the return value is the
text-to-image grid's path.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from armkit.recipes.ar.codes import META, CodeReader, read_meta, tokenizer_fingerprint
from armkit.recipes.commands.cli import main as armkit

RECIPE = Path(__file__).resolve().parents[1] / "ar" / "demo.yaml"


def held_out(codes: Path, *, names: int, edits: int) -> tuple[list[str], list[dict]]:
    """Validation emoji names without a skin tone (never trained on), and validation edit pairs."""
    captions, pairs = [], []
    for sample in CodeReader(str(codes), image_size=1, split="val"):
        if sample["edit"] is not None:
            if len(pairs) < edits:
                pairs.append(sample)
        elif "skin tone" not in sample["caption"] and len(captions) < names:
            captions.append(sample["caption"])
    return captions, pairs


def save_codes_png(tokenizer: Path, codes: list[int], path: Path) -> None:
    """Render codes with the tokenizer (the edit's source image)."""
    import torch
    from torchvision.utils import save_image

    from armkit.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(tokenizer)
    save_image(tok.decode(torch.tensor([codes]), steps=25, generator=torch.Generator().manual_seed(0)), path)


def run_ar_demo(*, tokenizer: Path, data: Path, out: Path, steps: int = 600, names: int = 6, edits: int = 2,
                samples: int = 4, extra: list[str] = ()) -> Path:
    started = time.time()
    codes = out / "codes"
    if not (codes / META).is_file() or read_meta(codes)["tokenizer"]["fingerprint"] != tokenizer_fingerprint(
            tokenizer):
        print(f"\n== armkit demo (AR): tokenizing {data} with {tokenizer}", flush=True)
        if armkit(["tokenize", "--tokenizer", str(tokenizer), "--data", str(data), "--out", str(codes),
                   "--edits", "skin-tone"]) != 0:
            raise RuntimeError("armkit tokenize failed")
    print(f"\n== armkit demo (AR): training {RECIPE.name} for {steps} steps", flush=True)
    run = out / "run"
    from armkit.recipes.training.fit import fit

    trainer = fit(["--config", str(RECIPE), f"--data.init_args.train={codes}", f"--data.init_args.val={codes}",
                   f"--trainer.default_root_dir={run}", f"--trainer.max_steps={steps}",
                   f"--model.init_args.cosine_steps={steps}", "--trainer.max_time=null", *extra]).trainer
    ckpt = Path(trainer.checkpoint_callback.last_model_path)  # this run's own (last-v1.ckpt after an older run)
    if armkit(["export", "--ckpt", str(ckpt), "--out", str(out / "export")]) != 0:
        raise RuntimeError("armkit export (AR) failed")
    prompts, pairs = held_out(codes, names=names, edits=edits)
    print(f"\n== armkit demo (AR): generating {len(prompts)} held-out names and {len(pairs)} edits", flush=True)
    t2i = ["generate", "--model", str(out / "export"), "--tokenizer", str(tokenizer), "--out", str(out / "t2i"),
           "--num", str(samples), "--top-k", "100"]
    for p in prompts:
        t2i += ["--prompt", p]
    if armkit(t2i) != 0:
        raise RuntimeError("armkit generate failed")
    edit_dirs = []
    for i, pair in enumerate(pairs):
        source = out / f"edit-{i}-source.png"
        save_codes_png(tokenizer, pair["edit"]["source"].tolist(), source)
        folder = out / f"edit-{i}"
        if armkit(["generate", "--model", str(out / "export"), "--tokenizer", str(tokenizer), "--image", str(source),
                   "--instruction", pair["edit"]["instruction"], "--num", str(samples), "--out", str(folder)]) != 0:
            raise RuntimeError("armkit generate (editing) failed")
        edit_dirs.append({"target": pair["caption"], "instruction": pair["edit"]["instruction"],
                          "grid": str(folder / "grid.png")})
    summary = {"prompts": prompts, "t2i_grid": str(out / "t2i" / "grid.png"), "edits": edit_dirs,
               "steps": trainer.global_step, "minutes": round((time.time() - started) / 60, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nAR demo done in {summary['minutes']} min. Text-to-image for held-out names (one row each: "
          f"{', '.join(prompts)}): {summary['t2i_grid']}")
    for e in edit_dirs:
        print(f"edit '{e['instruction']}' (target: {e['target']}; source first): {e['grid']}")
    return out / "t2i" / "grid.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", type=Path, default=Path("runs/demo/export"),
                        help="a tokenizer export (armkit demo writes RUN/export)")
    parser.add_argument("--data", type=Path, default=Path("data/emoji"))
    parser.add_argument("--out", type=Path, default=Path("runs/demo/ar"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("train_args", nargs="*", help="extra LightningCLI overrides after `--`")


def run(args: argparse.Namespace) -> int:
    run_ar_demo(tokenizer=args.tokenizer, data=args.data, out=args.out, steps=args.steps, extra=args.train_args)
    return 0
