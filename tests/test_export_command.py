"""`armkit export`: a checkpoint laid out as TokenizerModule writes it -> a folder that a fresh process without
lightning loads into a tokenizer giving the checkpoint's indices exactly, with the loss heads beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from armkit.backbones import TinyCausalLM
from armkit.recipes.commands.cli import main
from armkit.tokenizer import Tokenizer, build, to_spec
from armkit.tokenizer.encoders import TimmEncoder
from armkit.tokenizer.hub import ExportError
from armkit.tokenizer.losses import CaptionLoss, DistillLoss, LossSet, SigmoidLoss
from armkit.tokenizer.text import TinyTextTower

REPO = Path(__file__).resolve().parents[1]

# Any attempt to import lightning is recorded and fails, so even an import that a library would swallow shows up.
POISON = """
import importlib.abc, sys

ATTEMPTS = []

class NoLightning(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric"):
            ATTEMPTS.append(name)
            raise ImportError(f"{name} is poisoned in this test")
        return None

sys.meta_path.insert(0, NoLightning())
try:
    import lightning  # noqa: F401
    raise SystemExit("the poison did not work")
except ImportError:
    ATTEMPTS.clear()
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # armkit is installed; PYTHONPATH (if any) points at the checkout under test
    return subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def fake_run(root: Path, *, encoder_weights: str | None = None) -> tuple[Path, Tokenizer, LossSet]:
    """A run folder as `armkit train` leaves it: RUN/config.yaml, RUN/metrics.json, RUN/checkpoints/last.ckpt."""
    encoder = TimmEncoder("vit_tiny_patch16_224", image_size=32, weights=encoder_weights, model_kwargs={"depth": 1})
    tok = Tokenizer(encoder=encoder, levels=[8, 5, 5, 5], projection="mlp")
    losses = LossSet(losses={
        "sig": SigmoidLoss(text_tower=TinyTextTower(width=32), embed_dim=192, weight=5.0),
        "cap": CaptionLoss(lm=TinyCausalLM(width=32, depth=1), embed_dim=192),
        "feat": DistillLoss(),
    })
    with torch.no_grad():  # "trained": nothing is at its init value
        tok.down[2].weight.mul_(20)
        for p in losses["sig"].head.parameters():
            p.add_(torch.randn_like(p))
        losses["sig"].logit_bias.fill_(-3.5)
    state = {f"tokenizer.{k}": v for k, v in tok.state_dict().items()}
    state.update({f"losses.{k}": v for k, v in losses.state_dict().items()})
    checkpoint = {"state_dict": state, "epoch": 2, "global_step": 40,
                  "armkit": {"tokenizer": to_spec(tok), "losses": to_spec(losses)}}
    (root / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, root / "checkpoints" / "last.ckpt")
    shards = root / "shards"
    shards.mkdir(parents=True)
    (shards / "meta.json").write_text(json.dumps({"source": "emoji", "licence": "MIT (test)",
                                                  "splits": {"train": {"count": 12}}}))
    train = str(shards / "train-{000000..000003}.tar")
    data = {"class_path": "armkit.recipes.data.ShardDataModule", "init_args": {"train": train, "image_size": 32}}
    (root / "config.yaml").write_text(yaml.safe_dump({"model": {}, "data": data}))
    (root / "metrics.json").write_text(json.dumps({"psnr": 19.61234, "zero_shot": {"top1": 0.25}, "note": "x"}))
    return root / "checkpoints" / "last.ckpt", tok.eval(), losses.eval()


def reference_indices(ckpt: Path, x: torch.Tensor) -> torch.Tensor:
    """What the training checkpoint itself gives: its spec rebuilt, its tensors loaded."""
    checkpoint = torch.load(str(ckpt), weights_only=True)
    tok = build(checkpoint["armkit"]["tokenizer"])
    tok.load_state_dict({k[len("tokenizer."):]: v for k, v in checkpoint["state_dict"].items()
                         if k.startswith("tokenizer.")})
    return tok.eval().encode(x)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmd")
    torch.manual_seed(0)
    ckpt, _, losses = fake_run(root / "run")
    out = root / "export"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    return root, ckpt, out, losses


def load_in_fresh_process(ckpt: Path, out: Path, probe: Path, head: str) -> subprocess.CompletedProcess:
    """A fresh interpreter with lightning poisoned imports tokenizer, loads the export, encodes the images the
    training checkpoint itself encoded here, and loads the heads; it prints what it saw."""
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    expected = reference_indices(ckpt, x)
    assert len(torch.unique(expected)) > 1  # equal indices below are not equal constants
    save_file({"images": x, "indices": expected}, str(probe))
    code = POISON + textwrap.dedent(f"""
        import armkit.tokenizer
        print("after import tokenizer:", ATTEMPTS, sorted(m for m in sys.modules if "lightning" in m))
        import torch
        from safetensors.torch import load_file
        from armkit.tokenizer import Tokenizer
        from armkit.tokenizer.hub import load_heads

        probe = load_file({str(probe)!r})
        tok = Tokenizer.from_pretrained({str(out)!r})
        print("indices equal:", torch.equal(tok.encode(probe["images"]), probe["indices"]))
        print("logit bias:", float(load_heads({str(out)!r})[{head!r}].logit_bias))
        print("after loading:", ATTEMPTS)
    """)
    return run_python(code)


@pytest.fixture(scope="module")
def fresh(exported):
    root, ckpt, out, _ = exported
    return load_in_fresh_process(ckpt, out, root / "probe.safetensors", "sig")


def test_import_tokenizer_does_not_import_lightning(fresh):
    assert "after import tokenizer: [] []" in fresh.stdout, fresh.stdout + fresh.stderr


def test_export_loads_in_a_fresh_process_without_lightning(fresh):
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "indices equal: True" in fresh.stdout  # bit-identical to the training checkpoint
    assert "logit bias: -3.5" in fresh.stdout and "after loading: []" in fresh.stdout


def test_export_writes_weights_heads_and_card(exported):
    _, _, out, _ = exported
    assert {"config.json", "model.safetensors", "heads.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    heads = load_file(str(out / "heads.safetensors"))
    assert "losses.sig.logit_bias" in heads and "losses.cap.adapter.weight" in heads
    assert not any(".text_tower." in k or ".lm." in k for k in heads)  # frozen towers are referenced by spec
    card = (out / "README.md").read_text()
    assert "| psnr | 19.6123 |" in card and "| zero_shot/top1 | 0.25 |" in card and "note" not in card
    assert "armkit.recipes.data.ShardDataModule" in card and "train-{000000..000003}.tar" in card and "step 40" in card
    assert "train: 12 images from `emoji` (MIT (test))" in card and "- train data (emoji): MIT (test)" in card


def test_heads_round_trip_in_process(exported):
    from armkit.tokenizer.hub import load_heads

    heads = load_heads(exported[2])
    for key, value in exported[3].state_dict().items():  # trained heads from the file, frozen towers by spec
        assert torch.equal(heads.state_dict()[key], value), key


def test_export_referencing_the_encoder_reads_its_licence(tmp_path):
    cache = tmp_path / "assets"
    (cache / "vit_tiny").mkdir(parents=True)
    weights = cache / "vit_tiny" / "model.safetensors"
    donor = TimmEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs={"depth": 1})
    save_file(donor.model.state_dict(), str(weights))
    entry = {"path": str(weights), "relpath": "vit_tiny/model.safetensors", "licence": "MIT",
             "model_licence": "Apache-2.0 (test)", "files": {"model.safetensors": {"bytes": weights.stat().st_size}}}
    (cache / "assets.json").write_text(json.dumps({"format": 1, "assets": {"vit_tiny": entry}}))
    ckpt, tok, _ = fake_run(tmp_path / "run", encoder_weights=str(weights))
    out = tmp_path / "export"
    args = ["export", "--ckpt", str(ckpt), "--out", str(out), "--encoder", "reference", "--no-heads"]
    assert main(args) == 2 and not out.exists()  # the weights file lies outside the run: followed only when allowed
    assert main([*args, "--allow-path", str(cache)]) == 0
    assert not (out / "heads.safetensors").exists()
    config = json.loads((out / "config.json").read_text())
    assert not config["encoder"]["included"] and config["encoder"]["weights"] == str(weights)
    assert "Apache-2.0 (test) (model); package MIT" in (out / "README.md").read_text()
    x = torch.rand(3, 3, 32, 32)
    with pytest.raises(ExportError, match="followed only inside"):  # a file outside the export: not followed...
        Tokenizer.from_pretrained(out)
    assert torch.equal(Tokenizer.from_pretrained(out, paths=[cache]).encode(x), tok.encode(x))  # ...unless allowed


def test_export_refuses_bad_checkpoints(tmp_path, capsys):
    marker = tmp_path / "executed"

    class Touch:
        def __reduce__(self):
            return Path.touch, (marker,)

    torch.save({"state_dict": {}, "payload": Touch()}, tmp_path / "evil.ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "evil.ckpt"), "--out", str(tmp_path / "a")]) == 2
    assert "refused to unpickle" in capsys.readouterr().err and not marker.exists()

    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "plain.ckpt"), "--out", str(tmp_path / "b")]) == 2
    assert "not written by armkit" in capsys.readouterr().err

    ckpt, _, _ = fake_run(tmp_path / "run")
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "c"), "--encoder", "reference"]) == 2
    assert "can only be included" in capsys.readouterr().err



def test_tiny_yaml_run_exports_and_encodes_identically(tmp_path, tiny_shards, capfd):
    """The issue's end-to-end check, in CI: train tiny.yaml, export, load in a fresh process without lightning.
    Training runs in this process (`armkit train` as a subprocess: test_recipes_train.py)."""
    from test_recipes_train import train_here

    shards, runs, out = tiny_shards, tmp_path / "runs", tmp_path / "export"
    code, _, err = train_here(capfd, f"--data.train={shards}", f"--data.val={shards}", "--trainer.max_steps=6",
                              "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={runs}")
    assert code == 0, err[-3000:]
    ckpt = runs / "checkpoints" / "last.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--graphs", "--decode-steps", "1",
                 "--no-onnx"]) == 0
    assert (out / "decode.pt2").is_file()
    result = load_in_fresh_process(ckpt, out, tmp_path / "probe.safetensors", "sigmoid")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "indices equal: True" in result.stdout and "after loading: []" in result.stdout
