"""`StepCheckpoint`: Lightning's `ModelCheckpoint` that also saves the step training ends on.

`ModelCheckpoint(every_n_train_steps=50, save_last=True)` saves `last.ckpt` only on multiples of 50: a run that
stops at step 447 (max_steps or max_time) keeps step 400 as "last" and loses the final 47 steps. Here the end of
training saves the final step as well (top-k by its usual rule, then `last`), unless that step is already saved.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose `last` (and top-k) always include the step training ended on."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._should_skip_saving_checkpoint(trainer) or self._last_global_step_saved == trainer.global_step:
            return super().on_train_end(trainer, pl_module)
        candidates = self._monitor_candidates(trainer)
        if self._every_n_train_steps >= 1:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
