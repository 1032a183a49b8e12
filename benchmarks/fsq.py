"""FSQ through armkit's `FSQQuantizer` against bare vector-quantize-pytorch `FSQ` (target: ratio <= 1.1).

    python benchmarks/fsq.py [--tokens 65536] [--repeats 20] [--out F.json]

Same input, same levels; forward only and forward+backward. armkit adds an autocast guard, an fp32 cast and an
int64 cast of the indices.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from vector_quantize_pytorch import FSQ

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from armkit.tokenizer import FSQQuantizer  # noqa: E402
from benchmarks.common import environment, print_table, write_json  # noqa: E402

LEVELS = {"paper [2]*16": [2] * 16, "cosmos [8,8,8,5,5,5]": [8, 8, 8, 5, 5, 5], "ifsq [17]*4": [17] * 4}


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compare(name: str, bare: FSQ, ours: FSQQuantizer, z: torch.Tensor, repeats: int) -> list[dict]:
    zg = z.clone().requires_grad_(True)
    runs = {"forward": (lambda: bare(z), lambda: ours(z)),
            "forward+backward": (lambda: bare(zg)[0].sum().backward(), lambda: ours(zg).codes.sum().backward())}
    rows = []
    for mode, (run_bare, run_ours) in runs.items():
        t_bare, t_ours = median_time(run_bare, repeats), median_time(run_ours, repeats)
        rows.append({"levels": name, "mode": mode, "bare_ms": 1000 * t_bare, "armkit_ms": 1000 * t_ours,
                     "ratio": t_ours / t_bare})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=65536, help="batch x tokens quantized per call")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for name, levels in LEVELS.items():
        ours = FSQQuantizer(levels=levels)
        bare = FSQ(levels=levels, preserve_symmetry=any(v == 2 for v in levels))
        rows += compare(name, bare, ours, torch.randn(args.tokens // 256, 256, len(levels)), args.repeats)
    result = {"benchmark": "fsq", "tokens": args.tokens, "repeats": args.repeats, "rows": rows,
              **environment(torch.device("cpu")), "command": " ".join([sys.executable, *sys.argv])}
    print_table(f"FSQ: {args.tokens} tokens per call, median of {args.repeats}", rows,
                [("levels", "levels", "{}"), ("mode", "mode", "{}"), ("bare_ms", "bare vqp ms", "{:.2f}"),
                 ("armkit_ms", "armkit ms", "{:.2f}"), ("ratio", "ratio", "{:.3f}")])
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
