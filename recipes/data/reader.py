"""The one shard reader: WebDataset tars -> decoded samples -> batches, split by node and worker, skipping bad samples.

A sample in a shard is `KEY.png` (or another image extension), `KEY.txt` (caption), `KEY.cls` (integer label),
`KEY.json` ({"source", "id", "tags"}); only the image is required. Decoded, it becomes the project's sample dict:

    {"image": FloatTensor [3, S, S] in [0, 1], "txt": str, "tags": str (falls back to txt), "cls": int (-1 if absent),
     "key": str}

and `collate` stacks a list of them into the batch convention ("image" [B,3,S,S], "txt"/"tags"/"key" lists,
"cls" LongTensor [B]).

Two datasets share the decoding:
- `ShardReader`: one finite pass (validation, evaluation), split at the *sample* level so any number of ranks and
  workers works and ranks get counts that differ by at most one; `limit` caps the samples read.
- `TrainStream`: an infinite, deterministic, resumable training stream, split at the *shard* level (every rank and
  worker reads only its own shards, so there must be at least world_size * num_workers shards).

Bad samples (truncated or empty image, no image, an image past the size limits, no caption or a caption that is not
UTF-8, bad .cls or .json, a tar member over `tar_stream.MAX_MEMBER_BYTES`) are skipped with a `SkippedSampleWarning`
naming the shard and key, and counted; a shard cut short counts every sample it lost (against the meta.json beside
it, see `recipes/data/tar_stream.py`). The count is `reader.skipped` in one process; in
batches, "skipped" is the producing worker's running count (`recipes.data.module.ShardLoader` turns it into the
total over workers).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import warnings
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from armkit.recipes.data.images import open_image
from armkit.recipes.data.tar_stream import expected_counts, raw_samples

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "ppm", "pgm", "pbm", "pnm")
WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit (and 32-bit int) grayscale, read as 0..65535


class SkippedSampleWarning(UserWarning):
    """A sample could not be decoded and was skipped."""


class BadSample(ValueError):
    """Why one sample cannot be used."""


# ---------------------------------------------------------------------------------------------------- decoding


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Alpha is composited on white; I;16/I are read as 0..65535, F as 0..1 (clipped)."""
    if img.mode == "RGB":
        return img
    if img.mode in WIDE_GRAY:
        a = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.rint(a * (255.0 / 65535.0)), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        a = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.rint(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8), "L")
    if img.mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def resize_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is `size` (antialiased bicubic), then centre-crop to size x size."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size)) if (nw, nh) != (size, size) else img


def image_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """PIL image of any mode -> FloatTensor [3, size, size] in [0, 1]."""
    rgb = resize_crop(to_rgb(img), size)
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)  # [3, S, S]


def load_image(data: bytes, size: int) -> torch.Tensor:
    """Encoded image bytes -> FloatTensor [3, size, size], upright (EXIF orientation applied); raises on an empty,
    truncated or unknown image, and on one past the pixel or aspect limits of `recipes/data/images.py`."""
    if not data:
        raise BadSample("empty image file")
    return image_tensor(open_image(data), size)


