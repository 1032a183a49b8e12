"""Where `armkit assets` keeps converted models, and how code finds one by name (`asset:NAME` paths).

Only the lookup lives here, so that every package can resolve `asset:` paths; fetching and converting are in
`armkit.recipes.data.assets`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "assets.json"
FORMAT = 1


class AssetError(RuntimeError):
    """An asset could not be fetched, converted or found; the message says what to run."""


def cache_root(cache: str | Path | None = None) -> Path:
    """`cache`, else $ARMKIT_CACHE, else ~/.cache/armkit."""
    return Path(cache or os.environ.get("ARMKIT_CACHE") or Path.home() / ".cache" / "armkit").expanduser()


def assets_dir(cache: str | Path | None = None) -> Path:
    return cache_root(cache) / "assets"


def load_manifest(cache: str | Path | None = None) -> dict[str, Any]:
    path = assets_dir(cache) / MANIFEST
    if not path.is_file():
        return {"format": FORMAT, "assets": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AssetError(f"{path} is not valid JSON ({e}); delete it and run `armkit assets --force`") from None
    manifest.setdefault("assets", {})
    return manifest


def find_asset(name: str, cache: str | Path | None = None) -> Path:
    """The converted file or folder recorded for asset `name` in the cache's manifest."""
    root = assets_dir(cache)
    entry = load_manifest(cache)["assets"].get(name)
    path = root / entry["relpath"] if entry else None
    if path is None or not path.exists():
        raise AssetError(f"asset {name!r} is not in {root}: run `armkit assets` first "
                         f"(it reads --cache, else $ARMKIT_CACHE, else ~/.cache/armkit)")
    return path
