"""What every benchmark records (device, versions, date) and how it prints its table."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform

import torch

PACKAGES = ("torch", "timm", "vector-quantize-pytorch", "lightning", "transformers", "diffusers", "armkit")


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
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"device": f"{device.type}: {name}", "cpu_threads": torch.get_num_threads(), "versions": versions,
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
