"""Zero-shot classification through the sigmoid loss's heads: a text classifier from class names and templates.

    classes x templates --text tower--> [T, C, E] --L2, mean over T, L2--> classifier [C, E]
    images --tokenizer--> Z --SigmoidLoss.image_embedding--> [B, E];  scores = image @ classifier.T  [B, C]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as nnf


def text_classifier(embed_texts: Callable[[list[str]], torch.Tensor], classes: list[str],
                    templates: list[str] | tuple[str, ...]) -> torch.Tensor:
    """[C, E]: per class, the mean of the L2-normalised embeddings of every template filled with the class name,
    renormalised. `embed_texts(list[str]) -> [n, E]` (e.g. SigmoidLoss.text_embedding)."""
    if not classes:
        raise ValueError("text_classifier needs at least one class name")
    per_template = [nnf.normalize(embed_texts([t.format(c) for c in classes]).float(), dim=-1)
                    for t in templates]  # T x [C, E]
    return nnf.normalize(torch.stack(per_template).mean(dim=0), dim=-1)  # [C, E]


def shard_meta_path(data: str | Path) -> Path:
    """Where `armkit data` put meta.json for a shard folder, a .tar, a glob or a brace pattern."""
    path = Path(str(data)).expanduser()
    return path / "meta.json" if path.is_dir() else path.parent / "meta.json"


def read_meta(data: str | Path) -> dict | None:
    """The shards' meta.json, or None when there is none; a broken one is an error naming the file."""
    path = shard_meta_path(data)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return meta


def class_names(meta: dict | None, override: list[str] | None = None) -> tuple[list[str] | None, str]:
    """(class names, where they came from): `override` (--classes), else meta.json's "classes", else (None, why)."""
    if override:
        return [str(c) for c in override], "given (--classes)"
    classes = (meta or {}).get("classes")
    if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes):
        return list(classes), "meta.json"
    return None, "no class names: the shards have no meta.json with 'classes' and none were given (--classes)"
