"""Callbacks: what people look at (reconstruction grids) and what a multi-rank run can be audited with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import torch
from torchvision.utils import make_grid, save_image


def _out_dir(trainer: L.Trainer, name: str, *, per_run: bool = True) -> Path:
    """`<first logger's dir>/name` (per_run) or `<default_root_dir>/name`. Never `trainer.log_dir`: that is a
    collective broadcast under DDP and would hang when only rank 0 asks."""
    logger_dir = trainer.loggers[0].log_dir if per_run and trainer.loggers else None
    path = Path(logger_dir or trainer.default_root_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


class ReconstructionGrid(L.Callback):
    """Every `every_n_steps` steps and at the end, saves `grids/step_XXXXXX.png` and `grids/last.png`:
    rows of (input | decode(encode(input))) for the first `num_images` images of the first validation batch
    (or of the training batch when there is no validation data). The input is shown at the decoder's resolution;
    both are enlarged with nearest neighbour (each pixel a square block, no smoothing) to at least `min_size` px,
    so a 32 px decode is big enough to judge."""

    def __init__(self, *, every_n_steps: int = 200, num_images: int = 8, steps: int = 10, seed: int = 0,
                 min_size: int = 96) -> None:
        self.every_n_steps, self.num_images, self.steps, self.seed = every_n_steps, num_images, steps, seed
        self.min_size = min_size
        self._images: torch.Tensor | None = None
        self.last_path: Path | None = None

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not self._from_val:  # validation images win over training ones: the same inputs in every grid
            self._images, self._from_val = batch["image"][: self.num_images].detach().clone(), True

    _from_val = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._images is None:
            self._images = batch["image"][: self.num_images].detach().clone()
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step > 0:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer, pl_module)

    @torch.no_grad()
    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path | None:
        tok = pl_module.tokenizer
        if not trainer.is_global_zero or self._images is None or tok.decoder is None:
            return None
        was_training = pl_module.training
        pl_module.eval()
        images = self._images.to(pl_module.device)
        gen = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        recon = tok.decode(tok.encode(images), steps=self.steps, generator=gen).float()
        pl_module.train(was_training)
        size = recon.shape[-2:]
        images = torch.nn.functional.interpolate(images.float(), size=size, mode="bilinear", antialias=True)
        pairs = torch.stack([images, recon], dim=1).flatten(0, 1).clamp(0, 1)  # input, recon, input, recon, ...
        factor = -(-self.min_size // min(size))  # ceil: the smallest whole factor reaching min_size
        if factor > 1:
            pairs = torch.nn.functional.interpolate(pairs, scale_factor=factor, mode="nearest")
        grid = make_grid(pairs.cpu(), nrow=2 * min(4, len(images)), padding=4, pad_value=1.0)
        out = _out_dir(trainer, "grids")
        save_image(grid, out / f"step_{trainer.global_step:06d}.png")
        save_image(grid, out / "last.png")
        self.last_path = out / "last.png"
        return self.last_path


class SampleAudit(L.Callback):
    """Writes `audit/rank{R}.json` per rank: the sample keys it trained on and a checksum of its final weights.

    For checking a multi-GPU/multi-node data split (disjoint keys across ranks) and DDP synchronisation (equal
    checksums). Costs a list append per batch."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.keys.extend(batch.get("key", []))

    def on_train_end(self, trainer, pl_module) -> None:
        digest = hashlib.sha256()
        for name, p in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            digest.update(p.detach().cpu().float().numpy().tobytes())
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "steps": trainer.global_step,
                  "keys": self.keys, "weights_sha256": digest.hexdigest()}
        (_out_dir(trainer, "audit", per_run=False) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))

