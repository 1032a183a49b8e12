"""PixelDiT: overfitting, non-square sizes, token grids, guidance, condition dropout, rebuild from its spec."""

import pytest
import torch

from armkit.common.buildable import build, to_spec
from armkit.decoders import PixelDiT
from armkit.decoders.attention import resolve_backend, xformers_available
from armkit.decoders.dit import dit_dims, token_grid
from armkit.decoders.samplers import euler, time_grid


def tiny(**kw) -> PixelDiT:
    args = {"image_size": 16, "patch_size": 4, "cond_dim": 8, "size": "tiny", "cond_dropout": 0.0}
    return PixelDiT(**{**args, **kw})


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Leave the zero init (which predicts v = 0 and would make every comparison below trivially equal)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def test_overfits_one_batch():
    torch.manual_seed(0)
    dec = tiny()
    images, cond = torch.rand(2, 3, 16, 16), torch.randn(2, 4, 8)
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):  # one batch: same images, condition, noise and times every step
        loss, logs = dec.loss(images, cond, generator=torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::10]
    assert set(logs) == {"flow_mse"}


def test_fresh_network_predicts_zero_velocity():
    dec = tiny()
    v = dec.net(torch.randn(2, 3, 16, 16), torch.rand(2), torch.randn(2, 4, 8))
    assert v.shape == (2, 3, 16, 16) and v.abs().max() == 0  # adaLN-zero / zero final layer


@pytest.mark.parametrize("n_tokens, cond_grid", [(6, [2, 3]), (5, None), (16, None)])
def test_non_square_image_and_token_grids(n_tokens, cond_grid):
    dec = randomize(tiny(image_size=[16, 24], cond_grid=cond_grid))
    assert dec.image_size == (16, 24) and dec.net.grid == (4, 6)
    cond = torch.randn(2, n_tokens, 8)
    loss, _ = dec.loss(torch.rand(2, 3, 16, 24), cond)
    loss.backward()
    assert torch.isfinite(loss) and dec.net.patch.weight.grad.abs().sum() > 0
    images = dec.sample(cond, steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 16, 24) and images.min() >= 0 and images.max() <= 1


def test_token_grid():
    assert token_grid(16, None) == (4, 4) and token_grid(6, None) == (1, 6) and token_grid(6, (2, 3)) == (2, 3)
    with pytest.raises(ValueError, match="cond_grid"):
        token_grid(7, (2, 3))


def test_output_depends_on_the_condition_and_its_positions():
    dec = randomize(tiny())
    x, t, cond = torch.randn(2, 3, 16, 16), torch.rand(2), torch.randn(2, 4, 8)
    v = dec.net(x, t, cond)
    assert not torch.allclose(v, dec.net(x, t, torch.randn(2, 4, 8)))
    assert not torch.allclose(v, dec.net(x, t, cond.flip(1)))  # token order carries position


def test_guidance_one_equals_no_guidance():
    dec = randomize(tiny()).eval()
    cond = torch.randn(2, 4, 8)

    def run(guidance):
        return dec.sample(cond, steps=3, guidance=guidance, generator=torch.Generator().manual_seed(0))

    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = euler(lambda x, t: dec.net(x, t, cond), noise, time_grid(3))
        null = dec.null_cond.expand_as(cond)
        cfg = euler(lambda x, t: dec.net(x, t, null) + 2.0 * (dec.net(x, t, cond) - dec.net(x, t, null)), noise,
                    time_grid(3))
    torch.testing.assert_close(run(1.0), ((plain + 1) / 2).clamp(0, 1))
    torch.testing.assert_close(run(2.0), ((cfg + 1) / 2).clamp(0, 1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(run(1.0), run(2.0))


def test_heun_sampler_and_shift_run():
    dec = randomize(tiny(sample_shift=3.0))
    out = dec.sample(torch.randn(1, 4, 8), steps=2, sampler="heun", guidance=1.5)
    assert out.shape == (1, 3, 16, 16)


def test_condition_dropout_uses_the_null_condition():
    dec = tiny(cond_dropout=0.5)
    cond = torch.randn(64, 4, 8)
    dropped = dec.drop_cond(cond, torch.Generator().manual_seed(0))
    is_null = (dropped == dec.null_cond).all(dim=(1, 2))
    kept = (dropped == cond).all(dim=(1, 2))
    assert (is_null ^ kept).all() and 16 < is_null.sum() < 48


def test_condition_dropout_only_while_training():
    dec = randomize(tiny(cond_dropout=0.5))
    images, cond = torch.rand(16, 3, 16, 16), torch.randn(16, 4, 8)

    def loss(p, training):
        dec.cond_dropout = p
        dec.train(training)
        return dec.loss(images, cond, generator=torch.Generator().manual_seed(0))[0].item()

    assert loss(0.5, False) == loss(0.0, False)
    assert loss(0.5, True) != loss(0.0, True)


def test_null_condition_gets_gradient_in_training():
    dec = randomize(tiny(cond_dropout=0.5)).train()
    loss, _ = dec.loss(torch.rand(8, 3, 16, 16), torch.randn(8, 4, 8), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert dec.null_cond.grad is not None and dec.null_cond.grad.abs().sum() > 0


def test_loss_resizes_images_and_checks_shapes():
    dec = randomize(tiny())
    loss, _ = dec.loss(torch.rand(2, 3, 32, 32), torch.randn(2, 4, 8))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"cond \[B, N, 8\]"):
        dec.loss(torch.rand(2, 3, 16, 16), torch.randn(2, 4, 9))
    with pytest.raises(ValueError, match="images"):
        dec.loss(torch.rand(3, 3, 16, 16), torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="patch_size"):
        tiny(image_size=[16, 18])


def test_rebuilds_from_its_spec():
    dec = randomize(tiny(image_size=(16, 24), cond_grid=[2, 2], size="S", width=32, depth=1, heads=2))
    spec = to_spec(dec)
    assert spec["class_path"] == "armkit.decoders.dit.PixelDiT" and spec["init_args"]["image_size"] == [16, 24]
    again = build(spec)
    again.load_state_dict(dec.state_dict(), strict=True)
    x, t, cond = torch.randn(1, 3, 16, 24), torch.rand(1), torch.randn(1, 4, 8)
    torch.testing.assert_close(again.net(x, t, cond), dec.net(x, t, cond))


def test_sizes_and_attention_backends():
    assert dit_dims("S", None, None, None) == (384, 12, 6) and dit_dims("L", None, None, None) == (1024, 24, 16)
    assert dit_dims("B", 96, 3, None) == (96, 3, 12)
    with pytest.raises(ValueError, match="size"):
        dit_dims("huge", None, None, None)
    with pytest.raises(ValueError, match="attention"):
        resolve_backend("flash")
    assert resolve_backend("sdpa") == "sdpa"
    assert resolve_backend("auto") == ("xformers" if xformers_available() else "sdpa")
    if not xformers_available():
        with pytest.raises(ImportError, match="xformers"):
            resolve_backend("xformers")
