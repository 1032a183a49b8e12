"""`ARModule`: trains an `ARModel` on code shards under Lightning (ARM's one next-token loss over mixed tasks).

Batches of code samples (codes.py) become mixed-task sequences (tasks.py) inside the step, with the model's own text
codec. Randomness inside a step (task choice, condition dropout) comes from (seed, global_step, rank), so a run
resumed after SIGKILL draws exactly what an uninterrupted one would (the data position is restored by the shard
loader, as for the tokenizer). Checkpoints hold the model's spec as plain JSON and the tokenizer's fingerprint: a
checkpoint resumed on codes of another tokenizer is refused, naming both.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import torch

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.recipes.ar.checkpoint_hooks import CodesCheckpointHooks
from armkit.recipes.ar.codes import FingerprintError
from armkit.recipes.ar.tasks import build_sequences, check_tasks
from armkit.recipes.training.optim import scheduled_adamw
from armkit.recipes.training.seeding import seed_step

DEFAULT_TASKS = {"t2i": 0.6, "und": 0.25, "edit": 0.15}  # text-to-image the largest share, as in ARM


class ARModule(CodesCheckpointHooks, L.LightningModule):
    """tasks: weights of t2i / und / edit. text_dropout / image_dropout: condition dropout of the prompt text (and
    edit instruction) / of the edit source image. max_text: text ids kept per caption or instruction. The optimizer
    is AdamW with linear warmup then optional cosine decay (ARM: betas 0.9/0.95, no weight decay; clip 1.0 through
    `trainer.gradient_clip_val`)."""

    def __init__(self, *, model: ARModel, tasks: dict[str, float] | None = None, text_dropout: float = 0.1,
                 image_dropout: float = 0.1, max_text: int = 64, lr: float = 2e-4,
                 betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.0, warmup_steps: int = 0,
                 cosine_steps: int = 0, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(model, ARModel):
            raise TypeError(f"model must be an ARModel, got {type(model).__name__}")
        self.model = model
        self.tasks = check_tasks(tasks or DEFAULT_TASKS)
        self.text_dropout, self.image_dropout, self.max_text = text_dropout, image_dropout, max_text
        self.lr, self.betas, self.weight_decay = lr, tuple(betas), weight_decay
        self.warmup_steps, self.cosine_steps, self.seed = warmup_steps, cosine_steps, seed
        self.codes_tokenizer: dict[str, Any] | None = None  # the codes' tokenizer (meta.json), set in setup

    def setup(self, stage: str) -> None:
        meta = getattr(self.trainer.datamodule, "meta", None) if self.trainer is not None else None
        if meta is None:
            raise ValueError("ARModule trains on code shards: use armkit.recipes.ar.codes.CodeDataModule")
        tok, v = meta["tokenizer"], self.model.vocab
        if tok["codebook_size"] != v.codebook_size:
            raise FingerprintError(f"model.codebook_size={v.codebook_size} but the codes' tokenizer has "
                                   f"{tok['codebook_size']} codes ({tok['path']})")
        if self.model.levels is not None and list(self.model.levels) != list(tok["levels"]):
            raise FingerprintError(f"model.levels={self.model.levels} but the codes' tokenizer has FSQ levels "
                                   f"{tok['levels']}")
        if max(tok["grid"]) > v.max_grid:
            raise ValueError(f"the codes' grid {tok['grid']} exceeds model.max_grid={v.max_grid}")
        self.codes_tokenizer = dict(tok)

    # -- steps ----------------------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        seed_step(self.seed, self.global_step, self.global_rank)

    def _step(self, batch: dict, prefix: str, rng: random.Random, dropout: bool) -> torch.Tensor | None:
        seqs, counts = build_sequences(self.model, batch["samples"], tasks=self.tasks, max_text=self.max_text,
                                       text_dropout=self.text_dropout if dropout else 0.0,
                                       image_dropout=self.image_dropout if dropout else 0.0, rng=rng)
        if not seqs:
            return None
        ids, mask, labels = (t.to(self.device) for t in S.collate(self.model.vocab, seqs))
        out = self.model(ids, mask, labels)
        bs, sync = len(seqs), prefix == "val"
        self.log(f"{prefix}_loss", out.loss.detach(), prog_bar=True, batch_size=bs, sync_dist=sync)
        logs = {"loss": out.loss.detach(), "text_loss": out.text_loss.detach(),
                "visual_loss": out.visual_loss.detach(), "tokens": float(out.num_text + out.num_visual)}
        logs.update({f"task/{t}": float(counts.get(t, 0)) for t in self.tasks})
        self.log_dict({f"{prefix}/{k}": v for k, v in logs.items()}, batch_size=bs, sync_dist=sync)
        if prefix == "train" and "skipped" in batch:
            self.log("data/skipped", float(batch["skipped"]), batch_size=bs, reduce_fx="sum", sync_dist=True)
        return out.loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        rng = random.Random(f"tasks:{self.seed}:{self.global_step}:{self.global_rank}")
        return self._step(batch, "train", rng, dropout=True)

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        rng = random.Random(f"val:{self.seed}:{batch_idx}:{self.global_rank}")  # the same tasks every validation
        return self._step(batch, "val", rng, dropout=False)

    # -- optimisation: AdamW, warmup, cosine, as every stage (no decay on norms and biases; the AR recipes set 0) ----
    def configure_optimizers(self):
        return scheduled_adamw(self)

    # -- checkpoints: CodesCheckpointHooks (the model's spec, the codes' tokenizer, refused on other codes) ---------
    def checkpoint_extras(self) -> dict:
        return {"tasks": self.tasks}
