"""Mixed-task batches: code samples -> sequences of the three tasks, with ratios from the config and condition
dropout for guidance (the format itself is backbones/sequence.py).

Each sample takes one task, drawn with the config's weights renormalised over the tasks the sample supports: every
sample supports text-to-image; understanding needs a caption; editing needs an edit pair (`armkit tokenize --edits`).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel

TASKS = ("t2i", "und", "edit")


def check_tasks(tasks: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks or any(w < 0 for w in tasks.values()) or sum(tasks.values()) <= 0:
        raise ValueError(f"tasks must map some of {TASKS} to weights >= 0 with a positive sum, got {tasks}")
    return dict(tasks)


def build_sequences(model: ARModel, samples: list[dict[str, Any]], *, tasks: dict[str, float],
                    text_dropout: float, image_dropout: float, max_text: int,
                    rng: random.Random) -> tuple[list[S.Sequence], Counter]:
    """One sequence per sample (samples whose supported tasks all have weight 0 are left out) and the task counts."""
    v, codec = model.vocab, model.codec
    seqs, counts = [], Counter()
    for s in samples:
        codes, grid, caption = s["codes"].tolist(), s["grid"], codec.encode(s["caption"])[:max_text]
        supported = ["t2i", *(["und"] if caption else []), *(["edit"] if s.get("edit") else [])]
        weights = [tasks.get(t, 0.0) for t in supported]
        if sum(weights) <= 0:
            continue
        task = rng.choices(supported, weights)[0]
        if task == "t2i":
            seqs.append(S.text_to_image(v, caption, codes, grid, drop_text=rng.random() < text_dropout))
        elif task == "und":
            seqs.append(S.understanding(v, codes, grid, caption, codec.eos))
        else:
            edit = s["edit"]
            instruction = codec.encode(edit["instruction"])[:max_text]
            seqs.append(S.editing(v, edit["source"].tolist(), edit["source_grid"], instruction, codes, grid,
                                  drop_text=rng.random() < text_dropout, drop_image=rng.random() < image_dropout))
        counts[task] += 1
    return seqs, counts
