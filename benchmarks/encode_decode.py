"""Encode throughput against the frozen encoder alone (the ratio is what the tokenizer adds), and decode
throughput by sampler steps.

    python benchmarks/encode_decode.py --config recipes/tokenizer/demo.yaml [--batch-size 16] [--out F.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import environment, print_table, write_json  # noqa: E402
from benchmarks.train_step import build, timed  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 25, 50])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    module, _ = build(args.config, [])
    tok = module.tokenizer.to(device).eval()
    images = torch.rand(args.batch_size, 3, *tok.encoder.image_size, device=device)
    bs = args.batch_size
    rows = []
    with torch.no_grad():
        t_enc = timed(lambda: tok.encoder(images), args.repeats, device)
        t_tok = timed(lambda: tok.encode(images), args.repeats, device)
        rows.append({"what": "frozen encoder alone", "ms": 1000 * t_enc, "images_per_s": bs / t_enc, "ratio": 1.0})
        rows.append({"what": "tokenizer.encode (indices)", "ms": 1000 * t_tok, "images_per_s": bs / t_tok,
                     "ratio": t_tok / t_enc})
        indices = tok.encode(images)
        if tok.decoder is not None:
            for steps in args.steps:
                for sampler in ("euler", "heun"):
                    t = timed(lambda s=steps, m=sampler: tok.decode(indices, steps=s, sampler=m), 2, device)
                    rows.append({"what": f"decode {sampler} {steps} steps", "ms": 1000 * t, "images_per_s": bs / t,
                                 "ratio": t / t_enc})
    result = {"benchmark": "encode_decode", "config": args.config, "batch_size": bs, "rows": rows,
              **environment(device), "command": " ".join([sys.executable, *sys.argv])}
    print_table(f"encode / decode: {args.config}, batch {bs}", rows,
                [("what", "what", "{}"), ("ms", "ms / batch", "{:.0f}"), ("images_per_s", "images/s", "{:.1f}"),
                 ("ratio", "x encoder", "{:.2f}")])
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
