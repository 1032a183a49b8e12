"""`armkit tokenize --tokenizer EXPORT --data SHARDS --out CODES`: encode image shards once into code shards.

Each image shard becomes a code shard of the same name (recipes/ar/codes.py), written to a `.part` file
and renamed when whole, so a killed run resumes where it stopped: shards already written are skipped (after checking
they came from the same tokenizer). `--edits skin-tone` adds edit pairs: every image captioned "NAME: TONE skin tone"
whose plain "NAME" exists becomes a pair (source NAME, instruction "make it TONE skin tone", target the variant), in
the target's split. `--edits upside-down` edits in pixel space: one image in four (`--edit-every N`: in N; by
position in its shard) also gives a pair in the same shard (source: its codes, instruction "turn it upside down",
target: the codes of its vertically flipped pixels, captioned "upside down: " + its caption), so every pair has an
exact real target. meta.json is written last, with the tokenizer's fingerprint. Image samples that cannot be used
(unreadable, no caption, a label outside the classes, a key that is not a safe member name) are skipped, named, and
counted by reason in meta.json's "skipped".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EDIT_RULES = ("skin-tone", "upside-down")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--tokenizer", required=True, type=Path, help="a tokenizer export folder (`armkit export`)")
    parser.add_argument("--data", required=True, type=Path, help="an image shard folder (`armkit data`)")
    parser.add_argument("--out", required=True, type=Path, help="the code shard folder to write")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to encode (default train val)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--edits", choices=EDIT_RULES, help="also write edit pairs by this rule")
    parser.add_argument("--edit-every", type=int, help="pixel edits: one pair per N images (upside-down: 4)")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    from armkit.recipes.ar.tokenize import tokenize  # here: `--help` must not import torch

    try:
        meta = tokenize(args.tokenizer, args.data, args.out, splits=args.splits, batch_size=args.batch_size,
                        edits=args.edits, edit_every=args.edit_every, device=args.device)
    except (FileNotFoundError, ValueError) as e:
        print(f"armkit tokenize: {e}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{s}: {v['count']} images, {v.get('edits', 0)} edit pairs" for s, v in meta["splits"].items())
    print(f"wrote {args.out} ({counts}); tokenizer {meta['tokenizer']['fingerprint'][:16]}...")
    if meta["skipped"]["count"]:
        reasons = ", ".join(f"{n} {reason}" for reason, n in meta["skipped"]["by_reason"].items())
        print(f"skipped: {meta['skipped']['count']} image samples ({reasons}); each is named above and in "
              f"{args.out / 'meta.json'}")
    return 0
