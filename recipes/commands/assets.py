"""`armkit assets [--cache DIR] [--force] [--only NAME ...]`: fetch and convert the real frozen models once."""

from __future__ import annotations

import argparse
import sys
import time

from armkit.recipes.data.assets import BY_NAME, AssetError, assets_dir, fetch_assets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", default=None, help="cache folder (default: $ARMKIT_CACHE, else ~/.cache/armkit)")
    parser.add_argument("--force", action="store_true", help="fetch and convert again even when already in place")
    parser.add_argument("--only", nargs="+", choices=sorted(BY_NAME), default=None, help="only these assets")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        manifest = fetch_assets(args.cache, force=args.force, names=args.only)
    except AssetError as e:
        print(f"armkit assets: {e}", file=sys.stderr)
        return 1
    print(f"\n{'asset':<20}{'licence (package / model)':<30}{'MB':>8}  path")
    for name, entry in sorted(manifest["assets"].items()):
        megabytes = sum(f["bytes"] for f in entry["files"].values()) / 1e6
        licences = f"{entry['licence']} / {entry['model_licence']}"
        print(f"{name:<20}{licences:<30}{megabytes:>8.1f}  {entry['path']}")
    print(f"manifest: {assets_dir(args.cache) / 'assets.json'}  ({time.perf_counter() - start:.1f} s)")
    return 0
