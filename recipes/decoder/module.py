"""`DecoderModule`: trains only a decoder on a frozen, exported tokenizer (ARM's second decoder stage).

ARM renders its final images with a decoder trained after the tokenizer, on the frozen tokenizer's tokens. Here the
tokenizer (encoder, projections, FSQ) and the loss heads come from an export folder and stay frozen; only the decoder
trains, on the rectified-flow loss of `decoder.loss(images, Z)`. No caption LM, text tower or loss head runs per step,
and with `TeacherFeatureCache` not the teacher either: Z is the frozen down-projection, FSQ and up-projection of the
cached features, so a step costs the decoder's forward and backward alone.

The module is a `TokenizerModule` (same checkpoints, resume, seeding, grids, `armkit eval` and `armkit export`): its
checkpoint holds the whole tokenizer with the new decoder, and the export's loss heads ride along, so the export of
this stage is the source export with its decoder replaced.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch

from armkit.common.weights import sha256_file
from armkit.decoders.base import Decoder
from armkit.recipes.tokenizer.module import TokenizerModule
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.hub import WEIGHTS_NAME, load_heads


class DecoderModule(TokenizerModule):
    """tokenizer: an export folder (`armkit export` / `save_pretrained`). decoder: None trains the export's own
    decoder further from its weights; a class_path block trains a new one from scratch (its cond_dim must be the
    tokenizer's embed_dim), e.g. a wider PixelDiT or a LatentDiT. trust: packages whose classes the export may name.
    ema: 0 trains `tokenizer.decoder` itself; a decay in (0, 1) trains a copy (`online`) and keeps in
    `tokenizer.decoder` an exponential moving average of it, updated after every optimizer step (decay
    min(ema, (1 + n) / (10 + n)) at step n). Grids, validation, checkpoints, `armkit eval` and the export then all
    use the average, and resume stays exact (both are in the checkpoint). The optimizer settings, and `psnr_steps`
    (held-out PSNR at each validation), are TokenizerModule's."""

    def __init__(self, *, tokenizer: str, decoder: Decoder | None = None, trust: Sequence[str] = (),
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.0,
                 warmup_steps: int = 0, cosine_steps: int = 0, seed: int = 0, psnr_steps: int = 0,
                 ema: float = 0.0) -> None:
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"model.ema: {ema} is not a decay in [0, 1) (0: no average)")
        tok = Tokenizer.from_pretrained(tokenizer, trust=trust)
        heads = load_heads(tokenizer, trust=trust)  # None when the export has none
        if decoder is not None:
            if getattr(decoder, "cond_dim", tok.embed_dim) != tok.embed_dim:
                raise ValueError(f"model.decoder: cond_dim {decoder.cond_dim} != the tokenizer's embed_dim "
                                 f"{tok.embed_dim} ({tokenizer})")
            tok.decoder = decoder
            tok.__dict__["_init_args"]["decoder"] = decoder  # the spec checkpoints and exports record (Buildable)
        if tok.decoder is None:
            raise ValueError(f"{tokenizer} has no decoder: give model.decoder (a class_path block) to train one")
        for p in [*tok.parameters(), *(heads.parameters() if heads is not None else ())]:
            p.requires_grad_(False)
        for p in tok.decoder.parameters():
            p.requires_grad_(True)
        super().__init__(tokenizer=tok, losses=heads, lr=lr, betas=betas, weight_decay=weight_decay,
                         warmup_steps=warmup_steps, cosine_steps=cosine_steps, seed=seed, psnr_steps=psnr_steps)
        self.ema = ema
        if ema:  # the copy trains; tokenizer.decoder becomes its average
            self.online = copy.deepcopy(tok.decoder)
            tok.decoder.requires_grad_(False)
        self.source = str(Path(tokenizer))
        self.source_sha256 = sha256_file(Path(tokenizer) / WEIGHTS_NAME)  # which frozen tokenizer this decoder reads

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["armkit"]["decoder_stage"] = {"source": self.source, "sha256": self.source_sha256}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A decoder resumed on another tokenizer would read other tokens: refused, naming both."""
        record = checkpoint.get("armkit", {}).get("decoder_stage") or {}
        if record and record.get("sha256") != self.source_sha256:
            raise ValueError(f"checkpoint: this decoder was trained on the tokenizer {record.get('source')} (sha256 "
                             f"{str(record.get('sha256'))[:12]}...), but model.init_args.tokenizer is {self.source} "
                             f"(sha256 {self.source_sha256[:12]}...); start a new run for a new tokenizer")
        super().on_load_checkpoint(checkpoint)

    def setup(self, stage: str) -> None:
        if self.losses is not None:
            super().setup(stage)

    def train(self, mode: bool = True) -> DecoderModule:
        """Only the decoder ever trains: the frozen tokenizer and heads stay in eval mode (no dropout, fixed norms)."""
        super().train(mode)
        self.tokenizer.eval()
        if self.losses is not None:
            self.losses.eval()
        self.tokenizer.decoder.train(mode and not self.ema)  # the average never trains
        if self.ema:
            self.online.train(mode)
        return self

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema:
            self._update_average()

    @torch.no_grad()
    def _update_average(self) -> None:
        n = self.global_step  # optimizer steps before this one
        decay = min(self.ema, (1 + n) / (10 + n))
        for avg, p in zip(self.tokenizer.decoder.parameters(), self.online.parameters()):
            avg.lerp_(p, 1.0 - decay)
        for avg, b in zip(self.tokenizer.decoder.buffers(), self.online.buffers()):
            avg.copy_(b)

    def _step(self, batch: dict, prefix: str) -> torch.Tensor:
        with torch.no_grad():  # "features": TeacherFeatureCache; then the teacher does not run either
            z = self.tokenizer(batch["image"], features=batch.get("features")).z  # [B, N, D]
        decoder = self.online if self.ema and prefix == "train" else self.tokenizer.decoder  # val: what is used
        loss, logs = decoder.loss(batch["image"], z)
        bs = batch["image"].shape[0]
        sync = prefix == "val"
        self.log_dict({f"{prefix}/decoder/{k}": v for k, v in logs.items()}, batch_size=bs, sync_dist=sync)
        self.log(f"{prefix}/loss/decoder_stage", loss.detach(), batch_size=bs, sync_dist=sync)  # summary.png's panel
        self.log(f"{prefix}_loss", loss.detach(), prog_bar=True, batch_size=bs, sync_dist=sync)
        if prefix == "train" and "skipped" in batch:
            self.log("data/skipped", float(batch["skipped"]), batch_size=bs, reduce_fx="sum", sync_dist=True)
        return loss
