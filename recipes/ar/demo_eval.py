"""The AR demo's measurements on Fashion-MNIST, judged by an independent classifier (recipes/evaluation/classifier.py:
a small CNN trained on the real training pixels, neither the tokenizer's teacher nor any reward's network).

- text-to-image, training prompts: one training caption per class ("a photo of a sneaker."), `per_class` samples
  each; the judge's accuracy on them (`t2i_class_accuracy`) beside its accuracy on the 10,000 real test images
  (`real_class_accuracy`);
- text-to-image, held-out prompts: templates never used as a training caption, reported the same way;
- understanding: greedy captions of held-out test images; a caption names a class when it contains exactly one
  class name; `caption_accuracy` against chance (1 / classes);
- editing: held-out pairs of `armkit tokenize --edits upside-down` (test images); an edit counts as closer when its
  decoded output is nearer (pixel MSE at 32 px) to the real flipped image than the unedited real source is
  (`edit_closer_fraction`); also in the judge's features, and against the source's own reconstruction.

Everything draws from seeded generators, so one model gives one set of numbers. Grids: t2i-train.png,
t2i-heldout.png (one row per class: a real test image, then the samples; * marks a sample the judge labels as its
prompt's class), captions.png and edits.png.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.backbones.generate import GREEDY, SAMPLE, Sampling, generate_image, generate_text
from armkit.recipes.ar import evaluate
from armkit.recipes.ar.codes import CodeReader
from armkit.recipes.ar.tokenize import PIXEL_EDITS
from armkit.recipes.data.fashion_mnist import CLASSES, NAMES, TEMPLATES
from armkit.recipes.evaluation.classifier import (
    SmallCNN,
    accuracy,
    fashion_mnist_pixels,
    features,
    predict,
    to_gray32,
    train_classifier,
)

TRAIN_TEMPLATE = TEMPLATES[0]
HELD_OUT_TEMPLATES = ["an image of {}.", "a black and white picture of {}."]  # never a training caption


def log(message: str) -> None:
    print(f"  ar demo eval: {message}", flush=True)


def class_named(text: str) -> int | None:
    """The class whose name the caption contains, when exactly one does ("a t-shirt" does not contain "a shirt")."""
    found = {c for c, name in enumerate(NAMES) if re.search(rf"(^|[^\w-]){re.escape(name)}\b", text)}
    return found.pop() if len(found) == 1 else None


@torch.no_grad()
def text_to_image(model: ARModel, tok: Any, prompts: list[str], *, num: int, guidance: float, sampling: Sampling,
                  gen: torch.Generator, decode_steps: int, batch_size: int = 40,
                  progress: Any | None = None) -> torch.Tensor:
    """`num` decoded samples per prompt, prompt-major: [len(prompts) * num, 1, 32, 32]; `progress` (a tqdm bar)
    advances by each chunk generated."""
    v, codec, grid = model.vocab, model.codec, tuple(tok.grid)
    rows = [p for p in prompts for _ in range(num)]
    codes = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        cond = [S.text_to_image_prompt(v, codec.encode(p), grid) for p in chunk]
        uncond = [S.text_to_image_prompt(v, [], grid)] * len(chunk)
        codes.append(generate_image(model, cond, grid, weaker=[uncond], scales=[guidance], sampling=sampling,
                                    generator=gen))
        if progress is not None:
            progress.update(len(chunk))
    return decode(tok, torch.cat(codes), steps=decode_steps, seed=int(torch.randint(0, 2**31, (1,), generator=gen)))


def decode(tok: Any, codes: torch.Tensor, *, steps: int, seed: int) -> torch.Tensor:
    """The AR evaluation's seeded decode, 100 at a time, as the judge reads it: [N, 1, 32, 32] in [0, 1]."""
    with torch.no_grad():
        return to_gray32(evaluate.decode(tok, codes, steps=steps, seed=seed, batch_size=100).clamp(0, 1))


