"""The AR chain on tiny parts: tokenize -> train from YAML (Qwen2 and Llama) -> export -> generate PNGs; fingerprints.

The tokenizer is the tiny recipe's at random init, saved with save_pretrained (training it adds nothing here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from armkit.recipes.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
AR_TINY = str(ROOT / "recipes" / "ar" / "tiny.yaml")


def tiny_tokenizer(out: Path, seed: int) -> Path:
    from armkit.common.buildable import build

    spec = yaml.safe_load((ROOT / "recipes" / "tokenizer" / "tiny.yaml").read_text())["model"]["tokenizer"]
    torch.manual_seed(seed)
    tok = build({"class_path": "armkit.tokenizer.Tokenizer", "init_args": spec})
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def chain(tiny_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("ar")
    tok = tiny_tokenizer(root / "tok", seed=0)
    assert main(["tokenize", "--tokenizer", str(tok), "--data", str(tiny_shards), "--out", str(root / "codes"),
                 "--batch-size", "16"]) == 0
    return root


def train_args(chain: Path, run: str, *extra: str) -> list[str]:
    codes = chain / "codes"
    return ["train", "--config", AR_TINY, f"--data.init_args.train={codes}", f"--data.init_args.val={codes}",
            f"--trainer.default_root_dir={chain / run}", "--trainer.enable_progress_bar=false", *extra]


def metrics(run: Path) -> list[dict]:
    import csv

    return [r for p in sorted((run / "csv").glob("version_*/metrics.csv")) for r in csv.DictReader(p.open())]


def test_tokenize_writes_codes_meta_and_resumes(chain, tiny_shards, capsys):
    meta = json.loads((chain / "codes" / "meta.json").read_text())
    tok = json.loads((chain / "tok" / "config.json").read_text())
    assert meta["tokenizer"]["codebook_size"] == tok["codebook_size"] == 1000
    assert meta["tokenizer"]["grid"] == tok["grid"] and meta["splits"]["train"]["count"] == 36
    from armkit.recipes.ar.codes import CodeReader
    from armkit.recipes.data.reader import ShardReader
    from armkit.tokenizer import Tokenizer

    codes = {s["key"]: s for s in CodeReader(str(chain / "codes"), image_size=1, split="val")}
    images = next(iter(ShardReader(str(tiny_shards), image_size=32, batch_size=4, split="val")))
    expected = Tokenizer.from_pretrained(chain / "tok").encode(images["image"])
    for i, key in enumerate(images["key"]):  # the stored codes are the tokenizer's own encoding
        assert torch.equal(codes[key]["codes"], expected[i]) and codes[key]["caption"] == images["txt"][i]
    # a second run over the finished folder re-reads instead of re-encoding, and gives the same meta
    before = (chain / "codes" / "train-000000.tar").stat().st_mtime_ns
    assert main(["tokenize", "--tokenizer", str(chain / "tok"), "--data", str(tiny_shards), "--out",
                 str(chain / "codes")]) == 0
    assert (chain / "codes" / "train-000000.tar").stat().st_mtime_ns == before
    assert json.loads((chain / "codes" / "meta.json").read_text())["splits"] == meta["splits"]


def test_fingerprint_mismatch_is_refused_naming_both(chain, tiny_shards, capsys):
    other = tiny_tokenizer(chain / "tok-other", seed=1)
    # codes already written by another tokenizer
    assert main(["tokenize", "--tokenizer", str(other), "--data", str(tiny_shards), "--out",
                 str(chain / "codes")]) == 2
    out = capsys.readouterr().err
    from armkit.recipes.ar.codes import tokenizer_fingerprint

    a, b = tokenizer_fingerprint(chain / "tok"), tokenizer_fingerprint(other)
    assert a != b and a[:16] in out and b[:16] in out and "tokenizer mismatch" in out


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_tiny_config_trains_from_yaml(chain, family):
    run = chain / f"run-{family}"
    assert main(train_args(chain, f"run-{family}", "--trainer.max_steps=12", "--trainer.val_check_interval=6",
                           f"--model.init_args.model.init_args.config.model_type={family}")) == 0
    rows = [r for r in metrics(run) if r.get("train/loss")]
    losses = [float(r["train/loss"]) for r in rows]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # it learns
    assert any(float(r["train/visual_loss"]) > 0 for r in rows) and any(float(r["train/text_loss"]) > 0 for r in rows)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["armkit"]["ar"]["init_args"]["config"]["model_type"] == family
    assert any("layers.1" in k for k in ckpt["state_dict"])


def test_export_then_generate_writes_pngs_of_the_tokenizers_size(chain, capsys):
    from PIL import Image

    ckpt = chain / "run-qwen2" / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        assert main(train_args(chain, "run-qwen2", "--trainer.max_steps=4")) == 0
    assert main(["export", "--ckpt", str(ckpt), "--out", str(chain / "ar-export")]) == 0
    out = chain / "gen"
    assert main(["generate", "--model", str(chain / "ar-export"), "--prompt", "a red circle", "--prompt",
                 "a blue square", "--num", "2", "--steps", "2", "--top-k", "50", "--out", str(out)]) == 0
    size = tuple(json.loads((chain / "tok" / "config.json").read_text())["image_size"])
    pngs = sorted(out.glob("0*.png"))
    assert len(pngs) == 4 and all(Image.open(p).size == size for p in pngs) and (out / "grid.png").is_file()
    report = json.loads((out / "generation.json").read_text())
    assert len(report["codes"]) == 4 and all(len(c) == 16 for c in report["codes"])  # 4x4 grid
    # the checkpoint and its export generate the same codes from the same seed
    again = chain / "gen-ckpt"
    assert main(["generate", "--model", str(ckpt), "--prompt", "a red circle", "--prompt", "a blue square",
                 "--num", "2", "--steps", "2", "--top-k", "50", "--out", str(again)]) == 0
    assert json.loads((again / "generation.json").read_text())["codes"] == report["codes"]
    # editing and captioning run; another tokenizer is refused
    image = pngs[0]
    assert main(["generate", "--model", str(ckpt), "--image", str(image), "--instruction", "make it blue",
                 "--num", "1", "--steps", "2", "--out", str(chain / "edit")]) == 0
    assert len(list((chain / "edit").glob("0*.png"))) == 2  # the source's reconstruction, then the edit
    assert main(["generate", "--model", str(ckpt), "--image", str(image), "--caption", "--out",
                 str(chain / "cap")]) == 0
    other = tiny_tokenizer(chain / "tok-gen-other", seed=2)
    capsys.readouterr()
    assert main(["generate", "--model", str(ckpt), "--tokenizer", str(other), "--prompt", "x", "--out",
                 str(chain / "refused")]) == 2
    assert "tokenizer mismatch" in capsys.readouterr().err


def test_export_loads_without_lightning(chain):
    if not (chain / "ar-export" / "config.json").exists():  # when run on its own
        ckpt = chain / "run-qwen2" / "checkpoints" / "last.ckpt"
        if not ckpt.exists():
            assert main(train_args(chain, "run-qwen2", "--trainer.max_steps=2")) == 0
        assert main(["export", "--ckpt", str(ckpt), "--out", str(chain / "ar-export")]) == 0
    code = ("import sys; from armkit.recipes.ar.export import load_ar; "
            f"m = load_ar({str(chain / 'ar-export')!r}).model; "
            "assert 'lightning' not in sys.modules, 'lightning imported'; print(m.vocab.codebook_size)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "1000", done.stderr[-2000:]


@pytest.mark.slow
def test_ar_sigkill_then_resume_matches_uninterrupted_run(chain):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "armkit.recipes.commands.cli"]
    ckpt_every = ["--trainer.callbacks.every_n_train_steps=5"]
    straight = subprocess.run([*cli, *train_args(chain, "straight", *ckpt_every)], env=env, capture_output=True,
                              text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    proc = subprocess.Popen([*cli, *train_args(chain, "killed", *ckpt_every, "--trainer.max_steps=1000")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = chain / "killed" / "checkpoints" / "epoch=0-step=10.ckpt"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists()
    resumed = subprocess.run([*cli, *train_args(chain, "killed", *ckpt_every), "--ckpt_path", "last"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = {int(r["step"]): float(r["train/loss"]) for r in metrics(chain / "straight") if r.get("train/loss")}
    b = {int(r["step"]): float(r["train/loss"]) for r in metrics(chain / "killed") if r.get("train/loss")}
    for step in (14, 19):
        assert b[step] == pytest.approx(a[step], rel=1e-5), (step, a[step], b[step])
    wa = torch.load(chain / "straight" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(chain / "killed" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_frechet_distance_matches_an_independent_formula():
    from armkit.recipes.ar.evaluate import frechet_distance

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 5, generator=gen) @ torch.randn(5, 5, generator=gen)
    b = torch.randn(300, 5, generator=gen) * 2 + 1
    ca, cb = torch.cov(a.double().T), torch.cov(b.double().T)
    w, q = torch.linalg.eigh(ca)
    root_a = q @ torch.diag(w.clamp(min=0).sqrt()) @ q.T
    cross = torch.linalg.eigvalsh(root_a @ cb @ root_a).clamp(min=0).sqrt().sum()  # tr((Σa Σb)^½)
    want = ((a.double().mean(0) - b.double().mean(0)) ** 2).sum() + ca.trace() + cb.trace() - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(float(want), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3.0) == pytest.approx(5 * 9.0, rel=1e-6)  # a shift of 3 in 5 dimensions


def test_evaluation_runs_and_caption_nll_is_the_models_loss(chain, tiny_shards):
    from armkit.backbones import sequence as S
    from armkit.recipes.ar.codes import CodeReader
    from armkit.recipes.ar.evaluate import PretrainedFeatures, caption_metrics, evaluate_ar
    from armkit.recipes.ar.export import load_ar
    from armkit.tokenizer import Tokenizer

    ckpt = chain / "run-qwen2" / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        assert main(train_args(chain, "run-qwen2", "--trainer.max_steps=4")) == 0
    model = load_ar(ckpt).model
    held = list(CodeReader(str(chain / "codes"), image_size=1, split="val"))[:6]
    got = caption_metrics(model, held, batch_size=4)
    seqs = [S.understanding(model.vocab, s["codes"].tolist(), s["grid"], model.codec.encode(s["caption"]),
                            model.codec.eos) for s in held]
    out = model(*S.collate(model.vocab, seqs))  # one batch: the model's own mean NLL over caption tokens
    assert got["caption_tokens"] == out.num_text and got["caption_nll"] == pytest.approx(out.loss.item(), rel=1e-5)
    assert 0.0 <= got["caption_token_accuracy"] <= 1.0
    result = evaluate_ar(model=model, tok=Tokenizer.from_pretrained(chain / "tok"), codes=str(chain / "codes"),
                         images=str(tiny_shards), limit=8, steps=2,
                         features=PretrainedFeatures(model_name="test_efficientnet", size=32))
    t2i = result["text_to_image"]
    assert t2i["samples"] == 8 and t2i["frechet_distance"] >= 0 and 0 <= t2i["probe_accuracy_generated"] <= 1
    assert t2i["chance"] == 0.25 and "frechet_distance" in result["protocol"]


def test_training_refuses_codes_of_another_tokenizer(chain, tiny_shards, capsys):
    other = chain / "tok-train-other"
    if not other.exists():
        tiny_tokenizer(other, seed=3)
    assert main(["tokenize", "--tokenizer", str(other), "--data", str(tiny_shards), "--out",
                 str(chain / "codes-other"), "--splits", "train"]) == 0
    capsys.readouterr()
    assert main(train_args(chain, "mixed", f"--data.init_args.train={chain / 'codes-other'}")) == 2
    assert "tokenizer mismatch: data.train" in capsys.readouterr().err  # train and val codes disagree
    ckpt = chain / "run-llama" / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        assert main(train_args(chain, "run-llama", "--trainer.max_steps=2",
                               "--model.init_args.model.init_args.config.model_type=llama")) == 0
    capsys.readouterr()
    assert main(train_args(chain, "resume-other", f"--data.init_args.train={chain / 'codes-other'}",
                           "--data.init_args.val=null", "--model.init_args.model.init_args.config.model_type=llama",
                           "--trainer.max_steps=30", "--ckpt_path", str(ckpt))) == 2
    assert "the checkpoint was made with tokenizer" in capsys.readouterr().err  # resumed on other codes


@pytest.mark.parametrize("recipe,names", [("paper", "model.init_args.model.init_args.path"),
                                          ("demo", "data.init_args.train")])
def test_paper_and_demo_recipes_parse_and_ask_for_their_inputs(recipe, names, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/emoji-codes here
    assert main(["train", "--config", str(ROOT / "recipes" / "ar" / f"{recipe}.yaml")]) == 2
    assert names in capsys.readouterr().err


def test_pretrained_features_in_chunks_equal_one_batch():
    """The feature network runs in chunks (2,000 images at 224 px at once need over 20 GB); chunking changes nothing."""
    from armkit.recipes.ar.evaluate import PretrainedFeatures

    torch.manual_seed(0)
    net = PretrainedFeatures(weights=None, size=32)
    images = torch.rand(5, 3, 32, 32)
    whole = net(images, batch_size=64)
    assert torch.allclose(net(images, batch_size=2), whole, atol=1e-5)  # 2 + 2 + 1: the remainder is kept
    assert whole.shape == (5, net.net.num_features)
