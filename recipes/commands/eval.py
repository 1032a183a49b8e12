"""`armkit eval --tokenizer CKPT_OR_DIR --data SHARDS --out metrics.json`: every metric under a pinned protocol.

    armkit eval --tokenizer runs/demo/checkpoints/last.ckpt --data data/emoji --limit 256 --out metrics.json
    armkit eval --tokenizer exported/ --data data/fmnist --protocol my-protocol.yaml --out metrics.json

Metrics: PSNR, SSIM (LPIPS, rFID with --lpips-weights / --fid-weights local files), zero-shot top-1/top-5 (through
a trained sigmoid head, and through the teacher's own pooling head where it has one), a linear probe on pooled Z
(fitted on the train split), retrieval R@1, caption NLL, codebook usage and perplexity, tokens per image, bits per
token. metrics.json holds each metric's definition and the protocol (data files and their sha256, count, seed,
sampler, templates, versions, git commit). Settings come from --protocol (YAML: split, limit, batch_size, seed,
sampler, steps, guidance, templates, lpips_net, probe_split, probe_limit, probe_steps, probe_l2),
then from the flags given. Never imports lightning; never downloads anything.

    armkit eval --tokenizer exported/ --data data/fmnist-ar --limit 500 --ar-probe-steps 300 --out metrics.json

--ar-probe-steps N (0 or absent: off) adds AR-friendliness (recipes/evaluation/ar_probe.py): a fixed small AR model
trained N steps on the train split's codes; its held-out NLL per image in bits (ar_probe_nll_bits, lower is
friendlier) and, on Fashion-MNIST, the independent judge's accuracy on its samples (ar_probe_class_accuracy).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

from armkit.recipes.evaluation.protocol import Protocol, ProtocolError

DEFAULTS = Protocol()
SHOWN = ("psnr", "ssim", "lpips", "rfid", "zeroshot_top1", "zeroshot_top1_balanced", "zeroshot_top5",
         "teacher_zeroshot_top1", "teacher_zeroshot_top1_balanced", "probe_top1", "probe_top1_balanced",
         "retrieval_i2t_r1", "retrieval_t2i_r1",
         "caption_nll", "feature_cosine", "codebook_usage", "code_perplexity", "code_perplexity_normalised",
         "tokens_per_image", "bits_per_token")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--tokenizer", required=True, help="a checkpoint (.ckpt) or an export folder")
    parser.add_argument("--data", required=True, help="shard folder (its {split}-*.tar), .tar, glob or brace pattern")
    parser.add_argument("--out", required=True, help="where to write metrics.json")
    parser.add_argument("--protocol", type=Path, help="YAML with protocol settings (flags given here win)")
    parser.add_argument("--split", help=f"shards of a folder to read (default {DEFAULTS.split})")
    parser.add_argument("--limit", type=int, help="evaluate the first N samples (default: all)")
    parser.add_argument("--batch-size", type=int, help=f"default {DEFAULTS.batch_size}")
    parser.add_argument("--seed", type=int, help=f"decoder noise seed (default {DEFAULTS.seed})")
    parser.add_argument("--sampler", help=f"decoder ODE sampler: euler | heun (default {DEFAULTS.sampler})")
    parser.add_argument("--steps", type=int, help=f"decoder sampler steps (default {DEFAULTS.steps})")
    parser.add_argument("--guidance", type=float, help=f"decoder guidance scale (default {DEFAULTS.guidance})")
    parser.add_argument("--templates", nargs="+", help="zero-shot prompts with one '{}' each "
                                                       f"(default {list(DEFAULTS.templates)})")
    parser.add_argument("--classes", nargs="+", help="class names by label index (default: the shards' meta.json)")
    parser.add_argument("--lpips-weights", type=Path, help="local torchvision backbone checkpoint for LPIPS")
    parser.add_argument("--lpips-net", help=f"LPIPS backbone: alex | vgg | squeeze (default {DEFAULTS.lpips_net})")
    parser.add_argument("--fid-weights", type=Path, help="local torch-fidelity Inception weights for rFID")
    parser.add_argument("--ar-probe-steps", type=int, help="train the AR-friendliness probe for N steps (0 or absent: "
                                                            "off; 300 is the documented setting)")
    parser.add_argument("--ar-probe-seed", type=int, help="the probe's init and batch seed (default: --seed's)")
    parser.add_argument("--ar-probe-train-limit", type=int, help="train-split samples the probe learns from "
                                                                 "(default 2000)")
    parser.add_argument("--ar-probe-val-limit", type=int, help="held-out samples it is scored on (default 500)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--allow-path", action="append", type=Path, metavar="DIR",
                        help="a folder outside the checkpoint's or export's own whose files its config may name (a "
                             "referenced encoder, a frozen text tower or LM); repeatable. Nothing else is followed")


def protocol_from(args: argparse.Namespace) -> Protocol:
    base = Protocol()
    if args.protocol is not None:
        if not args.protocol.is_file():
            raise FileNotFoundError(f"--protocol {args.protocol} does not exist")
        base = Protocol.from_mapping(yaml.safe_load(args.protocol.read_text()), where=str(args.protocol))
    return base.replace(split=args.split, limit=args.limit, batch_size=args.batch_size, seed=args.seed,
                        sampler=args.sampler, steps=args.steps, guidance=args.guidance,
                        templates=tuple(args.templates) if args.templates else None, lpips_net=args.lpips_net)


def ar_probe_from(args: argparse.Namespace, protocol: Protocol):
    """The AR probe's settings, or None when --ar-probe-steps is 0 or absent."""
    if not getattr(args, "ar_probe_steps", None):
        return None
    from armkit.recipes.evaluation.ar_probe import ARProbe

    given = {"steps": args.ar_probe_steps, "train_limit": args.ar_probe_train_limit,
             "val_limit": args.ar_probe_val_limit,
             "seed": protocol.seed if args.ar_probe_seed is None else args.ar_probe_seed}
    return ARProbe.from_mapping({k: v for k, v in given.items() if v is not None})


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this evaluation, every given option spelled out."""
    words = ["armkit", "eval"]
    for name, value in vars(args).items():
        if name == "command" or value is None:
            continue
        flag = f"--{name.replace('_', '-')}"
        words += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return shlex.join(words)


def format_value(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    from armkit.common.buildable import ConfigError
    from armkit.recipes.evaluation.evaluate import evaluate, save_report
    from armkit.recipes.evaluation.load import load_for_eval
    from armkit.tokenizer.hub import ExportError

    try:
        protocol = protocol_from(args)
        loaded = load_for_eval(args.tokenizer, paths=args.allow_path or ())
        ar_probe = ar_probe_from(args, protocol)
        report = evaluate(loaded, args.data, protocol, classes=args.classes, lpips_weights=args.lpips_weights,
                          fid_weights=args.fid_weights, device=args.device, command=command_line(args),
                          ar_probe=ar_probe)
    except (ProtocolError, ExportError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"armkit eval: {e}", file=sys.stderr)
        return 2
    out = save_report(report, args.out)
    count = report["protocol"]["data"]["count"]
    print(f"evaluated {count} images of {args.data} in {report['timing']['seconds']:.1f} s -> {out}")
    from armkit.recipes.evaluation.ar_probe import KEYS as AR_KEYS

    for key in SHOWN + (AR_KEYS if "ar_probe" in report["protocol"] else ()):
        value = report["metrics"].get(key)
        note = f"  (skipped: {report['skipped'][key]})" if key in report["skipped"] else ""
        print(f"  {key:28s} {format_value(value)}{note}")
    return 0
