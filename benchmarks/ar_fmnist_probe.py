"""Does a small armkit AR model draw class-recognisable Fashion-MNIST images? (issue 26, a first measured step)

Judged by an independent small CNN trained for about a minute on the REAL training pixels (28 px resized to 32 px
the way armkit's shards are read: PIL bicubic, `recipes/data/reader.resize_crop`). Reported:
  - the CNN's accuracy on the real test set (its ceiling),
  - its accuracy on the tokenizer's reconstructions (encode -> decode) of held-out test images, beside its accuracy
    on those same real images, and the reconstructions' PSNR,
  - its accuracy on the AR samples written by `armkit generate` (one prompt per class, in class order), per class.
Writes a JSON (default benchmarks/results/ar-fmnist-probe.json) and a grid PNG (one row per class: a real test image,
its reconstruction, then the samples).

    OMP_NUM_THREADS=1 python benchmarks/ar_fmnist_probe.py --tokenizer runs/fmnist-ar-tok/export \
        --gen gen/ar-fmnist --out benchmarks/results/ar-fmnist-probe.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as nnf

from armkit.recipes.data.fashion_mnist import CLASSES, NAMES
from armkit.recipes.evaluation.classifier import SIZE, SmallCNN, fashion_mnist_pixels, predict
from armkit.recipes.evaluation.classifier import to_gray32 as gray


def train_cnn(x: torch.Tensor, y: torch.Tensor, seconds: float, seed: int) -> tuple[SmallCNN, dict]:
    """The judge's network (recipes/evaluation/classifier.py) trained for `seconds` (this probe's protocol; the
    demos train it for a fixed number of steps with `train_classifier`)."""
    torch.manual_seed(seed)
    model, g = SmallCNN(), torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps, start = 0, time.time()
    while time.time() - start < seconds:
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = nnf.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    return model, {"steps": steps, "batch_size": 128, "seconds": round(time.time() - start, 1),
                   "images_seen": steps * 128, "optimizer": "Adam lr 1e-3", "seed": seed}


def tile(img: torch.Tensor, scale: int) -> Image.Image:
    a = (img[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(a, "L").resize((a.shape[1] * scale, a.shape[0] * scale), Image.Resampling.NEAREST)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", type=Path, required=True, help="tokenizer export (armkit export)")
    p.add_argument("--gen", type=Path, required=True, help="armkit generate output: one prompt per class, in order")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ar-fmnist-probe.json"))
    p.add_argument("--grid", type=Path, default=None, help="grid PNG (default: --out with .png)")
    p.add_argument("--cnn-seconds", type=float, default=60.0)
    p.add_argument("--recon", type=int, default=500, help="held-out test images to reconstruct")
    p.add_argument("--decode-steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    grid_path = args.grid or args.out.with_suffix(".png")
    t0 = time.time()

    xtr, ytr = fashion_mnist_pixels("train")
    xte, yte = fashion_mnist_pixels("val")
    cnn, cnn_info = train_cnn(xtr, ytr, args.cnn_seconds, args.seed)
    real_acc = (predict(cnn, xte) == yte).float().mean().item()
    print(f"CNN: {cnn_info['steps']} steps in {cnn_info['seconds']} s; real test accuracy {real_acc:.4f} (10,000)")

    # reconstructions of held-out test images through the tokenizer (encode -> decode)
    from armkit.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(args.tokenizer).eval()
    sub = torch.randperm(len(xte), generator=torch.Generator().manual_seed(args.seed))[:args.recon]
    real_sub, y_sub = xte[sub], yte[sub]
    enc_size = tuple(tok.encoder.image_size)
    inp = real_sub.expand(-1, 3, -1, -1)
    if inp.shape[-2:] != enc_size:
        inp = nnf.interpolate(inp, size=enc_size, mode="bicubic", antialias=True).clamp(0, 1)
    gen = torch.Generator().manual_seed(args.seed)
    recons, codes = [], []
    with torch.no_grad():
        for i in range(0, len(inp), 100):
            idx = tok.encode(inp[i:i + 100])
            codes.append(idx)
            recons.append(gray(tok.decode(idx, steps=args.decode_steps, generator=gen)))
    recon, codes = torch.cat(recons), torch.cat(codes)
    mse = ((recon - real_sub) ** 2).flatten(1).mean(1)
    psnr = (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()
    real_sub_acc = (predict(cnn, real_sub) == y_sub).float().mean().item()
    recon_acc = (predict(cnn, recon) == y_sub).float().mean().item()
    print(f"reconstructions ({args.recon} test images): CNN {recon_acc:.4f} (same real images {real_sub_acc:.4f}), "
          f"PSNR {psnr:.2f} dB, {codes.unique().numel()} distinct codes")

    # AR samples
    report = json.loads((args.gen / "generation.json").read_text())
    prompts, files = report["prompts"], report["files"]
    if len(prompts) != len(CLASSES):
        raise SystemExit(f"{args.gen}: {len(prompts)} prompts; expected one per class, in class order")
    for c, prompt in enumerate(prompts):
        if NAMES[c] not in prompt and CLASSES[c].lower() not in prompt.lower():
            print(f"warning: prompt {c} {prompt!r} does not name class {CLASSES[c]!r}")
    num = len(files) // len(prompts)
    samples = torch.stack([torch.from_numpy(np.asarray(Image.open(args.gen / f).convert("RGB"), dtype=np.float32)
                                            / 255.0).permute(2, 0, 1) for f in files])
    samples = gray(samples)
    y_gen = torch.arange(len(prompts)).repeat_interleave(num)
    pred = predict(cnn, samples)
    gen_acc = (pred == y_gen).float().mean().item()
    conf = torch.zeros(10, 10, dtype=torch.long)
    for t, q in zip(y_gen.tolist(), pred.tolist()):
        conf[t, q] += 1
    per_class = {CLASSES[c]: {"prompt": prompts[c], "correct": int(conf[c, c]), "of": num,
                              "predicted": [CLASSES[q] for q in pred[c * num:(c + 1) * num].tolist()]}
                 for c in range(10)}
    real_pc = {CLASSES[c]: round((predict(cnn, xte[yte == c]) == c).float().mean().item(), 4) for c in range(10)}

    print(f"\nsamples: {len(files)} ({num} a class), guidance {report.get('guidance')}; CNN accuracy {gen_acc:.4f} "
          f"= {gen_acc / real_acc:.2f} of its real accuracy\n")
    print("| class | prompt | samples correct | CNN on real (class) | samples predicted as |")
    print("|---|---|---|---|---|")
    for c in range(10):
        pc = per_class[CLASSES[c]]
        top = ", ".join(f"{CLASSES[q]} {int(conf[c, q])}" for q in conf[c].argsort(descending=True).tolist()
                        if conf[c, q] > 0)
        print(f"| {CLASSES[c]} | {pc['prompt']} | {pc['correct']}/{num} | {real_pc[CLASSES[c]]:.3f} | {top} |")
    print(f"| all | | {gen_acc:.3f} | {real_acc:.3f} | |")

    # grid: one row per class: label, a real test image, its reconstruction (if in the subset) | the samples
    scale, pad, label_w = 3, 4, 150
    cell = SIZE * scale
    cols = 2 + num
    W, H = label_w + cols * (cell + pad) + pad, 10 * (cell + pad) + pad + 18
    canvas = Image.new("L", (W, H), 255)
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w + pad, 2), "real", fill=0)
    draw.text((label_w + pad + (cell + pad), 2), "recon", fill=0)
    draw.text((label_w + pad + 2 * (cell + pad) + 4, 2), f"AR samples (CNN label correct = *), CFG "
              f"{report.get('guidance')}", fill=0)
    for c in range(10):
        y0 = 18 + pad + c * (cell + pad)
        draw.text((4, y0 + cell // 2 - 12), CLASSES[c], fill=0)
        draw.text((4, y0 + cell // 2 + 2), f"{int(conf[c, c])}/{num} correct", fill=0)
        j = int((y_sub == c).nonzero()[0, 0])
        canvas.paste(tile(real_sub[j], scale), (label_w + pad, y0))
        canvas.paste(tile(recon[j], scale), (label_w + pad + (cell + pad), y0))
        for k in range(num):
            x0 = label_w + pad + (2 + k) * (cell + pad)
            canvas.paste(tile(samples[c * num + k], scale), (x0, y0))
            if pred[c * num + k] == c:
                draw.text((x0 + 2, y0 + 1), "*", fill=255)
    grid_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(grid_path)

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    result = {
        "what": "class-conditional AR samples on Fashion-MNIST judged by an independent CNN trained on real pixels",
        "git_commit": commit,
        "cnn": {**cnn_info, "real_test_accuracy": round(real_acc, 4), "real_test_images": len(xte),
                "real_test_accuracy_per_class": real_pc},
        "reconstructions": {"tokenizer": str(args.tokenizer), "images": args.recon, "seed": args.seed,
                            "decode_steps": args.decode_steps, "sampler": "euler",
                            "cnn_accuracy": round(recon_acc, 4), "cnn_accuracy_same_real": round(real_sub_acc, 4),
                            "psnr_db": round(psnr, 2), "distinct_codes": int(codes.unique().numel())},
        "samples": {"gen": str(args.gen), "num_per_class": num, "guidance": report.get("guidance"),
                    "sampling": report.get("sampling"), "seed": report.get("seed"),
                    "cnn_accuracy": round(gen_acc, 4), "fraction_of_real": round(gen_acc / real_acc, 3),
                    "per_class": per_class, "confusion": conf.tolist(), "classes": CLASSES},
        "grid": str(grid_path),
        "seconds": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out} and {grid_path} ({result['seconds']} s)")
    if not math.isfinite(psnr):
        print("warning: PSNR not finite")


if __name__ == "__main__":
    main()
