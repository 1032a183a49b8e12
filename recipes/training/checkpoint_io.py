"""Checkpoint I/O that never unpickles code and never leaves a half-written checkpoint at a final path.

Saving: `torch.save` into a temp file *in the checkpoint folder* (`.NAME.tmp-PID-RANDOM`), fsync, then `os.replace`
onto the final name. A kill at any moment leaves either the previous file or the new one, never a truncated one, and
nothing in the system temp folder (Lightning's own `_atomic_save` stages the bytes in `$TMPDIR` and moves them, which
is a copy, not an atomic rename, when `$TMPDIR` is on another filesystem). Temps left by a killed process are removed
at the next save into that folder. Remote paths (`s3://...`) keep Lightning's fsspec transaction.

Loading is forced to `torch.load(weights_only=True)`, which is why armkit stores only tensors and plain values in
checkpoints. `newest_readable` picks what `--ckpt_path last` resumes from when `last.ckpt` itself cannot be read.
A finished checkpoint is read outside training (export, eval, AR loading) by checkpoint_read.py, which does not
import Lightning.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any, NamedTuple

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

TEMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temps(folder: Path | str) -> list[Path]:
    """Remove the temps of checkpoint writes whose process is gone (killed mid-save); returns what was removed."""
    removed = []
    for path in Path(folder).glob(".*.tmp-*"):
        match = TEMP.match(path.name)
        if match and path.is_file() and not _alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def save_atomic(checkpoint: dict[str, Any], path: Path | str) -> None:
    """Write `checkpoint` to `path` through a temp file beside it and `os.replace` (atomic on one filesystem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(temp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def readable(path: Path | str) -> str | None:
    """None when `path` loads as a weights-only checkpoint, else why not."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated zip, pickle with code, not a checkpoint at all
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    if not isinstance(state, dict) or "state_dict" not in state:
        return "not a Lightning checkpoint (no state_dict)"
    return None


class Pick(NamedTuple):
    path: Path | None  # the newest readable checkpoint, None when there is none
    skipped: list[tuple[Path, str]]  # newer checkpoints that could not be read, and why


def newest_readable(folder: Path | str) -> Pick:
    """The newest `*.ckpt` in `folder` that loads: `last*.ckpt` first, then the others, each newest first."""
    files = [p for p in Path(folder).glob("*.ckpt") if p.is_file()]
    files.sort(key=lambda p: (p.name.startswith("last"), p.stat().st_mtime), reverse=True)
    skipped = []
    for path in files:
        reason = readable(path)
        if reason is None:
            return Pick(path, skipped)
        skipped.append((path, reason))
    return Pick(None, skipped)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's TorchCheckpointIO with atomic local saves (`save_atomic`) and weights-only loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        save_atomic(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        if weights_only is False:
            raise ValueError(f"refusing to load {path} with weights_only=False: armkit checkpoints hold no code")
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)
