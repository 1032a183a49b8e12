"""What every benchmark records (device, versions, date), how it prints its table and writes its JSON, and the
pieces the scripts share (flags, cached tensors, variant selection)."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from armkit.recipes.evaluation.provenance import package_versions


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{cpu_name()}, {torch.get_num_threads()} threads"
    return {"device": f"{device.type}: {name}", "cpu_threads": torch.get_num_threads(), "versions": package_versions(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format)."""
    cells = [[fmt.format(r[k]) for k, _, fmt in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(columns)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for (_, h, _), w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |")


def write_json(result: dict, path: Path | None, *, announce: bool = False) -> None:
    """Write `result` as indented JSON to `path` (creating its folder); nothing when `path` is None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    if announce:
        print(f"wrote {path}")


def run_info(device: torch.device, args: argparse.Namespace) -> dict:
    """What a result records first about its run: the environment, the command line and the flags (paths as str)."""
    return {"environment": environment(device), "command": " ".join(sys.argv),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}


def select(variants: dict, patterns: list[str] | None) -> dict:
    """The variants whose name contains any of `patterns`; all of them when `patterns` is empty or None."""
    return {k: v for k, v in variants.items() if not patterns or any(s in k for s in patterns)}


def load_or_build(path: Path | None, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensors saved at `path` if that file exists; else `build()`'s, saved to `path` when one is given."""
    if path and path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    tensors = build()
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tensors, path)
    return tensors


def add_training_args(ap: argparse.ArgumentParser, *, cache_help: str, steps: int, eval_at: list[int],
                      eval_limit: int, eval_limit_help: str) -> None:
    """The flags of the benchmarks that train on cached emoji images and teacher features (decoder_objective.py,
    teacher_stages.py): data, cache, training length and schedule, scoring, variant selection."""
    ap.add_argument("--data", type=Path, default=Path("data/emoji"))
    ap.add_argument("--cache", type=Path, help=cache_help)
    ap.add_argument("--limit", type=int, help="read only the first N samples of each split (quick trials)")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--eval-at", type=int, nargs="*", default=eval_at)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-limit", type=int, default=eval_limit, help=eval_limit_help)
    ap.add_argument("--variants", nargs="*", help="substrings selecting variants (default all)")
