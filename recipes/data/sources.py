"""What a data source hands the shard writer: samples with lazily loaded images, class names, licence, provenance."""

from __future__ import annotations

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
    skipped: dict[str, Any] = field(default_factory=lambda: {"count": 0})  # {"count", "reason", "ids"}
    provenance: dict[str, Any] = field(default_factory=dict)  # packages and files the samples came from


def clean_key(text: str) -> str:
    """A WebDataset-safe key: keeps letters, digits, "-" and "_"; everything else becomes "_"."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in text)
