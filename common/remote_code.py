"""Model folders are data, never code: the check every transformers `from_pretrained` in armkit goes through.

A transformers folder can ask to run its own Python (`auto_map` in config.json / tokenizer_config.json /
processor_config.json pointing at a `.py` file beside it; transformers then imports that file, after a prompt that
"y" on stdin answers). armkit never does: each loader calls `no_remote_code(folder)` first, which refuses a folder
holding any `.py` file or any JSON with a top-level `auto_map`, and passes `trust_remote_code=False` as well.
"""

from __future__ import annotations

import json
from pathlib import Path

MAX_FILES = 1000  # a model folder holds a few dozen files at most


class RemoteCodeError(ValueError):
    """A model folder carries code armkit will not run; the message names the folder and the file (one line)."""


def _has_auto_map(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return False
    if b"auto_map" not in raw:  # the common case, without parsing a many-MB tokenizer.json
        return False
    try:
        data = json.loads(raw)
    except ValueError:  # unparseable: transformers cannot read it either, but a broken file naming auto_map is refused
        return True
    return isinstance(data, dict) and "auto_map" in data


def find_remote_code(folder: Path | str) -> Path | None:
    """The first file (sorted) in `folder` or below that makes transformers run code, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    seen = 0
    for path in sorted(folder.rglob("*")):
        seen += 1
        if seen > MAX_FILES:
            raise RemoteCodeError(f"{folder} holds more than {MAX_FILES} files: not a model folder; refusing to load "
                                  "it")
        if not path.is_file():
            continue
        if path.suffix in (".py", ".pyc", ".so", ".pyd"):
            return path
        if path.suffix == ".json" and _has_auto_map(path):
            return path
    return None


def no_remote_code(folder: Path | str) -> str:
    """`str(folder)` for a transformers `from_pretrained` (always with `trust_remote_code=False`), after refusing a
    folder that carries code: a `.py` (or compiled) file, or a JSON with `auto_map`."""
    found = find_remote_code(folder)
    if found is not None:
        what = "sets auto_map (custom code)" if found.suffix == ".json" else "is code"
        raise RemoteCodeError(f"{folder}: {found.relative_to(folder)} {what}; armkit never runs code from a model "
                              f"folder (remove it, or use a folder of weights, configs and tokenizer files only)")
    return str(folder)
