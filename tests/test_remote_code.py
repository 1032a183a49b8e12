"""Model folders are data, never code: a folder carrying `auto_map` or a .py file is refused, with one line naming the
folder and the file, by every transformers loader armkit has, and no loader passes anything but
trust_remote_code=False. `armkit generate` on a crafted AR export never runs the export's code, even with "y" on
stdin (transformers' own trust prompt)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from armkit.common.remote_code import RemoteCodeError, find_remote_code, no_remote_code

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2)


def plant(folder: Path, marker: Path, *, config: bool = True) -> Path:
    """A tokenizer (and model) folder whose tokenizer_config.json points AutoTokenizer at tokenization_evil.py, which
    writes `marker` when imported. Returns the .py file."""
    folder.mkdir(parents=True, exist_ok=True)
    code = folder / "tokenization_evil.py"
    code.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('code ran')\n"
                    "from transformers import PreTrainedTokenizerFast\n"
                    "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "EvilTokenizer", "eos_token": "<eos>",
        "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", "tokenization_evil.EvilTokenizer"]}}))
    if config:
        (folder / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": {
            "AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel",
            "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    return code


def crafted_ar_export(folder: Path, marker: Path) -> Path:
    """A tiny, otherwise valid AR export whose text_tokenizer/ carries auto_map and code."""
    from armkit.backbones.ar import ARModel
    from armkit.recipes.ar.export import TEXT_TOKENIZER, save_ar

    save_ar(ARModel(codebook_size=16, levels=[4, 4], config=TINY, max_grid=4), folder, tokenizer={})
    config = json.loads((folder / "config.json").read_text())
    config["model"]["init_args"]["text_tokenizer"] = TEXT_TOKENIZER
    (folder / "config.json").write_text(json.dumps(config))
    plant(folder / TEXT_TOKENIZER, marker, config=False)
    return folder


def test_armkit_generate_refuses_an_export_carrying_code_in_one_line(tmp_path):
    marker = tmp_path / "PWNED"
    export = crafted_ar_export(tmp_path / "export", marker)
    code = "import sys; from armkit.recipes.commands.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, "generate", "--model", str(export), "--prompt", "a red circle",
                           "--out", str(tmp_path / "out")], input="y\n" * 10, capture_output=True, text=True,
                          timeout=240, env=env, cwd=tmp_path)
    err = done.stderr.strip()
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(err.splitlines()) == 1, err
    assert str(export / "text_tokenizer") in err and "tokenization_evil.py" in err
    assert not marker.exists()  # the export's code never ran
    assert not (tmp_path / "out").exists()


# ---- the check itself ------------------------------------------------------------------------------------------------

def test_find_remote_code(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "config.json").write_text('{"model_type": "llama"}')
    # a vocabulary may hold the word as a token: only a top-level auto_map counts
    (clean / "tokenizer.json").write_text('{"model": {"vocab": {"auto_map": 5}}}')
    assert find_remote_code(clean) is None and no_remote_code(clean) == str(clean)
    for name, text in [("config.json", '{"auto_map": {"AutoModel": "m.M"}}'),
                       ("processor_config.json", '{"auto_map": {}}'),
                       ("sub/preprocessor_config.json", '{"auto_map": {"AutoImageProcessor": "p.P"}}'),
                       ("broken.json", '{"auto_map": '), ("modeling_x.py", "print(1)"),
                       ("__pycache__/m.cpython-312.pyc", "x")]:
        folder = tmp_path / name.replace("/", "_")
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
        assert find_remote_code(folder) == folder / name, name
        with pytest.raises(RemoteCodeError) as info:
            no_remote_code(folder)
        message = str(info.value)
        assert "\n" not in message and str(folder) in message and Path(name).name in message, message
        assert isinstance(info.value, ValueError)  # the commands print ValueErrors as one line


# ---- every loader refuses before transformers reads anything ------------------------------------------------------

def never(*args, **kwargs):
    raise AssertionError(f"transformers was called: {args} {kwargs}")


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A folder with auto_map and code; every transformers loader patched to fail the test if reached."""
    import transformers

    for name in ("AutoTokenizer", "AutoModel", "AutoModelForCausalLM", "AutoConfig"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", never)
    folder = tmp_path / "evil"
    plant(folder, tmp_path / "PWNED")
    yield folder
    assert not (tmp_path / "PWNED").exists()


def refused(folder: Path):
    return pytest.raises(RemoteCodeError, match=f"{folder}.*(tokenization_evil.py|config.json)")


def test_hf_codec_refuses(evil):
    from armkit.backbones.codec import HFCodec

    with refused(evil):
        HFCodec(evil)


def test_hf_causal_lm_refuses(evil):
    from armkit.backbones.hf_lm import HFCausalLM

    with refused(evil):
        HFCausalLM(str(evil))


def test_ar_model_from_a_path_refuses(evil):
    from armkit.backbones.ar import ARModel

    with refused(evil):
        ARModel(codebook_size=16, levels=[4, 4], path=str(evil))


def test_ar_model_text_tokenizer_refuses(evil):
    from armkit.backbones.ar import ARModel

    with refused(evil):
        ARModel(codebook_size=16, levels=[4, 4], config=TINY, text_tokenizer=str(evil))


def test_load_ar_refuses_an_export_carrying_code(tmp_path):
    from armkit.recipes.ar.export import load_ar

    export = crafted_ar_export(tmp_path / "export", tmp_path / "PWNED")
    with pytest.raises(ValueError, match=f"{export / 'text_tokenizer'}.*tokenization_evil.py"):  # one line
        load_ar(export)
    assert not (tmp_path / "PWNED").exists()


def test_sentence_encoder_refuses(evil):
    from armkit.tokenizer.text.hf_text import HFSentenceEncoder

    with refused(evil):
        HFSentenceEncoder(str(evil))


def test_vision_encoder_refuses(evil):
    from armkit.tokenizer.encoders.hf_encoder import HFVisionEncoder

    with refused(evil):
        HFVisionEncoder(str(evil))


def test_latent_vae_refuses(evil, monkeypatch):
    pytest.importorskip("diffusers")
    from diffusers import AutoencoderKL

    from armkit.decoders.latent import load_vae

    monkeypatch.setattr(AutoencoderKL, "from_pretrained", never)
    with refused(evil):
        load_vae(str(evil), None, None)


def test_asset_conversions_refuse_or_isolate_code(evil, tmp_path, monkeypatch):
    import transformers

    from armkit.recipes.data.assets import convert_minilm, convert_smollm2

    out = tmp_path / "out"
    out.mkdir()
    with refused(evil):
        convert_minilm(evil, out)
    assert list(out.iterdir()) == []
    # the GGUF sits in the wheel's Python package: it is read from a folder holding nothing but itself
    gguf = evil / "model.gguf"
    gguf.write_bytes(b"GGUF")
    seen = {}

    def record(folder, **kwargs):
        seen.update(files=sorted(p.name for p in Path(folder).iterdir()), **kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record)
    with pytest.raises(RuntimeError, match="stop here"):
        convert_smollm2(gguf, out)
    assert seen["files"] == ["model.gguf"] and seen["trust_remote_code"] is False


# ---- and every from_pretrained call says trust_remote_code=False ---------------------------------------------------

def test_every_transformers_from_pretrained_passes_trust_remote_code_false():
    calls = []
    for path in sorted(p for part in ("backbones", "common", "decoders", "recipes", "tokenizer", "benchmarks")
                       for p in (ROOT / part).rglob("*.py")):
        rel = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "from_pretrained" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id.startswith("Auto") and node.func.value.id != "AutoencoderKL"):
                trust = [k.value for k in node.keywords if k.arg == "trust_remote_code"]
                calls.append((f"{rel}:{node.lineno}", trust))
    assert len(calls) >= 9, calls  # codec, hf_lm x2, ar, hf_text x2, hf_encoder, assets x3
    bad = [where for where, trust in calls if len(trust) != 1 or not isinstance(trust[0], ast.Constant)
           or trust[0].value is not False]
    assert bad == []
