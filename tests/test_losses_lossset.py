"""LossSet: the weighted sum, skipping disabled terms, NaN/inf checks, plugging in a new Loss, specs and YAML."""

from __future__ import annotations

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from armkit.backbones import TinyCausalLM
from armkit.tokenizer import Tokenizer, build, to_spec
from armkit.tokenizer.losses import CaptionLoss, DistillLoss, Loss, LossSet, SigmoidLoss
from armkit.tokenizer.text import TinyTextTower


class ZNorm(Loss):
    """A fifth loss defined here: mean squared norm of Z times a trainable gain, to show that one class plugs in."""

    def __init__(self, *, weight: float = 1.0, enabled: bool = True) -> None:
        super().__init__(weight=weight, enabled=enabled)
        self.gain = torch.nn.Parameter(torch.tensor(2.0))
        self.calls = 0

    def forward(self, out, batch, tokenizer):
        self.calls += 1
        value = self.gain * out.z.pow(2).mean()
        return value, {"gain": self.gain.detach()}


class Constant(Loss):
    def __init__(self, *, value: float = 0.0, weight: float = 1.0, enabled: bool = True) -> None:
        super().__init__(weight=weight, enabled=enabled)
        self.value = value

    def forward(self, out, batch, tokenizer):
        return out.z.sum() * 0 + self.value, {}


class Exploding(Loss):
    def forward(self, out, batch, tokenizer):
        raise AssertionError("a disabled loss was called")


@pytest.fixture
def tok(tiny_encoder):
    return Tokenizer(encoder=tiny_encoder, levels=[8, 5, 5, 5])


@pytest.fixture
def batch():
    return {"image": torch.rand(3, 3, 32, 32), "txt": ["a cat", "a dog", "a cow"], "tags": ["cat", "dog", "cow"]}


def test_total_is_weighted_sum_and_a_new_loss_plugs_in(tok, batch):
    znorm, distill = ZNorm(weight=0.5), DistillLoss(weight=2.0)
    losses = LossSet(losses={"distill": distill, "znorm": znorm, "off": Exploding(enabled=False)})
    out = tok(batch["image"])
    total, logs = losses(out, batch, tok)
    d, z = distill(out, batch, tok)[0], znorm(out, batch, tok)[0]
    assert torch.allclose(total, 2.0 * d + 0.5 * z)
    assert torch.allclose(logs["loss/distill"], d) and torch.allclose(logs["loss/znorm"], z)
    assert torch.allclose(logs["loss/total"], total)
    assert logs["znorm/gain"].item() == 2.0 and "distill/cos" in logs
    assert "loss/off" not in logs
    assert not any(t.requires_grad for t in logs.values())
    total.backward()
    assert znorm.gain.grad is not None  # the new loss's own parameter trains
    assert not any(p.requires_grad for p in losses["off"].parameters())


def test_disabled_losses_are_not_called_nor_trained(tok, batch):
    off = ZNorm(enabled=False)
    losses = LossSet(losses={"distill": DistillLoss(), "znorm": off, "boom": Exploding(enabled=False)})
    losses(tok(batch["image"]), batch, tok)
    assert off.calls == 0 and not off.gain.requires_grad
    assert [n for n, _ in losses.items(enabled_only=True)] == ["distill"]
    assert list(losses) == ["distill", "znorm", "boom"] and len(losses) == 3
    with pytest.raises(ValueError, match="no loss is enabled"):
        LossSet(losses={"boom": Exploding(enabled=False)})


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_term_raises_naming_it(tok, batch, bad):
    losses = LossSet(losses={"distill": DistillLoss(), "broken": Constant(value=bad)})
    with pytest.raises(FloatingPointError, match=f"'broken': {bad}"):
        losses(tok(batch["image"]), batch, tok)


def test_lossset_rejects_non_losses():
    with pytest.raises(TypeError, match=r"losses\['x'\] must be a Loss"):
        LossSet(losses={"x": torch.nn.Linear(2, 2)})


def test_of_type_finds_the_sigmoid_loss(tok):
    sig = SigmoidLoss(text_tower=TinyTextTower(width=32, heads=4), embed_dim=tok.embed_dim, weight=5.0)
    losses = LossSet(losses={"distill": DistillLoss(), "sigmoid": sig})
    assert losses.of_type(SigmoidLoss) == [("sigmoid", sig)]
    assert losses["sigmoid"] is sig


YAML = """
losses:
  caption:
    class_path: armkit.tokenizer.losses.CaptionLoss
    init_args: {embed_dim: 192, lm: {class_path: armkit.backbones.TinyCausalLM, init_args: {width: 32, seed: 5}}}
  sigmoid:
    class_path: armkit.tokenizer.losses.SigmoidLoss
    init_args:
      embed_dim: 192
      weight: 5.0
      pool: attn
      text_tower: {class_path: armkit.tokenizer.text.TinyTextTower, init_args: {width: 32}}
  distill: {class_path: armkit.tokenizer.losses.DistillLoss, init_args: {enabled: false}}
"""


def test_yaml_through_jsonargparse_and_spec_round_trip(tok, batch):
    parser = ArgumentParser()
    parser.add_argument("--loss", type=LossSet)
    spec = {"class_path": "armkit.tokenizer.losses.LossSet", "init_args": yaml.safe_load(YAML)}
    cfg = parser.parse_object({"loss": spec})
    losses = parser.instantiate_classes(cfg).loss
    assert [(n, type(v).__name__, v.weight, v.enabled) for n, v in losses.items()] == [
        ("caption", "CaptionLoss", 1.0, True), ("sigmoid", "SigmoidLoss", 5.0, True),
        ("distill", "DistillLoss", 1.0, False)]
    rebuilt = build(to_spec(losses))
    assert to_spec(rebuilt) == to_spec(losses)
    assert isinstance(rebuilt["caption"], CaptionLoss) and isinstance(rebuilt["caption"].lm, TinyCausalLM)
    assert torch.equal(rebuilt["caption"].lm.wte.weight, losses["caption"].lm.wte.weight)  # seeded LM: same weights
    _total, logs = rebuilt(tok(batch["image"]), batch, tok)
    assert set(logs) >= {"loss/caption", "loss/sigmoid", "loss/total"} and "loss/distill" not in logs


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -1.0])
def test_bad_weight_is_refused_at_construction(weight):
    with pytest.raises(ValueError, match="weight"):
        DistillLoss(weight=weight)


def test_non_finite_weighted_total_names_the_weight_not_the_terms(tok, batch):
    """A finite term times a weight that turned NaN (set after construction, e.g. by a scheduler) is caught on the
    weighted total, and the message names that term's weight, not every term."""
    losses = LossSet(losses={"distill": DistillLoss(), "znorm": ZNorm()})
    losses["znorm"].weight = float("nan")
    with pytest.raises(FloatingPointError) as err:
        losses(tok(batch["image"]), batch, tok)
    message = str(err.value)
    assert "'znorm'" in message and "weight" in message and "'distill'" not in message


def test_overflowing_weighted_term_is_named(tok, batch):
    losses = LossSet(losses={"distill": DistillLoss(), "big": Constant(value=3e38, weight=10.0)})
    with pytest.raises(FloatingPointError, match="'big'"):
        losses(tok(batch["image"]), batch, tok)
