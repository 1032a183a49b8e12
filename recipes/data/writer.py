"""Write a source as WebDataset shards: DIR/train-000000.tar ..., DIR/val-000000.tar ..., and DIR/meta.json.

Per sample: KEY.png (RGB, alpha composited on white; 8-bit grayscale for grayscale sources), KEY.txt (caption),
KEY.cls (label), KEY.json ({"source", "id", "tags"}). The train/val split (by group, seeded) and the sample order
inside each split (seeded shuffle, so every shard mixes classes) are deterministic; tar members carry mtime 0, so
the same command writes the same bytes. meta.json is written last: its presence means the shards are complete.
A new dataset is written beside the old one (a staging folder inside --out) and swapped in only when complete;
samples that cannot be read are skipped, named in the log and counted by reason in meta.json.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image

from armkit.recipes.data.images import ImageRejected
from armkit.recipes.data.reader import to_rgb
from armkit.recipes.data.sources import Sample, Skip, SourceData, skipped_record

STAGE_PREFIX = ".armkit-new-"  # the staging folder inside --out: "<prefix><pid>"


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
                shard_size: int, log: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[Sample], list[Skip]]:
    """Write the readable `samples` as out/{split}-NNNNNN.tar shards of `shard_size` each.

    A sample whose image cannot be decoded (or is past the size limits) is skipped, named through `log` and returned
    as a `Skip`; shards hold only good samples. Returns ([{"name", "count"}] per shard, the written samples, skips).
    """
    shards: list[dict[str, Any]] = []
    written: list[Sample] = []
    skips: list[Skip] = []
    tar, count = None, 0
    try:
        for s in samples:
            try:
                png = encode_png(s.load(), size=size, grayscale=grayscale)
            except Exception as e:  # noqa: BLE001 -- any unreadable image (PIL raises many types): skip, count
                reason = "image too large" if isinstance(e, ImageRejected) else "unreadable image"
                skips.append(Skip(s.id, reason, f"{type(e).__name__}: {e}"))
                log(f"skipping {s.id!r} of {source}: {reason}: {type(e).__name__}: {e}")
                continue
            if tar is None:
                name = f"{split}-{len(shards):06d}.tar"
                tar, count = wds.TarWriter(str(out / name), encoder=False, mtime=0), 0
            tar.write({"__key__": s.key, "png": png, "txt": s.caption.encode("utf-8"),
                       "cls": str(s.label).encode("ascii"),
                       "json": json.dumps({"source": source, "id": s.id, "tags": s.tags},
                                          ensure_ascii=False, sort_keys=True).encode("utf-8")})
            written.append(s)
            count += 1
            if count == shard_size:
                tar.close()
                shards.append({"name": name, "count": count})
                tar = None
    finally:
        if tar is not None:
            tar.close()
    if tar is not None and count:
        shards.append({"name": name, "count": count})
    return shards, written, skips


def swap_in(stage: Path, out: Path) -> None:
    """Replace the dataset in `out` (its shards and meta.json) by the complete one in `stage`, then drop `stage`.

    meta.json goes first and comes back last, so at every moment either meta.json is absent (incomplete) or it
    describes the shards beside it. Files of `out` that are not shards are left alone.
    """
    (out / "meta.json").unlink(missing_ok=True)
    for old in [*out.glob("train-*.tar"), *out.glob("val-*.tar"), *out.glob("*.tar.part")]:
        old.unlink()
    for new in sorted(stage.glob("*.tar")):
        os.replace(new, out / new.name)
    os.replace(stage / "meta.json", out / "meta.json")
    shutil.rmtree(stage)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def write_dataset(data: SourceData, out: str | Path, *, size: int | None, shard_size: int, val_fraction: float,
                  seed: int, command: list[str], args: dict[str, Any],
                  log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Split, write every shard and meta.json into a staging folder inside `out`, then swap them in.

    A run that fails or is killed leaves the dataset already in `out` untouched (a killed run's staging folder is
    removed by the next run). Unreadable samples are skipped and counted by reason in meta.json["skipped"]; if none
    can be written, nothing changes and a ValueError says why. Returns the meta dict.
    """
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{STAGE_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = out / f"{STAGE_PREFIX}{os.getpid()}"
    stage.mkdir()
    try:
        meta = _write_all(data, stage, size=size, shard_size=shard_size, val_fraction=val_fraction, seed=seed,
                          command=command, args=args, log=log)
        swap_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return meta


def _write_all(data: SourceData, out: Path, *, size: int | None, shard_size: int, val_fraction: float, seed: int,
               command: list[str], args: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    size = size if size is not None else data.default_size
    splits = split_samples(data, val_fraction=val_fraction, seed=seed)
    meta_splits, skips = {}, list(data.skipped)
    for skip in data.skipped:
        log(f"skipping {skip.id!r} of {data.name}: {skip.reason}" + (f": {skip.detail}" if skip.detail else ""))
    for split, samples in splits.items():
        shards, written, lost = write_split(samples, out, split, source=data.name, size=size,
                                            grayscale=data.grayscale, shard_size=shard_size, log=log)
        skips += lost
        if not written:
            continue
        per_class = Counter(data.classes[s.label] if 0 <= s.label < len(data.classes) else "(none)"
                            for s in written)
        meta_splits[split] = {"count": len(written), "per_class": dict(sorted(per_class.items())),
                              "shards": shards}
    if not meta_splits:
        raise ValueError(f"no sample of {data.name} could be written ({len(skips)} skipped: "
                         f"{skipped_record(skips)['by_reason']}); the dataset in the output folder is unchanged")
    meta = {
        "source": data.name, "licence": data.licence, "image_size": size if size is not None else "original",
        "image_mode": "L" if data.grayscale else "RGB", "classes": data.classes, "num_classes": len(data.classes),
        "splits": meta_splits, "skipped": skipped_record(skips), "provenance": data.provenance,
        "seed": seed, "val_fraction": None if data.val is not None else val_fraction, "shard_size": shard_size,
        "command": command, "args": args,
        "sample": {"png": "image", "txt": "caption", "cls": "label (-1: none)", "json": ["source", "id", "tags"]},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return meta