def decode_sample(raw: dict[str, Any], size: int, *, require_caption: bool = True) -> dict[str, Any]:
    """A raw WebDataset sample (extension -> bytes) -> the sample dict; raises `BadSample` saying why not.

    With `require_caption` (the default), a sample without a caption (.txt missing or blank) is a bad sample: the
    caption and sigmoid losses would otherwise train on "" silently."""
    key = raw.get("__key__", "?")
    ext = next((e for e in IMAGE_EXTS if e in raw), None)
    if ext is None:
        found = sorted(k for k in raw if not k.startswith("__"))
        raise BadSample(f"no image (extensions {found}; expected one of {IMAGE_EXTS})")
    try:
        image = load_image(raw[ext], size)
    except BadSample:
        raise
    except Exception as e:  # noqa: BLE001 -- PIL raises many types (OSError, UnidentifiedImageError, ...)
        raise BadSample(f"cannot decode .{ext}: {type(e).__name__}: {e}") from None
    try:
        txt = raw["txt"].decode("utf-8").strip() if "txt" in raw else ""
    except UnicodeDecodeError as e:
        raise BadSample(f"caption .txt is not UTF-8: {e}") from None
    if require_caption and not txt:
        raise BadSample("no caption (.txt missing or blank); the caption and sigmoid losses need one")
    try:
        cls = int(raw["cls"].decode("ascii").strip()) if "cls" in raw else -1
    except (UnicodeDecodeError, ValueError):
        raise BadSample(f"label .cls is not an integer: {raw['cls'][:20]!r}") from None
    tags = ""
    if "json" in raw:
        try:
            meta = json.loads(raw["json"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise BadSample(f".json is not valid JSON: {e}") from None
        if not isinstance(meta, dict):
            raise BadSample(f".json is a {type(meta).__name__}, not an object")
        tags = str(meta.get("tags") or "").strip()
    return {"image": image, "txt": txt, "tags": tags or txt, "cls": cls, "key": str(key)}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Sample dicts -> the batch convention: "image" [B,3,S,S], "txt"/"tags"/"key" lists, "cls" LongTensor [B]."""
    return {
        "image": torch.stack([s["image"] for s in samples]),  # [B, 3, S, S]
        "txt": [s["txt"] for s in samples],
        "tags": [s["tags"] for s in samples],
        "cls": torch.tensor([s["cls"] for s in samples], dtype=torch.long),  # [B]
        "key": [s["key"] for s in samples],
    }


# ------------------------------------------------------------------------------------------------ shard lists


def expand_shards(spec: str | os.PathLike | list[str], *, split: str | None = None) -> list[str]:
    """Shard paths from a folder, a .tar path, a glob or a brace pattern ("d/train-{000000..000011}.tar").

    A folder gives its `{split}-*.tar` files when `split` is given and such files exist, else all its `*.tar`.
    Every local path must exist; the error names the first that does not.
    """
    if isinstance(spec, (list, tuple)):
        shards = [str(s) for s in spec]
    else:
        spec = str(spec)
        path = Path(spec).expanduser()
        if path.is_dir():
            shards = sorted(glob.glob(str(path / f"{split}-*.tar"))) if split else []
            shards = shards or sorted(glob.glob(str(path / "*.tar")))
            if not shards:
                raise FileNotFoundError(f"{split or 'shard'} folder {path} contains no .tar shards")
        elif any(c in spec for c in "*?["):
            shards = sorted(glob.glob(str(path)))
            if not shards:
                raise FileNotFoundError(f"shard pattern {spec} matches no files")
        else:
            shards = wds.shardlists.expand_urls(spec)
    if not shards:
        raise FileNotFoundError(f"no shards in {spec!r}")
    for s in shards:
        if "://" not in s and not s.startswith("pipe:") and not Path(s).is_file():
            raise FileNotFoundError(f"shard {s} does not exist (from {spec!r})")
    return shards


def shards_digest(shards: list[str]) -> str:
    """A short fingerprint of a shard list (file names only, so a moved dataset still matches)."""
    return hashlib.sha1("\n".join(Path(s).name for s in shards).encode()).hexdigest()[:16]


def node_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the explicit values, else torch.distributed's when initialised, else (0, 1)."""
    if rank is not None or world_size is not None:
        if rank is None or world_size is None or not 0 <= rank < world_size:
            raise ValueError(f"give both rank and world_size with 0 <= rank < world_size (got {rank}, {world_size})")
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 1) in the main process."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def epoch_shards(shards: list[str], *, seed: int, epoch: int, slot: int, slots: int) -> list[str]:
    """The shards one (rank, worker) slot reads in `epoch`: a seeded per-epoch permutation, dealt round-robin.

    slot = rank * num_workers + worker, slots = world_size * num_workers; the slots partition the shard list.
    """
    if len(shards) < slots:
        raise ValueError(f"{len(shards)} training shards cannot be split over {slots} readers "
                         f"(world_size x num_workers); write at least {slots} shards (smaller --shard-size) "
                         "or use fewer workers")
    order = list(shards)
    random.Random(f"shards:{seed}:{epoch}").shuffle(order)
    return order[slot::slots]


# ---------------------------------------------------------------------------------------------------- datasets


class _Skips:
    """Counts skipped samples and warns, naming the shard and key; `quiet` mutes it while replaying on resume."""

    def __init__(self, start: int = 0) -> None:
        self.count = start
        self.quiet = False

    def skip(self, where: str, key: str, reason: str, lost: int = 1) -> None:
        if not self.quiet:
            self.count += lost
            warnings.warn(f"skipping sample {key!r} in {where}: {reason}", SkippedSampleWarning, stacklevel=2)


class ShardReader(IterableDataset):
    """One finite pass over shards, split by node and worker at the sample level; yields samples or batches.

    The i-th raw sample (over all shards in order) belongs to rank i % world_size; a rank's t-th sample to worker
    t % num_workers, so every sample is read exactly once over all ranks and workers (each reader scans all shards
    but decodes only its own: meant for validation and evaluation sets). `limit` caps i (the samples read in total
    over all ranks; a skipped one counts). With `batch_size`, each worker yields collated batches carrying
    "skipped" (its running skip count) and "stream" {"worker", "skipped"}; otherwise single sample dicts.
    `skipped` is the exact count when iterated in this process (num_workers=0).
    """

    def __init__(self, shards: str | list[str], *, image_size: int, batch_size: int | None = None,
                 limit: int | None = None, rank: int | None = None, world_size: int | None = None,
                 split: str | None = None, require_caption: bool = True) -> None:
        super().__init__()
        self.shards = expand_shards(shards, split=split)
        self.expected = expected_counts(self.shards)
        self.require_caption = require_caption
        self.image_size = int(image_size)
        self.batch_size = batch_size
        self.limit = limit
        self.rank, self.world_size = node_info(rank, world_size)
        self.skipped = 0

    # Other sample kinds (e.g. the AR stage's code shards) override these two: raw sample -> dict, dicts -> batch.
    def decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        return decode_sample(raw, self.image_size, require_caption=self.require_caption)

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(samples)

    def samples(self) -> Iterator[dict[str, Any]]:
        """This reader's decoded samples, each with "skipped" (running count) and "worker"."""
        worker, workers = worker_info()
        skips = _Skips()
        self.skipped = 0
        for i, raw in enumerate(raw_samples(self.shards, skips.skip, self.expected)):
            if self.limit is not None and i >= self.limit:
                break
            if i % self.world_size != self.rank or (i // self.world_size) % workers != worker:
                continue
            try:
                sample = self.decode(raw)
            except BadSample as e:
                skips.skip(raw.get("__url__", "?"), raw.get("__key__", "?"), str(e))
            else:
                yield {**sample, "skipped": skips.count, "worker": worker}
            finally:
                self.skipped = skips.count
        self.skipped = skips.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.batch_size is None:
            for s in self.samples():
                s.pop("worker")
                yield s
            return
        # A full batch is held back until the next one starts, so the last batch carries the final skip count.
        worker = worker_info()[0]
        buf: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] | None = None
        for s in self.samples():
            buf.append(s)
            if len(buf) == self.batch_size:
                if pending:
                    yield _batch(pending, worker, self.skipped, collate=self.collate)
                pending, buf = buf, []
        for last in (pending, buf):
            if last:
                yield _batch(last, worker, self.skipped, collate=self.collate)


def _batch(samples: list[dict[str, Any]], worker: int, skipped: int, *,
           collate: Callable[[list[dict[str, Any]]], dict[str, Any]] = collate, **stream: Any) -> dict[str, Any]:
    batch = collate(samples)
    batch["skipped"] = skipped
    batch["stream"] = {"worker": worker, "skipped": skipped, **stream}
    return batch


class TrainStream(IterableDataset):
    """An infinite training stream of batches, deterministic and resumable; batching happens here, per worker.

    Each (rank, worker) slot is an independent stream: epoch after epoch it reads its share of the shards
    (`epoch_shards`: permutation seeded by seed+epoch), shuffles raw samples in a buffer seeded by
    (seed, epoch, rank, worker), decodes, skips bad samples and cuts batches of exactly `batch_size` (a batch may
    span two epochs). Every batch carries "skipped" and "stream" = {"worker", "epoch", "offset", "skipped"}: the
    slot's position *after* its last sample (raw samples of that epoch's shuffled order) and running skip count.

    Resuming (`start`, set by `ResumableLoader`): worker w plays logical worker (w + rotation) % num_workers, which
    restarts at its saved position by re-reading (not decoding) the raw samples before it in that epoch, so the
    shuffle buffer is rebuilt exactly. Cost: reading that worker's share of the current epoch once.
    """

    def __init__(self, shards: str | list[str], *, image_size: int, batch_size: int, seed: int = 0,
                 shuffle_buffer: int = 1000, rank: int | None = None, world_size: int | None = None,
                 split: str | None = None, require_caption: bool = True) -> None:
        super().__init__()
        self.shards = expand_shards(shards, split=split)
        self.expected = expected_counts(self.shards)
        self.require_caption = require_caption
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.rank, self.world_size = node_info(rank, world_size)
        self.rotation = 0  # resume: worker w plays logical worker (w + rotation) % num_workers
        self.start: list[tuple[int, int, int]] | None = None  # per logical worker: (epoch, offset, skipped)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    # Other sample kinds (e.g. the AR stage's code shards) override these two: raw sample -> dict, dicts -> batch.
    def decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        return decode_sample(raw, self.image_size, require_caption=self.require_caption)

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(samples)

    def _epoch(self, epoch: int, slot: int, slots: int, worker: int, skips: _Skips) -> Iterator[dict[str, Any]]:
        shards = epoch_shards(self.shards, seed=self.seed, epoch=epoch, slot=slot, slots=slots)
        raw = raw_samples(shards, skips.skip, self.expected)
        if self.shuffle_buffer > 1:
            rng = random.Random(f"samples:{self.seed}:{epoch}:{self.rank}:{worker}")
            raw = wds.shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=rng)(raw)
        return raw

    def __iter__(self) -> Iterator[dict[str, Any]]:
        physical, workers = worker_info()
        worker = (physical + self.rotation) % workers  # logical worker
        slots, slot = self.world_size * workers, self.rank * workers + worker
        epoch0, offset0, skipped0 = self.start[worker] if self.start else (0, 0, 0)
        skips = _Skips(skipped0)
        buf: list[dict[str, Any]] = []
        for epoch in count(epoch0):
            raw = iter(self._epoch(epoch, slot, slots, worker, skips))
            offset, decoded = 0, 0
            if epoch == epoch0 and offset0:  # replay the consumed part of this epoch without decoding
                skips.quiet = True
                for offset, _ in enumerate(raw, start=1):
                    if offset == offset0:
                        break
                skips.quiet = False
                if offset < offset0:
                    raise RuntimeError(f"cannot resume: logical worker {worker} of rank {self.rank} was at sample "
                                       f"{offset0} of epoch {epoch}, but its shards now hold only {offset}")
            for r in raw:
                offset += 1
                try:
                    buf.append(self.decode(r))
                except BadSample as e:
                    skips.skip(r.get("__url__", "?"), r.get("__key__", "?"), str(e))
                    continue
                decoded += 1
                if len(buf) == self.batch_size:
                    yield _batch(buf, worker, skips.count, collate=self.collate, epoch=epoch, offset=offset)
                    buf = []
            if decoded == 0 and not (epoch == epoch0 and offset0):
                shards = epoch_shards(self.shards, seed=self.seed, epoch=epoch, slot=slot, slots=slots)
                raise RuntimeError(f"rank {self.rank} worker {worker}: no decodable sample in {shards} "
                                   f"(epoch {epoch}); the training stream cannot make progress")
