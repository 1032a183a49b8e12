"""The metrics that are not a library call: codebook statistics, top-k accuracy and retrieval R@1.

Plain functions on tensors, so that tests can check each against hand-made inputs whose answer is known.
"""

from __future__ import annotations

import math

import torch


class CodeHistogram:
    """Counts how often each code occurs over all tokens passed to `update` (any shape of indices)."""

    def __init__(self, codebook_size: int) -> None:
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
        self.codebook_size = int(codebook_size)
        self.counts = torch.zeros(self.codebook_size, dtype=torch.long)

    def update(self, indices: torch.Tensor) -> None:
        flat = indices.detach().reshape(-1).long().cpu()
        if flat.numel() and (flat.min() < 0 or flat.max() >= self.codebook_size):
            raise ValueError(f"code indices must lie in [0, {self.codebook_size}), got [{int(flat.min())}, "
                             f"{int(flat.max())}]")
        self.counts += torch.bincount(flat, minlength=self.codebook_size)

    @property
    def tokens(self) -> int:
        return int(self.counts.sum())


def codebook_usage(counts: torch.Tensor) -> float:
    """Share of codes (entries of the histogram `counts`) used at least once, in [0, 1]."""
    return float((counts > 0).sum()) / counts.numel()


def code_perplexity(counts: torch.Tensor) -> float:
    """exp(entropy in nats) of the empirical distribution `counts / counts.sum()`; 1 for a single code."""
    total = counts.sum()
    if total <= 0:
        raise ValueError("code_perplexity needs at least one counted token")
    p = counts[counts > 0].double() / float(total)
    return math.exp(float(-(p * p.log()).sum()))


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    """How many rows of scores [B, C] have their label [B] among their k highest entries (ties: lowest index first)."""
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"topk_correct expects scores [B, C] and labels [B], got {tuple(scores.shape)} and "
                         f"{tuple(labels.shape)}")
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices  # [B, k]
    return int((top == labels[:, None]).any(dim=1).sum())


def balanced_top1(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present in `labels` of the share of their rows whose top-1 is right (per-class recall):
    a constant guess scores 1 / (classes present) however unbalanced the set is."""
    right = scores.argmax(dim=1) == labels  # [B]
    classes = labels.unique()
    return float(torch.stack([right[labels == c].double().mean() for c in classes]).mean())


def retrieval_r1(similarity: torch.Tensor, query_texts: list[str], item_texts: list[str]) -> float:
    """Share of queries (rows of similarity [Q, I]) whose best item has the same text as the query's own.

    Image->text: rows are images, items are texts, query_texts[i] = the text of image i, item_texts[j] = text j.
    Text->image: rows are texts, items are images, with each side's texts. Identical texts count as correct.
    """
    if similarity.shape != (len(query_texts), len(item_texts)):
        raise ValueError(f"retrieval_r1: similarity {tuple(similarity.shape)} does not match {len(query_texts)} "
                         f"queries x {len(item_texts)} items")
    if not query_texts:
        raise ValueError("retrieval_r1 needs at least one query")
    best = similarity.argmax(dim=1).tolist()  # [Q]
    return sum(item_texts[j] == query_texts[i] for i, j in enumerate(best)) / len(query_texts)
