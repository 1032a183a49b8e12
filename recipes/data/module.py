"""Data loaders with skip accounting and exact resume, and the Lightning data module that hands them out.

`ShardLoader`: a DataLoader over a dataset that batches inside each worker (`ShardReader`, `TrainStream`); in the
main process it sets batch["skipped"] to the number of samples this loader's workers have skipped so far (the sum
of each worker's latest running count, which every batch carries in batch["stream"]).

`ResumableLoader`: the training loader. Its `state_dict()` is the position of every worker after the last batch
*consumed*; `load_state_dict()` makes the next batch exactly the one the uninterrupted run would have produced next.
Why this is exact, with any number of workers:
- each worker's stream is deterministic and carries its position (epoch, raw offset, skip count) in every batch;
- torch's DataLoader takes batches from its workers round-robin (worker i % W gives batch i, in order), so after
  n batches the next one comes from worker n % W. On resume, physical worker w plays logical worker
  (w + n) % W and restarts at that logical worker's saved position.
Lightning's fetcher pulls one batch ahead of the training step, so under a Trainer a batch counts as consumed when
the data module's `on_before_batch_transfer` sees it, not when the loader yields it.
Under DDP, `state_dict()` gathers every rank's position (a collective: Lightning calls it on all ranks when it saves
a checkpoint), since the checkpoint file is written by rank 0 only.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from armkit.recipes.data.reader import ShardReader, TrainStream, epoch_shards, expand_shards, shards_digest

STATE_FORMAT = "armkit.TrainStream/1"


class ShardLoader(DataLoader):
    """DataLoader (batch_size=None) over a batch-yielding shard dataset; batch["skipped"] = total over workers.

    `skipped` is the same total after (or during) an iteration. Under DDP, sum it over ranks, e.g. in a
    LightningModule: `self.log("data/skipped", float(batch["skipped"]), reduce_fx="sum", sync_dist=True)`.
    """

    def __init__(self, dataset: IterableDataset, *, num_workers: int = 0, pin_memory: bool = False) -> None:
        super().__init__(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
        self.skipped = 0

    def __iter__(self):
        latest: dict[int, int] = {}
        for batch in super().__iter__():
            latest[batch["stream"]["worker"]] = batch["stream"]["skipped"]
            self.skipped = batch["skipped"] = sum(latest.values())
            yield batch


class ResumableLoader(ShardLoader):
    """The training loader over a `TrainStream`: infinite, with `state_dict()` / `load_state_dict()` for Lightning.

    `auto_consume=True` (plain use): every yielded batch counts as consumed. `auto_consume=False` (under a Trainer):
    only batches passed to `consume(batch)` count; `ShardDataModule.on_before_batch_transfer` does that.
    Each `iter()` continues from the consumed position, so the stream never restarts by itself.
    """

    def __init__(self, dataset: TrainStream, *, num_workers: int = 0, pin_memory: bool = False,
                 auto_consume: bool = True) -> None:
        if not isinstance(dataset, TrainStream):
            raise TypeError(f"ResumableLoader needs a TrainStream, got {type(dataset).__name__}")
        slots = dataset.world_size * max(1, num_workers)
        epoch_shards(dataset.shards, seed=dataset.seed, epoch=0, slot=0, slots=slots)  # raises if too few shards
        super().__init__(dataset, num_workers=num_workers, pin_memory=pin_memory)
        self.auto_consume = auto_consume
        self.workers = max(1, num_workers)
        self.consumed = 0  # batches consumed so far
        self.positions: list[tuple[int, int, int]] = [(0, 0, 0)] * self.workers  # per logical worker
        self._yielded = 0

    def __iter__(self):
        stream: TrainStream = self.dataset
        stream.rotation = self.consumed % self.workers
        stream.start = list(self.positions)
        self._yielded = self.consumed
        latest = [p[2] for p in self.positions]
        for batch in DataLoader.__iter__(self):
            info = batch["stream"]
            info["index"] = self._yielded
            self._yielded += 1
            latest[info["worker"]] = info["skipped"]
            self.skipped = batch["skipped"] = sum(latest)
            if self.auto_consume:
                self.consume(batch)
            yield batch

    def consume(self, batch: dict[str, Any]) -> None:
        """Count `batch` (the next one this loader yielded) as used by training."""
        info = batch["stream"]
        if info.get("index") != self.consumed:
            raise RuntimeError(f"training batch {info.get('index')} was marked consumed, but batch {self.consumed} "
                               "was expected next: batches must be consumed once each, in order")
        self.consumed += 1
        self.positions[info["worker"]] = (info["epoch"], info["offset"], info["skipped"])

    def _own_state(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "workers": [list(p) for p in self.positions]}

    def state_dict(self) -> dict[str, Any]:
        stream: TrainStream = self.dataset
        if not self.auto_consume and self._yielded - self.consumed > 1:
            warnings.warn(f"{self._yielded} training batches were yielded but only {self.consumed} marked consumed; "
                          "is the batch reaching ShardDataModule.on_before_batch_transfer?", stacklevel=2)
        own = self._own_state()
        ranks: list[dict[str, Any] | None] = [None] * stream.world_size
        ranks[stream.rank] = own
        if (stream.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() == stream.world_size):
            torch.distributed.all_gather_object(ranks, own)
        return {"format": STATE_FORMAT, "seed": stream.seed, "batch_size": stream.batch_size,
                "num_workers": self.num_workers, "world_size": stream.world_size,
                "shuffle_buffer": stream.shuffle_buffer, "shards": shards_digest(stream.shards), "ranks": ranks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stream: TrainStream = self.dataset
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} loader state: {str(state)[:200]}")
        now = {"seed": stream.seed, "batch_size": stream.batch_size, "num_workers": self.num_workers,
               "world_size": stream.world_size, "shuffle_buffer": stream.shuffle_buffer,
               "shards": shards_digest(stream.shards)}
        diff = {k: (state.get(k), v) for k, v in now.items() if state.get(k) != v}
        if diff:
            listing = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"cannot resume the training stream exactly; settings differ ({listing})")
        own = state["ranks"][stream.rank]
        if own is None:
            raise ValueError(f"the loader state holds no position for rank {stream.rank}")
        self.consumed = int(own["consumed"])
        self.positions = [tuple(int(x) for x in p) for p in own["workers"]]
        self._yielded = self.consumed


class ShardDataModule(L.LightningDataModule):
    """WebDataset shards -> an infinite, resumable training loader and a finite validation loader.

    Needs `Trainer(use_distributed_sampler=False)` (the loaders split data by rank and worker themselves; `setup`
    raises if it is on). The training stream never ends, so bound training with `max_steps` and validate with an
    integer `val_check_interval`; do not call `trainer.estimated_stepping_batches` before the checkpoint is restored
    (Lightning then builds the loader early and drops its saved state; this module raises if it sees that).
    Every DDP rank yields the same (infinite) number of training batches; validation ranks get sample counts that
    differ by at most one (give `val_limit` to cap them).

    train: a shard folder (its train-*.tar, else all *.tar), a .tar, a glob or a brace pattern.
    val: the same for validation (a folder gives its val-*.tar); None: no validation.
    image_size: the side S of the [3, S, S] images. batch_size: per rank (also for validation).
    num_workers: DataLoader workers per rank; training needs at least world_size * num_workers shards.
    seed: shard order and shuffling, per epoch. shuffle_buffer: samples held for shuffling, per worker.
    val_limit: read at most this many validation samples (over all ranks).
    """

    stream_class, reader_class = TrainStream, ShardReader  # subclasses read other sample kinds (AR code shards)

    def __init__(self, *, train: str, val: str | None = None, image_size: int, batch_size: int,
                 num_workers: int = 0, seed: int = 0, shuffle_buffer: int = 1000,
                 val_limit: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train, self.val = train, val
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.seed, self.shuffle_buffer, self.val_limit = seed, shuffle_buffer, val_limit
        self.train_shards: list[str] | None = None
        self.val_shards: list[str] | None = None
        self._train_loader: ResumableLoader | None = None
        self._restored_batches: int | None = None

    def setup(self, stage: str | None = None) -> None:
        connector = getattr(self.trainer, "_accelerator_connector", None) if self.trainer is not None else None
        if getattr(connector, "use_distributed_sampler", False):
            raise ValueError("ShardDataModule splits data by rank and worker itself: "
                             "create the Trainer with use_distributed_sampler=False")
        if stage in (None, "fit"):
            self.train_shards = expand_shards(self.train, split="train")
        if self.val is not None and stage in (None, "fit", "validate", "test"):
            self.val_shards = expand_shards(self.val, split="val")

    def train_dataloader(self) -> ResumableLoader:
        if self.train_shards is None:
            self.setup("fit")
        stream = self.stream_class(self.train_shards, image_size=self.image_size, batch_size=self.batch_size,
                                   seed=self.seed, shuffle_buffer=self.shuffle_buffer)
        loader = ResumableLoader(stream, num_workers=self.num_workers, auto_consume=self.trainer is None)
        if self._train_loader is not None:  # a reloaded loader continues the stream
            loader.consumed, loader.positions = self._train_loader.consumed, list(self._train_loader.positions)
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> ShardLoader | list:
        if self.val is None:
            return []
        if self.val_shards is None:
            self.setup("validate")
        reader = self.reader_class(self.val_shards, image_size=self.image_size, batch_size=self.batch_size,
                                   limit=self.val_limit)
        return ShardLoader(reader, num_workers=self.num_workers)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        stream = batch.get("stream") if isinstance(batch, dict) else None
        if self._train_loader is not None and isinstance(stream, dict) and "index" in stream:
            if self._restored_batches is not None:  # first training batch after a restore
                if stream["index"] != self._restored_batches:
                    raise RuntimeError(
                        f"the checkpoint was saved after {self._restored_batches} training batches but the loader "
                        f"restarted at batch {stream['index']}: its saved state was not loaded (Lightning drops it "
                        "when trainer.estimated_stepping_batches is used before the restore; use trainer.max_steps)")
                self._restored_batches = None
            self._train_loader.consume(batch)
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"train_batches": self._train_loader.consumed} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_batches = state_dict.get("train_batches")

    @property
    def skipped(self) -> int:
        """Training samples this rank has skipped so far (all workers)."""
        return self._train_loader.skipped if self._train_loader is not None else 0
