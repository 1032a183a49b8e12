"""The decoder stage (recipes/decoder/module.py): only the decoder trains on a frozen export; its checkpoint exports
as the source export with the decoder replaced, and resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from armkit.recipes.commands.cli import main
from armkit.tokenizer import Tokenizer
from armkit.tokenizer.hub import read_safetensors
from tests.test_ar_recipes import tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "recipes" / "decoder" / "tiny.yaml")


def args(export: Path, shards: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--config", TINY, f"--model.init_args.tokenizer={export}", f"--data.init_args.train={shards}",
            f"--data.init_args.val={shards}", f"--trainer.default_root_dir={run}",
            "--trainer.enable_progress_bar=false", *extra]


@pytest.fixture(scope="module")
def stage(tiny_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder-stage")
    export = tiny_tokenizer(root / "tok", seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests run (conftest): a module fixture is set up before that autouse fixture
    try:
        assert main(args(export, tiny_shards, root / "run")) == 0
    finally:
        torch.set_num_threads(threads)
    return root, export


def test_only_the_decoder_changes_and_the_export_carries_it(stage):
    root, export = stage
    before = read_safetensors(export / "model.safetensors")
    out = root / "export2"
    assert main(["export", "--ckpt", str(root / "run" / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    after = read_safetensors(out / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("decoder.") for k in changed), sorted(changed)[:5]
    assert any(k.startswith("decoder.net.blocks") for k in changed)  # the network itself trained, not only a bias
    tok, src = Tokenizer.from_pretrained(out), Tokenizer.from_pretrained(export)
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(tok.encode(images), src.encode(images))  # same codes: the tokenizer stayed frozen


def test_resume_is_exact(stage, tiny_shards, tmp_path):
    root, export = stage
    half = tmp_path / "half"
    assert main(args(export, tiny_shards, half, "--trainer.max_steps=10")) == 0
    assert main(args(export, tiny_shards, half, "--ckpt_path", "last")) == 0
    a = torch.load(root / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(half / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]


def test_a_decoder_of_the_wrong_width_is_refused(tmp_path):
    from armkit.decoders import PixelDiT
    from armkit.recipes.decoder.module import DecoderModule

    export = tiny_tokenizer(tmp_path / "tok", seed=0)
    with pytest.raises(ValueError, match="cond_dim 7 != the tokenizer's embed_dim"):
        DecoderModule(tokenizer=str(export), decoder=PixelDiT(image_size=32, patch_size=8, cond_dim=7, size="tiny"))


def test_resuming_on_another_tokenizer_is_refused(stage, tiny_shards, tmp_path, capsys):
    root, export = stage
    other = tiny_tokenizer(tmp_path / "other", seed=1)
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="this decoder was trained on the tokenizer"):
        main(args(other, tiny_shards, tmp_path / "run", "--trainer.max_steps=30", "--ckpt_path", str(ckpt)))


def test_a_new_decoder_from_yaml_is_what_the_export_holds(stage, tiny_shards, tmp_path):
    _, export = stage
    run = tmp_path / "run"
    new = ('{"class_path": "armkit.decoders.PixelDiT", "init_args": {"image_size": 32, "patch_size": 8, '
           f'"cond_dim": {Tokenizer.from_pretrained(export).embed_dim}, "size": "tiny", "cond_spatial": true}}}}')
    assert main(args(export, tiny_shards, run, "--trainer.max_steps=3", f"--model.init_args.decoder={new}")) == 0
    out = tmp_path / "export"
    assert main(["export", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    tok = Tokenizer.from_pretrained(out)
    assert tok.decoder.net.cond_spatial is not None and tok.decoder.net.patch_size == 8
    assert tok.decode(tok.encode(torch.rand(1, 3, 32, 32)), steps=2).shape == (1, 3, 32, 32)


def test_ema_keeps_the_average_where_sampling_and_export_read_and_resumes_exactly(stage, tiny_shards, tmp_path):
    _, export = stage
    src = {k[len("decoder."):]: v for k, v in read_safetensors(export / "model.safetensors").items()
           if k.startswith("decoder.")}
    # one optimizer step: average = lerp(start, online, 1 - decay), decay = min(ema, (1 + n) / (10 + n)) at n = 0
    one = tmp_path / "one"
    assert main(args(export, tiny_shards, one, "--trainer.max_steps=1", "--model.init_args.ema=0.9")) == 0
    state = torch.load(one / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    online = {k[len("online."):]: v for k, v in state.items() if k.startswith("online.")}
    average = {k[len("tokenizer.decoder."):]: v for k, v in state.items() if k.startswith("tokenizer.decoder.")}
    assert online.keys() == average.keys() and online.keys() <= src.keys()
    moved = [k for k in online if not torch.equal(online[k], src[k])]
    assert moved  # the online copy trained...
    for k in online:  # ...and the average is exactly one EMA update of the start towards it
        torch.testing.assert_close(average[k], src[k].lerp(online[k], 1 - 1 / 10), rtol=0, atol=1e-6)
    out = tmp_path / "export"  # the export holds the average, not the online weights
    assert main(["export", "--ckpt", str(one / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    exported = read_safetensors(out / "model.safetensors")
    assert all(torch.equal(exported[f"decoder.{k}"], average[k]) for k in average)

    full, half = tmp_path / "full", tmp_path / "half"  # exact resume with the average
    assert main(args(export, tiny_shards, full, "--trainer.max_steps=20", "--model.init_args.ema=0.9")) == 0
    assert main(args(export, tiny_shards, half, "--trainer.max_steps=10", "--model.init_args.ema=0.9")) == 0
    assert main(args(export, tiny_shards, half, "--trainer.max_steps=20", "--model.init_args.ema=0.9",
                     "--ckpt_path", "last")) == 0
    a = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(half / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_val_psnr_is_per_image_at_the_decoders_size_and_logged(stage, tiny_shards, tmp_path):
    from armkit.recipes.tokenizer.module import held_out_psnr

    _, export = stage
    tok = Tokenizer.from_pretrained(export).eval()
    images = torch.rand(3, 3, 32, 32)
    images[0] = 0.5  # a flat image: its PSNR differs from the others', so a batch-level MSE would not match
    psnr = held_out_psnr(tok, images, steps=2, generator=torch.Generator().manual_seed(0))
    x_hat = tok.decoder.sample(tok(images).z, steps=2, generator=torch.Generator().manual_seed(0)).clamp(0, 1)
    target = torch.nn.functional.interpolate(images, size=x_hat.shape[-2:], mode="bicubic", antialias=True).clamp(0, 1)
    mse = ((x_hat - target) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(psnr, 10 * torch.log10(1 / mse), rtol=0, atol=1e-4)

    run = tmp_path / "run"
    assert main(args(export, tiny_shards, run, "--trainer.max_steps=2", "--trainer.val_check_interval=2",
                     "--model.init_args.psnr_steps=2")) == 0
    import csv

    rows = [r for r in csv.DictReader(open(next(run.rglob("metrics.csv")))) if r.get("val/psnr")]
    assert rows and 0 < float(rows[-1]["val/psnr"]) < 60
