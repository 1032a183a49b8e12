"""Exports and checkpoints read by eval/export: bad values refused with the file and key, no path followed outside the
folders allowed, no class built from a module loaded outside armkit."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import armkit.backbones
from armkit.common.buildable import ConfigError, resolve
from armkit.common.weights import sha256_file
from armkit.recipes.evaluation.load import load_for_eval
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.encoders import TimmEncoder
from armkit.tokenizer.hub import ExportError, from_pretrained, load_heads, save_pretrained
from armkit.tokenizer.losses import CaptionLoss, LossSet
from armkit.tokenizer.quantizer import FSQQuantizer


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    torch.manual_seed(0)
    enc = TimmEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs={"depth": 1})
    tok = Tokenizer(encoder=enc, levels=[8, 5, 5, 5], projection="mlp").eval()
    heads = LossSet(losses={"cap": CaptionLoss(lm=armkit.backbones.TinyCausalLM(width=32, depth=1), embed_dim=192)})
    return save_pretrained(tok, tmp_path_factory.mktemp("export") / "tok", heads=heads), tok


def edited(export, tmp_path: Path, edit) -> Path:
    folder = Path(shutil.copytree(export[0], tmp_path / "copy"))
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))  # NaN is written as the literal NaN
    return folder


def set_in(keys: list, value):
    def edit(config):
        node = config
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return edit


LEVELS = ["tokenizer", "init_args", "levels"]


@pytest.mark.parametrize("edit, match", [
    (set_in(["encoder", "mean", 0], float("nan")), "NaN"),
    (set_in(["encoder", "std", 1], 0.0), r"encoder.std = \[.*\]: must be > 0"),
    (set_in(["encoder", "mean"], [0.5, 0.5]), "encoder.mean .* 3 finite numbers"),
    (set_in(LEVELS, [8.5, 5, 5, 5]), r"levels = \[8.5, 5, 5, 5\]: must be integers >= 2"),
    (set_in(["levels"], [8.5, 5, 5, 5]), r"levels = \[8.5, 5, 5, 5\]"),
    (set_in(["tokenizer", "init_args", "num_codebooks"], True), "num_codebooks = True"),
    (set_in(["encoder", "included"], "false"), "encoder.included = 'false': must be true or false"),
    (set_in(["format_version"], True), "format_version = True: must be an integer"),
    (set_in(["grid"], [4, -4]), "grid"),
])
def test_bad_config_values_are_refused_with_file_and_key(export, tmp_path, edit, match):
    folder = edited(export, tmp_path, edit)
    with pytest.raises(ExportError, match=match) as e:
        from_pretrained(folder)
    assert "config.json" in str(e.value)


@pytest.mark.parametrize("levels, codebooks", [([8.5, 5], 1), ([8, 5], 1.0), ([8, True], 1)])
def test_the_quantizer_never_truncates_a_non_integer(levels, codebooks):
    with pytest.raises(ValueError, match="must be integers|integers >= 2"):
        FSQQuantizer(levels=levels, num_codebooks=codebooks)


def test_deep_nesting_is_refused_not_a_recursion_error(export, tmp_path):
    folder = Path(shutil.copytree(export[0], tmp_path / "copy"))
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text[:-2] + ', "junk": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(ExportError, match="nested too deeply"):
        from_pretrained(folder)
    deep: list = []
    for _ in range(60):  # parses fine, but no armkit config nests like this
        deep = [deep]
    folder = edited(export, tmp_path / "b", set_in(["tokenizer", "init_args", "junk"], deep))
    with pytest.raises(ExportError, match="nested deeper than 32 levels"):
        from_pretrained(folder)


@pytest.mark.parametrize("change, match", [
    (lambda t: t.__setitem__(0, float("nan")), "holds NaN or inf"),
    (lambda t: t.__setitem__(1, float("inf")), "holds NaN or inf"),
])
def test_non_finite_tensors_are_refused(export, tmp_path, change, match):
    folder = Path(shutil.copytree(export[0], tmp_path / "copy"))
    state = load_file(str(folder / "model.safetensors"))
    change(state["down.0.weight"].view(-1))
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ExportError, match=rf"'down.0.weight' {match}"):
        from_pretrained(folder)


def test_wrong_dtype_is_refused(export, tmp_path):
    folder = Path(shutil.copytree(export[0], tmp_path / "copy"))
    state = load_file(str(folder / "model.safetensors"))
    state["down.0.weight"] = state["down.0.weight"].double()
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ExportError, match="'down.0.weight' is torch.float64"):
        from_pretrained(folder)


def test_paths_outside_the_export_are_not_followed(export, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ckpt = elsewhere / "vit.pth"
    torch.save({"nothing": torch.zeros(1)}, ckpt)
    kwargs = ["tokenizer", "init_args", "encoder", "init_args", "model_kwargs", "checkpoint_path"]
    folder = edited(export, tmp_path / "a", set_in(kwargs, str(ckpt)))
    with pytest.raises(ExportError, match=r"model_kwargs.checkpoint_path = .* is outside"):
        from_pretrained(folder)
    lm = {"class_path": "armkit.backbones.HFCausalLM", "init_args": {"path": str(elsewhere), "frozen": True}}
    folder = edited(export, tmp_path / "b", set_in(["heads", "init_args", "losses", "cap", "init_args", "lm"], lm))
    with pytest.raises(ExportError, match=r"lm.init_args.path = .* is outside"):
        load_heads(folder)
    folder = edited(export, tmp_path / "c", set_in(["heads", "init_args", "losses", "cap", "init_args", "lm"], {
        "class_path": "armkit.backbones.HFCausalLM", "init_args": {"path": "../../../etc", "frozen": True}}))
    with pytest.raises(ExportError, match="is outside"):
        load_heads(folder)
    tower = {"class_path": "armkit.tokenizer.text.OpenCLIPTextTower",
             "init_args": {"model_name": "x", "pretrained": "webli"}}
    folder = edited(export, tmp_path / "d", set_in(["heads", "init_args", "losses", "cap", "init_args", "lm"], tower))
    with pytest.raises(ExportError, match="pretrained = 'webli' would download"):
        load_heads(folder)


def test_checkpoint_frozen_record_outside_is_refused_before_hashing(tmp_path, monkeypatch):
    from tests.test_export_command import fake_run

    ckpt, _, _ = fake_run(tmp_path / "run")
    big = tmp_path / "system"
    big.mkdir()
    for i in range(1005):
        (big / f"lib{i}.so").write_bytes(b"x")
    checkpoint = torch.load(str(ckpt), weights_only=True)
    checkpoint["armkit_frozen"] = {"losses.losses.cap.lm.": {"source": str(big), "sha256": "0" * 64}}
    torch.save(checkpoint, ckpt)
    hashed = []
    monkeypatch.setattr("armkit.recipes.evaluation.load.sha256_file", lambda p, **k: hashed.append(p) or "0" * 64)
    with pytest.raises(ExportError, match=r"armkit_frozen\['losses.losses.cap.lm.'\] names .*system.*, outside"):
        load_for_eval(ckpt)
    assert hashed == []  # refused before anything was read
    with pytest.raises(ValueError, match="more than 1000 files: not a model folder"):
        sha256_file(big)  # and even when allowed, a folder like that is never hashed


def test_class_from_a_module_loaded_outside_armkit_is_refused(tmp_path, monkeypatch):
    (tmp_path / "evil_lm.py").write_text("from armkit.backbones.tiny_lm import TinyCausalLM\n\n\n"
                                         "class Evil(TinyCausalLM):\n    pass\n")
    monkeypatch.setattr(armkit.backbones, "__path__", [*armkit.backbones.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "armkit.backbones.evil_lm", raising=False)
    with pytest.raises(ConfigError, match=r"loaded from .*evil_lm.py, outside armkit"):
        resolve("armkit.backbones.evil_lm.Evil")
    sys.modules.pop("armkit.backbones.evil_lm", None)


def test_a_local_backbones_folder_is_never_imported(export, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "backbones").mkdir()
    (tmp_path / "backbones" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (tmp_path / "backbones" / "tiny_lm.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("backbones", "backbones.tiny_lm"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    legacy = {"class_path": "backbones.tiny_lm.TinyCausalLM", "init_args": {"width": 32, "depth": 1}}
    folder = edited(export, tmp_path / "x", set_in(["heads", "init_args", "losses", "cap", "init_args", "lm"], legacy))
    heads = load_heads(folder)
    assert type(heads["cap"].lm) is armkit.backbones.TinyCausalLM and not marker.exists()
