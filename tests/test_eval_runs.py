"""`armkit ablate` and `armkit eval` end to end on the tiny recipe: one small ablation (2 variants x 1 seed x 4 steps)
is trained once for the module; the tests evaluate its checkpoints again, rerun it, and export one."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from armkit.recipes.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tokenizer" / "tiny.yaml"
CLASSES = ["red", "green", "blue", "yellow"]  # the shapes' labels (conftest.make_shapes_folder)
PROTOCOL = {"limit": 8, "batch_size": 4, "steps": 2, "seed": 0}
ALL_KEYS = {"psnr", "ssim", "lpips", "rfid", "zeroshot_top1", "zeroshot_top1_balanced", "zeroshot_top5",
            "teacher_zeroshot_top1", "teacher_zeroshot_top1_balanced", "probe_top1", "probe_top1_balanced",
            "retrieval_i2t_r1", "retrieval_t2i_r1",
            "caption_nll", "feature_cosine", "codebook_usage", "code_perplexity", "code_perplexity_normalised",
            "codebook_size", "tokens_counted", "tokens_per_image", "bits_per_token", "bits_per_image"}


def write_config(path: Path, shards: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "base": str(TINY), "data": {"train": str(shards), "val": str(shards)},
        "variants": {"cap+pix": ["caption", "pixel"], "all": ["caption", "pixel", "sigmoid", "distill"]},
        "seeds": [0], "train": {"max_steps": 4, "args": ["--trainer.enable_progress_bar=false"]},
        "eval": {"classes": CLASSES, "protocol": PROTOCOL},
    }))
    return path


@pytest.fixture(scope="module")
def ablation(tiny_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    config = write_config(root / "ablation.yaml", tiny_shards)
    out = root / "out"
    assert main(["ablate", "--config", str(config), "--out", str(out)]) == 0
    return SimpleNamespace(config=config, out=out, shards=tiny_shards)


def ckpt(ablation, variant: str) -> Path:
    return ablation.out / variant / "seed0" / "final" / "last.ckpt"


def evaluate_ckpt(path: Path, shards: Path) -> dict:
    from armkit.recipes.evaluation.evaluate import evaluate
    from armkit.recipes.evaluation.load import load_for_eval
    from armkit.recipes.evaluation.protocol import Protocol

    return evaluate(load_for_eval(path), shards, Protocol.from_mapping(PROTOCOL), classes=CLASSES)


def json_round_trip(report: dict) -> dict:
    from armkit.recipes.evaluation.evaluate import finite_or_none

    return json.loads(json.dumps(finite_or_none(report)))


def test_ablate_writes_table_plot_and_one_metrics_json_per_run(ablation):
    out = ablation.out
    table = json.loads((out / "table.json").read_text())
    assert set(table["variants"]) == {"cap+pix", "all"}
    for variant, losses in (("cap+pix", {"caption", "pixel"}), ("all", {"caption", "pixel", "sigmoid", "distill"})):
        run = out / variant / "seed0"
        report = json.loads((run / "metrics.json").read_text())
        assert {n for n, loss in report["tokenizer"]["losses"].items() if loss["enabled"]} == losses
        assert report["run"]["global_step"] == 4  # the final checkpoint holds the last step's weights
        assert (run / "final" / "last.ckpt").is_file() and not (run / "checkpoints").exists()
        summary = table["variants"][variant]["metrics"]
        assert summary["psnr"]["n"] == 1 and summary["psnr"]["mean"] == pytest.approx(report["metrics"]["psnr"])
        assert summary["psnr"]["std"] == 0.0
        zeroshot = report["protocol"]["zeroshot"]  # what every variant's probe is read against, head or not
        assert zeroshot["head_trained"] == ("sigmoid" in losses)
        assert zeroshot["chance_top1"] == pytest.approx(100 / len(CLASSES)) and zeroshot["labelled"] > 0
    assert table["paper"]["all"]["zeroshot_top1"] == 80.2 and table["paper"]["cap+pix"]["psnr"] == 15.2
    md = (out / "table.md").read_text()
    assert "| cap+pix | caption + pixel |" in md and "| all | caption + distill + pixel + sigmoid |" in md
    assert "paper zero-shot" in md and "80.2" in md and "## The paper's claims" in md
    assert f"; {len(CLASSES)} classes (chance {100 / len(CLASSES):.1f}%" in md
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_finished_runs_and_refuses_changed_settings(ablation, monkeypatch, capsys):
    import armkit.recipes.evaluation.ablation as ablation_module

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablation_module, "train_run", no_training)
    metrics = ablation.out / "all" / "seed0" / "metrics.json"
    before = metrics.read_bytes()
    assert main(["ablate", "--config", str(ablation.config), "--out", str(ablation.out)]) == 0
    assert "finished earlier, skipped" in capsys.readouterr().out
    assert metrics.read_bytes() == before
    assert main(["ablate", "--config", str(ablation.config), "--out", str(ablation.out), "--max-steps", "5"]) == 1
    assert "trained with other settings" in capsys.readouterr().err
    assert main(["ablate", "--config", str(ablation.config), "--out", str(ablation.out), "--limit", "4"]) == 1
    assert "delete the runs' metrics.json" in capsys.readouterr().err


def test_eval_twice_gives_identical_numbers_and_pins_the_protocol(ablation):
    first = json.loads((ablation.out / "all" / "seed0" / "metrics.json").read_text())  # evaluated by the ablation
    second = json_round_trip(evaluate_ckpt(ckpt(ablation, "all"), ablation.shards))
    assert first["metrics"] == second["metrics"]
    assert {**first["protocol"], "command": None} == {**second["protocol"], "command": None}
    assert set(first["metrics"]) == ALL_KEYS
    # lpips, rfid: no weights here; top-5: 4 classes; teacher zero-shot: a timm ViT has no pooling head
    not_here = {"lpips", "rfid", "zeroshot_top5", "teacher_zeroshot_top1", "teacher_zeroshot_top1_balanced"}
    for key in ALL_KEYS - not_here:
        assert first["metrics"][key] is not None, key
    assert not_here <= set(first["skipped"])
    assert set(first["definitions"]) >= ALL_KEYS - {"codebook_size", "tokens_counted"}
    protocol = first["protocol"]
    assert protocol["data"]["count"] == PROTOCOL["limit"] and protocol["seed"] == 0
    assert protocol["decode"]["steps"] == 2 and protocol["image_size"] == [32, 32]
    assert protocol["zeroshot"]["classes"] == CLASSES and protocol["templates"]
    for name, digest in protocol["data"]["fingerprint"]["files"].items():
        assert hashlib.sha256((ablation.shards / name).read_bytes()).hexdigest() == digest
    assert {"torch", "timm", "open_clip_torch", "vector-quantize-pytorch", "torchmetrics", "armkit"} <= set(
        protocol["versions"])
    assert first["metrics"]["tokens_counted"] == 8 * first["metrics"]["tokens_per_image"]


def test_eval_of_an_export_matches_the_checkpoint_and_needs_no_lightning(ablation, tmp_path):
    from armkit.recipes.tokenizer.export import export_checkpoint

    folder = export_checkpoint(ckpt(ablation, "all"), tmp_path / "export")
    out = tmp_path / "metrics.json"
    script = ("import sys; from recipes.commands.cli import main; rc = main(sys.argv[1:]); "
              "assert 'lightning' not in sys.modules, 'eval imported lightning'; sys.exit(rc)")
    args = ["eval", "--tokenizer", str(folder), "--data", str(ablation.shards), "--out", str(out),
            "--classes", *CLASSES, *[f"--{k.replace('_', '-')}={v}" for k, v in PROTOCOL.items()]]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    exported = json.loads(out.read_text())
    assert exported["tokenizer"]["kind"] == "export"
    reference = json.loads((ablation.out / "all" / "seed0" / "metrics.json").read_text())["metrics"]
    for key, value in reference.items():
        want = pytest.approx(value, rel=1e-4, abs=1e-5) if value is not None else None
        assert exported["metrics"][key] == want, key
    assert exported["protocol"]["command"].startswith("armkit eval --tokenizer")


def test_export_without_heads_skips_head_metrics_with_the_reason(ablation, tmp_path):
    from armkit.recipes.tokenizer.export import export_checkpoint

    folder = export_checkpoint(ckpt(ablation, "cap+pix"), tmp_path / "export", heads=False)
    report = evaluate_ckpt(folder, ablation.shards)
    for key in ("zeroshot_top1", "retrieval_i2t_r1", "caption_nll"):
        assert report["metrics"][key] is None and "no heads" in report["skipped"][key]
    assert report["metrics"]["psnr"] is not None


def test_clear_errors_for_bad_inputs(ablation, tmp_path, capsys):
    assert main(["eval", "--tokenizer", str(tmp_path / "missing"), "--data", str(ablation.shards),
                 "--out", str(tmp_path / "m.json")]) == 2
    assert "expected a checkpoint file" in capsys.readouterr().err
    config = yaml.safe_load(ablation.config.read_text())
    config["variants"]["bad"] = ["caption", "perceptual"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    assert main(["ablate", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "['perceptual']" in capsys.readouterr().err


def test_ablation_budget_replaces_the_recipes_and_switches_every_loss(tmp_path):
    from armkit.recipes.evaluation.ablation import RUN, load_config, train_argv

    config = write_config(tmp_path / "a.yaml", tmp_path)
    cfg = load_config(config, minutes=90.5, variants=["cap+pix"], seeds=[3])
    argv = train_argv(cfg, "cap+pix", 3)
    assert "--trainer.max_steps=4" in argv and "--trainer.max_time=00:01:30:30" in argv
    assert {"--seed_everything=3", "--model.seed=3", "--data.seed=3", f"--trainer.default_root_dir={RUN}"} <= set(argv)
    switches = [a for a in argv if ".init_args.enabled=" in a]
    assert switches == ["--model.losses.losses.caption.init_args.enabled=true",
                        "--model.losses.losses.pixel.init_args.enabled=true",
                        "--model.losses.losses.sigmoid.init_args.enabled=false",
                        "--model.losses.losses.distill.init_args.enabled=false"]
    assert "--trainer.max_time=null" in train_argv(load_config(config), "all", 0)  # steps alone: no time cap


def test_ablation_cosine_ends_with_the_run_unless_the_recipes_is_kept(tmp_path):
    """`train.cosine: end` (the default) sets cosine_steps so that the LR reaches the schedule's floor (0.1x) at the
    run's last step; `recipe` adds nothing to a run's arguments (runs made before the option match it); the recipe's
    own length and a flat recipe add nothing either; a bad value names the key."""
    from armkit.recipes.evaluation.ablation import AblationError, load_config, train_argv
    from armkit.recipes.training.schedule import lr_factor, recipe_schedule

    config = ROOT / "recipes" / "tokenizer" / "ablation.yaml"  # base: demo.yaml, 20 warmup + 480 cosine steps

    def cosine_args(**kw):
        cfg = load_config(config, variants=["all"], seeds=[0], **kw)
        return cfg, [a for a in train_argv(cfg, "all", 0) if a.startswith("--model.cosine_steps=")]

    cfg, args = cosine_args(max_steps=300)
    assert args == ["--model.cosine_steps=280"]
    warmup, recipe_cosine = recipe_schedule(cfg.base)
    assert (warmup, recipe_cosine) == (20, 480)
    assert lr_factor(300, warmup_steps=warmup, cosine_steps=280) == pytest.approx(0.1)
    assert lr_factor(299, warmup_steps=warmup, cosine_steps=280) < 0.1001
    assert lr_factor(300, warmup_steps=warmup, cosine_steps=recipe_cosine) == pytest.approx(0.4334, abs=1e-3)
    kept, args = cosine_args(max_steps=300, cosine="recipe")
    assert args == [] and train_argv(kept, "all", 0) == [a for a in train_argv(cfg, "all", 0) if a not in
                                                          ("--model.cosine_steps=280",)]
    assert cosine_args(max_steps=500)[1] == []  # 20 + 480: the recipe's own length
    assert cosine_args(max_steps=300, cosine="100")[1] == ["--model.cosine_steps=100"]
    timed = tmp_path / "timed.yaml"  # a time budget alone: the step count is unknown, the recipe's cosine stays
    timed.write_text(yaml.safe_dump({"base": str(cfg.base), "variants": {"all": ["caption", "pixel", "sigmoid",
                                     "distill"]}, "train": {"minutes": 5.0}, "eval": {"data": str(tmp_path)}}))
    assert not [a for a in train_argv(load_config(timed), "all", 0) if "cosine_steps" in a]
    flat = write_config(tmp_path / "flat.yaml", tmp_path)  # tiny.yaml: no cosine, flat after warmup
    assert not [a for a in train_argv(load_config(flat), "all", 0) if "cosine_steps" in a]
    with pytest.raises(AblationError, match=r"train.cosine \(--cosine\) must be"):
        load_config(config, cosine="fast")
