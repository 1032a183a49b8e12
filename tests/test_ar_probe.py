"""AR-friendliness (recipes/evaluation/ar_probe.py): a fixed small AR probe trained on a tokenizer's codes; its held-out
NLL per image in bits, through `armkit eval --ar-probe-steps` and `armkit ablate`'s eval.ar_probe. Tiny sizes only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from test_ar_recipes import tiny_tokenizer

from armkit.recipes.commands.cli import main
from armkit.recipes.evaluation.ar_probe import (
    MAX_TEXT,
    ARProbe,
    ar_friendliness,
    build_probe,
    encode_split,
    train_probe,
)

TINY = dict(width=32, layers=1, batch_size=8)  # a probe that trains in well under a second
KEYS = {"ar_probe_nll_bits", "ar_probe_nll_bits_per_token", "ar_probe_class_accuracy"}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    return tiny_tokenizer(tmp_path_factory.mktemp("ar-probe") / "tok", seed=0)


@pytest.fixture(scope="module")
def tok(tok_dir):
    from armkit.tokenizer import Tokenizer

    return Tokenizer.from_pretrained(tok_dir)


def test_same_seed_same_numbers_and_another_seed_differs(tok, tiny_shards):
    first = ar_friendliness(tok, tiny_shards, steps=3, seed=0, **TINY)
    assert first == ar_friendliness(tok, tiny_shards, steps=3, seed=0, **TINY)
    assert first["metrics"]["ar_probe_nll_bits"] != ar_friendliness(tok, tiny_shards, steps=3, seed=1, **TINY)[
        "metrics"]["ar_probe_nll_bits"]
    record = first["protocol"]
    assert (record["steps"], record["seed"], record["train_count"], record["val_count"]) == (3, 0, 36, 12)
    # the shapes' classes are colours, not Fashion-MNIST's: no judge, and the reason says so
    assert first["metrics"]["ar_probe_class_accuracy"] is None
    assert "Fashion-MNIST" in first["skipped"]["ar_probe_class_accuracy"]


def test_nll_drops_with_training_on_structured_codes(tok, tiny_shards):
    short = ar_friendliness(tok, tiny_shards, steps=2, **TINY)
    long = ar_friendliness(tok, tiny_shards, steps=40, **TINY)
    uniform = short["protocol"]["uniform_bits_per_image"]  # 16 tokens x log2(1000)
    assert uniform == pytest.approx(16 * math.log2(1000))
    assert short["metrics"]["ar_probe_nll_bits"] > 0.95 * uniform  # barely trained: about uniform
    assert long["metrics"]["ar_probe_nll_bits"] < short["metrics"]["ar_probe_nll_bits"] - 10  # learned something
    assert long["protocol"]["final_train_loss"] < short["protocol"]["final_train_loss"]


def test_bits_are_the_summed_visual_nll_over_ln2(tok, tiny_shards):
    """Rebuild the probe from its parts and score the held-out codes by hand: log p of each visual token."""
    result = ar_friendliness(tok, tiny_shards, steps=3, **TINY)
    p = ARProbe(steps=3, **TINY)
    train, captions, _, _ = encode_split(tok, tiny_shards, "train", p.train_limit, p.batch_size, "cpu")
    val, val_captions, _, _ = encode_split(tok, tiny_shards, "val", p.val_limit, p.batch_size, "cpu")
    model = build_probe(tok, p)
    grid = tuple(tok.grid)
    train_probe(model, train, [model.codec.encode(c)[:MAX_TEXT] for c in captions], grid, p)
    model.eval()
    from armkit.backbones import sequence as S

    n = grid[0] * grid[1]
    nats = []
    with torch.no_grad():
        for codes, caption in zip(val, val_captions):
            ids = S.text_to_image(model.vocab, model.codec.encode(caption)[:MAX_TEXT], codes.tolist(), grid).ids
            hidden = model.trunk(torch.tensor([ids])).hidden[0]  # [L, H]
            start = len(ids) - 1 - n  # the first visual token; EOI is last
            logp = model.visual_log_probs(hidden[start - 1:start - 1 + n])  # position i predicts token i + 1
            nats.append(-float(logp.gather(1, codes[:, None]).sum()))
    bits = sum(nats) / len(nats) / math.log(2)
    assert result["metrics"]["ar_probe_nll_bits"] == pytest.approx(bits, rel=1e-4)
    assert result["metrics"]["ar_probe_nll_bits_per_token"] == pytest.approx(bits / n, rel=1e-4)


def test_bad_settings_and_overlapping_splits_are_refused(tok, tiny_shards):
    with pytest.raises(ValueError, match="unknown key"):
        ARProbe.from_mapping({"stepz": 3})
    with pytest.raises(ValueError, match="width"):
        ARProbe(width=48)
    with pytest.raises(ValueError, match="overlap"):  # one .tar for both: held-out images would be trained on
        ar_friendliness(tok, sorted(Path(tiny_shards).glob("train-*.tar"))[0], steps=1, **TINY)


def test_eval_flag_adds_the_keys(tok_dir, tiny_shards, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    args = ["eval", "--tokenizer", str(tok_dir), "--data", str(tiny_shards), "--out", str(out), "--limit", "4",
            "--batch-size", "4", "--steps", "1"]
    assert main(args) == 0
    assert not KEYS & set(json.loads(out.read_text())["metrics"])  # off unless asked
    assert main([*args, "--ar-probe-steps", "2", "--ar-probe-train-limit", "16", "--ar-probe-val-limit", "8"]) == 0
    report = json.loads(out.read_text())
    assert KEYS <= set(report["metrics"]) and report["metrics"]["ar_probe_nll_bits"] > 0
    assert report["protocol"]["ar_probe"]["steps"] == 2 and report["protocol"]["ar_probe"]["val_count"] == 8
    assert "ar_probe_nll_bits" in report["definitions"] and "ar_probe_class_accuracy" in report["skipped"]
    assert "--ar-probe-steps 2" in report["protocol"]["command"]
    assert "ar_probe_nll_bits" in capsys.readouterr().out


def test_ablation_reports_the_probe_per_run_with_paired_intervals(tiny_shards, tmp_path):
    config = tmp_path / "ablation.yaml"
    config.write_text(yaml.safe_dump({
        "base": str(Path(__file__).resolve().parents[1] / "recipes" / "tokenizer" / "tiny.yaml"),
        "data": {"train": str(tiny_shards), "val": str(tiny_shards)},
        "variants": {"pix": ["pixel"]}, "seeds": [0],
        "train": {"max_steps": 1, "args": ["--trainer.enable_progress_bar=false"]},
        "eval": {"protocol": {"limit": 4, "batch_size": 4, "steps": 1, "probe_limit": 8},
                 "ar_probe": {"steps": 2, "width": 32, "layers": 1, "batch_size": 4, "val_limit": 4}},
    }))
    out = tmp_path / "out"
    assert main(["ablate", "--config", str(config), "--out", str(out)]) == 0
    table = json.loads((out / "table.json").read_text())
    metrics = table["variants"]["pix"]["metrics"]
    assert metrics["ar_probe_nll_bits"]["n"] == 1 and metrics["ar_probe_nll_bits"]["by_seed"]
    assert table["config"]["ar_probe"]["steps"] == 2
    run = json.loads((out / "pix" / "seed0" / "run.json").read_text())
    assert run["settings"]["eval"]["ar_probe"]["seed"] == 0  # the run's seed
    assert "AR probe NLL bits/image" in (out / "table.md").read_text()


def test_table_pairs_the_probe_and_lower_nll_is_better(tmp_path):
    from armkit.recipes.evaluation.ablation import AblationConfig
    from armkit.recipes.evaluation.table import write_outputs

    nll = {"a": [100.0, 102.0, 101.0], "b": [90.0, 91.0, 90.5]}  # b's codes are easier on every seed
    acc = {"a": [50.0, 52.0, 51.0], "b": [40.0, 41.0, 40.5]}  # but its samples are judged worse
    reports = [{"metrics": {"ar_probe_nll_bits": nll[v][s], "ar_probe_class_accuracy": acc[v][s], "psnr": 10.0},
                "run": {"variant": v, "seed": s, "train_seconds": 1.0, "global_step": 1},
                "protocol": {"zeroshot": {}}} for v in nll for s in range(3)]
    cfg = AblationConfig(path=tmp_path / "a.yaml", base=tmp_path / "tiny.yaml", loss_kinds={"pixel": "pixel"},
                         variants={"a": ["pixel"], "b": ["pixel"]}, seeds=[0, 1, 2], reference="a", max_steps=1,
                         eval_data="x")
    table = write_outputs(tmp_path, cfg, reports)
    diff = table["paired"]["b"]["ar_probe_nll_bits"]
    assert diff["mean"] == pytest.approx(-10.5) and diff["ci95"][1] < 0
    assert (diff["direction"], diff["better"]) == ("lower", "variant")
    assert table["paired"]["b"]["ar_probe_class_accuracy"]["better"] == "reference"
    md = (tmp_path / "table.md").read_text()
    assert "-10.5 [" in md and "▲" in md and "▼" in md
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ablation_config_checks_the_probe_and_keeps_old_settings(tmp_path):
    from armkit.recipes.evaluation.ablation import AblationError, load_config, settings

    base = Path(__file__).resolve().parents[1] / "recipes" / "tokenizer" / "tiny.yaml"
    raw = {"base": str(base), "variants": {"pix": ["pixel"]}, "train": {"max_steps": 1}, "eval": {"data": "x"}}
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert "ar_probe" not in settings(load_config(path), "pix", 0)["eval"]  # runs evaluated before keep matching
    assert settings(load_config(path, ar_probe_steps=5), "pix", 3)["eval"]["ar_probe"]["seed"] == 3
    path.write_text(yaml.safe_dump({**raw, "eval": {"data": "x", "ar_probe": {"steps": 5, "wdith": 64}}}))
    with pytest.raises(AblationError, match="wdith"):
        load_config(path)
