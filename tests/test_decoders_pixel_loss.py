"""PixelLoss: the tokenizer's L_pix runs through its decoder's flow objective and trains the up-projection."""

import pytest
import torch

from armkit.decoders import PixelDiT
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.encoders.timm_encoder import TimmEncoder
from armkit.tokenizer.losses.pixel import PixelLoss


def make_tokenizer(decoder: PixelDiT | None) -> Tokenizer:
    torch.manual_seed(0)
    encoder = TimmEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs={"depth": 1})
    return Tokenizer(encoder=encoder, levels=[8, 5, 5], decoder=decoder)


def test_pixel_loss_trains_the_up_projection():
    decoder = PixelDiT(image_size=32, patch_size=8, cond_dim=192, size="tiny")
    with torch.no_grad():  # leave the zero init, under which no gradient reaches the condition
        for p in decoder.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    tok = make_tokenizer(decoder).train()
    batch = {"image": torch.rand(2, 3, 32, 32)}
    out = tok(batch["image"])
    torch.manual_seed(5)
    loss, logs = PixelLoss(weight=5.0)(out, batch, tok)
    torch.manual_seed(5)
    direct, _ = decoder.loss(batch["image"], out.z)
    assert loss.item() == direct.item() and "flow_mse" in logs
    loss.backward()
    assert tok.up.weight.grad is not None and tok.up.weight.grad.abs().sum() > 0
    assert tok.down.weight.grad is not None and tok.down.weight.grad.abs().sum() > 0  # through FSQ's straight-through
    assert all(p.grad is None for p in tok.encoder.parameters())


def test_tokenizer_decodes_through_the_decoder():
    tok = make_tokenizer(PixelDiT(image_size=[32, 48], patch_size=8, cond_dim=192, size="tiny")).eval()
    indices = tok.encode(torch.rand(2, 3, 32, 32))
    images = tok.decode(indices, steps=2, sampler="heun", guidance=1.5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 48) and tok.image_size == (32, 48)


def test_pixel_loss_needs_a_decoder_and_an_image():
    tok = make_tokenizer(None)
    images = torch.rand(1, 3, 32, 32)
    with pytest.raises(RuntimeError, match="decoder"):
        PixelLoss()(tok(images), {"image": images}, tok)
    tok = make_tokenizer(PixelDiT(image_size=32, patch_size=8, cond_dim=192, size="tiny"))
    with pytest.raises(KeyError, match="image"):
        PixelLoss()(tok(images), {"txt": ["a"]}, tok)
