"""What a number came from: package versions, the git commit, and fingerprints of data and weight files."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

from armkit.common.weights import sha256_file

PACKAGES = ("armkit", "torch", "torchvision", "timm", "open_clip_torch", "vector-quantize-pytorch", "torchmetrics",
            "transformers", "diffusers", "lightning", "webdataset", "numpy", "pillow")  # eval's and benchmarks' list
REPO = Path(__file__).resolve().parents[2]


def package_versions() -> dict[str, str | None]:
    """{distribution: version} (and the Python version) for the packages a metric or a benchmark can depend on
    (None: not installed); `armkit eval` and benchmarks/common.py both record it."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(repo: Path = REPO) -> dict[str, Any] | None:
    """{"commit", "dirty"} of the armkit checkout this code runs from; None outside a git checkout."""
    if not (repo / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def shards_fingerprint(shards: list[str]) -> dict[str, Any]:
    """{"files": {name: sha256}, "sha256": digest of the sorted "name sha256" lines}: the exact data evaluated on."""
    files = {Path(s).name: sha256_file(s) for s in shards}
    listing = "".join(f"{name} {digest}\n" for name, digest in sorted(files.items()))
    return {"files": files, "sha256": hashlib.sha256(listing.encode()).hexdigest()}
