"""Training-step cost of a tokenizer recipe, split by part: what each loss costs.

    python benchmarks/train_step.py --config recipes/tokenizer/demo.yaml [--batch-size 32] [--repeats 5] [--out F.json]

Builds the recipe's model and one batch from its data exactly as `armkit train` would (LightningCLI, no Trainer),
then times, after warm-up, the median of `--repeats` runs of:
  encoder (frozen forward), quantize (down + FSQ + up forward), each enabled loss's forward + backward on its own,
  and the full step (forward, all losses, backward, AdamW step).
Prints a table and writes JSON with device, versions and the command. Peak memory: CUDA's max_memory_allocated on a
GPU; on the CPU, the process's peak RSS.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import environment, print_table, write_json  # noqa: E402


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(config: str, overrides: list[str]):
    from armkit.recipes.data import ShardDataModule
    from armkit.recipes.tokenizer.module import TokenizerModule
    from armkit.recipes.training.fit import ArmkitCLI

    cli = ArmkitCLI(TokenizerModule, ShardDataModule, args=["--config", config, *overrides], run=False,
                    save_config_callback=None)
    return cli.model, cli.datamodule


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--autocast", choices=["none", "bf16"], default="none",
                    help="bf16: torch.autocast as Lightning's precision=bf16-mixed does (FSQ stays fp32)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("overrides", nargs="*", help="LightningCLI overrides, e.g. --model.lr=1e-3 (after --)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = list(args.overrides) + ([f"--data.batch_size={args.batch_size}"] if args.batch_size else [])
    module, data = build(args.config, overrides)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    module.to(device).train()
    tok, losses = module.tokenizer, module.losses
    images = batch["image"]
    bs = images.shape[0]

    rows = []

    def add(part: str, seconds: float) -> None:
        rows.append({"part": part, "ms": 1000 * seconds, "images_per_s": bs / seconds})

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.autocast == "bf16")
    autocast.__enter__()
    with torch.no_grad():
        add("encoder (frozen forward)", timed(lambda: tok.encoder(images), args.repeats, device))
        feats = tok.encoder(images)
        add("quantize (down+FSQ+up forward)", timed(lambda: tok.up(tok.quantizer(tok.down(feats)).codes),
                                                    args.repeats, device))
    for name, loss in losses.items(enabled_only=True):
        def one(loss=loss):
            out = tok(images)
            value, _ = loss(out, batch, tok)
            value.backward()
            module.zero_grad(set_to_none=True)
        add(f"loss {name} (tokenizer fwd + loss fwd+bwd)", timed(one, args.repeats, device))

    def tokenizer_only():
        out = tok(images)
        (out.z.float().square().mean()).backward()
        module.zero_grad(set_to_none=True)
    add("tokenizer alone (fwd+bwd, no loss)", timed(tokenizer_only, args.repeats, device))

    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)

    def full():
        out = tok(images)
        total, _ = losses(out, batch, tok)
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    add("full step (all losses, AdamW)", timed(full, args.repeats, device))
    autocast.__exit__(None, None, None)

    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result = {"benchmark": "train_step", "config": args.config, "batch_size": bs, "repeats": args.repeats,
              "autocast": args.autocast,
              "threads": args.threads, "peak_memory_mib": peak, "rows": rows,
              "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
              "frozen_params": sum(p.numel() for p in module.parameters() if not p.requires_grad),
              **environment(device), "command": " ".join([sys.executable, *sys.argv]), "host": platform.node()}
    print_table(f"train step: {args.config}, batch {bs}, autocast {args.autocast}, {args.threads} threads, "
                f"{result['device']}", rows,
                [("part", "part", "{}"), ("ms", "ms / step", "{:.0f}"), ("images_per_s", "images/s", "{:.1f}")])
    print(f"peak memory: {peak:.0f} MiB")
    write_json(result, args.out, announce=True)
    return result


if __name__ == "__main__":
    main()
