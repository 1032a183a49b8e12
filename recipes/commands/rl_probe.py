"""`armkit rl-probe --images SHARDS --out DIR`: fit the category probe a `CategoryProbe` reward reads, on real images.

Writes DIR/probe.safetensors and DIR/prompt_classes.json and prints the probe's accuracy on real train and val
images (recipes/rl/probe.py). The features are the AR evaluation's `PretrainedFeatures`, or with `--pixels SIZE`
`offline.PixelFeatures(size=SIZE)`: no network at all (recipes/rl/fmnist.yaml's reward, so GRPO never sees the
features of the classifier that judges it).

    armkit rl-probe --images data/fmnist-ar --out runs/rl-fmnist/probe --pixels 16 --size 32
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help="image shards (`armkit data ...`) with labels")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--weights", default="asset:efficientnet_lite0", help="feature network weights ('' = random)")
    parser.add_argument("--size", type=int, default=64, help="image size the shards are read at")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--pixels", type=int, default=None, metavar="SIZE",
                        help="PixelFeatures(size=SIZE) instead of a network (raw pixels, no standardisation)")
    parser.add_argument("--steps", type=int, default=300, help="probe solver steps (full-batch AdamW)")


def run(args: argparse.Namespace) -> int:
    from armkit.recipes.rl.probe import write_probe

    if args.pixels:
        from armkit.recipes.rl.offline import PixelFeatures

        features = PixelFeatures(size=args.pixels)
    else:
        from armkit.recipes.ar.evaluate import PretrainedFeatures

        features = PretrainedFeatures(weights=args.weights or None)
    accuracy = write_probe(images=args.images, out=args.out, features=features, size=args.size, limit=args.limit,
                           steps=args.steps, standardise=not args.pixels)
    print(json.dumps({"accuracy": accuracy, "out": str(args.out)}))
    return 0
