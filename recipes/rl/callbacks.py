"""`SampleGrid`: the same held-out prompts and seed sampled before RL starts and after it ends (and every n steps),
saved as RUN/samples/step-XXXXXX.png (one row per prompt; prompts, codes and each image's reward beside it as
.json) with before.png / after.png (and .json): the held-out reward before and after, and the images it scored."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from armkit.backbones.generate import Sampling
from armkit.recipes.rl.rollout import sample_groups


class SampleGrid(L.Callback):
    """num_prompts: held-out prompts (the first of the validation data, per task); per_prompt: samples in a row;
    every_n_steps: also mid-run (0: only before and after); seed: the same draws every time."""

    def __init__(self, *, num_prompts: int = 4, per_prompt: int = 4, every_n_steps: int = 0, seed: int = 0) -> None:
        self.num_prompts, self.per_prompt, self.every_n_steps, self.seed = num_prompts, per_prompt, every_n_steps, seed
        self._samples: list[dict] | None = None

    def _held_out(self, trainer: L.Trainer, module: L.LightningModule) -> list[dict]:
        """The first validation samples, read until every task of the module's stage has `num_prompts` prompts (or
        the validation data ends): edit pairs can sit after all the text-to-image samples in the shards."""
        if self._samples is None:
            self._samples = []
            loader = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else ()
            for batch in loader:
                self._samples += batch["samples"]
                found = module._tasks(self._samples)
                if all(len(found.get(task, ())) >= self.num_prompts for task in module.tasks):
                    break
        return self._samples

    @torch.no_grad()
    def save(self, trainer: L.Trainer, module: L.LightningModule, name: str) -> Path | None:
        from torchvision.utils import make_grid, save_image

        rows, record = [], []
        gen = torch.Generator(device=module.device).manual_seed(self.seed)
        for task, samples in module._tasks(self._held_out(trainer, module)).items():
            grid = samples[0]["grid"]
            group = [s for s in samples if s["grid"] == grid][: self.num_prompts]
            sampling = Sampling(temperature=module.temperature[task], top_k=module.top_k)
            roll = sample_groups(module.model, [module._prompt(task, s)[0] for s in group], grid,
                                 group_size=self.per_prompt, sampling=sampling, generator=gen)
            images = module._decode(roll.codes, gen)
            rewards, _ = module._rewards(task, group, images, self.per_prompt, gen)
            rows.append(images.cpu())
            record += [{"task": task, "prompt": module._prompt(task, s)[1], "reward": float(r), "codes": c.tolist()}
                       for s, c, r in zip([s for s in group for _ in range(self.per_prompt)], roll.codes, rewards)]
        if not rows or not trainer.is_global_zero:
            return None
        folder = Path(trainer.default_root_dir) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        images = torch.cat(rows)
        path = folder / f"step-{trainer.global_step:06d}.png"
        for target in [path, *([folder / name] if name else [])]:
            save_image(make_grid(images, nrow=self.per_prompt, padding=2, pad_value=1.0), target)
            target.with_suffix(".json").write_text(json.dumps({"step": trainer.global_step, "samples": record}) + "\n")
        return path

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.global_step == 0:
            self.save(trainer, module, "before.png")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer, module, "")

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.save(trainer, module, "after.png")
