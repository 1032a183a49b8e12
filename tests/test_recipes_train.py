"""`armkit train` on the tiny recipe: it trains, resumes exactly after SIGKILL, runs DDP on 2 CPU processes, and
rejects bad configs before building anything."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TINY = str(Path(__file__).resolve().parents[1] / "recipes" / "tokenizer" / "tiny.yaml")


def armkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "armkit.recipes.commands.cli", "train", "--config", TINY, *args]


def common(shards: Path, root: Path) -> list[str]:
    return [f"--data.train={shards}", f"--data.val={shards}", f"--trainer.default_root_dir={root}",
            "--trainer.enable_progress_bar=false", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.every_n_train_steps=5", "--trainer.callbacks.save_last=true",
            "--trainer.callbacks.save_top_k=-1"]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, **kw)


def train_here(capfd, *args: str) -> tuple[int, str, str]:
    """`armkit train --config tiny.yaml ARGS` in this process: the CLI's own entry point, without a fresh interpreter
    paying seconds of imports. Returns the exit code, stdout and stderr (with Lightning's log and the warnings, which
    a subprocess writes there); the environment is left as it was (Lightning sets PL_GLOBAL_SEED), and torch.compile's
    caches are cleared."""
    import io
    import logging
    import warnings

    from armkit.recipes.commands.cli import main

    environ, log = dict(os.environ), io.StringIO()
    handler, logger = logging.StreamHandler(log), logging.getLogger("lightning.pytorch")
    logger.addHandler(handler)
    if capfd is not None:
        capfd.readouterr()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main(["train", "--config", TINY, *args])
        for w in caught:
            log.write(f"{w.category.__name__}: {w.message}\n")
    finally:
        logger.removeHandler(handler)
        os.environ.clear()
        os.environ.update(environ)
        torch._dynamo.reset()
    if capfd is None:  # a fixture outside a test's capture: the caller reads only the exit code
        return code, "", log.getvalue()
    out = capfd.readouterr()
    return code, out.out, out.err + log.getvalue()


def losses(root: Path) -> dict[int, float]:
    import csv

    rows = []
    for path in sorted((root / "csv").glob("version_*/metrics.csv")):
        rows += [r for r in csv.DictReader(path.open()) if r.get("train/loss/total")]
    return {int(r["step"]): float(r["train/loss/total"]) for r in rows}


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_shards, tmp_path, capfd):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    code, _, err = train_here(capfd, *common(tiny_shards, straight))  # the reference run; the CLI's are below
    assert code == 0, err[-3000:]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(armkit(*common(tiny_shards, killed), "--trainer.max_steps=1000"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = killed / "checkpoints" / "epoch=0-step=10.ckpt"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-epoch: the stream is infinite, nowhere near step 1000
    proc.wait()
    assert target.exists(), "the killed run never reached its step-10 checkpoint"
    assert (killed / "checkpoints" / "last.ckpt").exists()

    resumed = run(armkit(*common(tiny_shards, killed), "--ckpt_path", "last"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states" in resumed.stdout + resumed.stderr

    a, b = losses(straight), losses(killed)
    assert max(a) == max(b) == 19
    for step in (14, 19):  # steps trained after the resume, logged every 5 steps
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), (step, a[step], b[step])
    wa, wb = weights(straight / "checkpoints" / "last.ckpt"), weights(killed / "checkpoints" / "last.ckpt")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k
    grid = list((straight / "csv").glob("version_*/grids/last.png"))
    assert grid, "no reconstruction grid written"


def test_ddp_two_cpu_processes_disjoint_data_identical_weights(tiny_shards, tmp_path):
    root = tmp_path / "ddp"
    done = run(armkit(f"--data.train={tiny_shards}", f"--data.val={tiny_shards}",
                      f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
                      "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.max_steps=3",
                      "--data.batch_size=4", "--trainer.limit_val_batches=0",
                      "--trainer.callbacks+=recipes.training.callbacks.SampleAudit"))
    assert done.returncode == 0, done.stderr[-3000:]
    audits = [json.loads(p.read_text()) for p in sorted(root.rglob("audit/rank*.json"))]
    assert [a["rank"] for a in audits] == [0, 1] and all(a["world_size"] == 2 for a in audits)
    k0, k1 = set(audits[0]["keys"]), set(audits[1]["keys"])
    assert len(audits[0]["keys"]) == len(audits[1]["keys"]) == 12  # 3 steps x batch 4 on each rank
    assert not k0 & k1, f"ranks shared samples: {sorted(k0 & k1)}"
    assert audits[0]["weights_sha256"] == audits[1]["weights_sha256"]


@pytest.mark.parametrize("override, names", [
    ("--model.tokenizer.init_args.encoder.init_args.weights=/nonexistent/enc.safetensors",
     "encoder.init_args.weights"),
    ("--model.tokenizer.init_args.levels=[8,1,5]", "levels"),
    ("--data.train=/nonexistent/shards", "data.train"),
    ("--model.tokenizer.init_args.encoder.init_args.weights=null", "write `weights: null` in the YAML"),
])
def test_bad_config_is_one_error_naming_the_key(override, names, capsys, monkeypatch):
    from armkit.recipes.commands import train
    from armkit.recipes.tokenizer.module import TokenizerModule

    built, original = [], TokenizerModule.__init__

    @functools.wraps(original)  # keeps the signature jsonargparse reads
    def spy(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(TokenizerModule, "__init__", spy)
    assert train.main(["--config", TINY, override]) == 2
    out = capsys.readouterr().err
    assert names in out and "config error" in out
    assert not built, "a model was built before the config was checked"


def test_unknown_key_is_named(capsys):
    from armkit.recipes.commands import train

    assert train.main(["--config", TINY, "--model.tokenizer.init_args.levelz=[8,5]"]) == 2
    assert "unknown key model.tokenizer.init_args.levelz" in capsys.readouterr().err


def test_paper_recipe_parses_and_asks_for_its_local_weights(capsys):
    from armkit.recipes.commands import train

    paper = str(Path(TINY).with_name("paper.yaml"))
    assert train.main(["--config", paper]) == 2  # parsed (no unknown key), then stopped before building anything
    out = capsys.readouterr().err
    assert "config error: model.tokenizer.init_args.encoder.init_args.weights" in out


def test_compiled_blocks_train_like_eager_and_keep_checkpoint_names(tiny_shards, tmp_path, capfd):
    """`model.compile` (here with the aot_eager backend: the same traced graph without inductor's C++ build) trains to
    the same losses as eager and writes checkpoints with the same parameter names. In-process: the subprocess CLI is
    covered by the tests above."""
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    for root, extra in ((eager, []), (compiled, ["--model.compile={backend: aot_eager}"])):
        code, out, err = train_here(capfd, *common(tiny_shards, root), "--trainer.max_steps=5", *extra)
        assert code == 0, err[-3000:]
        assert ("torch.compile: 2 transformer blocks compiled" in out + err) == bool(extra)
    a, b = losses(eager), losses(compiled)
    assert a.keys() == b.keys() and a
    assert [b[k] for k in sorted(b)] == pytest.approx([a[k] for k in sorted(a)], rel=1e-4)
    assert weights(eager / "checkpoints" / "last.ckpt").keys() == weights(compiled / "checkpoints" / "last.ckpt").keys()
