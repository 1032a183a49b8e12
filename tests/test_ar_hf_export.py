"""The standard Hugging Face export of a full-head ARModel (backbones/hf_export.py, backbones/hf_processors.py).

A tiny random ARModel is exported; a subprocess that never imports armkit loads it with
`AutoModelForCausalLM.from_pretrained`, samples under `generate()` with a copy of backbones/hf_processors.py (the
export holds no code), and its codes must be armkit's `generate_image` codes: plain text-to-image, text-to-image
with CFG and editing with two scales, greedy and with a fixed seed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from armkit.backbones import hf_processors as P
from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.backbones.generate import Sampling, generate_image
from armkit.backbones.hf_export import HFExportError, save_hf, to_hf_causal_lm

LM = dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2)
GRID = (2, 3)

CHILD = textwrap.dedent("""
    import importlib.util, json, sys
    import torch
    from transformers import AutoModelForCausalLM

    export, cases_file, processors = sys.argv[1], sys.argv[2], sys.argv[3]
    spec = importlib.util.spec_from_file_location("armkit_processors", processors)  # a copy of the file, no armkit
    P = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(P)
    lm = AutoModelForCausalLM.from_pretrained(export).eval()
    meta = P.read_meta(export)
    results = []
    for case in json.loads(open(cases_file).read()):
        grid, batch = tuple(case["grid"]), case["batch"]
        ids, mask = P.left_pad(case["rows"], meta["ids"]["pad"])
        generator = torch.Generator().manual_seed(case["seed"])
        kwargs = P.image_generate_kwargs(meta, grid, prompt_length=ids.shape[1], batch=batch, scales=case["scales"],
                                         temperature=case["temperature"], top_k=case["top_k"], top_p=case["top_p"],
                                         generator=generator)
        with torch.no_grad():
            out = lm.generate(input_ids=ids, attention_mask=mask, **kwargs)
        assert (out[:, -1] == meta["ids"]["eoi"]).all(), "the image must end in EOI"
        results.append(P.codes_of(out, meta, grid, prompt_length=ids.shape[1], batch=batch).tolist())
    loaded = sorted(m for m in sys.modules if m == "armkit" or m.startswith("armkit."))
    print(json.dumps({"codes": results, "armkit_modules": loaded, "class": type(lm).__name__}))
