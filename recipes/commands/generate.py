"""`armkit generate --model M --out DIR`: text-to-image, editing or captioning with a trained AR model.

    armkit generate --model AR --prompt "a red circle" [--prompt ...] --num 4 --out DIR     text-to-image
    armkit generate --model AR --image IN.png --instruction "make it dark skin tone" --out DIR   editing
    armkit generate --model AR --image IN.png --caption --out DIR                                captioning

M is an AR export folder (`armkit export` of an AR checkpoint) or the checkpoint itself. The images are rendered by
the tokenizer the codes came from (recorded in the model; `--tokenizer` overrides the path), whose fingerprint must
match. DIR gets one PNG per sample (NNN.png), grid.png (one row per prompt) and generation.json (every setting).

Every argument is checked before the model is loaded, and any failure is one line on stderr with exit status 2:
guidance scales finite in [0, 100], temperature 0 (greedy) or in [0.01, 100], top-k >= 0 (0: off), top-p in
(0, 1], --num x prompts at most 1024 samples (generated --batch-size at a time, with a progress bar), --steps
1..1000, --image a regular file read with the data path's pixel limits, --out a folder, --device cpu / cuda /
cuda:N / mps. Prompts and instructions longer than the model's context are cut, with a warning.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

MAX_SAMPLES = 1024  # --num x prompts: each sample is a full image decode; more is a job for a script, not the CLI
MAX_BATCH = 256  # samples decoded at once (x 2 or 3 guidance branches)
MAX_STEPS = 1000  # decoder sampler steps
MAX_NEW_TOKENS = 4096  # captioning; the model's context cuts it further
MAX_GUIDANCE = 100.0  # beyond this the mixed logits overflow float32 long before they mean anything
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0  # below 0.01, logits / T overflow (0 itself is greedy)
MAX_TEXT_CHARS = 4096  # a prompt or instruction is cut here before it is encoded (the model cuts it further)
MAX_IMAGE_BYTES = 256_000_000  # an input image file; its pixels are limited by recipes/data/images.py
MAX_SEED = 2**63 - 1
DEVICE = re.compile(r"cpu|cuda(:\d{1,3})?|mps")


class ArgumentError(ValueError):
    """An argument `armkit generate` cannot use; the message names the flag."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--model", required=True, type=Path, help="AR export folder or ARModule checkpoint")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer export (default: the one the model records)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; never an existing file)")
    parser.add_argument("--prompt", action="append", default=[], help="text-to-image prompt (repeatable)")
    parser.add_argument("--image", type=Path, help="input image for editing or captioning")
    parser.add_argument("--instruction", help="edit instruction for --image")
    parser.add_argument("--caption", action="store_true", help="caption --image (understanding)")
    parser.add_argument("--num", type=int, default=4, help=f"samples per prompt (default 4; at most {MAX_SAMPLES} "
                                                            "in all)")
    parser.add_argument("--batch-size", type=int, default=16, help="samples generated at once (default 16)")
    parser.add_argument("--guidance", type=float, default=1.5, help="CFG scale on the text (ARM: 1.5; 1: none)")
    parser.add_argument("--image-guidance", type=float, default=1.25, help="editing: CFG on the source image (1.25)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0: off")
    parser.add_argument("--top-p", type=float, default=1.0, help="in (0, 1]; 1: off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25, help=f"decoder sampler steps (1..{MAX_STEPS})")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="captioning length limit")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole sequence every step")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")

    def error(message: str):  # a malformed value (`--num abc`) is one line too, not argparse's usage dump
        print(f"armkit generate: {message}", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]


def _need(ok: bool, flag: str, value: object, want: str) -> None:
    if not ok:
        raise ArgumentError(f"{flag} {value!r}: {want}")


def _finite_in(value: float, low: float, high: float) -> bool:
    return math.isfinite(value) and low <= value <= high


def writable_folder(out: Path) -> None:
    """--out: a folder, or a path whose nearest existing ancestor is a folder (it is created)."""
    if out.exists() and not out.is_dir():
        raise ArgumentError(f"--out {str(out)!r} exists and is not a folder; give a folder (it is created)")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ArgumentError(f"--out {str(out)!r}: {str(parent)!r} is not a folder, so it cannot be created")


def cut_text(text: str, flag: str, warn) -> str:
    if len(text) > MAX_TEXT_CHARS:
        warn(f"{flag} is {len(text):,} characters; cut to the first {MAX_TEXT_CHARS:,}")
        return text[:MAX_TEXT_CHARS]
    return text


