"""Which flow objective makes the demo's pixel decoder learn: held-out PSNR after an equal number of steps.

    python benchmarks/decoder_objective.py --cache runs/bench/emoji-cache.pt --steps 3000 --eval-at 200 400 800 1500 \
        --device cuda --out benchmarks/results/decoder_objective.json

Decoder-only training on frozen, cached conditions, so that nothing but the decoder differs between variants:
- data: the emoji shards (`armkit data emoji`), train split for training, all 338 val images for the score;
- condition: the frozen demo teacher's features F (EfficientNet-Lite0, 128 px, stage 3: 64 tokens x 112), computed
  once and cached (`--cache`). F is what the demo's Z is distilled towards; it stands in for a trained Z;
- decoder: the demo's PixelDiT (32 px, patch 4, width 192, depth 4), AdamW lr 1e-3 betas (0.9, 0.95), 20 warmup
  steps, batch `--batch`; every variant sees the same batches in the same order (one data generator seed);
- score: PSNR at 32 px against the image read at 32 px (armkit eval's protocol), Euler, 25 steps, seed 0, on the
  first `--eval-limit` val images: for the raw weights at each `--eval-at` step, and for an EMA of them (`--ema`)
  at the end.
Prints a table, writes JSON and one grid PNG per variant (8 val images, input | decode, 3x nearest neighbour).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import add_training_args, load_or_build, print_table, run_info, select, write_json  # noqa: E402

VARIANTS: dict[str, dict] = {
    "velocity, uniform t (paper)": {},
    "velocity, logit-normal(0, 1)": {"time_sampling": "logit_normal"},
    "x-pred, uniform t": {"prediction": "x"},
    "x-pred, logit-normal(-0.8, 0.8) (Back to Basics)": {"prediction": "x", "time_sampling": "logit_normal",
                                                         "logit_mean": -0.8, "logit_std": 0.8},
}
DECODER = {"image_size": 32, "patch_size": 4, "cond_dim": 112, "width": 192, "depth": 4, "heads": 4,
           "cond_dropout": 0.1}


def read_split(shards: Path, split: str, size: int, limit: int | None) -> torch.Tensor:
    """[N, 3, size, size] uint8, read as armkit's reader and eval read them (PIL bicubic, centre crop)."""
    from armkit.recipes.data.reader import ShardReader

    images = [s["image"] for s in ShardReader(str(shards), image_size=size, split=split, limit=limit)]
    return (torch.stack(images) * 255).round().to(torch.uint8)


@torch.no_grad()
def teacher_features(images128: torch.Tensor, device: torch.device) -> torch.Tensor:
    from armkit.tokenizer.encoders import TimmEncoder

    enc = TimmEncoder("efficientnet_lite0", weights="asset:efficientnet_lite0", image_size=128, stage=3).to(device)
    out = [enc(images128[i:i + 128].to(device).float() / 255).half().cpu() for i in range(0, len(images128), 128)]
    return torch.cat(out)  # [N, 64, 112]


def build_cache(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    """Each split's images at 32 px and the teacher's features of them at 128 px."""
    cache = {}
    for split in ("train", "val"):
        cache[f"{split}_img32"] = read_split(args.data, split, 32, args.limit)
        cache[f"{split}_feat"] = teacher_features(read_split(args.data, split, 128, args.limit), device)
    return cache


@torch.no_grad()
def psnr(decoder, images: torch.Tensor, feats: torch.Tensor, device: torch.device, *, steps: int = 25,
         batch: int = 128) -> tuple[float, torch.Tensor]:
    """Mean per-image PSNR (torchmetrics, data_range 1) and the first 8 decodes."""
    from torchmetrics.image import PeakSignalNoiseRatio

    metric = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    first = None
    decoder.eval()
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device).float() / 255
        recon = decoder.sample(feats[i:i + batch].to(device).float(), steps=steps, generator=gen).clamp(0, 1)
        metric.update(recon, x)
        first = recon[:8].cpu() if first is None else first
    decoder.train()
    return float(metric.compute()), first


def save_grid(images: torch.Tensor, recon: torch.Tensor, path: Path) -> None:
    from torchvision.utils import make_grid, save_image

    pairs = torch.stack([images[:8].float() / 255, recon], dim=1).flatten(0, 1)
    pairs = torch.nn.functional.interpolate(pairs, scale_factor=3, mode="nearest")
    save_image(make_grid(pairs, nrow=8, padding=4, pad_value=1.0), path)


