"""AR stage cost: generation tokens/s with and without the KV cache at 256 and 1,024 image tokens, the cost of CFG,
armkit's decode against transformers' own generate(), GRPO rollout throughput, and the full softmax head against the
factorized FSQ head (speed, memory, loss after equal steps).

    python benchmarks/ar_generate.py --quick                                    # seconds: tiny sizes, CPU
    python benchmarks/ar_generate.py --preset tiny --device cpu                 # this project's CPU machine
    python benchmarks/ar_generate.py --preset tiny --kv-presets tiny small --estimate-recompute small:1024 \
        --device cpu --repeats 1                                                 # + the KV speed-up of a 24M trunk
    python benchmarks/ar_generate.py --preset qwen2.5-0.5b --device cuda --dtype bfloat16 --batch 8 --compile

Models are random-init `ARModel`s of a transformers config (no weights needed): generation speed does not depend on
the weights. The codebook is the paper's FSQ [2]*16 (65,536 codes). Generation: text-to-image, batch --batch, greedy
ids would be the same with or without the cache (tests/test_ar_generate.py), so sampling is plain temperature 1.
The summary (one run, side by side, written to --out, default benchmarks/results/ar-generate.json):

- kv_speedup_1024: recomputation time / KV-cache time at 1,024 image tokens (CFG on, first head), null unless 1,024
  is among --tokens (kv_speedup holds every measured size), for the preset named by protocol.kv_speedup_preset
  (--kv-headline); protocol.kv_speedup_1024_recompute says whether its recomputation was "measured" or
  "estimated" (--estimate-recompute: from timed steps, see recompute_estimate); kv_speedup_by_preset holds every
  --kv-presets entry's speed-ups, each labelled the same way, and kv_preset_sizes their parameter counts;
- overhead_vs_hf_generate: armkit's cached decode of N image tokens (no CFG, batch --batch, the largest --tokens)
  over transformers' own `generate()` of the same model as a plain causal LM (backbones/hf_export.py: the same
  trunk, vocabulary T + S + C) sampling the same N new tokens from the same prompts (DynamicCache, its default), also
  with cache_implementation="static"; and the exported model's generate() with armkit's logits processors;
- images_per_s: {"cfg": .., "no_cfg": ..} at the largest --tokens (and "cfg_compiled" with --compile);
- grpo_rollout_images_per_s: recipes/rl/rollout.py's sample_groups (--rollout-prompts x --group-size images);
- protocol: the git commit (protocol.git.commit), the command, the environment, the sizes.

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
from armkit.backbones.generate import Sampling, TokenStream, _VisualSampler, generate_image  # noqa: E402
from armkit.recipes.evaluation.provenance import git_state  # noqa: E402
from benchmarks.common import environment, print_table  # noqa: E402

PRESETS = {
    "tiny": dict(model_type="qwen2", hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2),
    # ~24M trunk parameters (8 layers, width 512; 91.6M with the 65,536-code embedding and full head): the smallest
    # size at which a CPU shows what the KV cache saves a real model, not the per-call overhead of `tiny`
    "small": dict(model_type="qwen2", hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=2),
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


def prompts(model: ARModel, tokens: int, batch: int, cfg: bool) -> tuple[tuple[int, int], list, list]:
    side = int(math.isqrt(tokens))
    grid = (side, side)
    v = model.vocab
    cond = [S.text_to_image_prompt(v, model.codec.encode("a photo of a cat"), grid)] * batch
    weaker = [[S.text_to_image_prompt(v, [], grid)] * batch] if cfg else []
    return grid, cond, weaker


def time_generation(model: ARModel, tokens: int, *, batch: int, cfg: bool, cache: bool,
                    device: torch.device, compile: bool = False) -> float:
    grid, cond, weaker = prompts(model, tokens, batch, cfg)
    gen = torch.Generator(device=device).manual_seed(0)
    sync(device)
    start = time.perf_counter()
    codes = generate_image(model, cond, grid, weaker=weaker, scales=[1.5] if cfg else [], sampling=Sampling(1.0),
                           generator=gen, use_cache=cache, compile=compile)
    sync(device)
    assert codes.shape == (batch, tokens)
    return time.perf_counter() - start


def recompute_estimate(model: ARModel, tokens: int, *, batch: int, points: int, device: torch.device) -> dict:
    """Seconds that recomputation (CFG on) would take for `tokens` image tokens, from `points` timed steps.

    A recomputing step at sequence length L is `TokenStream.feed` with use_cache=False (the trunk over all L ids)
    and the visual sampler, the same calls `generate_image(use_cache=False)` makes. The steps run at L = P .. P+n-1
    (P the prompt, the first one being the prefill); `points` lengths evenly spread over them are each timed (one
    warm-up, then the mean of two calls), the cost in between is interpolated linearly, and the n steps are summed.
    Used where a full recomputing run would take too long (--estimate-recompute); also reported next to every
    measured recomputation, to show how close the estimate comes."""
    grid, cond, weaker = prompts(model, tokens, batch, True)
    v, n = model.vocab, grid[0] * grid[1]
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        stream = TokenStream(model, [*cond, *weaker[0]], use_cache=False, max_new_tokens=n - 1)
        sampler = _VisualSampler(model, 2, [1.5], Sampling(1.0), gen, stream.ids.device)
        p = stream.prompt_length
        fill = torch.randint(0, v.codebook_size, (batch, n - 1), generator=gen, device=device) + v.visual_start
        stream.ids[:, p:] = fill.repeat(2, 1)
        lengths = sorted({round(p + k * (n - 1) / (points - 1)) for k in range(points)})

        def step(length: int) -> None:
            stream.length = length - 1
            stream.feed(stream.ids[:, length - 1].clone())
            sampler(stream.hidden)

        costs = []
        for length in lengths:
            step(length)
            times = []
            for _ in range(2):
                sync(device)
                start = time.perf_counter()
                step(length)
                sync(device)
                times.append(time.perf_counter() - start)
            costs.append(statistics.mean(times))
    total = 0.0
    for (a, ca), (b, cb) in zip(zip(lengths, costs), zip(lengths[1:], costs[1:])):  # lengths a .. b-1
        total += sum(ca + (cb - ca) * (x - a) / (b - a) for x in range(a, b))
    total += costs[-1]  # the last length
    return {"seconds": total, "lengths": lengths, "step_s": costs}


def preset_sizes(model: ARModel) -> dict:
    return {"trunk_params": sum(p.numel() for p in model.lm.base_model.parameters()),
            "params": sum(p.numel() for p in model.parameters())}


def generation_rows(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """The main --preset: every head, CFG on and off, recomputation with the first head. Every other --kv-presets
    entry: the first head only, CFG on, cached and recomputed (the KV speed-up). A (preset, tokens) pair in
    --estimate-recompute is not recomputed in full: its time is `recompute_estimate`'s (row "timing": "estimated")."""
    rows = []
    presets = [args.preset, *(p for p in args.kv_presets if p != args.preset)]
    for preset in presets:
        for head in args.heads if preset == args.preset else args.heads[:1]:
            model = build(preset, head, device, args.dtype)
            args.sizes.setdefault(preset, preset_sizes(model))
            time_generation(model, 16, batch=args.batch, cfg=True, cache=True, device=device)  # warm-up
            time_generation(model, 16, batch=args.batch, cfg=True, cache=False, device=device)
            for tokens in args.tokens:
                for cfg, cache in ((True, True), (True, False), (False, True)):
                    if not cache and head != args.heads[0]:
                        continue  # recomputation cost does not depend on the head
                    if not cfg and preset != args.preset:
                        continue
                    row = {"preset": preset, "head": head, "image_tokens": tokens, "cfg": cfg, "kv_cache": cache}
                    if not cache and (preset, tokens) in args.estimate_recompute:
                        estimate = recompute_estimate(model, tokens, batch=args.batch, points=args.estimate_points,
                                                      device=device)
                        seconds, row["timing"], row["estimate"] = estimate["seconds"], "estimated", estimate
                    else:
                        seconds = time_generation(model, tokens, batch=args.batch, cfg=cfg, cache=cache,
                                                  device=device)
                        row["timing"] = "measured"
                        if not cache and args.estimate_points:  # the estimator beside a measurement
                            row["estimate"] = recompute_estimate(model, tokens, batch=args.batch,
                                                                 points=args.estimate_points, device=device)
                    row.update(seconds=seconds, tokens_per_s=args.batch * tokens / seconds)
                    rows.append(row)
                    extra = (f" (estimate {row['estimate']['seconds']:.2f} s)"
                             if "estimate" in row and row["timing"] == "measured" else "")
                    print(f"  {preset} {head} {tokens} tokens cfg={cfg} cache={cache}: {seconds:.2f} s "
                          f"{row['timing']}{extra}", flush=True)
            del model
    for r in rows:
        same = [o for o in rows if o["preset"] == r["preset"] and o["image_tokens"] == r["image_tokens"]
                and o["cfg"] and o["kv_cache"] and o["head"] == args.heads[0]]
        if not r["kv_cache"] and same:
            r["cache_speedup"] = same[0]["seconds"] and r["seconds"] / same[0]["seconds"]
        if not r["cfg"]:
            with_cfg = [o for o in rows if o["preset"] == r["preset"] and o["image_tokens"] == r["image_tokens"]
                        and o["cfg"] and o["kv_cache"] and o["head"] == r["head"]]
            r["cfg_cost"] = with_cfg[0]["seconds"] / r["seconds"]
    return rows


