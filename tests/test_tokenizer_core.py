"""The Tokenizer and FSQQuantizer against vector-quantize-pytorch's FSQ, and their contracts."""

from __future__ import annotations

import pytest
import torch
from vector_quantize_pytorch import FSQ

from armkit.tokenizer import FSQQuantizer, Tokenizer


@pytest.mark.parametrize("levels", [[8, 8, 8, 5, 5, 5], [2] * 16, [17] * 4, [8, 5, 5, 5]])
def test_indices_match_reference_fsq(levels):
    z = torch.randn(3, 7, len(levels)) * 2
    ours = FSQQuantizer(levels=levels)
    ref = FSQ(levels=levels, preserve_symmetry=any(v == 2 for v in levels))
    codes, indices = ours(z)
    ref_codes, ref_indices = ref(z)
    assert torch.equal(indices, ref_indices.long())
    assert torch.allclose(codes, ref_codes)
    assert ours.codebook_size == ref.codebook_size
    assert int(indices.min()) >= 0 and int(indices.max()) < ours.codebook_size


def test_ifsq_bound_is_two_sigmoid_minus_one():
    levels = [17, 17, 17, 17]
    z = torch.randn(2, 50, 4) * 3
    codes, _ = FSQQuantizer(levels=levels, bound="ifsq")(z)
    half = (torch.tensor(levels) - 1) / 2
    # FSQ's bound with odd levels: round(bound(z) * half_l) / half_width, half_l = (L-1)(1+eps)/2, eps = 1e-3
    expected = torch.round((2 * torch.sigmoid(1.6 * z) - 1) * half * (1 + 1e-3)) / half
    assert torch.allclose(codes, expected)


def test_several_codebooks_give_indices_per_group():
    q = FSQQuantizer(levels=[8, 5, 5, 5], num_codebooks=2)
    codes, indices = q(torch.randn(2, 6, 8))
    assert codes.shape == (2, 6, 8) and indices.shape == (2, 6, 2)
    assert torch.allclose(q.indices_to_codes(indices), codes)


@pytest.mark.parametrize("bound", ["tanh", "ifsq"])
def test_fsq_runs_in_fp32_with_autocast_off_under_bf16_autocast(bound, monkeypatch):
    """Spies on the FSQ step itself: under CPU bf16 autocast, with a bf16 input (what a bf16 projection gives), it
    must see fp32 with autocast off for this device (vector-quantize-pytorch switches off CUDA autocast only)."""
    q = FSQQuantizer(levels=[8, 8, 8, 5, 5, 5], bound=bound)
    seen, quantize = [], q.fsq.quantize

    def spy(z):
        seen.append((z.dtype, torch.is_autocast_enabled("cpu")))
        return quantize(z)

    monkeypatch.setattr(q.fsq, "quantize", spy)
    z = torch.randn(4, 64, 6).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes, idx = q(z)
    assert seen == [(torch.float32, False)]
    assert codes.dtype == torch.bfloat16  # cast back to the input's dtype
    x = z.double() * (0.8 if bound == "ifsq" else 1.0)  # the reference quantizes in float64
    ref = FSQ(levels=[8, 8, 8, 5, 5, 5], allowed_dtypes=(torch.float64,))
    assert torch.equal(idx, ref(x)[1].long())


@pytest.mark.parametrize("bad, match", [
    (dict(levels=[1, 5]), "levels"),
    (dict(levels=[]), "levels"),
    (dict(levels=[2, 3], preserve_symmetry=False), "preserve_symmetry"),
    (dict(levels=[8, 5], bound="sin"), "bound"),
])
def test_bad_levels_fail_at_construction(bad, match):
    with pytest.raises(ValueError, match=match):
        FSQQuantizer(**bad)


def test_tokenizer_shapes_range_determinism(tiny_encoder):
    tok = Tokenizer(encoder=tiny_encoder, levels=[8, 5, 5, 5], projection="transformer", proj_width=32, proj_depth=1)
    images = torch.rand(3, 3, 40, 48)  # any size: the encoder resizes
    out = tok(images)
    assert out.features.shape == (3, tok.num_tokens, tiny_encoder.width)
    assert out.z.shape == (3, tok.num_tokens, tiny_encoder.width)
    idx = tok.encode(images)
    assert idx.dtype == torch.int64 and idx.shape == (3, tok.num_tokens)
    assert 0 <= int(idx.min()) and int(idx.max()) < tok.codebook_size
    assert torch.equal(idx, tok.encode(images))
    assert torch.allclose(tok.embed(idx), out.z, atol=1e-5)


