"""Specs round-trip through JSON, and building refuses anything but armkit's Buildable classes."""

from __future__ import annotations

import json

import pytest
import torch

from armkit.tokenizer import ConfigError, Tokenizer, build, to_spec


def test_spec_round_trip_rebuilds_same_architecture(tiny_encoder):
    tok = Tokenizer(encoder=tiny_encoder, levels=[8, 5, 5, 5], projection="transformer", proj_width=32)
    spec = json.loads(json.dumps(to_spec(tok)))
    again = build(spec)
    assert isinstance(again, Tokenizer)
    assert {k: v.shape for k, v in tok.state_dict().items()} == {k: v.shape for k, v in again.state_dict().items()}
    again.load_state_dict(tok.state_dict())
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(tok.encode(x), again.encode(x))


@pytest.mark.parametrize("path", ["os.system", "builtins.eval", "torch.nn.Linear", "armkit.common.buildable.build",
                                  "subprocess.Popen"])
def test_build_refuses_foreign_classes(path):
    with pytest.raises(ConfigError, match="not"):
        build({"class_path": path, "init_args": {}})


def test_unknown_argument_is_named():
    spec = {"class_path": "armkit.tokenizer.quantizer.FSQQuantizer", "init_args": {"levels": [8, 5], "levelz": 3}}
    with pytest.raises(ConfigError, match="levelz"):
        build(spec)
