"""What `TeacherFeatureCache` saves per training step: the full step with the live teacher against cached features.

    python benchmarks/feature_cache.py --config recipes/tokenizer/demo.yaml [--rounds 5] [--out F.json]

Builds the recipe as `armkit train` does, writes the cache of the validation split (the same code path training
uses, `build_split`), and times one full training step (tokenizer forward, all losses, backward, AdamW step) on one
batch: with the teacher running, and with its features looked up by sample key. The two run in alternation for
`--rounds` rounds after a warm-up and the medians are compared, so load from other processes hits both alike.
Also reports the one-off cost of building the cache, per image. Needs `armkit assets` for demo.yaml.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import environment, print_table, write_json  # noqa: E402
from benchmarks.train_step import build  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    from armkit.recipes.tokenizer.feature_cache import FeatureTable, build_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    ap.add_argument("overrides", nargs="*", help="LightningCLI overrides (after --)")
    args = ap.parse_args(argv)
    module, data = build(args.config, list(args.overrides))
    data.setup("fit")
    module.train()
    tok, losses = module.tokenizer, module.losses
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "val.safetensors"
        started = time.perf_counter()
        build_split(tok.encoder, data.val_shards, data.image_size, path)
        table = FeatureTable(path)
        build_s = time.perf_counter() - started
    batch = next(iter(data.val_dataloader()))
    images, keys = batch["image"], list(batch["key"])
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)

    def step(cached: bool) -> float:
        t = time.perf_counter()
        out = tok(images, features=table.lookup(keys) if cached else None)
        total, _ = losses(out, batch, tok)
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    step(False), step(True)  # warm-up
    live, cached = [], []
    for _ in range(args.rounds):
        live.append(step(False))
        cached.append(step(True))
    a, b = statistics.median(live), statistics.median(cached)
    rows = [{"step": "live teacher", "ms": 1000 * a, "speedup": 1.0},
            {"step": "cached features", "ms": 1000 * b, "speedup": a / b}]
    print_table(f"{Path(args.config).name}: full training step, batch {len(keys)} (median of {args.rounds})", rows,
                [("step", "step", "{}"), ("ms", "ms / step", "{:.0f}"), ("speedup", "speedup", "{:.2f}x")])
    per_image = 1000 * build_s / len(table.row)
    print(f"cache build (one-off): {len(table.row)} images in {build_s:.1f} s, {per_image:.1f} ms per image")
    result = {"environment": environment(torch.device("cpu")), "command": " ".join(sys.argv), "rows": rows,
              "live_ms_all": [1000 * x for x in live], "cached_ms_all": [1000 * x for x in cached],
              "build_s": build_s, "build_images": len(table.row), "batch": len(keys)}
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
