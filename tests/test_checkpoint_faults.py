"""Checkpoints under faults: writes are atomic in the checkpoint folder, `--ckpt_path last` falls back to the newest
readable checkpoint, and a checkpoint's stored hyper-parameters neither override the recipe nor import anything."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_recipes_train import TINY, common, train_here

from armkit.recipes.training.checkpoint_io import SafeCheckpointIO, clean_stale_temps, newest_readable


@pytest.fixture(scope="module")
def trained(tiny_shards, tmp_path_factory) -> Path:
    """A tiny run of 10 steps with checkpoints at steps 5 and 10 and last.ckpt."""
    root = tmp_path_factory.mktemp("ckpt-faults") / "run"
    code, _, log = train_here(None, *common(tiny_shards, root), "--trainer.max_steps=10")
    assert code == 0, log[-3000:]
    return root


def copy_run(trained: Path, tmp_path: Path, *, truncate_last: bool = False) -> Path:
    """A copy of the run; truncate_last: every last*.ckpt cut in half, as a kill mid-copy onto another filesystem
    leaves it (the tiny recipe and `common` each add a ModelCheckpoint: last.ckpt and last-v1.ckpt)."""
    root = tmp_path / "run"
    shutil.copytree(trained, root)
    for last in (root / "checkpoints").glob("last*.ckpt") if truncate_last else ():
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    return root


def test_saving_never_stages_in_tmpdir(tmp_path, monkeypatch):
    """With $TMPDIR unusable, a checkpoint still saves: nothing goes through the system temp folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))
    target = tmp_path / "ckpts" / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    assert torch.equal(torch.load(target, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_failed_write_keeps_the_previous_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, target)

    def dies_midway(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["state_dict"]["w"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow  # a subprocess writing 64 MB checkpoints until killed: ~20 s on 2 busy cores
def test_sigkill_mid_write_leaves_no_partial_checkpoint_and_the_next_save_cleans_up(tmp_path):
    """A process killed while writing 64 MB checkpoints leaves the final path absent or complete; its temp (if any)
    is in the checkpoint folder, never in $TMPDIR, and is removed by the next save."""
    tmpdir = tmp_path / "systmp"
    tmpdir.mkdir()
    folder = tmp_path / "ckpts"
    script = textwrap.dedent(f"""
        import torch
        from armkit.recipes.training.checkpoint_io import SafeCheckpointIO
        io, big = SafeCheckpointIO(), {{"state_dict": {{"w": torch.arange(16 * 2**20, dtype=torch.float32)}}}}
        while True:
            io.save_checkpoint(big, {str(folder / "last.ckpt")!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "TMPDIR": str(tmpdir)})
    deadline = time.time() + 60
    while not list(folder.glob(".last.ckpt.tmp-*")) and time.time() < deadline:  # kill mid-write
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(tmpdir.iterdir()), "the write staged bytes in $TMPDIR"
    final = folder / "last.ckpt"
    if final.exists():
        assert torch.load(final, weights_only=True)["state_dict"]["w"][-1] == 16 * 2**20 - 1
    SafeCheckpointIO().save_checkpoint({"state_dict": {}}, folder / "other.ckpt")
    assert not list(folder.glob(".*.tmp-*")), "a dead process's temp survived the next save"


def test_clean_stale_temps_keeps_live_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".last.ckpt.tmp-{dead.pid}-abcd1234"
    live = tmp_path / f".last.ckpt.tmp-{os.getpid()}-abcd1234"
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    assert clean_stale_temps(tmp_path) == [stale]
    assert live.exists()


def test_newest_readable_skips_truncated_files(trained, tmp_path):
    folder = copy_run(trained, tmp_path, truncate_last=True) / "checkpoints"
    pick = newest_readable(folder)
    assert pick.path.name.startswith("epoch=0-step=10")
    assert sorted(p.name for p, _ in pick.skipped) == ["last-v1.ckpt", "last.ckpt"]


def test_resume_last_falls_back_to_newest_readable_checkpoint(trained, tiny_shards, tmp_path, capfd):
    root = copy_run(trained, tmp_path, truncate_last=True)
    code, out, err = train_here(capfd, *common(tiny_shards, root), "--trainer.max_steps=15", "--ckpt_path", "last")
    text = out + err
    assert code == 0, text[-3000:]
    assert "skipping last.ckpt: unreadable" in text and "resuming from" in text and "epoch=0-step=10" in text
    assert "Restored all states" in text
    after = newest_readable(root / "checkpoints").path  # the next `--ckpt_path last` continues from step 15
    assert after.name.startswith("last") and torch.load(after, weights_only=True)["global_step"] == 15


def crafted(trained: Path, tmp_path: Path, hparams: dict) -> Path:
    checkpoint = torch.load(trained / "checkpoints" / "epoch=0-step=10.ckpt", weights_only=True)
    checkpoint["hyper_parameters"] = hparams
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    return path


def spy_on_module(monkeypatch) -> list[dict]:
    import functools

    from armkit.recipes.tokenizer.module import TokenizerModule

    seen, original = [], TokenizerModule.__init__

    @functools.wraps(original)  # keeps the signature jsonargparse reads
    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(TokenizerModule, "__init__", spy)
    return seen


def test_checkpoint_hyperparameters_never_override_the_recipe(trained, tiny_shards, tmp_path, monkeypatch, recwarn):
    from armkit.recipes.commands import train

    path = crafted(trained, tmp_path, {"lr": 1.0e9, "warmup_steps": 7})
    seen = spy_on_module(monkeypatch)
    args = ["--config", TINY, *common(tiny_shards, tmp_path / "run"), "--trainer.max_steps=11",
            "--trainer.limit_val_batches=0", "--ckpt_path", str(path)]
    assert train.main(args) == 0
    assert seen and seen[0]["lr"] == 1.0e-3 and seen[0]["warmup_steps"] == 2
    text = "\n".join(str(w.message) for w in recwarn)
    assert "model.lr: checkpoint 1000000000.0, recipe 0.001" in text


def test_nothing_named_in_a_checkpoint_is_imported(trained, tiny_shards, tmp_path, monkeypatch):
    from armkit.recipes.commands import train

    plugin = tmp_path / "plugins"
    (plugin / "evilpkg").mkdir(parents=True)
    (plugin / "evilpkg" / "__init__.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\nclass Model: pass\n")
    monkeypatch.syspath_prepend(str(plugin))
    path = crafted(trained, tmp_path, {"_class_path": "evilpkg.Model", "lr": 1.0})
    args = ["--config", TINY, *common(tiny_shards, tmp_path / "run"), "--trainer.max_steps=11",
            "--trainer.limit_val_batches=0", "--ckpt_path", str(path)]
    try:
        code = train.main(args)
    except SystemExit as e:  # before the fix: jsonargparse gives up after importing evilpkg
        code = e.code
    assert not (tmp_path / "imported").exists(), "a module named in the checkpoint was imported"
    assert code == 0


def test_resume_never_starts_over_silently(tmp_path):
    """Every checkpoint unreadable, or an explicit path that does not load: one error, not a fresh run."""
    from armkit.recipes.training.resume import ResumeError, pick

    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "epoch=0-step=5.ckpt").write_bytes(b"")
    with pytest.raises(ResumeError, match="no readable checkpoint.*2 unreadable"):
        pick("last", tmp_path)
    with pytest.raises(ResumeError, match="last.ckpt cannot be read"):
        pick(str(tmp_path / "last.ckpt"), None)
    assert pick("last", tmp_path / "never-written") == ("last", [])  # a first run: Lightning starts from scratch


def test_compare_reports_each_difference_from_the_recipe(tmp_path):
    from armkit.recipes.training.resume import compare

    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1.0e9, "betas": [0.9, 0.95]},
                "armkit": {"losses": {"class_path": "L", "init_args": {"pixel": {"weight": 5.0}}}}}, path)
    notes = compare(str(path), {"lr": 1.0e-3, "betas": [0.9, 0.95]},
                    {"losses": {"class_path": "L", "init_args": {"pixel": {"weight": 3.0}}}})
    assert "resume: model.lr: checkpoint 1000000000.0, recipe 0.001 (the recipe stands)" in notes
    assert "resume: model.losses.init_args.pixel.weight: checkpoint 5.0, recipe 3.0 (the recipe stands)" in notes
    assert not any("betas" in line for line in notes)
