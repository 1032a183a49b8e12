"""TokenizerModule's training mechanics checked against closed forms and hand-made cases: per-micro-batch seeding under
gradient accumulation (and the same draws after a resume), the LR schedule, weight-decay groups, and frozen
file-backed parts left out of checkpoints and sha256-checked on load."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from safetensors.torch import save_file

from armkit.decoders import PixelDiT
from armkit.recipes.tokenizer.module import TokenizerModule
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.encoders import TimmEncoder
from armkit.tokenizer.losses import DistillLoss, LossSet, PixelLoss, SigmoidLoss
from armkit.tokenizer.text import TinyTextTower

ENCODER = dict(model_name="vit_tiny_patch16_224", image_size=32,
               model_kwargs=dict(depth=1, patch_size=8, embed_dim=64, num_heads=2))


def module(*, weights: str | None = None, module_cls: type = TokenizerModule, **kw) -> TokenizerModule:
    torch.manual_seed(0)
    tok = Tokenizer(encoder=TimmEncoder(weights=weights, **ENCODER), levels=[8, 5, 5, 5], projection="mlp",
                    proj_width=64, decoder=PixelDiT(size="tiny", image_size=16, patch_size=8, cond_dim=64))
    losses = LossSet(losses={"pixel": PixelLoss(), "distill": DistillLoss(),
                             "sigmoid": SigmoidLoss(text_tower=TinyTextTower(width=32, heads=2), embed_dim=64)})
    return module_cls(tokenizer=tok, losses=losses, **kw)


class Recording(TokenizerModule):
    """Records one draw from torch's global generator at the start of each micro-batch's training step."""

    draws: list[float]

    def training_step(self, batch, batch_idx):
        self.draws.append(float(torch.rand(())))
        return super().training_step(batch, batch_idx)


def fit(tmp_path, *, max_steps: int, ckpt_path: str | None = None) -> list[float]:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    model = module(module_cls=Recording, seed=7)
    model.draws = []
    g = torch.Generator().manual_seed(0)
    batches = [{"image": torch.rand(2, 3, 32, 32, generator=g), "tags": ["a", "b"]} for _ in range(8)]
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, accumulate_grad_batches=2, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)])
    trainer.fit(model, torch.utils.data.DataLoader(batches, batch_size=None), ckpt_path=ckpt_path)
    assert trainer.global_step == max_steps
    return model.draws


def test_micro_batches_of_one_step_draw_differently_and_a_resume_draws_the_same(tmp_path):
    straight = fit(tmp_path / "a", max_steps=2)
    assert len(straight) == 4  # 2 optimizer steps x 2 micro-batches
    assert len(set(straight)) == 4, f"micro-batches of one optimizer step repeated their random draws: {straight}"
    resumed = fit(tmp_path / "b", max_steps=2, ckpt_path=str(tmp_path / "a" / "epoch=0-step=1.ckpt"))
    assert resumed == straight[2:]  # the second step's micro-batches, bit for bit


def test_lr_schedule_follows_its_closed_form():
    m = module(lr=2.0, warmup_steps=4, cosine_steps=10)
    sched = m.configure_optimizers()["lr_scheduler"]["scheduler"]
    opt = sched.optimizer
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warm = [2.0 * (s + 1) / 4 for s in range(4)]  # 0.5, 1.0, 1.5, 2.0: full LR at the last warmup step
    cosine = [2.0 * (0.1 + 0.45 * (1 + math.cos(math.pi * k / 10))) for k in range(11)]  # 2.0 down to 0.2
    assert seen == pytest.approx(warm + cosine + [0.2] * 5)
    assert all(g["lr"] == pytest.approx(0.2) for g in opt.param_groups)  # every group follows it


def test_no_weight_decay_on_norms_biases_and_the_siglip_scalars():
    m = module(weight_decay=0.05)
    opt = m.configure_optimizers()["optimizer"]
    name_of = {id(p): n for n, p in m.named_parameters()}
    decay = {name_of[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    none = {name_of[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert decay | none == trainable and not decay & none
    norms = {f"{mod_name}.{n}" for mod_name, mod in m.named_modules() if isinstance(mod, torch.nn.LayerNorm)
             for n, p in mod.named_parameters(recurse=False) if p.requires_grad}
    biases = {n for n in trainable if n.endswith(".bias")}
    assert norms and biases
    assert norms | biases | {"losses.losses.sigmoid.logit_scale", "losses.losses.sigmoid.logit_bias"} <= none
    assert "losses.losses.sigmoid.head.weight" in decay and "tokenizer.down.0.weight" in decay


def test_frozen_file_backed_encoder_is_left_out_of_checkpoints_and_its_sha256_checked_on_load(tmp_path):
    from armkit.recipes.evaluation.load import check_frozen_files

    path = tmp_path / "encoder.safetensors"
    torch.manual_seed(1)
    save_file({k: v.contiguous() for k, v in TimmEncoder(**ENCODER).model.state_dict().items()}, str(path))
    m = module(weights=str(path))
    checkpoint = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(checkpoint)
    assert not [k for k in checkpoint["state_dict"] if k.startswith("tokenizer.encoder.")]
    assert [k for k in checkpoint["state_dict"] if k.startswith("tokenizer.down.")]  # trained parts stay in
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert checkpoint["armkit_frozen"] == {"tokenizer.encoder.": {"source": str(path), "sha256": digest}}

    fresh = module(weights=str(path))
    fresh.on_load_checkpoint(checkpoint)  # puts the file's encoder back, then loads strictly
    fresh.load_state_dict(checkpoint["state_dict"], strict=True)
    assert check_frozen_files(checkpoint, tmp_path / "x.ckpt") == {"tokenizer.encoder.": str(path)}

    torch.manual_seed(2)  # the file changes under the checkpoint
    save_file({k: v.contiguous() for k, v in TimmEncoder(**ENCODER).model.state_dict().items()}, str(path))
    stale = {"state_dict": {k: v for k, v in m.state_dict().items() if not k.startswith("tokenizer.encoder.")},
             "armkit_frozen": checkpoint["armkit_frozen"]}
    with pytest.raises(ValueError, match="differs; restore that file"):
        module(weights=str(path)).on_load_checkpoint(stale)
    with pytest.raises(ValueError, match="has changed since"):
        check_frozen_files(stale, tmp_path / "x.ckpt")
