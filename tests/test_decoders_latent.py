"""LatentDiT: the second decoder class over a (random, tiny) diffusers AutoencoderKL, through the same interface."""

import pytest
import torch
from diffusers import AutoencoderKL

from armkit.common.buildable import build, to_spec
from armkit.decoders import LatentDiT, PixelDiT

VAE = {"block_out_channels": [8, 16], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 8,
       "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
       "scaling_factor": 0.5}


def tiny(**kw) -> LatentDiT:
    args = {"vae_config": VAE, "image_size": 16, "patch_size": 2, "cond_dim": 8, "size": "tiny", "cond_dropout": 0.0}
    torch.manual_seed(0)
    return LatentDiT(**{**args, **kw})


def test_loss_trains_the_dit_not_the_vae():
    dec = tiny(cond_dropout=0.2).train()
    assert dec.space_shape == (4, 8, 8) and dec.net.grid == (4, 4)
    assert not dec.vae.training and not any(p.requires_grad for p in dec.vae.parameters())
    loss, logs = dec.loss(torch.rand(2, 3, 16, 16), torch.randn(2, 5, 8))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and "flow_mse" in logs
    assert dec.net.final.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in dec.vae.parameters())


def test_sample_shapes_square_and_not():
    for size in (16, [16, 24]):
        dec = tiny(image_size=size)
        images = dec.sample(torch.randn(2, 4, 8), steps=2, guidance=1.5, generator=torch.Generator().manual_seed(0))
        h, w = (16, 16) if size == 16 else (16, 24)
        assert images.shape == (2, 3, h, w) and images.min() >= 0 and images.max() <= 1
        assert dec.space_shape == (4, h // 2, w // 2)


def test_latents_are_scaled_vae_latents():
    """x1 = (E(x) - shift_factor) * scaling_factor, and decoding inverts that scaling before the VAE decoder."""
    dec = tiny()
    images = torch.rand(2, 3, 16, 16)
    raw = dec.vae.encode(images * 2 - 1).latent_dist.sample(torch.Generator().manual_seed(3))
    torch.testing.assert_close(dec.to_space(images, torch.Generator().manual_seed(3)), raw * 0.5)
    expected = ((dec.vae.decode(raw).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(dec.from_space(raw * 0.5), expected)


def test_loads_a_local_vae_folder(tmp_path):
    torch.manual_seed(1)
    AutoencoderKL.from_config(VAE).save_pretrained(tmp_path / "vae")
    dec = LatentDiT(vae_path=str(tmp_path), vae_subfolder="vae", image_size=16, cond_dim=8, size="tiny")
    saved = AutoencoderKL.from_pretrained(tmp_path / "vae")
    for a, b in zip(dec.vae.parameters(), saved.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(FileNotFoundError, match="vae_path"):
        LatentDiT(vae_path=str(tmp_path / "missing"), cond_dim=8, size="tiny")
    with pytest.raises(ValueError, match="exactly one"):
        LatentDiT(cond_dim=8, size="tiny")
    with pytest.raises(ValueError, match="downscale"):
        tiny(image_size=15)


def test_rebuilds_from_its_spec():
    dec = tiny(image_size=[16, 24])
    again = build(to_spec(dec))
    assert isinstance(again, LatentDiT) and again.space_shape == dec.space_shape
    again.load_state_dict(dec.state_dict(), strict=True)


def test_same_tokens_different_decoders():
    """Pixel and latent decoders take the same Z and give images of the same form: a config swap."""
    cond = torch.randn(2, 4, 8)
    for dec in (PixelDiT(image_size=16, patch_size=4, cond_dim=8, size="tiny"), tiny()):
        images = dec.sample(cond, steps=2, generator=torch.Generator().manual_seed(0))
        assert images.shape == (2, 3, 16, 16) and dec.cond_dim == 8 and dec.image_size == (16, 16)
