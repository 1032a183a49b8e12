"""`TeacherFeatureCache`: the frozen teacher's features, computed once per image and kept beside the shards.

The teacher is frozen and the shard reader's resize and crop are deterministic, so F = encoder(image) is the same at
every step: computing it per step only costs time. The first run writes, per split,

    <shards folder>/features/<fingerprint>/<split>.safetensors   {"features": [N, T, C], "rows": [N]}
    <shards folder>/features/<fingerprint>/<split>.json          the sample keys in row order, the fingerprint inputs

and every run whose teacher has the same fingerprint reads it: each batch gets `batch["features"]` by sample key,
and `Tokenizer.forward` skips the encoder. The fingerprint is the sha256 of the encoder's spec (class path and
init args but `weights` / `pretrained`, which the tensors stand for), every tensor of its state_dict, and the size
the images are read at; a different teacher, weight file or image size gets a different folder, never stale
features. A batch with a key the cache lacks runs the encoder.
A split whose features would pass `max_gib` (fashion-mnist's 60,000 train images: 10 GiB at the demo's 64 x 656) is
not cached: its table would not fit in memory, and a few hundred steps see fewer images than building it reads.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from armkit.common.buildable import to_spec
from armkit.recipes.data.reader import ShardReader

# init args that only say where the weights came from: the state_dict tensors are hashed, so the recipe's teacher
# (`weights: asset:efficientnet_lite0`) and the same teacher loaded from an export (`weights: null`) share one cache
WEIGHT_SOURCE_ARGS = ("weights", "pretrained")


def teacher_fingerprint(encoder: torch.nn.Module, image_size: int) -> str:
    """sha256 of (encoder spec less its weight-source args, state_dict tensors, read size): what its features
    depend on. The demo's decoder stage (teacher from the tokenizer's export) reads the tokenizer stage's cache."""
    spec = to_spec(encoder)
    if isinstance(spec, dict) and isinstance(spec.get("init_args"), dict):
        spec = {**spec, "init_args": {k: v for k, v in spec["init_args"].items() if k not in WEIGHT_SOURCE_ARGS}}
    digest = hashlib.sha256()
    digest.update(json.dumps({"encoder": spec, "image_size": image_size}, sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def shard_count(shards: list[str]) -> int | None:
    """Samples in `shards` per their folder's meta.json (written by `armkit data`), or None when it does not say."""
    meta = Path(shards[0]).parent / "meta.json" if shards else None
    if meta is None or not meta.is_file():
        return None
    counts = {s["name"]: s["count"] for split in json.loads(meta.read_text()).get("splits", {}).values()
              for s in split.get("shards", [])}
    found = [counts.get(Path(s).name) for s in shards]
    return None if None in found else sum(found)


@torch.no_grad()
def build_split(encoder: torch.nn.Module, shards: list[str], image_size: int, out: Path, *,
                batch_size: int = 64) -> None:
    """Run the encoder once over every sample of `shards` (read as training reads them) and write the cache."""
    keys, feats, device = [], [], next(encoder.parameters()).device
    reader = ShardReader(shards, image_size=image_size, batch_size=batch_size, rank=0, world_size=1)
    was_training = encoder.training
    encoder.eval()
    count = shard_count(shards)
    total = -(-count // batch_size) if count is not None else None
    for batch in tqdm(reader, desc=f"teacher features -> {out.parent.name[:12]}/{out.stem}", unit="batch",
                      total=total):
        feats.append(encoder(batch["image"].to(device)).float().cpu())
        keys += list(batch["key"])
    encoder.train(was_training)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")  # two runs building at once never share a temp file
    save_file({"features": torch.cat(feats).contiguous(), "rows": torch.arange(len(keys))}, str(tmp))
    out.with_suffix(".json").write_text(json.dumps({"keys": keys, "shards": [Path(s).name for s in shards]}))
    tmp.rename(out)  # the safetensors file appears last: its presence means the split is complete


class FeatureTable:
    """sample key -> cached feature row."""

    def __init__(self, path: Path) -> None:
        self.features = load_file(str(path))["features"]  # [N, T, C]
        index = json.loads(path.with_suffix(".json").read_text())
        self.row = {k: i for i, k in enumerate(index["keys"])}
        self.shards = set(index.get("shards", []))  # the shard names it was built from

    def lookup(self, keys: list[str]) -> torch.Tensor | None:
        rows = [self.row.get(k) for k in keys]
        return None if any(r is None for r in rows) else self.features[rows]


class TeacherFeatureCache(L.Callback):
    """Adds cached teacher features to every batch; builds the cache on first use. folder: where the
    per-fingerprint folders go (default `features/` beside the training shards); max_gib: the largest split table
    (fp32, held in memory) it builds, larger splits run the teacher per step."""

    def __init__(self, *, folder: str | None = None, batch_size: int = 64, max_gib: float = 2.0) -> None:
        self.folder = folder
        self.batch_size = batch_size
        self.max_gib = max_gib
        self.tables: dict[str, FeatureTable] = {}
        self.fingerprint: str | None = None
        self.hits = self.misses = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        data, encoder = trainer.datamodule, pl_module.tokenizer.encoder
        if not getattr(encoder, "frozen", False):
            raise ValueError("TeacherFeatureCache needs a frozen encoder: a training encoder's features change")
        self.fingerprint = teacher_fingerprint(encoder, data.image_size)
        data.setup(stage)
        for split, shards in (("train", data.train_shards), ("val", data.val_shards)):
            if not shards:
                continue
            root = Path(self.folder) if self.folder else Path(shards[0]).parent / "features"
            path = root / self.fingerprint[:16] / f"{split}.safetensors"
            if not path.is_file():  # the size check only where a table would be built
                gib = self.table_gib(encoder, data.image_size, shard_count(shards))
                if gib is not None and gib > self.max_gib:
                    print(f"TeacherFeatureCache: not caching {split} ({Path(shards[0]).parent}): its features would "
                          f"take {gib:.1f} GiB > max_gib={self.max_gib:g}; the teacher runs at each step")
                    continue
                if trainer.is_global_zero:
                    build_split(encoder, shards, data.image_size, path, batch_size=self.batch_size)
            trainer.strategy.barrier("teacher-feature-cache")
            table = self.tables[split] = FeatureTable(path)
            missing = [Path(s).name for s in shards if Path(s).name not in table.shards]
            if missing:  # built for a subset of these shards (another run's shard pattern): never wrong, only slower
                print(f"TeacherFeatureCache: {path} was built from {len(table.shards)} shards and lacks "
                      f"{len(missing)} of this run's {len(shards)} ({missing[0]}, ...); their batches run the teacher. "
                      f"Delete the file to rebuild it for all of them.")

    @staticmethod
    @torch.no_grad()
    def table_gib(encoder: torch.nn.Module, image_size: int, count: int | None) -> float | None:
        """GiB of a split's fp32 feature table, from one forward of a blank image; None when the count is unknown."""
        if count is None:
            return None
        device = next(encoder.parameters()).device
        was_training = encoder.training
        per_image = encoder.eval()(torch.zeros(1, 3, image_size, image_size, device=device)).numel()
        encoder.train(was_training)
        return count * per_image * 4 / 2**30

    def _add(self, split: str, batch: Any, device: torch.device) -> None:
        table = self.tables.get(split)
        found = table.lookup(list(batch["key"])) if table is not None and isinstance(batch, dict) else None
        if found is None:
            self.misses += 1
            return
        self.hits += 1
        batch["features"] = found.to(device, non_blocking=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._add("train", batch, pl_module.device)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._add("val", batch, pl_module.device)
