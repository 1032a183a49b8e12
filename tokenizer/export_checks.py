"""Checks on what an export folder's config.json (or a checkpoint's specs) may say, before anything is built.

A config file is input, not code: its numbers are checked for type and range (a NaN mean, a zero std, levels
[8.5, ...] or `"included": "false"` would otherwise load and give wrong tokens), its nesting is bounded, and the
files it names are followed only inside the folders the caller allows (the export folder itself, the armkit asset
cache through `asset:NAME`, and folders passed as `paths=`): a config can never make armkit read, hash or load a file
elsewhere, nor download anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_DEPTH = 32  # an armkit spec nests about 8 levels; a RecursionError must never be the answer
PATH_KEYS = ("weights", "path", "vae_path", "checkpoint_path", "file", "pretrained_path", "cache_dir")
HUB_KEYS = ("pretrained", "hf_hub_id", "url")  # names that download (hub tags, URLs)


class ConfigValueError(ValueError):
    """A config value of the wrong type or out of range; the message names the file and the key."""


def check_depth(value: Any, where: str, *, limit: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than `limit` (iteratively, so the check itself cannot recurse too deep)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise ConfigValueError(f"{where}: nested deeper than {limit} levels; not an armkit config")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require(ok: bool, where: str, key: str, value: Any, want: str) -> None:
    if not ok:
        raise ConfigValueError(f"{where}: {key} = {value!r}: {want}")


def check_summary(config: dict, where: str) -> None:
    """The values config.json records beside the spec, which loading uses or compares."""
    require(is_int(config.get("format_version")), where, "format_version", config.get("format_version"),
            "must be an integer")
    levels = config.get("levels")
    if levels is not None:
        require(isinstance(levels, list) and bool(levels) and all(is_int(v) and v >= 2 for v in levels), where,
                "levels", levels, "must be a list of integers >= 2")
    for key in ("num_codebooks", "codebook_size", "num_tokens", "embed_dim"):
        if key in config:
            require(is_int(config[key]) and config[key] >= 1, where, key, config[key], "must be an integer >= 1")
    for key in ("grid", "image_size"):
        if key in config:
            require(isinstance(config[key], list) and len(config[key]) == 2 and all(
                is_int(v) and v >= 1 for v in config[key]), where, key, config[key], "must be two integers >= 1")
    enc = config["encoder"]
    require(isinstance(enc.get("included"), bool), where, "encoder.included", enc.get("included"),
            "must be true or false (a JSON boolean)")
    for key in ("mean", "std"):
        if key in enc:
            values = enc[key]
            require(isinstance(values, list) and len(values) == 3 and all(is_number(v) for v in values), where,
                    f"encoder.{key}", values, "must be 3 finite numbers")
    if "std" in enc:
        require(all(v > 0 for v in enc["std"]), where, "encoder.std", enc["std"], "must be > 0")


def check_levels(spec: Any, where: str) -> None:
    """Every `levels` / `num_codebooks` in a spec: integers (FSQ would silently truncate 8.5 to 8)."""
    stack = [(spec, where)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("levels"), list):
                require(all(is_int(v) and v >= 2 for v in node["levels"]), at, "levels", node["levels"],
                        "must be integers >= 2")
            if "num_codebooks" in node:
                require(is_int(node["num_codebooks"]) and node["num_codebooks"] >= 1, at, "num_codebooks",
                        node["num_codebooks"], "must be an integer >= 1")
            stack.extend((v, f"{at}.{k}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(node))


def inside(value: str, roots: Sequence[Path]) -> bool:
    """Whether the path `value` (as the constructors will open it: `~` expanded, relative to the working folder)
    resolves, links followed, inside one of `roots`."""
    target = Path(value.removeprefix("local-dir:")).expanduser().resolve()  # open_clip's folder prefix
    return any(target.is_relative_to(Path(root).expanduser().resolve()) for root in roots)


def check_paths(spec: Any, where: str, roots: Sequence[Path]) -> None:
    """Refuse a file path outside `roots` and anything that would download, anywhere in `spec`. `asset:NAME` is
    allowed: it resolves only inside armkit's asset cache."""
    stack = [(spec, where)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in PATH_KEYS and isinstance(value, str) and value and not value.startswith("asset:") \
                        and not inside(value, roots):
                    raise ConfigValueError(
                        f"{at}.{key} = {value!r} is outside {[str(r) for r in roots]}; armkit follows paths in a "
                        "config only inside the export (or checkpoint) folder, the asset cache (asset:NAME) and the "
                        "folders you pass (paths=[...] in Python, --allow-path on the command line)")
                if key in HUB_KEYS and value not in (None, False, ""):
                    raise ConfigValueError(f"{at}.{key} = {value!r} would download; loading never downloads")
                stack.append((value, f"{at}.{key}"))
        elif isinstance(node, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(node))
