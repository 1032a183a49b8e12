"""What the demo recipe's two cost choices save, each measured against the alternative it replaced.

    python benchmarks/demo_choices.py [--rounds 5] [--out F.json]

1. Teacher: timm `efficientnet_lite0` against `tf_efficientnet_lite0`. The weights are the same, but the tf_ variant
   pads "same" dynamically. Measured as the forward of 16 images at 128 px.
2. Caption loss (the largest cost of a demo step): SmolLM2-135M reads Z pooled to 16 prefix tokens for 8 of the 16
   images, against all 64 tokens for all 16 images. Measured as the forward and backward through the frozen LM to the
   adapter.
Both sides of each pair run in alternation for `--rounds` rounds and the medians are compared, so load from other
processes hits both alike. Needs `armkit assets`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import environment, print_table, write_json  # noqa: E402


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compare(name: str, before, after, rounds: int) -> dict:
    before(), after()  # warm-up
    tb, ta = [], []
    for _ in range(rounds):
        tb.append(seconds(before))
        ta.append(seconds(after))
    b, a = statistics.median(tb), statistics.median(ta)
    return {"choice": name, "before_ms": 1000 * b, "after_ms": 1000 * a, "speedup": b / a}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from armkit.backbones import HFCausalLM
    from armkit.tokenizer.encoders import TimmEncoder
    from armkit.tokenizer.losses import CaptionLoss

    torch.manual_seed(0)
    rows = []
    images = torch.rand(16, 3, 128, 128)
    tf = TimmEncoder("tf_efficientnet_lite0", weights="asset:efficientnet_lite0", image_size=128, stage=3)
    lite = TimmEncoder("efficientnet_lite0", weights="asset:efficientnet_lite0", image_size=128, stage=3)
    with torch.no_grad():
        rows.append(compare("teacher: tf_efficientnet_lite0 -> efficientnet_lite0 (forward, 16 x 128 px)",
                            lambda: tf(images), lambda: lite(images), args.rounds))

    lm = HFCausalLM(path="asset:smollm2")
    full = CaptionLoss(lm=lm, embed_dim=112, max_length=16)
    cheap = CaptionLoss(lm=lm, embed_dim=112, max_length=16, prefix_tokens=16, max_samples=8)
    z = torch.randn(16, 64, 112)
    texts = ["a smiling face with heart eyes", "a red apple", "a dog face", "a rocket"] * 4

    class Grid:  # what CaptionLoss reads from the tokenizer
        grid = (8, 8)

    out = type("Out", (), {"z": z})()

    def step(loss):
        def run():
            zz = z.clone().requires_grad_(True)
            out.z = zz
            value, _ = loss(out, {"txt": texts}, Grid())
            value.backward()
        return run

    rows.append(compare("caption loss: 64 prefix tokens x 16 images -> 16 tokens x 8 images (fwd+bwd)",
                        step(full), step(cheap), args.rounds))
    result = {"benchmark": "demo_choices", "rounds": args.rounds, "rows": rows, **environment(torch.device("cpu")),
              "command": " ".join([sys.executable, *sys.argv])}
    print_table(f"demo cost choices, median of {args.rounds} alternating rounds", rows,
                [("choice", "choice", "{}"), ("before_ms", "before ms", "{:.0f}"), ("after_ms", "after ms", "{:.0f}"),
                 ("speedup", "speed-up", "{:.2f}x")])
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