def train_variant(name: str, overrides: dict, cache: dict, args: argparse.Namespace, device: torch.device) -> dict:
    from armkit.decoders import PixelDiT

    torch.manual_seed(args.seed)
    dec = PixelDiT(**DECODER, **overrides).to(device)
    ema = copy.deepcopy(dec).requires_grad_(False)
    opt = torch.optim.AdamW(dec.parameters(), lr=args.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    data_gen = torch.Generator().manual_seed(args.seed)  # the same batches for every variant
    noise_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    train_img, train_feat = cache["train_img32"], cache["train_feat"]
    curve, started = [], time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train_img), (args.batch,), generator=data_gen)
        loss, _ = dec.loss(train_img[idx].to(device).float() / 255, train_feat[idx].to(device).float(),
                           generator=noise_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), dec.parameters()):
                pe.lerp_(p, 1 - args.ema)
        if step in args.eval_at or step == args.steps:
            train_s = time.time() - started
            val_img, val_feat = cache["val_img32"][:args.eval_limit], cache["val_feat"][:args.eval_limit]
            raw, first = psnr(dec, val_img, val_feat, device)
            smooth, first_ema = psnr(ema, val_img, val_feat, device) if step == args.steps else (None, None)
            curve.append({"step": step, "psnr": raw, "psnr_ema": smooth, "loss": float(loss.detach()),
                          "train_s": train_s})
            ema_text = f" (EMA {smooth:.2f})" if smooth is not None else ""
            print(f"  {name} step {step}: PSNR {raw:.2f} dB{ema_text}, loss {float(loss):.4f}, "
                  f"{train_s:.0f} s training", flush=True)
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    if args.grids:
        args.grids.mkdir(parents=True, exist_ok=True)
        save_grid(cache["val_img32"], first, args.grids / f"{slug}.png")
        save_grid(cache["val_img32"], first_ema, args.grids / f"{slug}-ema.png")
    last = curve[-1]
    return {"variant": name, "overrides": overrides, "steps": args.steps, "psnr": last["psnr"],
            "psnr_ema": last["psnr_ema"], "curve": curve, "s_per_step": last["train_s"] / args.steps}


def baselines(cache: dict, limit: int) -> dict[str, float]:
    """PSNR of answers that need no decoder, on the same val images: the mean training image; each image's exact
    8x8 and 16x16 thumbnail."""
    from torchmetrics.functional.image import peak_signal_noise_ratio as psnr_fn

    val = cache["val_img32"][:limit].float() / 255
    mean = (cache["train_img32"].float() / 255).mean(0, keepdim=True).expand_as(val)
    out = {"mean training image": float(psnr_fn(mean, val, data_range=1.0, dim=(1, 2, 3)))}
    for side in (8, 16):
        small = torch.nn.functional.interpolate(val, size=side, mode="area")
        thumb = torch.nn.functional.interpolate(small, size=32, mode="nearest")
        out[f"exact {side}x{side} thumbnail"] = float(psnr_fn(thumb, val, data_range=1.0, dim=(1, 2, 3)))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(ap, cache_help="tensor file of the cached images and teacher features (made once)",
                      steps=400, eval_at=[],
                      eval_limit=338, eval_limit_help="val images scored (default all 338)")
    ap.add_argument("--ema", type=float, default=0.99, help="EMA decay of the decoder's weights (default 0.99)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--grids", type=Path, help="folder for one grid PNG per variant")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cache = load_or_build(args.cache, lambda: build_cache(args, device))
    print(f"train {len(cache['train_img32'])}, val {len(cache['val_img32'])} images; features "
          f"{tuple(cache['train_feat'].shape[1:])}", flush=True)
    chosen = select(VARIANTS, args.variants)
    rows = [train_variant(name, o, cache, args, device) for name, o in chosen.items()]
    print_table(f"decoder-only, {args.steps} steps of batch {args.batch}: held-out PSNR at 32 px (Euler 25, seed 0)",
                rows, [("variant", "variant", "{}"), ("psnr", "PSNR dB", "{:.2f}"),
                       ("psnr_ema", f"EMA {args.ema} PSNR dB", "{:.2f}"), ("s_per_step", "s / step", "{:.3f}")])
    base = baselines(cache, args.eval_limit)
    for k, v in base.items():
        print(f"  for scale: {k}: {v:.2f} dB")
    result = {**run_info(device, args), "decoder": DECODER, "rows": rows, "baselines": base}
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
