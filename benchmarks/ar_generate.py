"""AR stage cost: generation tokens/s with and without the KV cache at 256 and 1,024 image tokens, the cost of CFG,
and the full softmax head against the factorized FSQ head (speed, memory, loss after equal steps).

    python benchmarks/ar_generate.py --preset tiny --device cpu                 # this project's CPU machine
    python benchmarks/ar_generate.py --preset qwen2.5-0.5b --device cuda --dtype bfloat16

Models are random-init `ARModel`s of a transformers config (no weights needed): generation speed does not depend on
the weights. The codebook is the paper's FSQ [2]*16 (65,536 codes). Generation: text-to-image, batch --batch, greedy
ids would be the same with or without the cache (tests/test_ar_generate.py), so sampling is plain temperature 1.
The head comparison trains each head for --train-steps on synthetic codes with known structure: 16 classes, each a
fixed random template of codes, 25% of positions replaced by a uniform code; the prompt names the class. Its loss
floor (the data's entropy per visual token given the prompt) is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # `python benchmarks/ar_generate.py`: make `armkit` and `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from armkit.backbones import sequence as S  # noqa: E402
from armkit.backbones.ar import ARModel  # noqa: E402
from armkit.backbones.generate import Sampling, generate_image  # noqa: E402
from benchmarks.common import environment, print_table  # noqa: E402

PRESETS = {
    "tiny": dict(model_type="qwen2", hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=True, rope_theta=1000000.0),
}
LEVELS = [2] * 16
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(preset: str, head: str, device: torch.device, dtype: str) -> ARModel:
    return ARModel(codebook_size=math.prod(LEVELS), levels=LEVELS, head=head, max_grid=64,
                   config=PRESETS[preset], dtype=dtype, seed=0).to(device).eval()


def time_generation(model: ARModel, tokens: int, *, batch: int, cfg: bool, cache: bool,
                    device: torch.device) -> float:
    side = int(math.isqrt(tokens))
    grid = (side, side)
    v = model.vocab
    cond = [S.text_to_image_prompt(v, model.codec.encode("a photo of a cat"), grid)] * batch
    weaker = [[S.text_to_image_prompt(v, [], grid)] * batch] if cfg else []
    gen = torch.Generator(device=device).manual_seed(0)
    sync(device)
    start = time.perf_counter()
    codes = generate_image(model, cond, grid, weaker=weaker, scales=[1.5] if cfg else [], sampling=Sampling(1.0),
                           generator=gen, use_cache=cache)
    sync(device)
    assert codes.shape == (batch, tokens)
    return time.perf_counter() - start


def generation_rows(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    for head in args.heads:
        model = build(args.preset, head, device, args.dtype)
        time_generation(model, 16, batch=args.batch, cfg=True, cache=True, device=device)  # warm-up
        time_generation(model, 16, batch=args.batch, cfg=True, cache=False, device=device)
        for tokens in args.tokens:
            for cfg, cache in ((True, True), (True, False), (False, True)):
                if not cache and head != args.heads[0]:
                    continue  # recomputation cost does not depend on the head
                seconds = time_generation(model, tokens, batch=args.batch, cfg=cfg, cache=cache, device=device)
                rows.append({"head": head, "image_tokens": tokens, "cfg": cfg, "kv_cache": cache,
                             "seconds": seconds, "tokens_per_s": args.batch * tokens / seconds})
                print(f"  {head} {tokens} tokens cfg={cfg} cache={cache}: {seconds:.2f} s", flush=True)
        del model
    for r in rows:
        same = [o for o in rows if o["image_tokens"] == r["image_tokens"] and o["cfg"] and o["kv_cache"]
                and o["head"] == args.heads[0]]
        if not r["kv_cache"] and same:
            r["cache_speedup"] = same[0]["seconds"] and r["seconds"] / same[0]["seconds"]
        if not r["cfg"]:
            with_cfg = [o for o in rows if o["image_tokens"] == r["image_tokens"] and o["cfg"] and o["kv_cache"]
                        and o["head"] == r["head"]]
            r["cfg_cost"] = with_cfg[0]["seconds"] / r["seconds"]
    return rows


def synthetic_batch(model: ARModel, rng: torch.Generator, *, batch: int, grid: tuple[int, int],
                    templates: torch.Tensor, noise: float) -> S.SeqBatch:
    v, n = model.vocab, grid[0] * grid[1]
    classes = torch.randint(0, len(templates), (batch,), generator=rng)
    codes = templates[classes].clone()  # [B, n]
    replace = torch.rand(batch, n, generator=rng) < noise
    codes[replace] = torch.randint(0, v.codebook_size, (int(replace.sum()),), generator=rng)
    seqs = [S.text_to_image(v, model.codec.encode(f"class {int(c)}"), codes[i].tolist(), grid)
            for i, c in enumerate(classes)]
    return S.collate(v, seqs)


def entropy_floor(codebook: int, noise: float) -> float:
    """Entropy per visual token of 'template with prob 1 - noise, else uniform' given the class."""
    p_hit = 1 - noise + noise / codebook
    p_other = noise / codebook
    return -(p_hit * math.log(p_hit) + (codebook - 1) * p_other * math.log(p_other))


def head_rows(args: argparse.Namespace, device: torch.device) -> list[dict]:
    grid, rows = (args.train_grid, args.train_grid), []
    for head in args.heads:
        model = build(args.preset, head, device, "float32").train()
        rng = torch.Generator().manual_seed(0)
        templates = torch.randint(0, model.vocab.codebook_size, (16, grid[0] * grid[1]), generator=rng)
        opt = torch.optim.AdamW([p for p in model.parameters()], lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, losses = [], []
        autocast = torch.autocast(device.type, dtype=DTYPES[args.dtype], enabled=args.dtype != "float32")
        for _ in range(args.train_steps):
            batch = [t.to(device) for t in synthetic_batch(model, rng, batch=args.train_batch, grid=grid,
                                                           templates=templates, noise=0.25)]
            sync(device)
            start = time.perf_counter()
            with autocast:
                out = model(*batch)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
            times.append(time.perf_counter() - start)
            losses.append(out.visual_loss.item())
        head_params = sum(p.numel() for p in model.visual_head.parameters())
        rows.append({"head": head, "ms_per_step": 1000 * statistics.median(times[2:] or times),
                     "head_params": head_params,
                     "peak_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                     else None,
                     "visual_logits_per_token": model.visual_head.out_features,
                     "loss_first": statistics.mean(losses[:5]), "loss_last": statistics.mean(losses[-10:])})
        print(f"  {head}: {rows[-1]['ms_per_step']:.1f} ms/step, loss {rows[-1]['loss_first']:.2f} -> "
              f"{rows[-1]['loss_last']:.2f}", flush=True)
        del model, opt
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--batch", type=int, default=1, help="images generated at once (CFG doubles the rows)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024], help="image tokens (squares)")
    parser.add_argument("--heads", nargs="+", default=["full", "factorized"])
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-grid", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["generation", "heads"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ar_generate.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    result = {"environment": environment(device), "command": " ".join(sys.argv), "preset": PRESETS[args.preset],
              "codebook": {"levels": LEVELS, "size": math.prod(LEVELS)}, "dtype": args.dtype}
    with torch.inference_mode(False):
        if "generation" not in args.skip:
            result["generation"] = rows = generation_rows(args, device)
            print_table(f"Generation ({args.preset}, {args.dtype}, batch {args.batch}, {device})", rows, [
                ("head", "head", "{}"), ("image_tokens", "image tokens", "{}"), ("cfg", "CFG", "{}"),
                ("kv_cache", "KV cache", "{}"), ("seconds", "seconds", "{:.2f}"),
                ("tokens_per_s", "image tokens/s", "{:.1f}")])
            for r in rows:
                if "cache_speedup" in r:
                    print(f"KV cache speed-up at {r['image_tokens']} tokens (CFG on): {r['cache_speedup']:.1f}x")
                if "cfg_cost" in r:
                    print(f"CFG cost at {r['image_tokens']} tokens, {r['head']} head: {r['cfg_cost']:.2f}x the time")
        if "heads" not in args.skip:
            result["heads"] = rows = head_rows(args, device)
            result["loss_floor"] = entropy_floor(math.prod(LEVELS), 0.25)
            print_table(f"Full vs factorized head ({args.train_steps} steps, batch {args.train_batch}, "
                        f"{args.train_grid}x{args.train_grid} tokens; loss floor {result['loss_floor']:.2f} nats)",
                        rows, [("head", "head", "{}"), ("ms_per_step", "ms / train step", "{:.1f}"),
                               ("head_params", "head params", "{:,}"),
                               ("visual_logits_per_token", "logits / token", "{:,}"),
                               ("peak_mem_mib", "peak MiB", "{}"), ("loss_first", "loss, first 5", "{:.3f}"),
                               ("loss_last", "loss, last 10", "{:.3f}")])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
