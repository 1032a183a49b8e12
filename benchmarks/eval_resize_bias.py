"""What issue 15's first eval defect cost: the teacher's tokens from images read at the decoder's size (then upsampled
by the encoder, as `armkit eval` did) against tokens from images read at the encoder's size (what training encodes).

    python benchmarks/eval_resize_bias.py --data data/emoji [--encoder-size 128] [--decoder-size 32] [--limit 128]

Needs `armkit assets` (the demo's EfficientNet-Lite0 teacher). Prints per-token cosine between the two feature sets
(1.0 would mean no bias) and how often the nearest of the two matches, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as nnf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from armkit.recipes.data.reader import ShardReader  # noqa: E402
from armkit.tokenizer.encoders import TimmEncoder  # noqa: E402
from benchmarks.common import environment, print_table  # noqa: E402


def features(encoder: TimmEncoder, data: str, size: int, limit: int) -> torch.Tensor:
    """F [n, N, C] of the first `limit` val images read at `size` (the encoder resizes them to its own size)."""
    out = []
    with torch.no_grad():
        for batch in ShardReader(data, image_size=size, batch_size=32, limit=limit, split="val"):
            out.append(encoder(batch["image"]).float())
    return torch.cat(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--encoder-size", type=int, default=128)
    parser.add_argument("--decoder-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_resize_bias.json"))
    args = parser.parse_args(argv)
    encoder = TimmEncoder("efficientnet_lite0", weights="asset:efficientnet_lite0", image_size=args.encoder_size,
                          stage=3).eval()
    rows = []
    right = features(encoder, args.data, args.encoder_size, args.limit)  # what training encodes
    for size in sorted({args.decoder_size, args.encoder_size // 2, args.encoder_size}):
        other = features(encoder, args.data, size, args.limit)
        cos = nnf.cosine_similarity(other, right, dim=-1)  # [n, N]
        per_image = cos.mean(dim=1)
        rows.append({"read_at": size, "encoder_size": args.encoder_size, "images": int(cos.shape[0]),
                     "token_cosine_mean": float(cos.mean()), "per_image_min": float(per_image.min()),
                     "per_image_max": float(per_image.max()),
                     "relative_l2": float((other - right).norm() / right.norm())})
    print_table(f"teacher tokens: images read at S and resized by the encoder vs read at {args.encoder_size} "
                f"({args.data})", rows,
                [("read_at", "read at S px", "{}"), ("images", "images", "{}"),
                 ("token_cosine_mean", "token cosine", "{:.3f}"), ("per_image_min", "per-image min", "{:.3f}"),
                 ("per_image_max", "per-image max", "{:.3f}"), ("relative_l2", "relative L2", "{:.3f}")])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": environment(torch.device("cpu")), "data": args.data,
                                    "rows": rows, "command": " ".join(sys.argv)}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
