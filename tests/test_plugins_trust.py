"""A fifth loss in the user's own package: it trains from YAML, and `armkit ablate`, `eval` and `export` build it only
when the caller trusts that package (`--trust mylab`, `trust=["mylab"]`); a file can never widen that list."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from armkit.common.buildable import ConfigError, build, resolve, trusted
from armkit.recipes.commands.cli import main
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.hub import ExportError, load_heads

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tokenizer" / "tiny.yaml"

MYLAB = '''
import torch
from torch import nn

from armkit.tokenizer.losses.base import Loss


class ZNormLoss(Loss):
    """Pulls the mean squared entry of Z towards a learned target (a toy loss with a trained head)."""

    def __init__(self, *, weight: float = 1.0, enabled: bool = True, init: float = 0.5) -> None:
        super().__init__(weight=weight, enabled=enabled)
        self.target = nn.Parameter(torch.tensor(float(init)))

    def forward(self, out, batch, tokenizer):
        energy = out.z.float().pow(2).mean()
        return (energy - self.target).pow(2) + 0.1 * (self.target - 1.0).pow(2), {"energy": energy.detach()}
'''


@pytest.fixture(scope="module")
def mylab(tmp_path_factory):
    root = tmp_path_factory.mktemp("userpkg")
    (root / "mylab").mkdir()
    (root / "mylab" / "__init__.py").write_text("")
    (root / "mylab" / "losses.py").write_text(textwrap.dedent(MYLAB))
    sys.path.insert(0, str(root))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *([old] if old else [])])  # for `armkit train` runs
    yield root
    sys.path.remove(str(root))
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def ablated(mylab, tiny_shards):
    """tiny.yaml plus the user's loss, trained 4 steps and evaluated by `armkit ablate --trust mylab`."""
    recipe = yaml.safe_load(TINY.read_text())
    recipe["model"]["losses"]["losses"]["znorm"] = {"class_path": "mylab.losses.ZNormLoss",
                                                    "init_args": {"weight": 0.5}}
    (mylab / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    config = mylab / "ablation.yaml"
    config.write_text(yaml.safe_dump({
        "base": str(mylab / "recipe.yaml"), "data": {"train": str(tiny_shards), "val": str(tiny_shards)},
        "variants": {"all+znorm": ["caption", "pixel", "sigmoid", "distill", "znorm"]}, "seeds": [0],
        "train": {"max_steps": 4, "args": ["--trainer.enable_progress_bar=false"]},
        "eval": {"classes": ["red", "green", "blue", "yellow"], "protocol": {"limit": 8, "batch_size": 4,
                                                                            "steps": 2}},
        "keep_checkpoints": True,
    }))
    out = mylab / "ablation"
    assert main(["ablate", "--config", str(config), "--out", str(out), "--trust", "mylab"]) == 0
    ckpt = out / "all+znorm" / "seed0" / "final" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


def test_resolve_refuses_an_untrusted_package_and_names_the_flag(mylab):
    with pytest.raises(ConfigError, match=r"--trust mylab"):
        resolve("mylab.losses.ZNormLoss")
    assert resolve("mylab.losses.ZNormLoss", trust=["mylab"]).__name__ == "ZNormLoss"
    with trusted(["mylab"]):
        assert build({"class_path": "mylab.losses.ZNormLoss", "init_args": {"init": 2.0}}).target.item() == 2.0
    with pytest.raises(ConfigError):  # the block ended: trust does not linger
        resolve("mylab.losses.ZNormLoss")
    with pytest.raises(ConfigError, match="not a package name"):
        resolve("mylab.losses.ZNormLoss", trust=["mylab; rm -rf"])
    with pytest.raises(ConfigError, match="not allowed"):  # trusting mylab trusts nothing else
        resolve("os.system", trust=["mylab"])


def test_a_user_loss_trains_and_goes_through_ablate_eval_and_export_with_trust(ablated, tiny_shards, tmp_path,
                                                                             capsys):
    trained = torch.load(ablated, weights_only=True)["state_dict"]["losses.losses.znorm.target"]
    assert trained.item() != 0.5  # the user's head was trained

    metrics = tmp_path / "metrics.json"
    assert main(["eval", "--tokenizer", str(ablated), "--data", str(tiny_shards), "--limit", "4", "--steps", "1",
                 "--out", str(metrics)]) != 0  # untrusted: refused
    assert "--trust mylab" in "".join(capsys.readouterr())
    assert main(["eval", "--tokenizer", str(ablated), "--data", str(tiny_shards), "--limit", "4", "--steps", "1",
                 "--out", str(metrics), "--trust", "mylab"]) == 0
    assert metrics.is_file()

    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(ablated), "--out", str(out)]) != 0
    assert "--trust mylab" in "".join(capsys.readouterr())
    assert main(["export", "--ckpt", str(ablated), "--out", str(out), "--trust", "mylab"]) == 0

    with pytest.raises(ExportError, match="--trust mylab"):
        load_heads(out)
    heads = load_heads(out, trust=["mylab"])
    assert torch.equal(heads["znorm"].target.detach(), trained)
    tok = Tokenizer.from_pretrained(out, trust=["mylab"])
    assert tok.encode(torch.rand(2, 3, 32, 32)).shape == (2, tok.num_tokens)
