"""What `armkit train --ckpt_path ...` resumes from, and what it takes from that checkpoint: tensors and loop state.

- `--ckpt_path last` resumes from `last.ckpt`, or, when that file cannot be read (truncated by a full disk, a kill
  on another filesystem), from the newest readable checkpoint in the checkpoint folder, and says which and why.
- The recipe on the command line stands. Lightning's CLI would re-parse the checkpoint's stored hyper-parameters over
  the recipe (a crafted checkpoint could set `lr: 1e9` and name a module for jsonargparse to import); armkit never
  does: it compares them with the recipe and reports every difference, and imports nothing named in the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from armkit.recipes.training.checkpoint_io import newest_readable, readable


class ResumeError(SystemExit):
    """No checkpoint to resume from although one was asked for; the message says what was tried."""


class Resume(NamedTuple):
    path: str | None  # what Lightning's fit/validate gets as ckpt_path
    notes: list[str]  # lines to print: which file, what was skipped, what differs from the recipe


def pick(ckpt_path: str | None, folder: Path | str | None) -> Resume:
    """Resolve `last` to a readable file in `folder`; an explicit path must itself be readable."""
    if not ckpt_path:
        return Resume(ckpt_path, [])
    if ckpt_path != "last":
        if "://" in ckpt_path or ckpt_path in ("best", "hpc") or ckpt_path.startswith("registry") \
                or Path(ckpt_path).is_dir():  # Lightning's own names; a sharded (FSDP) checkpoint is a folder
            return Resume(ckpt_path, [])
        reason = readable(ckpt_path) if Path(ckpt_path).is_file() else "no such file"
        if reason is not None:
            raise ResumeError(f"resume error: --ckpt_path {ckpt_path} cannot be read ({reason})")
        return Resume(ckpt_path, [])
    if folder is None or not Path(folder).is_dir():
        return Resume(ckpt_path, [])  # nothing saved yet: Lightning warns and starts from scratch
    chosen, skipped = newest_readable(folder)
    notes = [f"resume: skipping {p.name}: unreadable ({why})" for p, why in skipped]
    if chosen is None:
        if skipped:
            raise ResumeError(f"resume error: --ckpt_path last: no readable checkpoint in {folder} "
                              f"({len(skipped)} unreadable: {', '.join(p.name for p, _ in skipped)})")
        return Resume(ckpt_path, [])
    if skipped:
        notes.append(f"resume: resuming from {chosen} (the newest readable checkpoint), not {skipped[0][0].name}")
    return Resume(str(chosen), notes)


def flatten(node: Any, where: str = "") -> dict[str, Any]:
    """{"a.b[0].c": leaf} of nested dicts and lists; tuples read as lists."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{where}.{k}" if where else str(k)))
        return out
    if isinstance(node, (list, tuple)):
        out = {}
        for i, v in enumerate(node):
            out.update(flatten(v, f"{where}[{i}]"))
        return out or {where: []}
    return {where: node}


def differences(stored: dict[str, Any], recipe: dict[str, Any], *, label: str, limit: int = 20) -> list[str]:
    """One line per key whose value differs between the checkpoint and the recipe (the recipe's value is used)."""
    a, b = flatten(stored, label), flatten(recipe, label)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"resume: {key}: checkpoint {a.get(key, '<absent>')!r}, recipe {b.get(key, '<absent>')!r} "
                         "(the recipe stands)")
    return lines[:limit] + ([f"resume: ... and {len(lines) - limit} more differences"] if len(lines) > limit else [])


def compare(ckpt_path: str, model_config: dict[str, Any], specs: dict[str, Any]) -> list[str]:
    """Differences between a checkpoint and the recipe: Lightning's `hyper_parameters` (never applied) against the
    recipe's `model` block, and the checkpoint's armkit specs against the model the recipe built."""
    if "://" in ckpt_path or not Path(ckpt_path).is_file():  # remote, sharded, or a name Lightning resolves
        return []
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    notes = []
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    if hparams:
        notes.append(f"resume: {ckpt_path} stores hyper-parameters; they are not applied, the recipe stands")
        recipe = flatten(model_config, "model")
        for key, value in sorted(flatten(hparams, "model").items()):
            if recipe.get(key, "<absent>") != value:
                notes.append(f"resume: {key}: checkpoint {value!r}, recipe {recipe.get(key, '<absent>')!r} "
                             "(the recipe stands)")
    stored = checkpoint.get("armkit") or {}
    for name, spec in specs.items():
        if name in stored:
            notes += differences(stored[name], spec, label=f"model.{name}")
    return notes