def t2i_rows(model: ARModel, grid: tuple[int, int], batch: int, texts: list[str] | None = None) -> list[list[int]]:
    texts = texts or ["a photo of a cat"] * batch
    return [S.text_to_image_prompt(model.vocab, model.codec.encode(t), grid) for t in texts]


def best_of(fn, repeats: int, device: torch.device, warm=None) -> float:
    """One warm-up call (`warm`, else `fn`), then the fastest of `repeats` timed calls of `fn` (seconds). A short
    warm-up does for eager code; compiled code (shapes fixed by the static cache's length) warms up on `fn` itself."""
    (warm or fn)()
    times = []
    for _ in range(max(repeats, 1)):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def summary(args: argparse.Namespace, device: torch.device, generation: list[dict] | None) -> dict:
    """The side-by-side numbers of the module docstring (full head: the one transformers can run as a plain LM)."""
    from armkit.backbones import hf_processors
    from armkit.backbones.hf_export import sequence_meta, to_hf_causal_lm
    from armkit.backbones.sequence import left_pad
    from armkit.recipes.rl.rollout import sample_groups, visual_logprobs

    out: dict = {}
    by_preset: dict = {}
    for r in generation or []:
        if "cache_speedup" in r:
            by_preset.setdefault(r["preset"], {})[str(r["image_tokens"])] = {
                "speedup": r["cache_speedup"], "recompute": r["timing"], "recompute_s": r["seconds"],
                "cached_s": r["seconds"] / r["cache_speedup"],
                **({"recompute_estimate_s": r["estimate"]["seconds"]} if "estimate" in r else {})}
    headline = by_preset.get(args.kv_headline, {})
    out["kv_speedup"] = {k: headline[k]["speedup"] for k in sorted(headline, key=int)}
    out["kv_speedup_1024"] = headline["1024"]["speedup"] if "1024" in headline else None
    out["kv_speedup_by_preset"] = by_preset

    model = build(args.preset, "full", device, args.dtype)
    n = max(args.tokens)
    side = int(math.isqrt(n))
    grid, b = (side, side), args.batch
    n = side * side
    timings: dict = {}

    def armkit(cfg: bool, compile: bool = False) -> float:
        def run(tokens: int) -> float:
            return time_generation(model, tokens, batch=b, cfg=cfg, cache=True, device=device, compile=compile)
        return best_of(lambda: run(n), args.repeats, device, warm=None if compile else lambda: run(16))

    timings["armkit_cached_s"] = armkit(False)
    timings["armkit_cached_cfg_s"] = armkit(True)
    errors: dict = {}

    def attempt(name: str, fn) -> None:  # an optional variant that fails is recorded, not fatal
        try:
            timings[name] = fn()
        except Exception as e:  # noqa: BLE001
            errors[name] = " ".join(f"{type(e).__name__}: {e}".split())[:500]
            print(f"  {name} failed: {errors[name]}", flush=True)

    if args.compile:
        attempt("armkit_compiled_s", lambda: armkit(False, True))
        attempt("armkit_compiled_cfg_s", lambda: armkit(True, True))
    print(f"  armkit cached decode, {n} tokens x {b}: {timings['armkit_cached_s']:.3f} s", flush=True)

    lm = to_hf_causal_lm(model)
    ids, mask = (t.to(device) for t in left_pad(model.vocab, t2i_rows(model, grid, b)))
    plain = dict(max_new_tokens=n, min_new_tokens=n, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                 pad_token_id=model.vocab.pad)

    def hf(full_warm: bool = False, **kwargs) -> float:
        def call(**kwargs) -> None:
            torch.manual_seed(0)
            with torch.no_grad():
                new = lm.generate(input_ids=ids, attention_mask=mask, **kwargs).shape[1] - ids.shape[1]
            assert new == kwargs["max_new_tokens"], new
        short = {**plain, "max_new_tokens": 16, "min_new_tokens": 16}
        return best_of(lambda: call(**kwargs), args.repeats, device,
                       warm=None if full_warm else lambda: call(**short))

    timings["hf_generate_s"] = hf(**plain)
    attempt("hf_generate_static_s", lambda: hf(True, **plain, cache_implementation="static"))
    meta = sequence_meta(model, grid=grid)
    gen = torch.Generator(device=device).manual_seed(0)
    timings["hf_export_processors_s"] = hf(**hf_processors.image_generate_kwargs(
        meta, grid, prompt_length=ids.shape[1], batch=b, temperature=1.0, generator=gen))
    print(f"  transformers generate(): {timings['hf_generate_s']:.3f} s (static cache "
          f"{timings.get('hf_generate_static_s', float('nan')):.3f} s; export + armkit processors "
          f"{timings['hf_export_processors_s']:.3f} s)", flush=True)
    lm = None  # freed before the rollout

    def ratio(a: str, b: str) -> float | None:
        return timings[a] / timings[b] if a in timings and b in timings else None

    out["overhead_vs_hf_generate"] = ratio("armkit_cached_s", "hf_generate_s")
    out["overhead_vs_hf_generate_static"] = ratio("armkit_cached_s", "hf_generate_static_s")
    out["compiled_vs_hf_generate_static"] = ratio("armkit_compiled_s", "hf_generate_static_s")
    out["images_per_s"] = {"cfg": b / timings["armkit_cached_cfg_s"], "no_cfg": b / timings["armkit_cached_s"]}
    for key, name in (("cfg_compiled", "armkit_compiled_cfg_s"), ("no_cfg_compiled", "armkit_compiled_s")):
        if name in timings:
            out["images_per_s"][key] = b / timings[name]
    out["image_tokens"], out["batch"], out["timings_s"], out["errors"] = n, b, timings, errors

    r_side = int(math.isqrt(args.rollout_tokens))
    r_grid = (r_side, r_side)
    prompts = t2i_rows(model, r_grid, args.rollout_prompts, [f"prompt {i}" for i in range(args.rollout_prompts)])
    images = args.rollout_prompts * args.group_size
    state: dict = {}

    def rollout() -> None:
        state["r"] = sample_groups(model, prompts, r_grid, group_size=args.group_size, sampling=Sampling(1.0),
                                   generator=torch.Generator(device=device).manual_seed(0))

    rollout_s = best_of(rollout, args.repeats, device)
    with torch.no_grad():
        score_s = best_of(lambda: visual_logprobs(model, state["r"].prompts, state["r"].codes), args.repeats,
                          device)
    out["grpo_rollout_images_per_s"] = images / rollout_s
    out["grpo_logprob_images_per_s"] = images / score_s
    out["grpo"] = {"prompts": args.rollout_prompts, "group_size": args.group_size, "image_tokens": r_side ** 2,
                   "rollout_s": rollout_s, "logprob_s": score_s}
    print(f"  GRPO rollout: {images} images of {r_side ** 2} tokens in {rollout_s:.3f} s", flush=True)
    return out


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
    parser.add_argument("--kv-presets", nargs="+", choices=sorted(PRESETS),
                        help="presets whose KV speed-up (cached against recomputed, CFG on, first head) the "
                             "generation table also measures (default: --preset only); the rest of the run uses "
                             "--preset")
    parser.add_argument("--kv-headline", choices=sorted(PRESETS),
                        help="the preset whose speed-ups are kv_speedup / kv_speedup_1024 (default: the last "
                             "--kv-presets); every preset's are in kv_speedup_by_preset")
    parser.add_argument("--estimate-recompute", nargs="*", default=[], metavar="PRESET:TOKENS",
                        help="do not run these recomputations in full: estimate them from --estimate-points timed "
                             "steps (labelled \"estimated\" in the JSON and the table)")
    parser.add_argument("--estimate-points", type=int, default=9,
                        help="timed recomputing steps per estimate; also estimates every measured recomputation, "
                             "to check the estimator (0: no estimates)")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-grid", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["generation", "summary", "heads"])
    parser.add_argument("--repeats", type=int, default=1, help="timed calls after one warm-up (the fastest counts)")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd decode step")
    parser.add_argument("--rollout-prompts", type=int, default=4, help="GRPO rollout: prompts")
    parser.add_argument("--group-size", type=int, default=8, help="GRPO rollout: images per prompt")
    parser.add_argument("--rollout-tokens", type=int, default=256, help="GRPO rollout: image tokens (a square)")
    parser.add_argument("--quick", action="store_true",
                        help="seconds-long smoke run: defaults of tiny preset, 16 and 64 tokens, full head, 3 train "
                             "steps, a 2 x 2 rollout of 16 tokens, no recomputation estimates (default --out "
                             "benchmarks/results/ar-generate-quick.json)")
    parser.add_argument("--out", type=Path, help="default benchmarks/results/ar-generate.json")
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # smaller defaults; flags given still win
        parser.set_defaults(preset="tiny", tokens=[16, 64], heads=["full"], train_steps=3, train_grid=4,
                            train_batch=2, rollout_prompts=2, group_size=2, rollout_tokens=16,
                            estimate_points=0)
    args = parser.parse_args(argv)
    args.kv_presets = args.kv_presets or [args.preset]
    args.kv_headline = args.kv_headline or args.kv_presets[-1]
    try:
        args.estimate_recompute = {(p, int(t)) for p, t in (x.split(":") for x in args.estimate_recompute)}
    except ValueError:
        parser.error("--estimate-recompute takes PRESET:TOKENS pairs")
    if args.kv_headline not in {args.preset, *args.kv_presets}:
        parser.error("--kv-headline must be --preset or one of --kv-presets")
    if args.estimate_recompute and args.estimate_points < 2:
        parser.error("--estimate-recompute needs --estimate-points >= 2")
    args.sizes = {}
    if args.out is None:
        args.out = Path("benchmarks/results") / ("ar-generate-quick.json" if args.quick else "ar-generate.json")
    device = torch.device(args.device)
    command = " ".join([sys.executable, "benchmarks/ar_generate.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"environment": environment(device), "command": command, "preset": PRESETS[args.preset],
              "codebook": {"levels": LEVELS, "size": math.prod(LEVELS)}, "dtype": args.dtype,
              "protocol": {"git": git_state(), "command": command, "device": str(device), "dtype": args.dtype,
                           "preset": args.preset, "kv_presets": args.kv_presets,
                           "kv_speedup_preset": args.kv_headline,
                           "estimate_recompute": sorted(f"{p}:{t}" for p, t in args.estimate_recompute),
                           "batch": args.batch, "tokens": args.tokens,
                           "repeats": args.repeats, "quick": args.quick, "compile": args.compile,
                           "timing": "one warm-up call, then the fastest of --repeats (summary); one call per row "
                                     "after a 16-token warm-up (generation table)"}}
    with torch.inference_mode(False):
        if "generation" not in args.skip:
            result["generation"] = rows = generation_rows(args, device)
            print_table(f"Generation ({args.dtype}, batch {args.batch}, {device})", rows, [
                ("preset", "preset", "{}"), ("head", "head", "{}"), ("image_tokens", "image tokens", "{}"),
                ("cfg", "CFG", "{}"), ("kv_cache", "KV cache", "{}"), ("seconds", "seconds", "{:.2f}"),
                ("timing", "timing", "{}"), ("tokens_per_s", "image tokens/s", "{:.1f}")])
            for r in rows:
                if "cache_speedup" in r:
                    print(f"KV cache speed-up, {r['preset']}, {r['image_tokens']} tokens (CFG on): "
                          f"{r['cache_speedup']:.1f}x ({r['timing']})")
                if "cfg_cost" in r:
                    print(f"CFG cost at {r['image_tokens']} tokens, {r['head']} head: {r['cfg_cost']:.2f}x the time")
        if "summary" not in args.skip:
            result.update(summary(args, device, result.get("generation")))
            head_1024 = result["kv_speedup_by_preset"].get(args.kv_headline, {}).get("1024", {})
            result["protocol"]["kv_speedup_1024_recompute"] = head_1024.get("recompute")
            print(f"\nKV speed-up at 1,024 tokens ({args.kv_headline}, {head_1024.get('recompute')}): "
                  f"{result['kv_speedup_1024']}; armkit cached decode / "
                  f"transformers generate(): {result['overhead_vs_hf_generate']:.2f}x; images/s "
                  f"{result['images_per_s']}; GRPO rollout {result['grpo_rollout_images_per_s']:.2f} images/s")
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
    result["kv_preset_sizes"] = {p: {**PRESETS[p], **args.sizes[p]} for p in args.sizes}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
