"""What a data source hands the shard writer: samples with lazily loaded images, class names, licence, provenance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class Sample:
    """One image and its text, before it is written to a shard."""

    key: str  # shard key: letters, digits, "-" and "_" only (no dots)
    load: Callable[[], Image.Image]  # decodes the image when the writer needs it
    caption: str  # .txt: a sentence or a name, for the caption loss
    label: int  # .cls: class index, -1 when unknown
    tags: str  # short comma-separated tags for a text tower
    id: str  # the sample's id in its source (file name, index)
    group: str = ""  # samples of one group always land in the same split (e.g. two files of one emoji)


@dataclass(frozen=True)
class Skip:
    """One sample left out, and why: `reason` is a short category (counted in meta.json), `detail` the error."""

    id: str
    reason: str
    detail: str = ""


def skipped_record(skips: list[Skip]) -> dict[str, Any]:
    """meta.json's "skipped": {"count", "by_reason": {reason: n}, "ids": [...], "details": ["id: reason: detail"]}."""
    return {"count": len(skips), "by_reason": dict(sorted(Counter(s.reason for s in skips).items())),
            "ids": [s.id for s in skips],
            "details": [f"{s.id}: {s.reason}" + (f": {s.detail}" if s.detail else "") for s in skips]}


@dataclass
class SourceData:
    """A whole source: its samples (and its own validation set, if it has one) and what meta.json records."""

    name: str
    licence: str
    classes: list[str]
    train: list[Sample]
    val: list[Sample] | None = None  # None: the writer splits train by --val-fraction
    default_size: int | None = None  # stored image size when --size is not given; None keeps the source's size
    grayscale: bool = False  # store 8-bit grayscale PNGs (the reader converts to RGB)
    skipped: list[Skip] = field(default_factory=list)  # samples the source itself could not use
    provenance: dict[str, Any] = field(default_factory=dict)  # packages and files the samples came from


def clean_key(text: str) -> str:
    """A WebDataset-safe key: keeps letters, digits, "-" and "_"; everything else becomes "_"."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in text)
