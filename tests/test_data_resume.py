"""Exact resume of the training stream: loader state_dict round trips, and a real Trainer checkpoint + resume."""

from __future__ import annotations

import io
import itertools
import json
import warnings

import lightning as L
import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from armkit.recipes.data.module import ShardDataModule

BAD = {9, 31, 50}  # corrupt samples: resuming must replay skips exactly too


def sample(i: int) -> dict:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB").save(buf, format="PNG")
    data = buf.getvalue()
    return {"__key__": f"k{i:03d}", "png": data[:20] if i in BAD else data, "txt": f"caption {i}".encode(),
            "cls": str(i % 4).encode(), "json": json.dumps({"source": "t", "id": str(i), "tags": "t"}).encode()}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """12 train shards x 5 samples (3 corrupt), 2 val shards x 5 samples."""
    out = tmp_path_factory.mktemp("resume")
    for split, n_shards, base in (("train", 12, 0), ("val", 2, 100)):
        for s in range(n_shards):
            with wds.TarWriter(str(out / f"{split}-{s:06d}.tar"), encoder=False) as tar:
                for i in range(base + 5 * s, base + 5 * s + 5):
                    tar.write(sample(i))
    return out


def make_dm(folder, num_workers: int) -> ShardDataModule:
    return ShardDataModule(train=str(folder), val=str(folder), image_size=8, batch_size=4, num_workers=num_workers,
                           seed=7, shuffle_buffer=6)


def take(loader, n: int) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(itertools.islice(iter(loader), n))


def same(a: dict, b: dict) -> bool:
    return (a["key"] == b["key"] and a["txt"] == b["txt"] and torch.equal(a["image"], b["image"])
            and torch.equal(a["cls"], b["cls"]) and a["skipped"] == b["skipped"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_state_dict_resumes_exactly(shards, num_workers):
    k, m = 9, 12  # 57 good samples / 4 per batch: the resumed part crosses into epoch 1
    dm = make_dm(shards, num_workers)
    dm.setup("fit")
    reference = take(dm.train_dataloader(), k + m)
    assert reference[-1]["skipped"] > len(BAD)  # every bad sample met once in epoch 0, some again in epoch 1
    if num_workers == 0:  # (with workers, each worker's epochs advance on their own)
        assert len({key for b in reference[:14] for key in b["key"]}) == 14 * 4  # no repeats inside an epoch

    dm = make_dm(shards, num_workers)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = take(loader, k)
    buf = io.BytesIO()
    torch.save(loader.state_dict(), buf)  # as in a checkpoint
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)

    dm2 = make_dm(shards, num_workers)
    dm2.setup("fit")
    resumed_loader = dm2.train_dataloader()
    resumed_loader.load_state_dict(state)
    resumed = take(resumed_loader, m)
    assert all(same(a, b) for a, b in zip(first, reference[:k]))
    assert [b["key"] for b in resumed] == [b["key"] for b in reference[k:]]
    assert all(same(a, b) for a, b in zip(resumed, reference[k:]))


def test_resume_refuses_different_settings(shards):
    dm = make_dm(shards, 0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    take(loader, 2)
    other = ShardDataModule(train=str(shards), image_size=8, batch_size=5, seed=7, shuffle_buffer=6)
    other.setup("fit")
    with pytest.raises(ValueError, match=r"batch_size: checkpoint 4, now 5"):
        other.train_dataloader().load_state_dict(loader.state_dict())


def test_setup_names_a_missing_shard_folder(tmp_path):
    dm = ShardDataModule(train=str(tmp_path / "missing"), image_size=8, batch_size=2)
    with pytest.raises(FileNotFoundError, match="missing"):
        dm.setup("fit")


class Recorder(L.LightningModule):
    """Records the keys of every training batch; a single weight so the optimizer has something to step."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.keys: list[list[str]] = []
        self.val_batches = 0

    def training_step(self, batch, batch_idx):
        self.keys.append(list(batch["key"]))
        return (self.w - batch["image"].mean()) ** 2

    def validation_step(self, batch, batch_idx):
        self.val_batches += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(tmp_path, callbacks=(), **kw) -> L.Trainer:
    return L.Trainer(max_steps=10, accelerator="cpu", devices=1, use_distributed_sampler=False, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
                     val_check_interval=3, check_val_every_n_epoch=None, limit_val_batches=2,
                     num_sanity_val_steps=1, default_root_dir=tmp_path, **kw)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_trainer_checkpoint_resumes_the_exact_next_batch(shards, tmp_path, num_workers):
    from lightning.pytorch.callbacks import ModelCheckpoint

    warnings.simplefilter("ignore")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    full = Recorder()
    trainer(tmp_path, [ckpt], enable_checkpointing=True).fit(full, datamodule=make_dm(shards, num_workers))
    assert len(full.keys) == 10 and full.val_batches > 0
    path = next((tmp_path / "ckpt").glob("*step=4.ckpt"))

    resumed = Recorder()
    trainer(tmp_path, enable_checkpointing=False).fit(resumed, datamodule=make_dm(shards, num_workers),
                                                      ckpt_path=path)
    assert resumed.keys == full.keys[4:]  # not one batch lost to Lightning's prefetch, none repeated


def test_trainer_with_distributed_sampler_on_is_refused(shards, tmp_path):
    warnings.simplefilter("ignore")
    t = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                  enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        t.fit(Recorder(), datamodule=make_dm(shards, 0))
