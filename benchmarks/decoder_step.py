"""The decoder stage's step, by part: the decoder's forward + backward + AdamW, eager and with `torch.compile`.

    python benchmarks/decoder_step.py --tokenizer runs/demo/tokenizer [--batch 32] [--repeats 10] [--compile]
        [--out benchmarks/results/decoder_step.json]

Times, after two warm-up steps, the mean of `--repeats` steps of the export's decoder on random Z (the decoder's cost
does not depend on Z's values) and the frozen tokenizer's forward on cached-size features. With --compile, also the
decoder with its transformer blocks compiled in place (recipes/training/compile.py), and the first compiled step (the
compile). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import environment, print_table, write_json  # noqa: E402


def mean_seconds(fn, repeats: int) -> float:
    fn(), fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="an export folder with a decoder")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from armkit.recipes.training.compile import compile_blocks
    from armkit.tokenizer import Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer.from_pretrained(args.tokenizer).eval()
    dec = tok.decoder.train()
    images = torch.rand(args.batch, 3, *tok.encoder.image_size)  # the stage reads images at the encoder's size
    z = torch.randn(args.batch, tok.num_tokens, tok.embed_dim)
    opt = torch.optim.AdamW(dec.parameters(), lr=1e-5)

    def step() -> None:
        loss, _ = dec.loss(images, z)
        opt.zero_grad()
        loss.backward()
        opt.step()

    features = torch.randn(args.batch, tok.num_tokens, tok.encoder.width)  # what TeacherFeatureCache hands over
    rows = [{"part": "decoder fwd + bwd + AdamW (eager)", "seconds": mean_seconds(step, args.repeats)}]
    with torch.no_grad():
        rows.append({"part": "frozen tokenizer forward on features",
                     "seconds": mean_seconds(lambda: tok(None, features=features), args.repeats)})
    if args.compile:
        start = time.perf_counter()
        compiled = compile_blocks(dec)
        step()
        rows.append({"part": f"first step after compiling {len(compiled)} blocks",
                     "seconds": time.perf_counter() - start})
        rows.append({"part": "decoder fwd + bwd + AdamW (compiled)", "seconds": mean_seconds(step, args.repeats)})
    print_table(f"decoder stage step: {args.tokenizer}, batch {args.batch}, {torch.get_num_threads()} threads",
                rows, [("part", "part", "{}"), ("seconds", "s / step", "{:.3f}")])
    result = {"environment": environment(torch.device("cpu")), "command": " ".join(sys.argv), "rows": rows}
    write_json(result, args.out, announce=True)
    return result


if __name__ == "__main__":
    main()
