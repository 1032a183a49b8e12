"""`StepProgressBar`: one training bar counting optimizer steps out of `max_steps`, across epochs and resumes.

Lightning's bar counts batches of the current epoch. armkit's train stream is endless, so its "epoch" is the whole
run; this bar says `step 120/400` with an ETA for the steps left (a resumed run starts at its restored step).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """TQDM bar over global steps: total = max_steps (when set), position = trainer.global_step."""

    train_description = "train"

    def on_train_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_start(trainer)
        self._count_steps(trainer)  # a run resumed mid-"epoch" gets no on_train_epoch_start

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        self._count_steps(trainer)

    def _count_steps(self, trainer: L.Trainer) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None)
        bar.initial = bar.n = trainer.global_step  # ETA counts only the steps this process will run
        bar.set_description(self.train_description)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()
