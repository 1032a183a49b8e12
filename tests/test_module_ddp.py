"""TokenizerModule under real 2-process DDP (Lightning's ddp_spawn, gloo on CPU): its setup tells the SigLIP loss the
rank and world size, so each rank's loss counts the other rank's texts as negatives, and the ranks' mean is open_clip's
SigLipLoss on the gathered batch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as nnf
from open_clip.loss import SigLipLoss

from armkit.recipes.tokenizer.module import TokenizerModule
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.encoders import TimmEncoder
from armkit.tokenizer.losses import LossSet, SigmoidLoss
from armkit.tokenizer.text import TinyTextTower

TAGS = ["red, circle", "blue, square", "green, circle", "yellow, square"]
ENCODER = dict(model_name="vit_tiny_patch16_224", image_size=32,
               model_kwargs=dict(depth=1, patch_size=8, embed_dim=64, num_heads=2))


class Recording(TokenizerModule):
    """Saves, per rank, its first training step's loss, sample indices and what the SigLIP loss was told."""

    out_dir: str

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        sig = self.losses["sigmoid"]
        with torch.no_grad():  # open_clip's own distributed loss on this rank's features, told the trainer's rank
            image, text = sig.image_embedding(self.tokenizer(batch["image"]).z), sig.text_embedding(batch["tags"])
            open_clip = SigLipLoss(rank=self.global_rank, world_size=self.trainer.world_size)(
                image, text, sig.logit_scale.exp(), sig.logit_bias)
        torch.save({"loss": loss.detach(), "open_clip": open_clip, "index": batch["index"].tolist(),
                    "rank": sig.siglip.rank, "world_size": sig.siglip.world_size},
                   f"{self.out_dir}/rank{self.global_rank}.pt")
        return loss


def make_module() -> Recording:
    torch.manual_seed(0)
    tok = Tokenizer(encoder=TimmEncoder(**ENCODER), levels=[8, 5, 5, 5], projection="linear")
    sig = SigmoidLoss(text_tower=TinyTextTower(width=32, heads=2), embed_dim=64,
                      init_logit_scale=0.0, init_logit_bias=0.0)  # negatives weigh as much as positives
    return Recording(tokenizer=tok, losses=LossSet(losses={"sigmoid": sig}), lr=0.0)


def test_tokenizer_module_under_two_process_ddp_tells_siglip_rank_and_world_size(tmp_path):
    import lightning as L

    model = make_module()
    model.out_dir = str(tmp_path)
    reference = copy.deepcopy(model)  # the weights both ranks start from
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 32, 32, generator=g)
    data = [{"image": images[i], "tags": TAGS[i], "index": i} for i in range(4)]
    # spawn, not fork: forking a process whose OpenMP threads already ran can hang the child
    strategy = "ddp_spawn"
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=2, shuffle=False))

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    assert sorted(ranks[0]["index"] + ranks[1]["index"]) == [0, 1, 2, 3]  # each rank saw its own half
    for r in ranks:
        assert float(r["loss"]) == pytest.approx(float(r["open_clip"]), rel=1e-5)

    sig = reference.losses["sigmoid"]
    with torch.no_grad():
        image = sig.image_embedding(reference.tokenizer(images).z)  # [4, E]
        text = sig.text_embedding(TAGS)  # [4, E]
        scale, bias = sig.logit_scale.exp(), sig.logit_bias.detach()
        gathered = SigLipLoss()(image, text, scale, bias)  # one process, all 4 x 4 pairs
    for r in ranks:  # each rank: its 2 images against all 4 texts (positives on its own pairs), / its 2 images
        own = r["index"]
        labels = -torch.ones(2, 4)
        labels[torch.arange(2), own] = 1.0
        with torch.no_grad():
            want = -nnf.logsigmoid(labels * (scale * image[own] @ text.T + bias)).sum() / 2
        assert float(r["loss"]) == pytest.approx(float(want), rel=1e-4)
    assert float((ranks[0]["loss"] + ranks[1]["loss"]) / 2) == pytest.approx(float(gathered), rel=1e-4)
