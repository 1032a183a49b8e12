"""Which teacher features let the demo's tokens carry a 32-px image: held-out PSNR by stage set and conditioning.

    python benchmarks/teacher_stages.py --cache runs/bench/stages-cache.pt --steps 300 --eval-at 100 200 \
        --out benchmarks/results/teacher_stages.json --grids benchmarks/results

The demo's teacher is EfficientNet-Lite0 at 128 px. Its stage 3 (8x8x112) is semantic; stages 1 and 2 (32x32x24,
16x16x40) keep colour and layout. `TimmEncoder(stage=[...])` folds the finer maps space-to-depth onto stage 3's 8x8
grid, so the token count stays 64. Two measurements per stage set, on the emoji shards (train split to fit, the
first `--eval-limit` val images to score, PSNR at 32 px against the image read at 32 px, as `armkit eval`):
- **ridge**: a closed-form linear read-out of each token's 4x4 pixel patch from the unquantized features of its 3x3
  token neighbourhood: how much of the image the features carry, linearly, before any training;
- **pixel-only tokenizer**: the demo's down-projection (transformer, width 128), FSQ [8,8,8,5,5,5], up-projection to
  the teacher's width, and the demo's PixelDiT (x-prediction, logit-normal t), trained together on the pixel loss
  alone from the cached features (AdamW 1e-3, 20 warm-up steps, batch `--batch`, the same batches for every variant);
  scored with Euler 25 steps and with 1 step (for x-prediction, the network's clean-image estimate from pure noise:
  the decoder's mean). `cond_spatial` adds each token's embedding to the patches under it (decoders/dit.py).
Prints a table, writes JSON and one grid PNG per variant (8 val images, input | decode, 3x nearest neighbour).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as nnf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import add_training_args, load_or_build, print_table, run_info, select, write_json  # noqa: E402
from benchmarks.decoder_objective import baselines, psnr, read_split, save_grid  # noqa: E402

STAGE_SETS = {"3": [3], "2+3": [2, 3], "1+2+3": [1, 2, 3]}
VARIANTS = {  # name: (stage set, cond_spatial)
    "stage 3, cross-attention (the old demo)": ("3", False),
    "stage 3, + cond_spatial": ("3", True),
    "stages 2+3, cross-attention": ("2+3", False),
    "stages 2+3, + cond_spatial": ("2+3", True),
    "stages 1+2+3, + cond_spatial (the demo)": ("1+2+3", True),
}
DECODER = {"image_size": 32, "patch_size": 4, "width": 192, "depth": 4, "heads": 4, "cond_dropout": 0.1,
           "prediction": "x", "time_sampling": "logit_normal", "logit_mean": -0.8, "logit_std": 0.8}


@torch.no_grad()
def stage_features(images128: torch.Tensor, stages: list[int]) -> torch.Tensor:
    from armkit.tokenizer.encoders import TimmEncoder

    enc = TimmEncoder("efficientnet_lite0", weights="asset:efficientnet_lite0", image_size=128, stage=stages)
    out = [enc(images128[i:i + 128].float() / 255).half() for i in range(0, len(images128), 128)]
    return torch.cat(out)  # [N, 64, C]


def build_cache(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Each split's images at 32 px and, for every stage set, the teacher's features of them at 128 px."""
    cache = {}
    for split in ("train", "val"):
        cache[f"{split}_img32"] = read_split(args.data, split, 32, args.limit)
        big = read_split(args.data, split, 128, args.limit)
        for name, stages in STAGE_SETS.items():
            cache[f"{split}_feat_{name}"] = stage_features(big, stages)
    return cache


def patches(images: torch.Tensor, grid: int = 8) -> torch.Tensor:
    """[N, 3, 32, 32] -> [N * grid^2, 3 * p^2]: each token's pixel patch."""
    p = images.shape[-1] // grid
    return images.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * p * p)


def neighbourhoods(feats: torch.Tensor, grid: int = 8) -> torch.Tensor:
    """[N, grid^2, C] -> [N * grid^2, 9 C]: each token with its 3x3 neighbours (zero-padded)."""
    fmap = feats.float().transpose(1, 2).reshape(feats.shape[0], -1, grid, grid)
    return nnf.unfold(fmap, 3, padding=1).transpose(1, 2).reshape(-1, 9 * fmap.shape[1])


def ridge_psnr(cache: dict, name: str, limit: int, lam: float = 1.0) -> float:
    from torchmetrics.functional.image import peak_signal_noise_ratio as psnr_fn

    x_tr, x_va = neighbourhoods(cache[f"train_feat_{name}"]), neighbourhoods(cache[f"val_feat_{name}"][:limit])
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-5
    x_tr, x_va = (x_tr - mu) / sd, (x_va - mu) / sd
    x_tr, x_va = nnf.pad(x_tr, (0, 1), value=1.0), nnf.pad(x_va, (0, 1), value=1.0)  # bias column
    y_tr = patches(cache["train_img32"].float() / 255)
    w = torch.linalg.solve(x_tr.T @ x_tr + lam * torch.eye(x_tr.shape[1]), x_tr.T @ y_tr)
    val = cache["val_img32"][:limit].float() / 255
    pred = (x_va @ w).reshape(len(val), 8, 8, 3, 4, 4).permute(0, 3, 1, 4, 2, 5).reshape(val.shape)
    return float(psnr_fn(pred.clamp(0, 1), val, data_range=1.0, dim=(1, 2, 3)))