def check_arguments(args: argparse.Namespace, warn=lambda line: None) -> None:
    """Every argument, before anything is loaded; raises ArgumentError naming the flag. Over-long prompts and
    instructions are cut (with `warn`) rather than refused."""
    modes = [bool(args.prompt), bool(args.image and args.instruction is not None), bool(args.image and args.caption)]
    if sum(modes) != 1 or (args.instruction is not None and args.caption):
        raise ArgumentError("give --prompt (text-to-image), or --image with --instruction (editing) or --caption")
    if args.instruction is not None and not args.image:
        raise ArgumentError("--instruction needs --image (the image to edit)")
    _need(args.instruction is None or bool(args.instruction.strip()), "--instruction", args.instruction,
          "must not be empty")
    _need(args.model.exists(), "--model", str(args.model), "does not exist (an AR export folder or checkpoint)")
    _need(args.model.is_dir() or args.model.is_file(), "--model", str(args.model),
          "is neither a folder nor a regular file")
    if args.tokenizer is not None:
        _need(args.tokenizer.is_dir(), "--tokenizer", str(args.tokenizer), "is not a tokenizer export folder")
    writable_folder(args.out)
    for flag, value in (("--guidance", args.guidance), ("--image-guidance", args.image_guidance)):
        _need(_finite_in(value, 0.0, MAX_GUIDANCE), flag, value,
              f"must be a finite scale in [0, {MAX_GUIDANCE:g}] (1: no guidance, 0: unconditional)")
    t = args.temperature
    _need(t == 0 or _finite_in(t, MIN_TEMPERATURE, MAX_TEMPERATURE), "--temperature", t,
          f"must be 0 (greedy) or a finite number in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]")
    _need(args.top_k >= 0, "--top-k", args.top_k, "must be >= 1 (or 0: off)")
    _need(math.isfinite(args.top_p) and 0 < args.top_p <= 1, "--top-p", args.top_p, "must be in (0, 1] (1: off)")
    _need(0 <= args.seed <= MAX_SEED, "--seed", args.seed, f"must be an integer in [0, {MAX_SEED}]")
    _need(1 <= args.steps <= MAX_STEPS, "--steps", args.steps, f"decoder steps must be in [1, {MAX_STEPS}]")
    _need(1 <= args.max_new_tokens <= MAX_NEW_TOKENS, "--max-new-tokens", args.max_new_tokens,
          f"must be in [1, {MAX_NEW_TOKENS}]")
    _need(1 <= args.batch_size <= MAX_BATCH, "--batch-size", args.batch_size, f"must be in [1, {MAX_BATCH}]")
    _need(args.num >= 1, "--num", args.num, "must be >= 1")
    total = args.num * max(len(args.prompt), 1)
    _need(total <= MAX_SAMPLES, "--num", args.num, f"{total:,} samples in all ({args.num:,} x "
                                                   f"{max(len(args.prompt), 1)} prompts); at most {MAX_SAMPLES:,} "
                                                   "per run")
    _need(bool(DEVICE.fullmatch(args.device)), "--device", args.device, "must be cpu, cuda, cuda:N or mps")
    if args.image is not None:
        _need(args.image.exists(), "--image", str(args.image), "does not exist")
        _need(args.image.is_file(), "--image", str(args.image), "is not a regular file (a folder or a device?)")
        size = args.image.stat().st_size
        _need(0 < size <= MAX_IMAGE_BYTES, "--image", str(args.image),
              f"is {size:,} bytes; an image file is 1 to {MAX_IMAGE_BYTES:,} bytes")
    args.prompt = [cut_text(p, "--prompt", warn) for p in args.prompt]
    if args.instruction is not None:
        args.instruction = cut_text(args.instruction, "--instruction", warn)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def run(args: argparse.Namespace) -> int:
    def warn(line: str) -> None:
        print(f"armkit generate: warning: {line}", file=sys.stderr)

    try:
        check_arguments(args, warn)
    except ArgumentError as e:
        print(f"armkit generate: {one_line(e)}", file=sys.stderr)
        return 2
    from armkit.recipes.ar.codes import FingerprintError  # here: `--help` must not import torch
    from armkit.recipes.ar.generation import generate
    from armkit.tokenizer.hub import ExportError

    try:
        report = generate(args, warn=warn)
    except (ExportError, FingerprintError, FileNotFoundError, ValueError, OSError) as e:
        print(f"armkit generate: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 -- never a traceback: one line naming what failed
        print(f"armkit generate: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in report.items() if k in ("files", "captions", "grid")}, indent=1))
    return 0
