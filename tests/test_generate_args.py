"""`armkit generate` checks every argument before it loads a model: a bad one is one line on stderr naming the flag,
exit status 2, never a traceback; over-long prompts are cut with a warning and `--num` runs in bounded batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from test_data_faults import png_bomb

from armkit.backbones.ar import ARModel
from armkit.recipes.ar.export import save_ar
from armkit.recipes.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
LM = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
      "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64}  # 64 - 4 - 16: 44 text ids


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny tokenizer export (random init, the tiny recipe's parts), a tiny AR export over its codes, and an
    input image, built once."""
    from armkit.common.buildable import build
    from armkit.recipes.ar.codes import tokenizer_fingerprint

    root = tmp_path_factory.mktemp("generate-args")
    spec = yaml.safe_load((ROOT / "recipes" / "tokenizer" / "tiny.yaml").read_text())["model"]["tokenizer"]
    torch.manual_seed(0)
    tok = build({"class_path": "armkit.tokenizer.Tokenizer", "init_args": spec})
    tok.save_pretrained(root / "tok")
    record = {"path": str(root / "tok"), "fingerprint": tokenizer_fingerprint(root / "tok"), "codebook_size": 1000,
              "levels": [8, 5, 5, 5], "grid": list(tok.grid), "image_size": [32, 32]}
    model = ARModel(codebook_size=1000, levels=[8, 5, 5, 5], max_grid=8, config=dict(LM))
    save_ar(model, root / "ar", tokenizer=record)
    Image.new("RGB", (40, 40), (200, 30, 30)).save(root / "in.png")
    return root


def args(root: Path, *extra: str, out: str = "out") -> list[str]:
    return ["generate", "--model", str(root / "ar"), "--out", str(root / out), "--steps", "1", *extra]


def refused(capsys, argv: list[str], *names: str) -> str:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own refusals (`--num abc`) exit, as `armkit` itself does
        code = e.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1, lines
    assert "Traceback" not in out + err and lines[0].startswith("armkit generate: ")
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


PROMPT = ("--prompt", "a red circle")
BAD = [  # (id, extra arguments, what the line must name)
    ("guidance nan", [*PROMPT, "--guidance", "nan"], "--guidance nan"),
    ("guidance inf", [*PROMPT, "--guidance", "inf"], "--guidance inf"),
    ("guidance negative", [*PROMPT, "--guidance", "-1"], "--guidance -1.0"),
    ("guidance huge", [*PROMPT, "--guidance", "1e9"], "--guidance"),
    ("image guidance nan", [*PROMPT, "--image-guidance", "nan"], "--image-guidance"),
    ("temperature negative", [*PROMPT, "--temperature", "-1"], "--temperature"),
    ("temperature nan", [*PROMPT, "--temperature", "nan"], "--temperature"),
    ("temperature inf", [*PROMPT, "--temperature", "inf"], "--temperature"),
    ("temperature tiny", [*PROMPT, "--temperature", "1e-30"], "--temperature"),
    ("top-k negative", [*PROMPT, "--top-k", "-1"], "--top-k"),
    ("top-p zero", [*PROMPT, "--top-p", "0"], "--top-p"),
    ("top-p above one", [*PROMPT, "--top-p", "1.5"], "--top-p"),
    ("top-p nan", [*PROMPT, "--top-p", "nan"], "--top-p"),
    ("num zero", [*PROMPT, "--num", "0"], "--num"),
    ("num negative", [*PROMPT, "--num", "-3"], "--num"),
    ("num a million", [*PROMPT, "--num", "1000000"], "at most 1,024"),
    ("num x prompts", [*PROMPT, "--prompt", "b", "--num", "600"], "1,200 samples"),
    ("num not an int", [*PROMPT, "--num", "abc"], "--num"),
    ("steps zero", [*PROMPT, "--steps", "0"], "--steps"),
    ("steps huge", [*PROMPT, "--steps", "1000000000"], "--steps"),
    ("max-new-tokens zero", [*PROMPT, "--max-new-tokens", "0"], "--max-new-tokens"),
    ("batch size zero", [*PROMPT, "--batch-size", "0"], "--batch-size"),
    ("seed negative", [*PROMPT, "--seed", "-1"], "--seed"),
    ("seed past 64 bits", [*PROMPT, "--seed", str(2**64)], "--seed"),
    ("unknown device", [*PROMPT, "--device", "gpu"], "--device 'gpu'"),
    ("device with junk", [*PROMPT, "--device", "cuda:0; rm -rf /"], "--device"),
    ("absent cuda device", [*PROMPT, "--device", "cuda:999"], "--device 'cuda:999'"),
    ("no mode", [], "give --prompt"),
    ("two modes", [*PROMPT, "--image", "IN", "--caption"], "give --prompt"),
    ("instruction without image", ["--instruction", "make it blue"], "--instruction"),
    ("instruction empty", ["--image", "IN", "--instruction", " "], "--instruction ' ': must not be empty"),
    ("missing model", [*PROMPT, "--model", "NOWHERE"], "--model"),
    ("missing tokenizer", [*PROMPT, "--tokenizer", "NOWHERE"], "--tokenizer"),
    ("image missing", ["--image", "NOWHERE", "--caption"], "--image"),
    ("image a folder", ["--image", "ROOT", "--caption"], "not a regular file"),
    ("image /dev/zero", ["--image", "/dev/zero", "--caption"], "not a regular file"),
    ("image empty", ["--image", "EMPTY", "--caption"], "--image"),
    ("image not an image", ["--image", "TEXT", "--caption"], "not a readable image"),
    ("image cut short", ["--image", "CUT", "--caption"], "not a readable image"),
    ("image a bomb", ["--image", "BOMB", "--caption"], "decompression bomb"),
    ("image past the pixel cap", ["--image", "BIG", "--caption"], "pixels, over the limit"),
    ("image a strip", ["--image", "STRIP", "--instruction", "x"], "aspect ratio"),
]


