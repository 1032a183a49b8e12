"""Data: sources -> WebDataset shards (`armkit data`), the one shard reader, and the Lightning data module.

Importing this package imports nothing heavy; `ShardDataModule`, `ShardLoader` and `ResumableLoader` load
`recipes.data.module` (and lightning) on first use.
"""

# Every name loads its module on first use, so `armkit data --help` and the fetch helpers do not import torch.
_WHERE = {
    **dict.fromkeys(("FetchError", "apt_deb", "cache_dir", "extract_deb", "npm_tarball"), "fetch"),
    **dict.fromkeys(("BadSample", "ShardReader", "SkippedSampleWarning", "TrainStream", "collate", "decode_sample",
                     "expand_shards", "image_tensor", "load_image", "resize_crop", "to_rgb"), "reader"),
    **dict.fromkeys(("Sample", "SourceData"), "sources"),
    "write_dataset": "writer",
    **dict.fromkeys(("ShardDataModule", "ShardLoader", "ResumableLoader"), "module"),  # these import lightning
}
__all__ = [
    "BadSample", "FetchError", "ResumableLoader", "Sample", "ShardDataModule", "ShardLoader", "ShardReader",
    "SkippedSampleWarning", "SourceData", "TrainStream", "apt_deb", "cache_dir", "collate", "decode_sample",
    "expand_shards", "extract_deb", "image_tensor", "load_image", "npm_tarball", "resize_crop", "to_rgb",
    "write_dataset",
]


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"armkit.recipes.data.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'armkit.recipes.data' has no attribute {name!r}")
