"""SigmoidLoss: the teacher's frozen head option (only the scalars train), and under 2-process DDP (gloo, CPU) the
mean of the ranks' losses equals open_clip's SigLipLoss on the gathered batch (negatives shared across ranks)."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as nnf
from open_clip.loss import SigLipLoss

from armkit.tokenizer import Tokenizer
from armkit.tokenizer.losses import SigmoidLoss
from armkit.tokenizer.text import TinyTextTower

TAGS = ["red, circle", "blue, square", "green, circle", "yellow, square"]


def test_teacher_image_head_trains_only_the_scalars_and_matches_open_clip(tiny_encoder):
    from armkit.tokenizer.encoders.open_clip_encoder import OpenCLIPEncoder

    torch.manual_seed(0)
    cfg = {"embed_dim": 32, "vision_cfg": {"timm_model_name": "test_vit_relpos", "timm_pool": "avg",
                                           "timm_proj": "linear", "image_size": 32}}
    enc = OpenCLIPEncoder("ViT-B-16-SigLIP2", image_size=32, model_kwargs=cfg)
    tok = Tokenizer(encoder=enc, levels=[8, 5, 5, 5], projection="mlp", proj_width=32)
    sig = SigmoidLoss(text_tower=TinyTextTower(width=32, heads=2), embed_dim=tok.embed_dim, image_head="teacher")
    assert {n for n, p in sig.named_parameters() if p.requires_grad} == {"logit_scale", "logit_bias"}
    out = tok(torch.rand(4, 3, 32, 32))
    loss, _ = sig(out, {"tags": TAGS}, tok)
    image = nnf.normalize(enc.pool_tokens(out.z), dim=-1)
    text = nnf.normalize(sig.text_tower(TAGS), dim=-1)
    want = SigLipLoss()(image, text, sig.logit_scale.exp(), sig.logit_bias)
    torch.testing.assert_close(loss, want)
    loss.backward()  # through the frozen teacher head into the trained projections
    assert tok.down[0].weight.grad is not None and enc.visual.head.proj.weight.grad is None

    plain = Tokenizer(encoder=tiny_encoder, levels=[8, 5, 5, 5])  # a timm ViT: no pooling head of its own
    sig = SigmoidLoss(text_tower=TinyTextTower(width=32, heads=2), embed_dim=plain.embed_dim, image_head="teacher")
    with pytest.raises(ValueError, match="pool_tokens"):
        sig(plain(torch.rand(4, 3, 32, 32)), {"tags": TAGS}, plain)


def make_loss() -> tuple[SigmoidLoss, torch.Tensor]:
    """The same loss and the same global batch Z [4, 6, 16] in every process."""
    torch.manual_seed(0)
    sig = SigmoidLoss(text_tower=TinyTextTower(width=32, heads=2), embed_dim=16, pool="attn", pool_heads=2,
                      init_logit_scale=0.0, init_logit_bias=0.0)  # negatives weigh as much as positives
    return sig, torch.randn(4, 6, 16)


def rank_loss(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        sig, z = make_loss()
        sig.set_distributed(rank, world_size)
        half = slice(2 * rank, 2 * rank + 2)
        loss, _ = sig(SimpleNamespace(z=z[half]), {"tags": TAGS[half]}, None)
        torch.save(loss.detach(), f"{out}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_under_two_process_ddp_the_loss_shares_negatives_like_open_clip_on_the_gathered_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(rank_loss, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    losses = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    sig, z = make_loss()
    with torch.no_grad():
        image, text = sig.image_embedding(z), sig.text_embedding(TAGS)
        gathered = SigLipLoss()(image, text, sig.logit_scale.exp(), sig.logit_bias)  # one process, all 4 pairs
        local = [SigLipLoss()(image[h], text[h], sig.logit_scale.exp(), sig.logit_bias)
                 for h in (slice(0, 2), slice(2, 4))]
    # Each rank divides its images x all texts by its 2 images: the ranks' mean is the gathered batch's loss.
    assert float(sum(losses) / 2) == pytest.approx(float(gathered), rel=1e-5)
    assert float(sum(losses) / 2) != pytest.approx(float(sum(local) / 2), rel=1e-3)  # not the unshared loss
