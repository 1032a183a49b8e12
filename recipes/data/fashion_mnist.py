"""Fashion-MNIST (Zalando, MIT) from Debian's `dataset-fashion-mnist`: 60,000 + 10,000 grayscale 28x28, 10 classes.

Read from /usr/share/datasets/fashion-mnist/ when the package is installed, else from the cache, where
`apt-get download` puts the .deb and Python unpacks it (no root, no `apt-get install`). Its test set is the val split.
Captions come from a few templates over the class name, chosen by sample index (deterministic).
"""

from __future__ import annotations

import gzip
import struct
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from armkit.recipes.data.fetch import apt_deb, cache_dir, extract_deb
from armkit.recipes.data.sources import Sample, SourceData

PACKAGE = "dataset-fashion-mnist"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
NAMES = ["a t-shirt", "a pair of trousers", "a pullover", "a dress", "a coat", "a sandal", "a shirt", "a sneaker",
         "a bag", "an ankle boot"]
TAGS = ["t-shirt, top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
TEMPLATES = ["a photo of {}.", "a grayscale photo of {}.", "a low-resolution photo of {}.", "a small picture of {}.",
             "a product photo of {}, on a black background."]


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip) -> uint8 array: images [N, 28, 28] or labels [N]."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    if magic >> 8 != 0x08 or (magic & 0xFF) not in (1, 3):
        raise ValueError(f"{path} is not an unsigned-byte idx file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, data holds {array.size} bytes")
    return array.reshape(shape)


def files_dir(cache: str | Path | None) -> Path:
    """The folder holding the four .gz files: the system one, else the cache (fetched and unpacked once)."""
    if all((SYSTEM_DIR / f).is_file() for pair in FILES.values() for f in pair):
        return SYSTEM_DIR
    folder = cache_dir(cache) / "fashion-mnist"
    if not all((folder / f).is_file() for pair in FILES.values() for f in pair):
        extract_deb(apt_deb(PACKAGE, cache=cache), "usr/share/datasets/fashion-mnist/", folder)
    return folder


def _image(images: np.ndarray, i: int) -> Image.Image:
    return Image.fromarray(images[i], "L")


def load(*, cache: str | Path | None = None, limit: int | None = None) -> SourceData:
    folder = files_dir(cache)
    splits = {}
    for split, (image_file, label_file) in FILES.items():
        images, labels = read_idx(folder / image_file), read_idx(folder / label_file)
        if len(images) != len(labels):
            raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels in the {split} files")
        n = len(images) if limit is None else min(len(images), limit if split == "train" else max(1, limit // 6))
        splits[split] = [Sample(key=f"{split}_{i:05d}", load=partial(_image, images, i),
                                caption=TEMPLATES[i % len(TEMPLATES)].format(NAMES[labels[i]]), label=int(labels[i]),
                                tags=TAGS[labels[i]], id=f"{'train' if split == 'train' else 't10k'}:{i}")
                         for i in range(n)]
    return SourceData(name="fashion-mnist", licence="MIT (Zalando SE; Debian package dataset-fashion-mnist)",
                      classes=CLASSES, train=splits["train"], val=splits["val"], default_size=28, grayscale=True,
                      provenance={"files": str(folder), "packages": [{"registry": "debian", "name": PACKAGE}]})
