"""`armkit generate --model M --out DIR`: text-to-image, editing or captioning with a trained AR model.

    armkit generate --model AR --prompt "a red circle" [--prompt ...] --num 4 --out DIR     text-to-image
    armkit generate --model AR --image IN.png --instruction "make it dark skin tone" --out DIR   editing
    armkit generate --model AR --image IN.png --caption --out DIR                                captioning

M is an AR export folder (`armkit export` of an AR checkpoint) or the checkpoint itself. The images are rendered by
the tokenizer the codes came from (recorded in the model; `--tokenizer` overrides the path), whose fingerprint must
match. DIR gets one PNG per sample (NNN.png), grid.png (one row per prompt) and generation.json (every setting).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--model", required=True, type=Path, help="AR export folder or ARModule checkpoint")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer export (default: the one the model records)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--prompt", action="append", default=[], help="text-to-image prompt (repeatable)")
    parser.add_argument("--image", type=Path, help="input image for editing or captioning")
    parser.add_argument("--instruction", help="edit instruction for --image")
    parser.add_argument("--caption", action="store_true", help="caption --image (understanding)")
    parser.add_argument("--num", type=int, default=4, help="samples per prompt (default 4)")
    parser.add_argument("--guidance", type=float, default=1.5, help="CFG scale on the text (ARM: 1.5)")
    parser.add_argument("--image-guidance", type=float, default=1.25, help="editing: CFG on the source image (1.25)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25, help="decoder sampler steps")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="captioning length limit")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole sequence every step")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from armkit.recipes.autoregressive.codes import FingerprintError  # here: `--help` must not import torch
    from armkit.recipes.autoregressive.generation import generate
    from armkit.tokenizer.hub import ExportError

    try:
        report = generate(args)
    except (ExportError, FingerprintError, FileNotFoundError, ValueError) as e:
        print(f"generate failed: {e}")
        return 2
    print(json.dumps({k: v for k, v in report.items() if k in ("files", "captions", "grid")}, indent=1))
    return 0
