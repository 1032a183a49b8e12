"""CaptionLoss, SigmoidLoss and DistillLoss on a tiny tokenizer: references, gradients, overfitting, bad widths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from open_clip.loss import SigLipLoss

from armkit.backbones import TinyCausalLM
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.losses import CaptionLoss, DistillLoss, LossSet, SigmoidLoss
from armkit.tokenizer.text import TinyTextTower

TXT = ["a red car on a road", "two small dogs", "a blue sky", "an old oak tree"]
TAGS = ["car, red", "dog, small", "sky, blue", "tree, oak, old"]


@pytest.fixture
def tok(tiny_encoder):
    return Tokenizer(encoder=tiny_encoder, levels=[8, 5, 5, 5])


@pytest.fixture
def batch():
    return {"image": torch.rand(4, 3, 32, 32), "txt": list(TXT), "tags": list(TAGS)}


def caption_loss(tok, **kw):
    return CaptionLoss(lm=TinyCausalLM(width=32, depth=1, heads=4), embed_dim=tok.embed_dim, **kw)


def sigmoid_loss(tok, **kw):
    return SigmoidLoss(text_tower=TinyTextTower(width=32, heads=4), embed_dim=tok.embed_dim, **kw)


@pytest.mark.parametrize("pool", ["mean", "attn"])
def test_sigmoid_loss_matches_open_clip_and_the_siglip_formula(tok, batch, pool):
    loss_fn = sigmoid_loss(tok, pool=pool)
    with torch.no_grad():
        out = tok(batch["image"])
        loss, logs = loss_fn(out, batch, tok)
        pooled = loss_fn.attn_pool(out.z) if pool == "attn" else out.z.mean(1)
        image = nnf.normalize(loss_fn.head(pooled), dim=-1)  # [B, E]
        text = nnf.normalize(loss_fn.text_tower.embed(TAGS), dim=-1)  # [B, E]
        ref = SigLipLoss()(image, text, torch.tensor(10.0), torch.tensor(-10.0))  # SigLIP's init: scale 10, bias -10
        logits = loss_fn.logits(out.z, TAGS)
    assert torch.allclose(loss, ref, rtol=1e-5)
    # SigLIP: -1/|B| sum_i sum_j log sigmoid(label_ij * (s x_i.y_j + b)), label +1 on the diagonal, -1 elsewhere
    x, y = image.double().numpy(), text.double().numpy()
    labels = 2 * np.eye(4) - 1
    formula = -np.log(1 / (1 + np.exp(-labels * (10 * x @ y.T - 10)))).sum(1).mean()
    assert loss.item() == pytest.approx(formula, rel=1e-5)
    assert torch.allclose(logits, torch.from_numpy(10 * x @ y.T - 10).float(), atol=1e-4)
    assert torch.allclose(loss_fn.image_embedding(out.z).norm(dim=-1), torch.ones(4))
    assert torch.allclose(loss_fn.text_embedding(TAGS).norm(dim=-1), torch.ones(4))
    assert logs["logit_scale"].item() == pytest.approx(10.0) and logs["logit_bias"].item() == -10.0
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(10))


def test_sigmoid_set_distributed_reaches_open_clip(tok):
    loss_fn = sigmoid_loss(tok)
    LossSet(losses={"sigmoid": loss_fn, "distill": DistillLoss()}).set_distributed(3, 8)
    assert (loss_fn.siglip.rank, loss_fn.siglip.world_size) == (3, 8)


def test_distill_loss_is_one_minus_token_cosine(tok, batch):
    out = tok(batch["image"])
    loss, logs = DistillLoss()(out, batch, tok)
    z, f = out.z.detach().double().numpy(), out.features.detach().double().numpy()
    cos = (z * f).sum(-1) / np.linalg.norm(z, axis=-1) / np.linalg.norm(f, axis=-1)
    assert loss.item() == pytest.approx(1 - cos.mean(), rel=1e-5)
    assert logs["cos"].item() == pytest.approx(cos.mean(), rel=1e-5)


def trainable(*modules):
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def test_gradients_reach_trained_parts_only(tok, batch):
    cap, sig, dist = caption_loss(tok, adapter="mlp"), sigmoid_loss(tok, pool="attn"), DistillLoss()
    losses = LossSet(losses={"caption": cap, "sigmoid": sig, "distill": dist})
    total, _ = losses(tok(batch["image"]), batch, tok)
    total.backward()
    for name, module in [("down", tok.down), ("up", tok.up), ("adapter", cap.adapter), ("pool", sig.attn_pool),
                         ("head", sig.head)]:
        for pname, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient in {name}.{pname}"
    assert sig.logit_scale.grad is not None and sig.logit_bias.grad is not None
    for name, module in [("encoder", tok.encoder), ("text tower", sig.text_tower), ("lm", cap.lm)]:
        assert all(p.grad is None and not p.requires_grad for p in module.parameters()), name
    frozen = {id(p) for m in (tok.encoder, sig.text_tower, cap.lm) for p in m.parameters()}
    assert not frozen & {id(p) for p in trainable(tok, losses)}


@pytest.mark.parametrize("name", ["caption", "sigmoid", "sigmoid-attn", "distill"])
def test_each_loss_overfits_one_batch(tok, batch, name):
    loss_fn = {"caption": lambda: caption_loss(tok), "sigmoid": lambda: sigmoid_loss(tok),
               "sigmoid-attn": lambda: sigmoid_loss(tok, pool="attn"), "distill": DistillLoss}[name]()
    opt = torch.optim.Adam(trainable(tok, loss_fn), lr=1e-2)
    history = []
    for _ in range(40):
        loss, _ = loss_fn(tok(batch["image"]), batch, tok)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    drop = {"caption": 0.85, "sigmoid": 0.3, "sigmoid-attn": 0.3, "distill": 0.8}[name]
    assert history[-1] < drop * history[0], history


def test_bad_widths_and_keys_fail_clearly(tiny_encoder, batch):
    tok = Tokenizer(encoder=tiny_encoder, levels=[8, 5, 5, 5])
    out = tok(batch["image"])
    with pytest.raises(ValueError, match="width 192.*embed_dim=100"):
        CaptionLoss(lm=TinyCausalLM(width=32, heads=4), embed_dim=100)(out, batch, tok)
    with pytest.raises(ValueError, match=r"\[B, N, 100\].*192"):
        SigmoidLoss(text_tower=TinyTextTower(width=32, heads=4), embed_dim=100)(out, batch, tok)
    with pytest.raises(ValueError, match="embed_dim=100.*pool_heads=3"):
        SigmoidLoss(text_tower=TinyTextTower(width=32, heads=4), embed_dim=100, pool="attn", pool_heads=3)
    narrow = Tokenizer(encoder=tiny_encoder, levels=[8, 5, 5, 5], embed_dim=96)
    with pytest.raises(ValueError, match="D=96.*C=192"):
        DistillLoss()(narrow(batch["image"]), batch, narrow)
    with pytest.raises(KeyError, match="'caption'"):
        caption_loss(tok, text_key="caption")(out, batch, tok)
    with pytest.raises(ValueError, match="batch\\['tags'\\].*4"):
        sigmoid_loss(tok)(out, dict(batch, tags=TAGS[:3]), tok)
    with pytest.raises(ValueError, match="adapter must be one of"):
        caption_loss(tok, adapter="conv")