class PixelOnlyTokenizer(torch.nn.Module):
    """The demo tokenizer's trainable path on cached features: down -> FSQ -> up -> PixelDiT."""

    def __init__(self, width: int, spatial: bool) -> None:
        super().__init__()
        from armkit.decoders import PixelDiT
        from armkit.tokenizer.projections import make_projection
        from armkit.tokenizer.quantizer import FSQQuantizer

        self.quantizer = FSQQuantizer(levels=[8, 8, 8, 5, 5, 5])
        proj = dict(kind="transformer", width=128, depth=1, heads=4)
        self.down = make_projection(width, self.quantizer.dim, **proj)
        self.up = make_projection(self.quantizer.dim, width, **proj)
        self.decoder = PixelDiT(cond_dim=width, cond_spatial=spatial, **DECODER)

    def z(self, feats: torch.Tensor) -> torch.Tensor:
        return self.up(self.quantizer(self.down(feats))[0])


class Conditioned(torch.nn.Module):
    """`decoder.sample` on Z computed from features, so `psnr` of decoder_objective.py scores the whole path."""

    def __init__(self, model: PixelOnlyTokenizer, steps: int) -> None:
        super().__init__()
        self.model, self.steps = model, steps

    def sample(self, feats: torch.Tensor, *, steps: int, generator: torch.Generator) -> torch.Tensor:
        return self.model.decoder.sample(self.model.z(feats), steps=self.steps, generator=generator)


def train_variant(label: str, stage_set: str, spatial: bool, cache: dict, args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    train_img, train_feat = cache["train_img32"], cache[f"train_feat_{stage_set}"]
    val_img, val_feat = cache["val_img32"][:args.eval_limit], cache[f"val_feat_{stage_set}"][:args.eval_limit]
    model = PixelOnlyTokenizer(train_feat.shape[-1], spatial)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    data_gen, noise_gen = torch.Generator().manual_seed(args.seed), torch.Generator().manual_seed(args.seed + 1)
    curve, started, scoring, first = [], time.time(), 0.0, None
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train_img), (args.batch,), generator=data_gen)
        loss, _ = model.decoder.loss(train_img[idx].float() / 255, model.z(train_feat[idx].float()),
                                     generator=noise_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step in args.eval_at or step == args.steps:
            train_s = time.time() - started - scoring  # scoring time is not training time
            model.eval()
            p25, first = psnr(Conditioned(model, 25), val_img, val_feat, torch.device("cpu"))
            p1, _ = psnr(Conditioned(model, 1), val_img, val_feat, torch.device("cpu"))
            model.train()
            curve.append({"step": step, "psnr": p25, "psnr_1step": p1, "loss": float(loss.detach()),
                          "train_s": train_s})
            print(f"  {label} step {step}: PSNR {p25:.2f} dB (1 step {p1:.2f}), loss {loss.item():.4f}, "
                  f"{train_s:.0f} s training", flush=True)
            scoring = time.time() - started - train_s
    if args.grids:
        slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-").replace("--", "-")
        args.grids.mkdir(parents=True, exist_ok=True)
        save_grid(val_img, first, args.grids / f"teacher_stages-{slug}.png")
    row = {"variant": label, "stages": STAGE_SETS[stage_set], "cond_spatial": spatial, "curve": curve,
           "s_per_step": curve[-1]["train_s"] / args.steps}
    for point in curve:
        row[f"psnr@{point['step']}"] = point["psnr"]
        row[f"psnr1@{point['step']}"] = point["psnr_1step"]
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(ap, cache_help="tensor file of the cached images and features (made once)",
                      steps=300, eval_at=[100, 200],
                      eval_limit=96, eval_limit_help="val images scored (default 96)")
    ap.add_argument("--no-ridge", action="store_true")
    ap.add_argument("--grids", type=Path, help="folder for one grid PNG per variant")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    cache = load_or_build(args.cache, lambda: build_cache(args))
    print(f"train {len(cache['train_img32'])}, val {len(cache['val_img32'])} images; features " +
          ", ".join(f"{n}: {tuple(cache[f'train_feat_{n}'].shape[1:])}" for n in STAGE_SETS), flush=True)
    ridge = []
    if not args.no_ridge:
        for name in STAGE_SETS:
            ridge.append({"stages": name, "width": cache[f"train_feat_{name}"].shape[-1],
                          "psnr": ridge_psnr(cache, name, args.eval_limit)})
        print_table("ridge read-out of 32-px patches from unquantized features (3x3 tokens), held-out PSNR", ridge,
                    [("stages", "stages", "{}"), ("width", "channels", "{}"), ("psnr", "PSNR dB", "{:.2f}")])
    chosen = select(VARIANTS, args.variants)
    rows = [train_variant(name, *v, cache, args) for name, v in chosen.items()]
    points = sorted({p["step"] for r in rows for p in r["curve"]})
    columns = [("variant", "variant", "{}")]
    columns += [(f"psnr@{s}", f"PSNR @{s}", "{:.2f}") for s in points]
    columns += [(f"psnr1@{points[-1]}", f"1-step @{points[-1]}", "{:.2f}"), ("s_per_step", "s / step", "{:.2f}")]
    print_table(f"pixel-only tokenizer (FSQ, 64 tokens), batch {args.batch}: held-out PSNR at 32 px (Euler 25)",
                rows, columns)
    base = baselines(cache, args.eval_limit)
    for k, v in base.items():
        print(f"  for scale: {k}: {v:.2f} dB")
    result = {**run_info(torch.device("cpu"), args), "decoder": DECODER, "ridge": ridge, "rows": rows,
              "baselines": base}
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
