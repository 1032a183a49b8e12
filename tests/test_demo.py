"""`armkit demo` on the tiny recipe: a fixed step budget, the final step checkpointed, and evaluation and export of
this run's own checkpoint even when an earlier run left its files in the same folder; the bar counts true steps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tokenizer" / "tiny.yaml"
DECODER_TINY = ROOT / "recipes" / "decoder" / "tiny.yaml"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "armkit.recipes.commands.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def demo(shards: Path, out: Path, steps: int, decoder_steps: int = 0) -> subprocess.CompletedProcess:
    done = run("demo", "--config", str(TINY), "--data", str(shards), "--out", str(out), "--steps", str(steps),
               "--decoder-config", str(DECODER_TINY), "--decoder-steps", str(decoder_steps), "--ar-steps", "0",
               "--eval-limit", "4", "--", "--trainer.enable_progress_bar=false")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def test_demo_trains_fixed_steps_and_uses_its_own_last_step(tiny_shards, tmp_path):
    out = tmp_path / "demo"
    first = demo(tiny_shards, out, 13)  # not a multiple of tiny.yaml's every_n_train_steps=10
    ckpt = Path(re.search(r"checkpoint\s+: (\S+)", first.stdout).group(1))
    assert ckpt_step(ckpt) == 13, "the final steps after the last periodic checkpoint were lost"
    assert json.loads((out / "metrics.json").read_text())["tokenizer"]["path"] == str(ckpt.resolve())

    second = demo(tiny_shards, out, 12)  # same folder: the first run's last.ckpt is still there
    ckpt2 = Path(re.search(r"checkpoint\s+: (\S+)", second.stdout).group(1))
    assert ckpt2 != ckpt and ckpt_step(ckpt2) == 12 and ckpt_step(ckpt) == 13
    evaluated = json.loads((out / "metrics.json").read_text())["tokenizer"]["path"]
    assert evaluated == str(ckpt2.resolve()), "evaluated a stale checkpoint"
    trained = torch.load(ckpt2, map_location="cpu", weights_only=True)["state_dict"]
    from safetensors.torch import load_file

    exported = load_file(str(out / "export" / "model.safetensors"))
    name = next(k for k in exported if "decoder" in k and k.endswith("final.weight"))
    assert torch.equal(exported[name], trained[f"tokenizer.{name}"]), "exported a stale checkpoint"
    grid = re.search(r"reconstruction grid : (\S+)", second.stdout).group(1)
    assert "version_1" in grid and Path(grid).is_file(), "the grid printed is not this run's"


def test_demo_decoder_stage_trains_only_the_decoder_and_exports_it(tiny_shards, tmp_path):
    from PIL import Image
    from safetensors.torch import load_file

    out = tmp_path / "demo"
    done = demo(tiny_shards, out, 6, decoder_steps=5)
    ckpt = Path(re.search(r"checkpoint\s+: (\S+)", done.stdout).group(1))
    assert ckpt.parent.parent == out / "decoder" and ckpt_step(ckpt) == 5
    assert json.loads((out / "metrics.json").read_text())["tokenizer"]["path"] == str(ckpt.resolve())
    first, final = load_file(str(out / "tokenizer" / "model.safetensors")), load_file(str(out / "export" /
                                                                                          "model.safetensors"))
    assert first.keys() == final.keys()
    changed = {k for k in first if not torch.equal(first[k], final[k])}
    assert changed and all(k.startswith("decoder.") for k in changed), sorted(changed)[:4]
    assert (out / "export" / "heads.safetensors").is_file()  # the tokenizer's loss heads ride along
    assert "decoder, 5 steps" in done.stdout
    # the grid printed (the decoder stage's) is enlarged by nearest neighbour, and the summary is written
    grid = Path(re.search(r"reconstruction grid : (\S+)", done.stdout).group(1))
    image = torch.from_numpy(__import__("numpy").array(Image.open(grid).convert("RGB")))  # [H, W, 3]
    cell = 96  # tiny.yaml decodes 32 px: a factor of 3, each decoded pixel a 3x3 block
    assert image.shape[0] >= cell and image.shape[1] >= 8 * cell  # 4 images: one row of 4 (input | decode)
    shown = image[4:4 + cell, 4:4 + cell]  # padding 4, then the first input, enlarged
    blocks = shown.reshape(32, 3, 32, 3, 3)
    assert (blocks == blocks[:, :1, :, :1]).all(), "not a nearest-neighbour enlargement"
    summary = Path(re.search(r"summary \(curves\+grid\): (\S+)", done.stdout).group(1))
    assert summary.is_file() and Image.open(summary).size[0] >= 1000


def test_progress_bar_counts_steps_out_of_max_steps(tiny_shards, tmp_path, capfd):
    from test_recipes_train import train_here  # the first run in this process; the resumed one through the CLI

    code, out, err = train_here(capfd, f"--data.train={tiny_shards}", f"--data.val={tiny_shards}",
                                f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=13",
                                "--trainer.val_check_interval=20")
    assert code == 0, err[-3000:]
    text = out.replace("\r", "\n")
    assert re.search(r"^train: 100%\|.*\| 13/13 \[", text, re.M), text[-2000:]
    assert not re.search(r"/-\d|Epoch 0/", text)
    resumed = run("train", "--config", str(TINY), f"--data.train={tiny_shards}", f"--data.val={tiny_shards}",
                  f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=16", "--trainer.val_check_interval=20",
                  "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    text = resumed.stdout.replace("\r", "\n")
    assert re.search(r"^train:  *81%\|.*\| 13/16 \[", text, re.M), text[-2000:]  # starts at the restored step
    assert re.search(r"^train: 100%\|.*\| 16/16 \[", text, re.M), text[-2000:]
    assert not re.search(r"\| [1-9]\d*/\? \[", text), "a resumed run's bar lost its total"


def test_a_step_budget_ends_the_cosine_where_the_recipes_own_budget_does():
    """`armkit demo --steps N` / `--decoder-steps N` set cosine_steps so that N steps end at the schedule's floor,
    exactly as the recipes' own max_steps and cosine_steps do."""
    import yaml

    from armkit.recipes.commands.demo import DECODER_RECIPE, RECIPE
    from armkit.recipes.training.schedule import cosine_for

    for recipe in (RECIPE, DECODER_RECIPE):
        cfg = yaml.safe_load(recipe.read_text())
        model = cfg["model"].get("init_args", cfg["model"])
        assert cosine_for(recipe, cfg["trainer"]["max_steps"]) == model["cosine_steps"], recipe
    assert cosine_for(DECODER_RECIPE, 1300) == 1250
