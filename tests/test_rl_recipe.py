"""`armkit train --config recipes/rl/tiny.yaml` on a tiny tokenizer's code shards: logs reward, KL and clip fraction,
stages t2i / edit / joint, and resumes exactly from a checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_ar_recipes import tiny_tokenizer  # the tiny tokenizer export the AR tests build

from armkit.recipes.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
RL_TINY = str(ROOT / "recipes" / "rl" / "tiny.yaml")


def edit_folder(folder: Path, n: int = 16) -> Path:
    """Shapes captioned NAME and "NAME: TONE skin tone", so `armkit tokenize --edits skin-tone` writes edit pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        caption = f"shape {i // 2}" + (": dark skin tone" if i % 4 == 1 else ": light skin tone" if i % 4 == 3 else "")
        colour = (40, 40, 40) if "dark" in caption else (220, 200, 180) if "light" in caption else (200, 30, 30)
        Image.new("RGB", (40, 40), colour).save(folder / f"{i:03d}.png")
        rows.append({"path": f"{i:03d}.png", "caption": caption, "label": i % 4, "tags": caption})
    (folder / "index.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder / "index.jsonl"


@pytest.fixture(scope="module")
def rl_chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    index = edit_folder(root / "images")
    assert main(["data", "folder", "--src", str(root / "images"), "--index", str(index), "--out", str(root / "shards"),
                 "--shard-size", "8", "--val-fraction", "0.25"]) == 0
    tok = tiny_tokenizer(root / "tok", seed=0)
    assert main(["tokenize", "--tokenizer", str(tok), "--data", str(root / "shards"), "--out", str(root / "codes"),
                 "--batch-size", "16", "--edits", "skin-tone"]) == 0
    return root


def train_args(root: Path, run: str, *extra: str) -> list[str]:
    codes = root / "codes"
    return ["train", "--config", RL_TINY, f"--data.init_args.train={codes}", f"--data.init_args.val={codes}",
            f"--model.init_args.tokenizer={root / 'tok'}", f"--trainer.default_root_dir={root / run}",
            "--trainer.enable_progress_bar=false", *extra]


def metrics(run: Path) -> list[dict]:
    return [r for p in sorted((run / "csv").glob("version_*/metrics.csv")) for r in csv.DictReader(p.open())]


@pytest.mark.parametrize("stage", ["t2i", "joint"])
def test_tiny_rl_recipe_trains_and_logs_reward_kl_clip(rl_chain, stage):
    batch = "6" if stage == "joint" else "2"  # 8 edit pairs among 24 samples: a batch of 6 holds some
    assert main(train_args(rl_chain, f"run-{stage}", f"--model.init_args.stage={stage}",
                           f"--data.init_args.batch_size={batch}")) == 0
    rows = metrics(rl_chain / f"run-{stage}")
    train = [r for r in rows if r.get("train/kl")]
    assert len(train) == 2  # 4 optimizer steps, 2 per rollout
    for r in train:
        assert float(r["train/kl"]) >= 0 and 0 <= float(r["train/clip_fraction"]) <= 1
        assert -1 <= float(r["train/reward"]) <= 1
    assert any(float(r["train/kl"]) > 0 for r in train)  # the policy moved away from the reference
    assert any(r.get("val/reward/t2i") for r in rows)
    if stage == "joint":  # edit pairs were rolled out and scored too
        assert any(r.get("train/reward/edit") for r in rows)
        if json.loads((rl_chain / "codes" / "meta.json").read_text())["splits"]["val"]["edits"]:
            assert any(r.get("val/reward/edit") for r in rows)
    ckpt = torch.load(rl_chain / f"run-{stage}" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["armkit"]["rl"]["stage"] == stage
    samples = rl_chain / f"run-{stage}" / "samples"  # the same held-out prompts and seed, before and after
    before, after = (json.loads((samples / f"{n}.json").read_text())["samples"] for n in ("before", "after"))
    assert Image.open(samples / "before.png").size == Image.open(samples / "after.png").size
    assert [s["prompt"] for s in before] == [s["prompt"] for s in after] and before != after  # the policy moved
    assert all(-1 <= s["reward"] <= 1 for s in before + after)
    # the reference stays the starting policy; the policy changed
    state = ckpt["state_dict"]
    key = "model.visual_head.weight"
    assert not torch.equal(state[key], state["ref." + key.split(".", 1)[1]])


def test_rl_resume_from_a_checkpoint_matches_an_uninterrupted_run(rl_chain):
    assert main(train_args(rl_chain, "straight", "--trainer.max_steps=6")) == 0
    assert main(train_args(rl_chain, "split", "--trainer.max_steps=2")) == 0
    assert main(train_args(rl_chain, "split", "--trainer.max_steps=6", "--ckpt_path", "last")) == 0
    a = {int(r["step"]): float(r["train/loss"]) for r in metrics(rl_chain / "straight") if r.get("train/loss")}
    b = {int(r["step"]): float(r["train/loss"]) for r in metrics(rl_chain / "split") if r.get("train/loss")}
    assert len(a) == 3 and sorted(a) == sorted(b)
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-7), (step, a, b)
    wa = torch.load(rl_chain / "straight" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(rl_chain / "split" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_rl_checkpoint_exports_as_an_ar_model_and_seeds_the_next_stage(rl_chain):
    from armkit.recipes.ar.export import load_ar

    ckpt = rl_chain / "run-t2i" / "checkpoints" / "last.ckpt"
    if not ckpt.exists():  # when run on its own
        assert main(train_args(rl_chain, "run-t2i", "--trainer.max_steps=2")) == 0
    assert main(["export", "--ckpt", str(ckpt), "--out", str(rl_chain / "rl-export")]) == 0
    policy = load_ar(rl_chain / "rl-export").model
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[f"model.{k}"]) for k, v in policy.state_dict().items())
    # the next stage starts from the export: its reference is exactly the exported policy
    assert main(train_args(rl_chain, "stage2", "--trainer.max_steps=2", "--model.init_args.stage=joint",
                           "--data.init_args.batch_size=6",
                           f"--model.init_args.init_from={rl_chain / 'rl-export'}")) == 0
    nxt = torch.load(rl_chain / "stage2" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, nxt[f"ref.{k}"]) for k, v in policy.state_dict().items())


