"""`armkit generate --image X --instruction ...` guides with the documented branches and scales.

backbones/generate.py documents editing CFG as l = u + s_img * (i - u) + s_txt * (c - i), with the branches
[c: full condition, i: source image without the instruction, u: neither] and `mix`'s scales one per consecutive pair,
so scales = [s_txt, s_img]; `--guidance` is the text scale, `--image-guidance` the source image's. The command's codes
must be those of `generate_image` called that way, and not those of the scales swapped."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.backbones.generate import Sampling, generate_image, mix
from armkit.recipes.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
LM = dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2)


def test_mix_is_the_documented_editing_formula():
    c, i, u = torch.randn(3, 2, 7)
    s_txt, s_img = 1.5, 1.25
    torch.testing.assert_close(mix([c, i, u], [s_txt, s_img]), u + s_img * (i - u) + s_txt * (c - i))


def tiny_ar_export(root: Path) -> tuple[Path, Path]:
    """A random-init tiny tokenizer export (the tiny recipe's) and an AR export recording it, as `armkit export`
    writes them."""
    from armkit.common.buildable import build
    from armkit.recipes.ar.codes import tokenizer_fingerprint
    from armkit.recipes.ar.export import save_ar

    spec = yaml.safe_load((ROOT / "recipes" / "tokenizer" / "tiny.yaml").read_text())["model"]["tokenizer"]
    torch.manual_seed(0)
    tok = build({"class_path": "armkit.tokenizer.Tokenizer", "init_args": spec})
    tok_dir = tok.save_pretrained(root / "tok") or root / "tok"
    model = ARModel(codebook_size=tok.codebook_size, levels=list(tok.quantizer.levels), head="full", max_grid=4,
                    config=LM, seed=1).eval()
    record = {"path": str(tok_dir), "fingerprint": tokenizer_fingerprint(tok_dir), "codebook_size": tok.codebook_size,
              "levels": list(tok.quantizer.levels), "grid": list(tok.grid)}
    return tok_dir, save_ar(model, root / "ar", tokenizer=record)


def test_editing_passes_text_and_image_guidance_in_the_documented_branch_order(tmp_path):
    from PIL import Image

    from armkit.recipes.ar.export import load_ar
    from armkit.recipes.ar.generation import read_image
    from armkit.tokenizer import Tokenizer

    tok_dir, ar_dir = tiny_ar_export(tmp_path)
    png = tmp_path / "in.png"
    Image.new("RGB", (40, 40), "red").save(png)
    text_scale, image_scale, seed = 3.0, 0.5, 5
    out = tmp_path / "edit"
    assert main(["generate", "--model", str(ar_dir), "--image", str(png), "--instruction", "make it blue",
                 "--guidance", str(text_scale), "--image-guidance", str(image_scale), "--num", "2", "--steps", "1",
                 "--temperature", "0", "--seed", str(seed), "--out", str(out)]) == 0
    report = json.loads((out / "generation.json").read_text())
    assert (report["guidance"], report["image_guidance"]) == (text_scale, image_scale)

    model = load_ar(ar_dir).model
    tok = Tokenizer.from_pretrained(tok_dir)
    grid, v = tuple(tok.grid), model.vocab
    source = tok.encode(read_image(png, tok.encoder.image_size[0]))[0].tolist()
    instr = model.codec.encode("make it blue")
    full = [S.editing_prompt(v, source, grid, instr, grid)] * 2
    no_text = [S.editing_prompt(v, source, grid, instr, grid, drop_text=True)] * 2
    neither = [S.editing_prompt(v, source, grid, instr, grid, drop_text=True, drop_image=True)] * 2

    def codes(scales: list[float]) -> list[list[int]]:
        return generate_image(model, full, grid, weaker=[no_text, neither], scales=scales, sampling=Sampling(0.0),
                              generator=torch.Generator().manual_seed(seed)).tolist()

    documented = codes([text_scale, image_scale])
    assert report["codes"] == documented
    # greedy on the mixed logits: a random-init model's branches differ enough that swapped scales change the codes
    assert codes([image_scale, text_scale]) != documented
