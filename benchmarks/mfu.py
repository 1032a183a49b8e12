"""Training-step MFU of a recipe at random init, with torch.compile on and off, SDPA against xformers.

    python benchmarks/mfu.py --config recipes/tokenizer/paper.yaml --batch-size 16 --out mfu.json
    python benchmarks/mfu.py --config recipes/tokenizer/tiny.yaml --data.train=DIR --data.val=DIR   # (after --)

Builds the recipe as `armkit train` would (LightningCLI), with every weight file replaced by a random-init stand-in
of the same architecture (benchmarks/stand_ins.py), so the paper's shapes can be measured without its weights. One
step is what Lightning runs under `precision: bf16-mixed`: forward under bf16 autocast, all enabled losses,
backward, AdamW step. The batch is synthetic: random images at the recipe's `data.image_size`, and texts as long as
each loss reads (the caption loss's `max_length` tokens, the text tower's context).

- model FLOPs per step: counted by torch's `FlopCounterMode` on one eager step (matmuls, convolutions, attention;
  frozen parts forward, plus the input gradients that flow back through them to Z). torch has no formula for the
  CPU flash-attention kernel, so its own SDPA formulas are mapped onto it (`CPU_SDPA_FORMULAS`). Causal attention
  is counted in full, as torch counts it.
- peak: the measured throughput of a square bf16 (or fp32) matmul on the same device, not a datasheet figure.
- MFU = model FLOPs per step / median step time / peak.
- variants: `--compile off on` (on: every repeated transformer block compiled in place, which is what the recipe
  option `model.compile: true` does; see recipes/training/compile.py) x `--attention sdpa xformers` (the pixel DiT's
  attention; xformers runs on CUDA only and is skipped, with the reason, where it cannot run).

Prints two tables (variants; FLOPs by part) and writes JSON with the device, versions and the command.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from armkit.recipes.training.compile import compile_blocks  # noqa: E402
from benchmarks.common import environment, print_table, write_json  # noqa: E402
from benchmarks.stand_ins import random_init  # noqa: E402
from benchmarks.train_step import build, timed  # noqa: E402

aten = torch.ops.aten


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


CPU_SDPA_FORMULAS = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
                     aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward}


def mixed(images: torch.Tensor, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to `dtype` on the images' device, as Lightning's bf16-mixed does; dtype None: full precision."""
    return torch.autocast(images.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def synthetic_batch(module, image_size: int | list[int], batch_size: int) -> dict:
    """Random images and, for every enabled loss that reads texts, one distinct text per image, long enough to fill
    what that loss reads (`max_length` for the caption loss, the tower's `context_length` for the sigmoid loss)."""
    hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    batch: dict = {"image": torch.rand(batch_size, 3, *hw)}
    filler = "a photo of a small red panda sitting on a mossy branch in soft morning light, "
    for _, loss in module.losses.items(enabled_only=True):
        key = getattr(loss, "text_key", None)
        if key is None:
            continue
        tower = getattr(loss, "text_tower", None)
        length = getattr(loss, "max_length", None) or getattr(tower, "context_length", None) or 64
        batch[key] = [(f"image {i}: " + filler * (1 + length // len(filler)))[: 2 * length]
                      for i in range(batch_size)]
    return batch


def train_step(module, opt, batch: dict, dtype: torch.dtype | None) -> None:
    """forward, all enabled losses, backward, AdamW step: what Lightning does per step under bf16-mixed."""
    with mixed(batch["image"], dtype):
        out = module.tokenizer(batch["image"])
        total, _ = module.losses(out, batch, module.tokenizer)
    total.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def counted(fn) -> int:
    """Model FLOPs of fn() as torch's FlopCounterMode counts them (plus the CPU attention formulas)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FORMULAS) as counter:
        fn()
    return counter.get_total_flops()


def count_flops(module, opt, batch: dict, dtype: torch.dtype | None) -> tuple[int, dict[str, int]]:
    """(model FLOPs of one step, the same FLOPs by part). The parts partition the total exactly: the frozen encoder's
    forward; the projections and FSQ (tokenizer forward + backward under a loss with no matmul, minus the encoder);
    each loss's marginal cost (tokenizer + that loss, forward + backward, minus the tokenizer alone), which includes
    the frozen networks it runs and the gradients it sends back through them to Z."""
    tok, images = module.tokenizer, batch["image"]

    def backward_of(loss_fn):
        def run() -> None:
            with mixed(images, dtype):
                value = loss_fn(tok(images))
            value.backward()
            module.zero_grad(set_to_none=True)
        return run

    total = counted(lambda: train_step(module, opt, batch, dtype))
    with torch.no_grad():
        encoder = counted(lambda: tok.encoder(images))
    tokenizer = counted(backward_of(lambda out: out.z.float().square().mean()))
    parts = {"encoder (frozen forward)": encoder, "projections + FSQ (fwd + bwd)": tokenizer - encoder}
    for name, loss in module.losses.items(enabled_only=True):
        parts[f"loss {name} (fwd + bwd)"] = counted(backward_of(lambda out, loss=loss: loss(out, batch, tok)[0])) \
            - tokenizer
    return total, parts


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, seconds: float = 1.0) -> float:
    """Measured FLOP/s of a [size, size] @ [size, size] matmul in `dtype` (median of timed bursts)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 4:  # calibrate a burst of about seconds / 4
        a @ b
        sync()
        n += 1
    rates = []
    for _ in range(4):
        t = time.perf_counter()
        for _ in range(n):
            a @ b
        sync()
        rates.append(2 * size**3 * n / (time.perf_counter() - t))
    return statistics.median(rates)


def set_attention(module, backend: str) -> int:
    """Point every decoders.attention.Attention at `backend`; returns how many there are."""
    from armkit.decoders.attention import Attention, resolve_backend

    layers = [m for m in module.modules() if isinstance(m, Attention)]
    for layer in layers:
        layer.backend = resolve_backend(backend)
    return len(layers)


def xformers_skip_reason(device: torch.device) -> str | None:
    from armkit.decoders.attention import xformers_available

    if device.type != "cuda":
        return "xformers runs on CUDA only"
    if not xformers_available():
        return "xformers is not importable (install armkit[gpu])"
    return None


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak RSS


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="recipes/tokenizer/paper.yaml")
    ap.add_argument("--batch-size", type=int, help="per device (default: the recipe's data.batch_size)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                    help="bf16: autocast as Lightning's bf16-mixed (the peak is then a bf16 matmul's)")
    ap.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off", "on"])
    ap.add_argument("--attention", nargs="+", choices=["sdpa", "xformers"], default=["sdpa", "xformers"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peak-size", type=int, help="matmul size for the peak (default 8192 on CUDA, 2048 on CPU)")
    ap.add_argument("--stand-ins", type=Path, help="folder for the random-init stand-ins (default: a temp folder)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("overrides", nargs="*", help="LightningCLI overrides, e.g. --data.train=DIR (after --)")
    args = ap.parse_args(argv)
    command = " ".join([sys.executable, "benchmarks/mfu.py", *(sys.argv[1:] if argv is None else argv)])
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")  # armkit hands it args=, as train does
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.precision == "bf16" else None

    with tempfile.TemporaryDirectory() as tmp:
        tree = random_init(yaml.safe_load(Path(args.config).read_text()), args.stand_ins or Path(tmp) / "stand-ins")
        tree["trainer"] = {**tree.get("trainer", {}), "accelerator": "cpu", "devices": 1, "num_nodes": 1,
                           "strategy": "auto", "default_root_dir": f"{tmp}/runs", "logger": False, "callbacks": [],
                           "plugins": None}  # one process; nothing written
        tree["data"] = {**tree.get("data", {}), "train": tmp, "val": None}  # the batch is synthetic
        config = Path(tmp) / "random-init.yaml"
        config.write_text(yaml.safe_dump(tree, sort_keys=False))
        t0 = time.perf_counter()
        module, data = build(str(config), list(args.overrides))
        build_s = time.perf_counter() - t0
    module.to(device).train()
    batch_size = args.batch_size or data.batch_size
    batch = {k: v.to(device) if torch.is_tensor(v) else v
             for k, v in synthetic_batch(module, data.image_size, batch_size).items()}
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))

    attention_layers = set_attention(module, "sdpa")  # counted on SDPA: FlopCounterMode has no xformers formula
    flops, by_part = count_flops(module, opt, batch, dtype)
    peak_size = args.peak_size or (8192 if device.type == "cuda" else 2048)
    peak = matmul_peak(device, dtype or torch.float32, peak_size)

    rows = []
    compiled_blocks: list[str] = []
    for compiled in [c for c in ("off", "on") if c in args.compile]:  # compiling is in place: "off" must come first
        if compiled == "on":
            compiled_blocks = compile_blocks(module)
        for attention in args.attention:
            row = {"compile": compiled, "attention": attention}
            skip = xformers_skip_reason(device) if attention == "xformers" else None
            if skip:
                rows.append({**row, "status": f"skipped: {skip}"})
                continue
            set_attention(module, attention)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                t = time.perf_counter()
                train_step(module, opt, batch, dtype)  # first call: compiles (when on), allocates optimizer state
                first_s = time.perf_counter() - t
                seconds = timed(lambda: train_step(module, opt, batch, dtype), args.repeats, device)
            except torch.OutOfMemoryError:
                opt.zero_grad(set_to_none=True)
                rows.append({**row, "status": f"out of memory at batch {batch_size}"})
                continue
            rows.append({**row, "status": "ok", "ms": 1000 * seconds, "images_per_s": batch_size / seconds,
                         "tflops": flops / seconds / 1e12, "mfu": flops / seconds / peak, "first_call_s": first_s,
                         "peak_memory_mib": peak_memory_mib(device)})

    result = {"benchmark": "mfu", "config": args.config, "batch_size": batch_size, "precision": args.precision,
              "weights": "random init (benchmarks/stand_ins.py)", "build_s": build_s,
              "flops_per_step": flops, "flops_per_image": flops / batch_size, "flops_by_part": by_part,
              "peak_flops": peak, "peak_matmul": f"square {peak_size} x {peak_size} matmul, {args.precision}",
              "attention_layers_switched": attention_layers,
              "compiled_blocks": len(compiled_blocks),
              "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
              "frozen_params": sum(p.numel() for p in module.parameters() if not p.requires_grad),
              "rows": rows, **environment(device), "command": command,
              "host": platform.node()}
    title = (f"{args.config} at random init, batch {batch_size}, {args.precision}, {result['device']}; "
             f"{flops / batch_size / 1e9:,.2f} GFLOP per image; measured peak {peak / 1e12:,.2f} TFLOP/s")
    columns = [("ms", "ms / step", "{:,.0f}"), ("images_per_s", "images/s", "{:.2f}"), ("tflops", "TFLOP/s", "{:.3f}"),
               ("mfu", "MFU", "{:.1%}"), ("first_call_s", "first call s", "{:.1f}"),
               ("peak_memory_mib", "peak MiB", "{:,.0f}")]
    shown = [{"compile": r["compile"], "attention": r["attention"], "status": r["status"],
              **{k: fmt.format(r[k]) if k in r else "-" for k, _, fmt in columns}} for r in rows]
    print_table(title, shown, [("compile", "compile", "{}"), ("attention", "attention", "{}"),
                               *[(k, header, "{}") for k, header, _ in columns], ("status", "status", "{}")])
    parts = [{"part": p, "gflop": f / batch_size / 1e9, "share": f / flops} for p, f in by_part.items()]
    print_table("model FLOPs per image, by part (forward + backward)", parts,
                [("part", "part", "{}"), ("gflop", "GFLOP / image", "{:,.3f}"), ("share", "share", "{:.1%}")])
    write_json(result, args.out, announce=True)
    return result


if __name__ == "__main__":
    main()