""")


def tiny(head: str = "full") -> ARModel:
    return ARModel(codebook_size=100, levels=[5, 4, 5], head=head, max_grid=4, config=LM, seed=1).eval()


def cases(m: ARModel) -> list[dict]:
    v, enc = m.vocab, m.codec.encode
    t2i = [S.text_to_image_prompt(v, enc(t), GRID) for t in ("a red circle", "dog")]  # left padding exercised
    uncond = [S.text_to_image_prompt(v, [], GRID)] * 2
    source = [(7 * i + 3) % 100 for i in range(GRID[0] * GRID[1])]
    instr = enc("make it blue")
    full = [S.editing_prompt(v, source, GRID, instr, GRID)] * 2
    image_only = [S.editing_prompt(v, source, GRID, instr, GRID, drop_text=True)] * 2
    neither = [S.editing_prompt(v, source, GRID, instr, GRID, drop_text=True, drop_image=True)] * 2
    greedy, sampled = dict(temperature=0.0, top_k=0, top_p=1.0), dict(temperature=1.0, top_k=20, top_p=0.9)
    return [
        dict(name="t2i greedy", branches=[t2i], scales=[], **greedy, seed=0),
        dict(name="t2i sampled", branches=[t2i], scales=[], **sampled, seed=3),
        dict(name="t2i cfg greedy", branches=[t2i, uncond], scales=[4.0], **greedy, seed=0),
        dict(name="t2i cfg sampled", branches=[t2i, uncond], scales=[1.5], **sampled, seed=4),
        dict(name="edit greedy", branches=[full, image_only, neither], scales=[3.0, 0.5], **greedy, seed=0),
        dict(name="edit sampled", branches=[full, image_only, neither], scales=[1.5, 1.25], **sampled, seed=5),
    ]


def armkit_codes(m: ARModel, case: dict, scales: list[float] | None = None) -> list[list[int]]:
    first, *weaker = case["branches"]
    sampling = Sampling(case["temperature"], case["top_k"], case["top_p"])
    return generate_image(m, first, GRID, weaker=weaker, scales=case["scales"] if scales is None else scales,
                          sampling=sampling, generator=torch.Generator().manual_seed(case["seed"])).tolist()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    m = tiny()
    folder = save_hf(m, tmp_path_factory.mktemp("hf") / "export", grid=GRID,
                     tokenizer={"fingerprint": "sha256:test", "grid": list(GRID), "codebook_size": 100})
    return m, folder


def test_plain_transformers_generate_gives_armkit_codes(exported, tmp_path):
    m, folder = exported
    all_cases = cases(m)
    payload = [dict(rows=[r for branch in c["branches"] for r in branch], batch=len(c["branches"][0]),
                    grid=list(GRID), **{k: c[k] for k in ("scales", "temperature", "top_k", "top_p", "seed")})
               for c in all_cases]
    (tmp_path / "cases.json").write_text(json.dumps(payload))
    (tmp_path / "child.py").write_text(CHILD)
    from armkit.backbones import hf_processors

    copied = tmp_path / "armkit_processors.py"
    shutil.copyfile(hf_processors.__file__, copied)
    assert not [p for p in folder.rglob("*") if p.suffix in (".py", ".pyc")], "an export folder holds no code"
    run = subprocess.run([sys.executable, str(tmp_path / "child.py"), str(folder), str(tmp_path / "cases.json"),
                          str(copied)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    child = json.loads(run.stdout.strip().splitlines()[-1])
    assert child["armkit_modules"] == [], "the export must load and generate without importing armkit"
    assert child["class"] == type(m.lm).__name__
    for case, codes in zip(all_cases, child["codes"]):
        assert codes == armkit_codes(m, case), case["name"]
    edit = next(c for c in all_cases if c["name"] == "edit greedy")
    assert armkit_codes(m, edit, [0.5, 3.0]) != armkit_codes(m, edit), "the scales must tell the branches apart"


def test_exported_logits_are_armkit_logits(exported):
    m, _ = exported
    lm = to_hf_causal_lm(m)
    v = m.vocab
    assert lm.config.vocab_size == v.size and not lm.config.tie_word_embeddings
    assert m.lm.get_input_embeddings().num_embeddings == v.text_size  # the ARModel is left as it was
    ids = torch.tensor([S.text_to_image_prompt(v, m.codec.encode("cat"), GRID) + [v.visual_start + 5]])
    with torch.no_grad():
        got = lm(ids).logits[0]
        hidden = m.trunk(ids).hidden[0]
        want = torch.cat([m.text_logits(hidden), m.visual_logits(hidden)], dim=-1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_meta_and_prompt_helpers_match_the_sequence_format(exported):
    m, folder = exported
    meta = P.read_meta(folder)
    v = m.vocab
    assert (meta["visual_start"], meta["vocab_size"], meta["ids"]["boi"], meta["ids"]["pad"]) == \
        (v.visual_start, v.size, v.boi, v.pad)
    assert meta["tokenizer"]["fingerprint"] == "sha256:test" and meta["grid"] == list(GRID)
    assert meta["guidance"]["editing"]["branches"] == ["full condition", "image only", "neither"]
    text, src = m.codec.encode("hi"), list(range(6))
    assert P.text_to_image_prompt(meta, text, (3, 4)) == S.text_to_image_prompt(v, text, (3, 4))
    assert P.editing_prompt(meta, src, GRID, text, (1, 2)) == S.editing_prompt(v, src, GRID, text, (1, 2))
    assert P.editing_prompt(meta, None, GRID, None, (1, 2)) == S.editing_prompt(
        v, src, GRID, text, (1, 2), drop_text=True, drop_image=True)
    assert P.image_ids(meta, src, GRID) == S.image(v, src, GRID)
    config = json.loads((Path(folder) / "config.json").read_text())
    assert config["vocab_size"] == v.size and (Path(folder) / "model.safetensors").is_file()


def test_guidance_processor_is_armkit_mix():
    from armkit.backbones.generate import mix

    c, i, u = torch.randn(3, 2, 11)
    out = P.Guidance.editing(1.5, 1.25)(torch.zeros(6, 1, dtype=torch.long), torch.cat([c, i, u]))
    torch.testing.assert_close(out, torch.cat([mix([c, i, u], [1.5, 1.25])] * 3))
    masked = torch.full((4, 3), float("-inf"))
    masked[:, 1] = 1.0
    assert P.Guidance.text_to_image(2.0)(None, masked)[:, [0, 2]].eq(float("-inf")).all()


def test_factorized_head_is_refused():
    with pytest.raises(HFExportError, match="factorized"):
        to_hf_causal_lm(tiny("factorized"))


def test_export_command_hf_flag(tmp_path):
    from armkit.recipes.ar.export import save_ar
    from armkit.recipes.commands.cli import main

    record = {"path": "tok", "fingerprint": "sha256:abc", "codebook_size": 100, "levels": [5, 4, 5],
              "grid": list(GRID)}
    full = save_ar(tiny(), tmp_path / "ar", tokenizer=record)
    assert main(["export", "--ckpt", str(full), "--out", str(tmp_path / "hf"), "--hf"]) == 0
    meta = P.read_meta(tmp_path / "hf")
    assert meta["tokenizer"]["fingerprint"] == "sha256:abc" and meta["grid"] == list(GRID)
    factorized = save_ar(tiny("factorized"), tmp_path / "ar-f", tokenizer=record)
    assert main(["export", "--ckpt", str(factorized), "--out", str(tmp_path / "hf-f"), "--hf"]) == 2
    assert not (tmp_path / "hf-f").exists()


def test_tied_embeddings_are_untied_and_round_trip(tmp_path):
    from transformers import AutoModelForCausalLM

    m = ARModel(codebook_size=100, levels=[5, 4, 5], head="full", max_grid=4, seed=1,
                config={**LM, "model_type": "llama", "tie_word_embeddings": True}).eval()
    lm = AutoModelForCausalLM.from_pretrained(save_hf(m, tmp_path / "tied")).eval()
    assert not lm.config.tie_word_embeddings
    ids = torch.tensor([S.text_to_image_prompt(m.vocab, m.codec.encode("cat"), GRID)])
    with torch.no_grad():
        hidden = m.trunk(ids).hidden[0]
        want = torch.cat([m.text_logits(hidden), m.visual_logits(hidden)], dim=-1)
        torch.testing.assert_close(lm(ids).logits[0], want, atol=1e-5, rtol=1e-5)
