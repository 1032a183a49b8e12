"""Issue 26: `armkit demo` reproduces. Two runs from fresh folders, in one process whose random generators were left
in different states in between, export the same weights, tensor for tensor (torch.equal): the tokenizer stage
(model init from `seed_everything`, every step's draws from `seed_step`), the decoder stage (the same per-step
seeding on the frozen export), the data order (seeded per epoch and worker) and the teacher-feature cache (built on
the first run, reused on the second) leave nothing to chance. The demo's own recipes ask for `armkit assets`; this
runs the same `armkit demo` code path on the tiny recipes and made-up shapes (conftest's `tiny_shards`)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from armkit.recipes.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tokenizer" / "tiny.yaml"
DECODER_TINY = ROOT / "recipes" / "decoder" / "tiny.yaml"
CACHE = "armkit.recipes.tokenizer.feature_cache.TeacherFeatureCache"


def demo(shards: Path, out: Path) -> None:
    assert main(["demo", "--config", str(TINY), "--data", str(shards), "--out", str(out), "--steps", "3",
                 "--decoder-config", str(DECODER_TINY), "--decoder-steps", "2", "--eval-limit", "4", "--threads", "1",
                 "--", "--trainer.enable_progress_bar=false", "--trainer.val_check_interval=100",
                 f"--trainer.callbacks+={CACHE}"]) == 0


def weights(out: Path) -> dict[str, torch.Tensor]:
    found = {f"{f.parent.name}/{f.name}:{k}": t for sub in ("tokenizer", "export")
             for f in sorted((out / sub).glob("*.safetensors")) for k, t in load_file(str(f)).items()}
    assert any(k.startswith("tokenizer/") for k in found) and any(k.startswith("export/") for k in found)
    return found


def scramble_generators(seed: int) -> None:
    """What a first run, an import or a test before this one may leave behind: none of it may reach the weights."""
    torch.manual_seed(seed)
    torch.rand(seed % 7 + 1)
    random.seed(seed)
    np.random.seed(seed)


def train(argv: list[str]) -> dict[str, torch.Tensor]:
    """One stage through the demo's own `train_stage`; the state_dict of its last checkpoint."""
    from armkit.recipes.commands.demo import train_stage

    fitted = train_stage([*argv, "--trainer.enable_progress_bar=false", "--trainer.val_check_interval=100"], False)
    assert fitted is not None
    return torch.load(fitted[1], map_location="cpu", weights_only=True)["state_dict"]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a if not torch.equal(a[k], b[k])}
    assert not differ, f"{len(differ)} of {len(a)} tensors differ between two runs, e.g. {sorted(differ.items())[:4]}"


def test_two_runs_of_the_demos_stages_from_fresh_folders_give_identical_weights(tiny_shards, tmp_path):
    """The cheap check: both stages, as `armkit demo` fits them, twice each (no eval, export grid or summary)."""
    torch.set_num_threads(1)
    shards = tmp_path / "shards"  # a fresh copy: no teacher-feature cache yet
    shutil.copytree(tiny_shards, shards, ignore=shutil.ignore_patterns("features"))
    data = [f"--data.train={shards}", f"--data.val={shards}"]
    tokenizer = ["--config", str(TINY), *data, "--trainer.max_steps=3", f"--trainer.callbacks+={CACHE}"]
    scramble_generators(1)
    first = train([*tokenizer, f"--trainer.default_root_dir={tmp_path / 'a'}"])  # builds the cache, reads it
    assert list((shards / "features").glob("*/train.safetensors")), "the tokenizer stage built no feature cache"
    scramble_generators(2)
    assert_same(first, train([*tokenizer, f"--trainer.default_root_dir={tmp_path / 'b'}"]))  # reuses it

    export = tmp_path / "a" / "tokenizer"
    assert main(["export", "--ckpt", str(tmp_path / "a" / "checkpoints" / "last.ckpt"), "--out", str(export)]) == 0
    decoder = ["--config", str(DECODER_TINY), f"--model.init_args.tokenizer={export}",
               *(f"--data.init_args.{a[len('--data.'):]}" for a in data), "--trainer.max_steps=2"]
    scramble_generators(3)
    first = train([*decoder, f"--trainer.default_root_dir={tmp_path / 'a' / 'decoder'}"])
    scramble_generators(4)
    assert_same(first, train([*decoder, f"--trainer.default_root_dir={tmp_path / 'b' / 'decoder'}"]))


@pytest.mark.slow
def test_two_demo_runs_from_fresh_folders_give_identical_weights(tiny_shards, tmp_path):
    """The whole `armkit demo` twice (tokenizer, decoder stage, eval, export): what issue 26 asks."""
    shards = tmp_path / "shards"  # a fresh copy: no teacher-feature cache yet
    shutil.copytree(tiny_shards, shards, ignore=shutil.ignore_patterns("features"))
    scramble_generators(1)
    demo(shards, tmp_path / "a")  # builds the feature cache, then reads it
    assert list((shards / "features").glob("*/train.safetensors")), "the tokenizer stage built no feature cache"
    scramble_generators(2)
    demo(shards, tmp_path / "b")  # reuses it
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert_same(a, b)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["protocol"]["demo"]["threads"] == 1
    # the decoder stage trained (its export differs from the tokenizer's own decoder): both stages were compared
    assert any(not torch.equal(a[k], a[k.replace("export/", "tokenizer/", 1)])
               for k in a if k.startswith("export/model") and ".decoder." in f".{k.split(':')[1]}")


def test_two_processes_with_different_hash_seeds_train_the_same_tokenizer(tiny_shards, tmp_path):
    """What one process cannot show: a fresh interpreter each time (another PYTHONHASHSEED, so set and dict-of-set
    orders differ; no state left by an earlier run), as two fresh clones' `armkit demo` would be. Measured at the
    demo's size too: two fresh `armkit demo` runs gave the same tokenizer-stage weights after 500 steps."""
    import os
    import subprocess
    import sys

    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards, ignore=shutil.ignore_patterns("features"))
    states = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}"
        subprocess.run([sys.executable, "-m", "armkit.recipes.commands.cli", "train", "--config", str(TINY),
                        f"--data.train={shards}", f"--data.val={shards}", "--trainer.max_steps=3",
                        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={out}",
                        f"--trainer.callbacks+={CACHE}"], check=True, capture_output=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"})
        states.append(torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
                      ["state_dict"])
    assert_same(*states)