def test_demo_recipe_parses_and_asks_for_its_inputs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no assets, probe, AR export or codes here
    assert main(["train", "--config", str(ROOT / "recipes" / "rl" / "demo.yaml")]) == 2
    assert "config error" in capsys.readouterr().err


@pytest.mark.slow
def test_stage_chain_evaluates_each_stage_into_a_table(rl_chain):
    from armkit.recipes.ar.evaluate import PretrainedFeatures
    from armkit.recipes.commands.rl_stages import run_stages

    sft = rl_chain / "rl-export"
    if not (sft / "config.json").exists():
        assert main(train_args(rl_chain, "sft-run", "--trainer.max_steps=2")) == 0
        assert main(["export", "--ckpt", str(rl_chain / "sft-run" / "checkpoints" / "last.ckpt"), "--out",
                     str(sft)]) == 0
    out = rl_chain / "stages"
    rows = run_stages(sft=sft, tokenizer=rl_chain / "tok", codes=str(rl_chain / "codes"),
                      images=str(rl_chain / "shards"), out=out, features=PretrainedFeatures(weights=None, size=64),
                      stages=("t2i", "joint"), rl_steps=2, recipe=Path(RL_TINY), limit=4, steps=2,
                      extra=["--trainer.enable_progress_bar=false", "--data.init_args.batch_size=6"])
    assert [r["model"] for r in rows] == ["sft", "sft → t2i", "sft → t2i → joint"]
    assert all(r["probe_accuracy_generated"] is not None and r["caption_nll"] > 0 for r in rows)
    assert set(rows[2]["reward_after"]) == {"t2i", "edit"} and rows[1]["reward_before"].keys() == {"t2i"}
    assert (out / "table.md").read_text().count("\n") == 5
    # each stage starts from the previous stage's export: the joint run's reference is the t2i export
    from armkit.recipes.ar.export import load_ar

    t2i = load_ar(out / "t2i" / "export").model.state_dict()
    ref = torch.load(out / "joint" / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, ref[f"ref.{k}"]) for k, v in t2i.items())
    # a step budget, not minutes: each stage stopped at rl_steps (the tiny recipe's own max_steps is 4)
    assert torch.load(out / "t2i" / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