def test_indices_equal_reference_fsq_on_projected_input(tiny_encoder):
    tok = Tokenizer(encoder=tiny_encoder, levels=[8, 8, 8, 5, 5, 5])
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        projected = tok.down(tiny_encoder(images))
    _, ref_indices = FSQ(levels=[8, 8, 8, 5, 5, 5])(projected)
    assert torch.equal(tok.encode(images), ref_indices.long())


def test_frozen_encoder_gets_no_gradient(tiny_encoder):
    tok = Tokenizer(encoder=tiny_encoder, levels=[8, 5, 5, 5], projection="mlp")
    tok.train()
    assert not tiny_encoder.training  # a frozen teacher stays in eval mode
    tok(torch.rand(2, 3, 32, 32)).z.square().mean().backward()
    assert all(p.grad is None for p in tiny_encoder.parameters())
    assert all(p.grad is not None for p in tok.down.parameters())
    assert all(p.grad is not None for p in tok.up.parameters())


def test_mismatched_decoder_width_is_named(tiny_encoder):
    from armkit.decoders.base import Decoder

    class Fake(Decoder):
        def __init__(self, *, cond_dim: int) -> None:
            super().__init__()
            self.cond_dim, self.image_size = cond_dim, (32, 32)

    with pytest.raises(ValueError, match=r"cond_dim=7.*embed_dim=192"):
        Tokenizer(encoder=tiny_encoder, levels=[8, 5], decoder=Fake(cond_dim=7))


def test_decode_without_decoder_is_a_clear_error(tiny_encoder):
    tok = Tokenizer(encoder=tiny_encoder, levels=[8, 5])
    with pytest.raises(RuntimeError, match="no decoder"):
        tok.decode(torch.zeros(1, tok.num_tokens, dtype=torch.long))


def test_cnn_stage_tokens():
    from armkit.tokenizer.encoders import TimmEncoder

    enc = TimmEncoder("efficientnet_lite0", image_size=64, stage=3)
    feats = enc(torch.rand(2, 3, 64, 64))
    assert feats.shape == (2, enc.grid[0] * enc.grid[1], enc.width)


def test_several_cnn_stages_fold_onto_the_coarsest_grid():
    """Stages [1, 2, 3] hold, per 8x8 cell, each stage's own map over that cell (timm's single-stage output,
    computed separately), finer maps read space-to-depth."""
    from armkit.tokenizer.encoders import TimmEncoder

    torch.manual_seed(0)
    multi = TimmEncoder("efficientnet_lite0", image_size=64, stage=[1, 2, 3])
    x = torch.rand(2, 3, 64, 64)
    feats = multi(x)  # [2, 4*4, C1*16 + C2*4 + C3]
    singles = []
    for s in (1, 2, 3):
        one = TimmEncoder("efficientnet_lite0", image_size=64, stage=s)
        one.load_state_dict(multi.state_dict())
        singles.append(one.features(one.preprocess(x), keep_grid=True))
    (c1, h1, _), (c2, h2, _), (c3, h3, w3) = (m.shape[1:] for m in singles)
    assert (h1, h2, h3) == (16, 8, 4) and multi.grid == (4, 4) and multi.width == 16 * c1 + 4 * c2 + c3
    cell = feats.reshape(2, 4, 4, -1)[:, 1, 2]  # the token of grid cell (row 1, col 2)
    assert torch.equal(cell[:, -c3:], singles[2][:, :, 1, 2])
    stage2 = cell[:, 16 * c1:16 * c1 + 4 * c2].reshape(2, c2, 2, 2)  # pixel_unshuffle's (channel, dy, dx) order
    assert torch.equal(stage2, singles[1][:, :, 2:4, 4:6])
    stage1 = cell[:, :16 * c1].reshape(2, c1, 4, 4)
    assert torch.equal(stage1, singles[0][:, :, 4:8, 8:12])
    with pytest.raises(ValueError, match="a list of stages needs a CNN"):
        TimmEncoder("vit_tiny_patch16_224", image_size=32, stage=[1, 2])
