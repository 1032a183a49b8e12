"""Zero-shot classification: a text classifier from class names and templates, scored against image embeddings.

    classes x templates --text tower--> [T, C, E] --L2, mean over T, L2--> classifier [C, E]
    images --tokenizer--> Z --SigmoidLoss.image_embedding (trained head) or the teacher's pool_tokens--> [B, E]
    scores = image @ classifier.T  [B, C]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf

from armkit.recipes.evaluation.metrics import balanced_top1, topk_correct
from armkit.recipes.evaluation.protocol import Protocol


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


def zero_shot(embed_texts: Callable[[list[str]], torch.Tensor], image: torch.Tensor, labels: torch.Tensor,
              names: list[str] | None, protocol: Protocol, metrics: dict[str, Any], skipped: dict[str, str], *,
              prefix: str = "", top5: bool = True) -> dict[str, Any]:
    """Fills {prefix}zeroshot_top1/_balanced(/top5) in `metrics` (or reasons in `skipped`) from normalised image
    embeddings [n, E] and a text classifier built with `embed_texts`; returns what the protocol records."""
    keys = [f"{prefix}zeroshot_top1", f"{prefix}zeroshot_top1_balanced"] + ([f"{prefix}zeroshot_top5"] if top5 else [])
    if names is None:
        skipped.update(dict.fromkeys(keys, "no class names (meta.json 'classes' or --classes)"))
        return {}
    keep = (labels >= 0) & (labels < len(names))  # [n]
    if labels.max() >= len(names):
        raise ValueError(f"sample label {int(labels.max())} has no class name: {len(names)} names given")
    if not keep.any():
        skipped.update(dict.fromkeys(keys, "no eval sample has a class label (.cls)"))
        return {"classes": names}
    classifier = text_classifier(embed_texts, names, protocol.templates).cpu()  # [C, E]
    scores = image[keep] @ classifier.T  # [m, C]
    m = int(keep.sum())
    metrics[f"{prefix}zeroshot_top1"] = 100.0 * topk_correct(scores, labels[keep], 1) / m
    metrics[f"{prefix}zeroshot_top1_balanced"] = 100.0 * balanced_top1(scores, labels[keep])
    if top5 and len(names) >= 5:
        metrics[f"{prefix}zeroshot_top5"] = 100.0 * topk_correct(scores, labels[keep], 5) / m
    elif top5:
        skipped[f"{prefix}zeroshot_top5"] = f"only {len(names)} classes"
    return label_stats(labels, names)


def label_stats(labels: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """What a classification score is read against: the classes, how many eval samples carry a label, chance top-1
    and the top-1 of always guessing the commonest class (the same for the head, teacher and probe scores)."""
    labelled = labels[(labels >= 0) & (labels < len(names))]  # [m]
    if not len(labelled):
        return {"classes": names}
    majority = 100.0 * float(torch.bincount(labelled).max()) / len(labelled)
    return {"classes": names, "labelled": len(labelled), "chance_top1": 100.0 / len(names), "majority_top1": majority}
