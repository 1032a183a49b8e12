"""Data: sources -> WebDataset shards (`armkit data`), the one shard reader, and the Lightning data module.

Importing this package does not import lightning; `ShardDataModule`, `ShardLoader` and `ResumableLoader` load
`recipes.data.module` (and lightning) on first use.
"""

from armkit.recipes.data.fetch import FetchError, apt_deb, cache_dir, extract_deb, npm_tarball, pip_download
from armkit.recipes.data.reader import (
    BadSample,
    ShardReader,
    SkippedSampleWarning,
    TrainStream,
    collate,
    decode_sample,
    expand_shards,
    image_tensor,
    load_image,
    resize_crop,
    to_rgb,
)
from armkit.recipes.data.sources import Sample, SourceData
from armkit.recipes.data.writer import write_dataset

_LIGHTNING = ("ShardDataModule", "ShardLoader", "ResumableLoader")

__all__ = [
    "BadSample", "FetchError", "ResumableLoader", "Sample", "ShardDataModule", "ShardLoader", "ShardReader",
    "SkippedSampleWarning", "SourceData", "TrainStream", "apt_deb", "cache_dir", "collate", "decode_sample",
    "expand_shards", "extract_deb", "image_tensor", "load_image", "npm_tarball", "pip_download", "resize_crop",
    "to_rgb", "write_dataset",
]


def __getattr__(name: str):
    if name in _LIGHTNING:
        from armkit.recipes.data import module

        return getattr(module, name)
    raise AttributeError(f"module 'armkit.recipes.data' has no attribute {name!r}")
