"""`evaluate` against values computed by hand on a fixed tiny set, and the measurement defects of issue 15:
the encoder sees its own input size, only trained heads give head metrics, teacher zero-shot and the linear probe
need no trained head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from armkit.backbones import TinyCausalLM
from armkit.decoders import PixelDiT
from armkit.recipes.data.reader import ShardReader
from armkit.recipes.evaluation.load import Loaded
from armkit.recipes.evaluation.protocol import Protocol
from armkit.recipes.evaluation.zeroshot import text_classifier
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.encoders import TimmEncoder
from armkit.tokenizer.losses import CaptionLoss, DistillLoss, LossSet, PixelLoss, SigmoidLoss
from armkit.tokenizer.text import TinyTextTower

CLASSES = ["red", "green", "blue", "yellow"]  # conftest.make_shapes_folder's labels
PROTOCOL = Protocol(limit=7, batch_size=4, steps=2, seed=0, probe_limit=36)  # batches of 4 and 3


def heads(tok: Tokenizer, *, sigmoid: bool = True, text_width: int = 32) -> LossSet:
    caption = CaptionLoss(lm=TinyCausalLM(width=32, depth=1, heads=2, max_length=48), embed_dim=tok.embed_dim,
                          max_length=24)
    sig = SigmoidLoss(text_tower=TinyTextTower(width=text_width, heads=2), embed_dim=tok.embed_dim, enabled=sigmoid)
    return LossSet(losses={"caption": caption, "pixel": PixelLoss(weight=5.0), "sigmoid": sig,
                           "distill": DistillLoss()}).eval()


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    """Encoder input 32 px, decoder 16 px: eval must encode at 32 and compare at 16."""
    torch.manual_seed(0)
    enc = TimmEncoder("vit_tiny_patch16_224", image_size=32,
                      model_kwargs=dict(depth=1, patch_size=8, embed_dim=64, num_heads=2))
    tok = Tokenizer(encoder=enc, levels=[8, 5, 5, 5], projection="mlp", proj_width=64,
                    decoder=PixelDiT(size="tiny", image_size=16, patch_size=4, cond_dim=64)).eval()
    return Loaded(tok, heads(tok), {"kind": "test"}, None)


def val_samples(shards, size: int) -> list[dict]:
    return list(ShardReader(str(shards), image_size=size, limit=PROTOCOL.limit, split="val"))


def test_eval_encodes_at_the_encoders_size_and_compares_at_the_decoders(loaded, tiny_shards):
    from armkit.recipes.evaluation.evaluate import evaluate

    seen = []
    hook = loaded.tokenizer.encoder.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        report = evaluate(loaded, tiny_shards, PROTOCOL, classes=CLASSES)
    finally:
        hook.remove()
    assert seen and set(seen) == {(32, 32)}, f"the encoder was shown {set(seen)}, training shows it 32x32"
    assert report["protocol"]["encoder_image_size"] == [32, 32] and report["protocol"]["image_size"] == [16, 16]


def test_eval_matches_hand_computed_psnr_caption_nll_cosine_and_usage(loaded, tiny_shards):
    from armkit.recipes.evaluation.evaluate import evaluate

    report = evaluate(loaded, tiny_shards, PROTOCOL, classes=CLASSES)
    m = report["metrics"]
    tok, cap = loaded.tokenizer, loaded.heads["caption"]
    samples = val_samples(tiny_shards, 32)
    assert len(samples) == 7
    gen = torch.Generator().manual_seed(PROTOCOL.seed)
    psnr, cos_dot, cos_n, nll, tokens, used = [], 0.0, 0, 0.0, 0.0, set()
    with torch.no_grad():
        for start in (0, 4):  # the protocol's batches, in order: the decoder's noise is drawn batch after batch
            chunk = samples[start:start + 4]
            x = torch.stack([s["image"] for s in chunk])
            out = tok(x)
            x_hat = tok.decode(out.indices, steps=PROTOCOL.steps, generator=gen).clamp(0, 1).double().numpy()
            target = nnf.interpolate(x, size=(16, 16), mode="bicubic", antialias=True).clamp(0, 1).double().numpy()
            psnr += [10 * math.log10(1 / np.mean((a - b) ** 2)) for a, b in zip(x_hat, target)]
            z, f = out.z.double().numpy(), out.features.double().numpy()
            for zi, fi in zip(z.reshape(-1, z.shape[-1]), f.reshape(-1, f.shape[-1])):  # one cosine per token
                cos_dot += float(zi @ fi / (np.linalg.norm(zi) * np.linalg.norm(fi)))
                cos_n += 1
            used |= set(out.indices.flatten().tolist())
            for i, s in enumerate(chunk):  # caption by caption: token-weighted over the whole set
                loss, logs = cap(out._replace(z=out.z[i:i + 1], features=out.features[i:i + 1]),
                                 {"txt": [s["txt"]]}, tok)
                nll, tokens = nll + float(loss) * float(logs["tokens"]), tokens + float(logs["tokens"])
    assert m["psnr"] == pytest.approx(np.mean(psnr), rel=1e-5)
    assert m["feature_cosine"] == pytest.approx(cos_dot / cos_n, rel=1e-5)
    assert m["caption_nll"] == pytest.approx(nll / tokens, rel=1e-5)
    assert m["codebook_usage"] == pytest.approx(100 * len(used) / tok.codebook_size)
    assert m["tokens_counted"] == 7 * tok.num_tokens


def test_untrained_sigmoid_head_gives_no_zero_shot_but_the_probe_measures_every_variant(loaded, tiny_shards):
    from armkit.recipes.evaluation.evaluate import evaluate

    off = Loaded(loaded.tokenizer, heads(loaded.tokenizer, sigmoid=False), {"kind": "test"}, None)
    report = evaluate(off, tiny_shards, PROTOCOL, classes=CLASSES)
    for key in ("zeroshot_top1", "zeroshot_top1_balanced", "retrieval_i2t_r1"):
        assert report["metrics"][key] is None and "disabled in training" in report["skipped"][key]
    assert report["protocol"]["heads"]["sigmoid_trained"] is False
    assert "no pooling head" in report["skipped"]["teacher_zeroshot_top1"]  # a timm ViT at random init
    on = evaluate(loaded, tiny_shards, PROTOCOL, classes=CLASSES)
    assert on["metrics"]["zeroshot_top1"] is not None and on["protocol"]["heads"]["sigmoid_trained"] is True
    # The probe reads Z only: the same tokenizer scores the same whatever its loss heads.
    assert report["metrics"]["probe_top1"] is not None
    assert report["metrics"]["probe_top1"] == on["metrics"]["probe_top1"]
    probe = report["protocol"]["probe"]
    assert probe["train_count"] == 36 and probe["scored"] == 7 and probe["train_shards"][0].startswith("train-")


def test_probe_score_is_the_hand_fitted_probe_on_pooled_z(loaded, tiny_shards):
    from armkit.recipes.evaluation.evaluate import evaluate
    from armkit.recipes.evaluation.probe import fit_probe, score_probe

    report = evaluate(loaded, tiny_shards, PROTOCOL, classes=CLASSES)
    tok = loaded.tokenizer
    with torch.no_grad():
        train = list(ShardReader(str(tiny_shards), image_size=32, split="train"))
        val = val_samples(tiny_shards, 32)
        tx = tok(torch.stack([s["image"] for s in train])).z.mean(dim=1)
        vx = tok(torch.stack([s["image"] for s in val])).z.mean(dim=1)
    ty, vy = torch.tensor([s["cls"] for s in train]), torch.tensor([s["cls"] for s in val])
    probe = fit_probe(tx, ty, 4, l2=PROTOCOL.probe_l2, steps=PROTOCOL.probe_steps)
    score = score_probe(probe, vx, vy)
    assert report["metrics"]["probe_top1"] == pytest.approx(score.top1)
    assert report["metrics"]["probe_top1_balanced"] == pytest.approx(score.top1_balanced)


def test_probe_never_trains_on_the_eval_shards(loaded, tiny_shards, tmp_path):
    from armkit.recipes.evaluation.evaluate import evaluate

    val = sorted(tiny_shards.glob("val-*.tar"))[0]
    report = evaluate(loaded, str(val), PROTOCOL, classes=CLASSES)  # a single .tar: no train split beside it
    assert report["metrics"]["probe_top1"] is None and "never trains on" in report["skipped"]["probe_top1"]


def test_teacher_zero_shot_uses_the_teachers_pool_and_text_tower_without_the_trained_head(tiny_shards):
    from armkit.recipes.evaluation.evaluate import evaluate
    from armkit.tokenizer.encoders.open_clip_encoder import OpenCLIPEncoder

    torch.manual_seed(0)
    cfg = {"embed_dim": 32, "vision_cfg": {"timm_model_name": "test_vit_relpos", "timm_pool": "avg",
                                           "timm_proj": "linear", "image_size": 32}}
    enc = OpenCLIPEncoder("ViT-B-16-SigLIP2", image_size=32, model_kwargs=cfg)
    tok = Tokenizer(encoder=enc, levels=[8, 5, 5, 5], projection="mlp", proj_width=64).eval()
    loaded = Loaded(tok, heads(tok, sigmoid=False, text_width=32), {"kind": "test"}, None)
    report = evaluate(loaded, tiny_shards, PROTOCOL.replace(probe_limit=0), classes=CLASSES)
    sig = loaded.heads["sigmoid"]
    with torch.no_grad():
        samples = val_samples(tiny_shards, enc.image_size[0])
        z = tok(torch.stack([s["image"] for s in samples])).z
        image = nnf.normalize(enc.pool_tokens(z), dim=-1)
        scores = image @ text_classifier(sig.text_embedding, CLASSES, PROTOCOL.templates).T
    labels = torch.tensor([s["cls"] for s in samples])
    want = 100.0 * float((scores.argmax(dim=1) == labels).double().mean())
    assert report["metrics"]["teacher_zeroshot_top1"] == pytest.approx(want)
    assert report["metrics"]["zeroshot_top1"] is None  # the sigmoid loss did not train
    assert "probe_limit is 0" in report["skipped"]["probe_top1"]