@pytest.mark.parametrize("extra, name", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_argument_is_one_line_and_nothing_is_loaded(setup, tmp_path, capsys, monkeypatch, extra, name):
    from armkit.recipes.ar import generation

    files = {"IN": setup / "in.png", "NOWHERE": tmp_path / "nowhere", "ROOT": tmp_path, "EMPTY": tmp_path / "e.png",
             "TEXT": tmp_path / "t.png", "CUT": tmp_path / "c.png", "BOMB": tmp_path / "b.png",
             "STRIP": tmp_path / "s.png", "BIG": tmp_path / "big.png"}
    (tmp_path / "e.png").write_bytes(b"")
    (tmp_path / "t.png").write_text("not an image\n")
    (tmp_path / "c.png").write_bytes((setup / "in.png").read_bytes()[:60])
    (tmp_path / "b.png").write_bytes(png_bomb(20000, 20000))
    Image.new("RGB", (6000, 1)).save(tmp_path / "s.png")
    (tmp_path / "big.png").write_bytes(png_bomb(9000, 9000))  # 81M pixels: under Pillow's bomb limit, over armkit's
    extra = [str(files.get(a, a)) for a in extra]
    argv = args(setup, *extra, out=str(tmp_path / "out"))  # a --model in `extra` comes last, so it wins
    loaded = []
    monkeypatch.setattr(generation, "load_ar", lambda *a, **k: loaded.append(a) or pytest.fail("model loaded"))
    refused(capsys, argv, name)
    assert not loaded and not (tmp_path / "out").exists()


def test_out_must_be_a_folder(setup, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    refused(capsys, args(setup, *PROMPT, out=str(tmp_path / "file")), "--out", "not a folder")
    refused(capsys, args(setup, *PROMPT, out=str(tmp_path / "file" / "sub")), "--out", "cannot be created")
    assert (tmp_path / "file").read_text() == "x"


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("armkit generate: warning: ")]


def test_long_prompt_is_cut_with_a_warning(setup, capsys):
    assert main(args(setup, "--prompt", "x" * 100_000, "--num", "1", out="long")) == 0
    found = warnings(capsys.readouterr().err)
    assert any("100,000 characters; cut" in w for w in found) and any("cut to the 44" in w for w in found), found
    report = json.loads((setup / "long" / "generation.json").read_text())
    assert len(report["codes"]) == 1 and len(report["codes"][0]) == 16


def test_long_instruction_and_caption_length_are_cut(setup, capsys):
    assert main(args(setup, "--image", str(setup / "in.png"), "--instruction", "y" * 5000, "--num", "1",
                     out="edit")) == 0
    assert any("--instruction is" in w for w in warnings(capsys.readouterr().err))
    assert len(list((setup / "edit").glob("0*.png"))) == 2  # the source's reconstruction, then the edit
    assert main(args(setup, "--image", str(setup / "in.png"), "--caption", "--max-new-tokens", "4096",
                     out="cap")) == 0
    assert any("--max-new-tokens 4096: cut to the 43" in w for w in warnings(capsys.readouterr().err))


def test_num_runs_in_batches_with_the_same_greedy_codes(setup, capsys):
    common = ["--prompt", "a", "--prompt", "b", "--num", "3", "--temperature", "0"]
    assert main(args(setup, *common, "--batch-size", "4", out="batched")) == 0
    assert "armkit generate" in capsys.readouterr().err  # the progress bar: two batches
    assert main(args(setup, *common, "--batch-size", "16", out="whole")) == 0
    a = json.loads((setup / "batched" / "generation.json").read_text())
    b = json.loads((setup / "whole" / "generation.json").read_text())
    assert a["codes"] == b["codes"] and len(a["codes"]) == 6  # greedy: batching changes nothing
    assert a["files"] == [f"{i:03d}.png" for i in range(6)] and (setup / "batched" / "grid.png").is_file()
