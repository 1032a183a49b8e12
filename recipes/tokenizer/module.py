"""`TokenizerModule`: trains a `Tokenizer` with a `LossSet` under Lightning.

Only the tokenizer's projections, its decoder and the losses' own heads/adapters/scalars train; frozen parts have
requires_grad=False and are skipped by the optimizer; norms, biases and scalars (any parameter under 2-D, e.g. the
SigLIP logit scale and bias) get no weight decay (recipes/training/optim.py). Randomness inside a micro-batch (flow
noise, timesteps, condition dropout) is re-seeded from (seed, global_step, micro-batch within the step, rank)
(recipes/training/seeding.py), so the micro-batches of one optimizer step under gradient accumulation draw
differently, and a resumed run (checkpoints fall on step boundaries) draws exactly what an uninterrupted one would.
`compile: true` (or a dict of `torch.compile` arguments) compiles every repeated transformer block in place before
training (recipes/training/compile.py); names and checkpoints stay the same.
`psnr_steps: N` (> 0) also logs `val/psnr` at each validation: held-out PSNR as `armkit eval` measures it, decoded with
N Euler steps from fixed noise, so a run shows its reconstruction curve and not only its losses.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from armkit.common.weights import local_path, sha256_file
from armkit.recipes.training.compile import compile_blocks
from armkit.recipes.training.optim import scheduled_adamw
from armkit.recipes.training.seeding import seed_step, step_generator
from armkit.tokenizer import Tokenizer, to_spec
from armkit.tokenizer.losses import LossSet


@torch.no_grad()
def held_out_psnr(tok: Tokenizer, images: torch.Tensor, *, steps: int, generator: torch.Generator,
                  features: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR (dB) per image [B] as `armkit eval` measures it: images at the encoder's size are encoded, decoded with
    `steps` Euler steps, clamped to [0, 1] and compared with the input resized to the decoder's size."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    from armkit.recipes.evaluation.evaluate import to_size

    z = tok(images, features=features).z  # [B, N, D]
    x_hat = tok.decoder.sample(z, steps=steps, generator=generator).float().clamp(0, 1)
    target = to_size(images.float(), x_hat.shape[-1])
    return peak_signal_noise_ratio(x_hat, target, data_range=1.0, reduction="none", dim=(1, 2, 3))


class TokenizerModule(L.LightningModule):
    def __init__(self, *, tokenizer: Tokenizer, losses: LossSet, lr: float = 3e-4,
                 betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.0, warmup_steps: int = 0,
                 cosine_steps: int = 0, seed: int = 0, usage_window: int = 50,
                 compile: bool | dict[str, Any] = False, psnr_steps: int = 0) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.losses = losses
        self.lr, self.betas, self.weight_decay = lr, tuple(betas), weight_decay
        self.warmup_steps, self.cosine_steps = warmup_steps, cosine_steps
        self.seed = seed
        self.usage_window = usage_window
        self.psnr_steps = psnr_steps
        self.compile_args = ({} if compile is True else dict(compile)) if compile else None
        self.compiled: list[str] = []
        self._recent: list[torch.Tensor] = []  # indices of the last `usage_window` steps
        self._micro_step, self._micro = -1, 0  # the optimizer step the last micro-batch belonged to; its index in it

    def setup(self, stage: str) -> None:
        self.losses.set_distributed(self.global_rank, self.trainer.world_size)

    def configure_model(self) -> None:
        if self.compile_args is not None and not self.compiled:
            self.compiled = compile_blocks(self, **self.compile_args)
            rank_zero_info(f"torch.compile: {len(self.compiled)} transformer blocks compiled in place")

    # -- training -------------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        step = self.global_step  # counts optimizer steps: equal for every micro-batch of an accumulation window
        self._micro = self._micro + 1 if step == self._micro_step else 0
        self._micro_step = step
        seed_step(self.seed, step, self._micro, self.global_rank)

    def _step(self, batch: dict, prefix: str) -> torch.Tensor:
        out = self.tokenizer(batch["image"], features=batch.get("features"))  # "features": TeacherFeatureCache
        loss, logs = self.losses(out, batch, self.tokenizer)
        bs = batch["image"].shape[0]
        self.log_dict({f"{prefix}/{k}": v for k, v in logs.items()}, batch_size=bs, sync_dist=prefix == "val")
        self.log(f"{prefix}_loss", loss.detach(), prog_bar=True, batch_size=bs, sync_dist=prefix == "val")
        if prefix == "train":
            self._log_usage(out.indices)
            if "skipped" in batch:
                self.log("data/skipped", float(batch["skipped"]), batch_size=bs, reduce_fx="sum", sync_dist=True)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "val")
        if self.psnr_steps > 0 and self.tokenizer.decoder is not None:
            self._log_psnr(batch, batch_idx)
        return loss

    @torch.no_grad()
    def _log_psnr(self, batch: dict, batch_idx: int) -> None:
        """`val/psnr`: held-out PSNR (dB) as `armkit eval` measures it (`held_out_psnr`), decoded from noise seeded
        by (seed, batch): the same draws at every validation, so the curve moves only with the weights."""
        gen = step_generator(self.seed, batch_idx, 7919, device=batch["image"].device)
        psnr = held_out_psnr(self.tokenizer, batch["image"], steps=self.psnr_steps, generator=gen,
                             features=batch.get("features"))
        self.log("val/psnr", psnr.mean(), batch_size=len(psnr), sync_dist=True)

    def _log_usage(self, indices: torch.Tensor) -> None:
        """Codebook usage over the last `usage_window` steps: distinct codes used / codebook size."""
        self._recent = (self._recent + [indices.detach().flatten().cpu()])[-self.usage_window:]
        used = torch.unique(torch.cat(self._recent)).numel()
        self.log("codes/usage_window", used / self.tokenizer.codebook_size, prog_bar=True)
        self.log("codes/distinct_window", float(used))

    # -- optimisation ---------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return scheduled_adamw(self)

    # -- checkpoints: specs as plain JSON (export needs no pickled objects); frozen file-backed parts left out -
    def frozen_files(self) -> dict[str, str]:
        """{state-dict prefix: weights file or folder} of the frozen parts loaded from a file (teacher, text tower,
        caption LM). Their weights are not written into checkpoints: the file rebuilds them, and a 135M-parameter LM
        would otherwise dominate every checkpoint. Frozen parts at random init have no file and stay in."""
        found = {}
        for name, module in self.named_modules():
            source = getattr(module, "init_args", {}).get("weights") or getattr(module, "init_args", {}).get("path")
            if name and getattr(module, "frozen", False) and isinstance(source, str):
                if not any(name.startswith(p) for p in found):
                    found[f"{name}."] = source
        return found

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["armkit"] = {"tokenizer": to_spec(self.tokenizer), "losses": to_spec(self.losses)}
        checkpoint["armkit_recent_indices"] = list(self._recent)
        if not hasattr(self, "_frozen_sha"):  # hashed once per run
            self._frozen_sha = {p: (src, sha256_file(local_path(src))) for p, src in self.frozen_files().items()}
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(tuple(self._frozen_sha))]:
            del state[key]
        checkpoint["armkit_frozen"] = {p: {"source": s, "sha256": h} for p, (s, h) in self._frozen_sha.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._recent = list(checkpoint.get("armkit_recent_indices", []))
        left_out = checkpoint.get("armkit_frozen", {})
        current, ours = self.state_dict(), self.frozen_files()  # the recipe's own sources, never the checkpoint's
        for prefix, record in left_out.items():
            if prefix not in ours:
                raise ValueError(f"checkpoint: it left out the frozen part {prefix[:-1]}, which this recipe does not "
                                 "load from a file; resume with the recipe it was trained with")
            if sha256_file(local_path(ours[prefix])) != record.get("sha256"):
                raise ValueError(f"checkpoint: the frozen part {prefix[:-1]} was trained with {record.get('source')} "
                                 f"(sha256 {str(record.get('sha256'))[:12]}...), but this recipe's {ours[prefix]} "
                                 "differs; restore that file")
            checkpoint["state_dict"].update({k: v for k, v in current.items() if k.startswith(prefix)})