def held_out_samples(codes: Path, *, captions: int, edits: int) -> tuple[list[dict], list[dict]]:
    plain, pairs = [], []
    for s in CodeReader(str(codes), image_size=1, split="val"):
        if s["edit"] is None and len(plain) < captions:
            plain.append(s)
        elif s["edit"] is not None and len(pairs) < edits:
            pairs.append(s)
        if len(plain) >= captions and len(pairs) >= edits:
            break
    return plain, pairs


def val_index(key: str) -> int:
    """`val_00012` (fashion_mnist.load's key) -> 12, the test image's index."""
    match = re.fullmatch(r"val_(\d+)", key)
    if match is None:
        raise ValueError(f"{key!r} is not a Fashion-MNIST test key (val_NNNNN)")
    return int(match.group(1))


@torch.no_grad()
def evaluate_demo(*, model: ARModel, tok: Any, codes: Path, out: Path, per_class: int = 8, captions: int = 200,
                  edits: int = 100, guidance: float = 2.0, image_guidance: float = 1.25,
                  sampling: Sampling = SAMPLE, judge_steps: int = 600, decode_steps: int = 25,
                  seed: int = 0, judge: SmallCNN | None = None) -> dict[str, Any]:
    """The metrics of the module docstring; writes the four grids into `out` and returns the report. `judge`: an
    already trained judge (e.g. `fashion_mnist_judge`), else one is trained for `judge_steps` from `seed`."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    x_train, y_train = fashion_mnist_pixels("train")
    x_test, y_test = fashion_mnist_pixels("val")
    if judge is None:
        log(f"training the judge on {len(x_train):,} real images ({judge_steps} steps)")
        judge = train_classifier(x_train, y_train, steps=judge_steps, seed=seed)
    real_acc = accuracy(judge, x_test, y_test)
    log(f"judge: {real_acc:.1%} on the {len(x_test):,} real test images")
    real_per_class = [accuracy(judge, x_test[y_test == c], y_test[y_test == c]) for c in range(len(CLASSES))]
    gen = torch.Generator().manual_seed(seed)
    report: dict[str, Any] = {"real_class_accuracy": real_acc, "chance": 1 / len(CLASSES)}
    plain, pairs = held_out_samples(codes, captions=captions, edits=edits)
    t2i_total = sum(per_class // len(t) * len(t) * len(CLASSES) for t in ([TRAIN_TEMPLATE], HELD_OUT_TEMPLATES))
    bar = tqdm(total=t2i_total + len(plain) + len(pairs), desc="evaluate (images, captions, edits)", unit="sample")

    # text-to-image: training prompts, then held-out prompts
    examples = torch.stack([x_test[(y_test == c).nonzero()[0, 0]] for c in range(len(CLASSES))])
    for name, templates in (("train", [TRAIN_TEMPLATE]), ("heldout", HELD_OUT_TEMPLATES)):
        n = per_class // len(templates)
        log(f"text-to-image, {name} prompts: {n * len(templates)} samples per class")
        prompts = [t.format(NAMES[c]) for c in range(len(CLASSES)) for t in templates]
        images = text_to_image(model, tok, prompts, num=n, guidance=guidance, sampling=sampling, gen=gen,
                               decode_steps=decode_steps, progress=bar)
        want = torch.arange(len(CLASSES)).repeat_interleave(n * len(templates))
        pred = predict(judge, images)
        correct = [int(((pred == want) & (want == c)).sum()) for c in range(len(CLASSES))]
        report[f"t2i_{name}"] = {"prompts": prompts, "samples": len(images), "accuracy": float((pred == want).float()
                                                                                                .mean()),
                                 "correct_per_class": dict(zip(CLASSES, correct)), "of_per_class": n * len(templates)}
        class_grid(examples, images.view(len(CLASSES), -1, 1, 32, 32), pred.view(len(CLASSES), -1) ==
                   torch.arange(len(CLASSES))[:, None], correct, out / f"t2i-{name}.png",
                   title=f"{'training' if name == 'train' else 'held-out'} prompts, CFG {guidance}")
    report["t2i_class_accuracy"] = report["t2i_train"]["accuracy"]
    report["t2i_heldout_prompt_accuracy"] = report["t2i_heldout"]["accuracy"]
    report["t2i_fraction_of_real"] = report["t2i_class_accuracy"] / real_acc

    # understanding: greedy captions of held-out test images
    v, codec = model.vocab, model.codec
    log(f"captions of {len(plain)} held-out images, edits of {len(pairs)} held-out pairs")
    texts = []
    for start in range(0, len(plain), 50):
        prompts = [S.understanding_prompt(v, s["codes"].tolist(), s["grid"]) for s in plain[start:start + 50]]
        texts += [codec.decode(ids) for ids in generate_text(model, prompts, max_new_tokens=64, sampling=GREEDY)]
        bar.update(len(prompts))
    named = [class_named(t) for t in texts]
    labels = [s["label"] for s in plain]
    training_captions = {t.format(n) for t in TEMPLATES for n in NAMES}
    report["captions"] = {
        "images": len(plain), "accuracy": sum(p == y for p, y in zip(named, labels)) / max(len(plain), 1),
        "no_single_class_named": sum(p is None for p in named) / max(len(plain), 1),
        "is_a_training_caption": sum(t in training_captions for t in texts) / max(len(plain), 1),
        "examples": [{"key": s["key"], "label": CLASSES[s["label"]], "caption": t} for s, t in
                     zip(plain[:12], texts[:12])]}
    report["caption_accuracy"] = report["captions"]["accuracy"]
    caption_grid([x_test[val_index(s["key"])] for s in plain[:12]], texts[:12],
                 [CLASSES[y] for y in labels[:12]], out / "captions.png")

    # editing: held-out upside-down pairs against the real flipped test image
    edit = PIXEL_EDITS["upside-down"]
    grid = tuple(tok.grid)
    outputs = []
    for start in range(0, len(pairs), 25):
        chunk = pairs[start:start + 25]
        args = [(s["edit"]["source"].tolist(), s["edit"]["source_grid"], codec.encode(s["edit"]["instruction"]))
                for s in chunk]
        full = [S.editing_prompt(v, src, sg, ins, grid) for src, sg, ins in args]
        img_only = [S.editing_prompt(v, src, sg, ins, grid, drop_text=True) for src, sg, ins in args]
        none = [S.editing_prompt(v, src, sg, ins, grid, drop_text=True, drop_image=True) for src, sg, ins in args]
        outputs.append(generate_image(model, full, grid, weaker=[img_only, none], scales=[guidance, image_guidance],
                                      sampling=sampling, generator=gen))
        bar.update(len(chunk))
    bar.close()
    edited = decode(tok, torch.cat(outputs), steps=decode_steps, seed=seed)
    recon = decode(tok, torch.stack([s["edit"]["source"] for s in pairs]), steps=decode_steps, seed=seed)
    source = torch.stack([x_test[val_index(s["edit"]["source_key"])] for s in pairs])
    target = edit.apply(source)

    def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b) ** 2).flatten(1).mean(1)

    def fdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - torch.nn.functional.cosine_similarity(features(judge, a), features(judge, b))

    closer = mse(edited, target) < mse(source, target)
    report["edits"] = {
        "pairs": len(pairs), "instruction": edit.instruction,
        "closer_pixels": float(closer.float().mean()),
        "closer_judge_features": float((fdist(edited, target) < fdist(source, target)).float().mean()),
        "closer_than_source_reconstruction_pixels": float((mse(edited, target) < mse(recon, target)).float().mean()),
        "mse_edit_to_target": float(mse(edited, target).mean()), "mse_source_to_target": float(
            mse(source, target).mean()),
        # the judge saw upright images only: it reads the edit turned back (a kept class, whatever the flip)
        "class_kept_after_undoing_the_edit": accuracy(judge, edit.apply(edited),
                                                      torch.tensor([s["label"] for s in pairs])),
    }
    report["edit_closer_fraction"] = report["edits"]["closer_pixels"]
    edit_grid(source[:10], target[:10], edited[:10], closer[:10], out / "edits.png")
    report["judge"] = {"network": "SmallCNN (recipes/evaluation/classifier.py), trained on the 60,000 real training "
                       "images' pixels", "steps": judge_steps, "batch_size": 128, "seed": seed,
                       "real_accuracy_per_class": dict(zip(CLASSES, real_per_class))}
    report["sampling"] = {**sampling._asdict(), "guidance": guidance, "image_guidance": image_guidance,
                          "decode_steps": decode_steps, "seed": seed, "captions": "greedy, at most 64 bytes"}
    return report


# -- pictures -----------------------------------------------------------------------------------------------------
SCALE, PAD, LABEL_W = 3, 4, 130


def tile(img: torch.Tensor) -> Image.Image:
    a = (img[0].clamp(0, 1) * 255).round().byte().numpy()
    return Image.fromarray(a, "L").resize((a.shape[1] * SCALE, a.shape[0] * SCALE), Image.Resampling.NEAREST)


def class_grid(examples: torch.Tensor, samples: torch.Tensor, right: torch.Tensor, correct: list[int], path: Path,
               *, title: str) -> None:
    """One row per class: its name and score, a real test image, then the samples (* = the judge agrees)."""
    rows, cols = samples.shape[:2]
    cell = 32 * SCALE
    canvas = Image.new("L", (LABEL_W + (cols + 1) * (cell + PAD) + PAD + 6, 18 + rows * (cell + PAD) + PAD), 255)
    draw = ImageDraw.Draw(canvas)
    draw.text((LABEL_W + PAD, 3), "real", fill=0)
    draw.text((LABEL_W + PAD + cell + PAD + 6, 3), f"AR samples, {title} (* = the independent CNN agrees)", fill=0)
    for r in range(rows):
        y0 = 18 + PAD + r * (cell + PAD)
        draw.text((4, y0 + cell // 2 - 12), CLASSES[r], fill=0)
        draw.text((4, y0 + cell // 2 + 2), f"{correct[r]}/{cols}", fill=0)
        canvas.paste(tile(examples[r]), (LABEL_W + PAD, y0))
        for k in range(cols):
            x0 = LABEL_W + PAD + (k + 1) * (cell + PAD) + 6
            canvas.paste(tile(samples[r, k]), (x0, y0))
            if right[r, k]:
                draw.text((x0 + 2, y0 + 1), "*", fill=255)
    canvas.save(path)


def caption_grid(images: list[torch.Tensor], texts: list[str], labels: list[str], path: Path) -> None:
    """Held-out test images with their generated captions and true classes, two columns."""
    cell, text_w = 32 * SCALE, 330
    rows = (len(images) + 1) // 2
    canvas = Image.new("L", (2 * (cell + text_w + PAD), rows * (cell + PAD) + PAD), 255)
    draw = ImageDraw.Draw(canvas)
    for i, (img, text, label) in enumerate(zip(images, texts, labels)):
        x0, y0 = (i % 2) * (cell + text_w + PAD) + PAD, (i // 2) * (cell + PAD) + PAD
        canvas.paste(tile(img), (x0, y0))
        draw.text((x0 + cell + 6, y0 + cell // 2 - 14), f"AR: {text[:52]}", fill=0)
        draw.text((x0 + cell + 6, y0 + cell // 2 + 2), f"true class: {label}", fill=90)
    canvas.save(path)


def edit_grid(source: torch.Tensor, target: torch.Tensor, edited: torch.Tensor, closer: torch.Tensor,
              path: Path) -> None:
    """Columns of (real source, real target, the AR edit) for held-out pairs; * = the edit is closer to the target."""
    cell = 32 * SCALE
    n = len(source)
    canvas = Image.new("L", (LABEL_W + n * (cell + PAD) + PAD, 3 * (cell + PAD) + PAD), 255)
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(("source (real)", "target (real flip)", "AR edit")):
        draw.text((4, PAD + r * (cell + PAD) + cell // 2 - 6), name, fill=0)
    for k in range(n):
        x0 = LABEL_W + PAD + k * (cell + PAD)
        for r, img in enumerate((source[k], target[k], edited[k])):
            canvas.paste(tile(img), (x0, PAD + r * (cell + PAD)))
        if closer[k]:
            draw.text((x0 + 2, PAD + 2 * (cell + PAD) + 1), "*", fill=255)
    canvas.save(path)
