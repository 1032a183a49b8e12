"""Write a source as WebDataset shards: DIR/train-000000.tar ..., DIR/val-000000.tar ..., and DIR/meta.json.

Per sample: KEY.png (RGB, alpha composited on white; 8-bit grayscale for grayscale sources), KEY.txt (caption),
KEY.cls (label), KEY.json ({"source", "id", "tags"}). The train/val split (by group, seeded) and the sample order
inside each split (seeded shuffle, so every shard mixes classes) are deterministic; tar members carry mtime 0, so
the same command writes the same bytes. meta.json is written last: its presence means the shards are complete.
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image

from armkit.recipes.data.reader import to_rgb
from armkit.recipes.data.sources import Sample, SourceData


def split_samples(data: SourceData, *, val_fraction: float, seed: int) -> dict[str, list[Sample]]:
    """{"train": [...], "val": [...]}: the source's own val set, else a seeded `val_fraction` of its groups."""
    if data.val is not None:
        splits = {"train": list(data.train), "val": list(data.val)}
    else:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
        groups = sorted({s.group or s.key for s in data.train})
        random.Random(f"split:{seed}").shuffle(groups)
        val = set(groups[:round(val_fraction * len(groups))])
        splits = {"train": [s for s in data.train if (s.group or s.key) not in val],
                  "val": [s for s in data.train if (s.group or s.key) in val]}
    for name, samples in splits.items():
        random.Random(f"order:{seed}:{name}").shuffle(samples)
    return splits


def encode_png(img: Image.Image, *, size: int | None, grayscale: bool) -> bytes:
    """RGB (or L) PNG bytes; with `size`, the shorter side is resized to it (antialiased bicubic, aspect kept)."""
    img = img.convert("L") if grayscale and img.mode in ("L", "1") else to_rgb(img)
    if size is not None and min(img.size) != size:
        scale = size / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                         Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_split(samples: list[Sample], out: Path, split: str, *, source: str, size: int | None, grayscale: bool,
                shard_size: int) -> list[dict[str, Any]]:
    """Write `samples` as out/{split}-NNNNNN.tar shards of `shard_size`; returns [{"name", "count"}] per shard."""
    shards = []
    for i, start in enumerate(range(0, len(samples), shard_size)):
        name = f"{split}-{i:06d}.tar"
        part = out / (name + ".part")
        chunk = samples[start:start + shard_size]
        with wds.TarWriter(str(part), encoder=False, mtime=0) as tar:
            for s in chunk:
                try:
                    png = encode_png(s.load(), size=size, grayscale=grayscale)
                except Exception as e:  # noqa: BLE001 -- any unreadable image: name it and stop
                    raise ValueError(f"cannot read image {s.id!r} of {source}: {type(e).__name__}: {e}") from None
                tar.write({"__key__": s.key, "png": png, "txt": s.caption.encode("utf-8"),
                           "cls": str(s.label).encode("ascii"),
                           "json": json.dumps({"source": source, "id": s.id, "tags": s.tags},
                                              ensure_ascii=False, sort_keys=True).encode("utf-8")})
        part.replace(out / name)
        shards.append({"name": name, "count": len(chunk)})
    return shards


def write_dataset(data: SourceData, out: str | Path, *, size: int | None, shard_size: int, val_fraction: float,
                  seed: int, command: list[str], args: dict[str, Any]) -> dict[str, Any]:
    """Split, write all shards, then meta.json; returns the meta dict. Old shards and meta.json in `out` go first."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("train-*.tar"), *out.glob("val-*.tar"), out / "meta.json"]:
        old.unlink(missing_ok=True)
    size = size if size is not None else data.default_size
    splits = split_samples(data, val_fraction=val_fraction, seed=seed)
    meta_splits = {}
    for split, samples in splits.items():
        if not samples:
            continue
        shards = write_split(samples, out, split, source=data.name, size=size, grayscale=data.grayscale,
                             shard_size=shard_size)
        per_class = Counter(data.classes[s.label] if 0 <= s.label < len(data.classes) else "(none)"
                            for s in samples)
        meta_splits[split] = {"count": len(samples), "per_class": dict(sorted(per_class.items())),
                              "shards": shards}
    meta = {
        "source": data.name, "licence": data.licence, "image_size": size if size is not None else "original",
        "image_mode": "L" if data.grayscale else "RGB", "classes": data.classes, "num_classes": len(data.classes),
        "splits": meta_splits, "skipped": data.skipped, "provenance": data.provenance,
        "seed": seed, "val_fraction": None if data.val is not None else val_fraction, "shard_size": shard_size,
        "command": command, "args": args,
        "sample": {"png": "image", "txt": "caption", "cls": "label (-1: none)", "json": ["source", "id", "tags"]},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return meta
