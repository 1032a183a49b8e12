"""Tampered AR exports and checkpoints: `armkit generate`, `armkit eval-ar` and `armkit export` refuse each with one
line on stderr naming the file and the key, exit status 2, no traceback, before any model is built
(recipes/ar/export_checks.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from test_export_faults import set_in

from armkit.backbones.ar import ARModel
from armkit.common.buildable import to_spec
from armkit.recipes.ar.export import save_ar
from armkit.recipes.commands.cli import main

RECORD = {"path": "no-tokenizer-here", "fingerprint": "0" * 64, "codebook_size": 1000, "levels": [8, 5, 5, 5],
          "grid": [4, 4], "image_size": [32, 32]}
LM = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
      "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128}


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """One tiny export folder and one ARModule-style checkpoint of the same model, built once."""
    root = tmp_path_factory.mktemp("ar-faults")
    model = ARModel(codebook_size=1000, levels=[8, 5, 5, 5], max_grid=8, config=dict(LM))
    export = save_ar(model, root / "export", tokenizer=dict(RECORD))
    ckpt = root / "last.ckpt"
    torch.save({"armkit": {"ar": to_spec(model), "codes_tokenizer": dict(RECORD)}, "global_step": 3,
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    return export, ckpt


def refused(capsys, argv: list[str], *names: str) -> str:
    """`armkit ARGV` exits 2 with exactly one line on stderr that names each of `names`, and no traceback."""
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1, lines
    assert "Traceback" not in out + err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def generate(model: Path, out: Path) -> list[str]:
    return ["generate", "--model", str(model), "--prompt", "a red circle", "--num", "1", "--out", str(out)]


def eval_ar(model: Path, out: Path) -> list[str]:
    return ["eval-ar", "--model", str(model), "--codes", str(out / "codes"), "--images", str(out / "images"),
            "--out", str(out / "metrics.json")]


# -- export folders -------------------------------------------------------------------------------------------------
def at(*keys):
    """value -> an edit setting tree[keys[0]][keys[1]]... = value (a config or a checkpoint)."""
    return lambda value: set_in(list(keys), value)


ARGS, CONFIG = ("model", "init_args"), ("model", "init_args", "config")


def text_edit(function):
    """An edit of config.json's text itself (for what json.dumps cannot write)."""
    function.raw = True
    return function


def nested(depth: int) -> list:
    node: list = []
    for _ in range(depth):
        node = [node]
    return node


EXPORT_FAULTS = [  # (id, edit of the parsed config or of its text, the key the line must name)
    ("a JSON list", text_edit(lambda text: "[1, 2, 3]"), "JSON list"),
    ("not JSON", text_edit(lambda text: text[:-20]), "not valid JSON"),
    ("not UTF-8", text_edit(lambda text: "\udcff"), "not valid JSON"),
    ("NaN literal", text_edit(lambda text: text.replace('"hidden_size": 32', '"hidden_size": NaN')), "NaN"),
    ("Infinity literal", text_edit(lambda text: text.replace('"seed": 0', '"seed": -Infinity')), "Infinity"),
    ("1e999 is inf", text_edit(lambda text: text.replace('"max_position_embeddings": 128',
                                                         '"max_position_embeddings": 128, "rms_norm_eps": 1e999')),
     "rms_norm_eps = inf"),
    ("deep nesting", text_edit(lambda text: text[:-2] + ', "junk": ' + "[" * 100_000 + "]" * 100_000 + "}\n"),
     "nested too deeply"),
    ("60 levels", at(*CONFIG, "junk")(nested(60)), "nested deeper than 32"),
    ("format_version a string", at("format_version")("1"), "format_version"),
    ("format_version a bool", at("format_version")(True), "format_version"),
    ("format_version newer", at("format_version")(99), "version 99"),
    ("format_version zero", at("format_version")(0), "version 0"),
    ("a tokenizer export", at("format")("armkit.tokenizer"), "'armkit.tokenizer'"),
    ("model a string", at("model")("ARModel"), "model"),
    ("init_args a list", at(*ARGS)([1]), "init_args"),
    ("class_path a number", at("model", "class_path")(5), "class_path"),
    ("config a list", at(*CONFIG)([1]), "config"),
    ("zero heads", at(*CONFIG, "num_attention_heads")(0), "num_attention_heads"),
    ("negative width", at(*CONFIG, "hidden_size")(-64), "hidden_size"),
    ("width not divisible", at(*CONFIG, "hidden_size")(33), "hidden_size = 33"),
    ("kv heads not dividing", at(*CONFIG, "num_key_value_heads")(3), "num_key_value_heads"),
    ("zero layers", at(*CONFIG, "num_hidden_layers")(0), "num_hidden_layers"),
    ("float layers", at(*CONFIG, "num_hidden_layers")(1.5), "num_hidden_layers"),
    ("vocab 0", at(*CONFIG, "vocab_size")(0), "vocab_size"),
    ("vocab below bytes", at(*CONFIG, "vocab_size")(100), "vocab_size"),
    ("unknown model type", at(*CONFIG, "model_type")("gpt-17"), "model_type"),
    ("no model type", at(*CONFIG, "model_type")(None), "model_type"),
    ("codebook 0", at(*ARGS, "codebook_size")(0), "codebook_size"),
    ("codebook negative", at(*ARGS, "codebook_size")(-1000), "codebook_size"),
    ("codebook a string", at(*ARGS, "codebook_size")("1000"), "codebook_size"),
    ("levels 8.5", at(*ARGS, "levels")([8.5, 5, 5, 5]), "levels"),
    ("levels not the codebook", at(*ARGS, "levels")([8, 5, 5]), "levels"),
    ("unknown head", at(*ARGS, "head")("banana"), "head"),
    ("unknown dtype", at(*ARGS, "dtype")("float64"), "dtype"),
    ("max_grid 0", at(*ARGS, "max_grid")(0), "max_grid"),
    ("max_grid huge", at(*ARGS, "max_grid")(10**9), "max_grid"),
    ("seed a string", at(*ARGS, "seed")("zero"), "seed"),
    ("a path in an export", at(*ARGS, "path")("/etc"), "path"),
    ("text tokenizer elsewhere", at(*ARGS, "text_tokenizer")("/etc"), "text_tokenizer"),
    ("needs terabytes", at(*CONFIG, "hidden_size")(2**20), "TB"),
    ("needs terabytes by layers", at(*CONFIG)({**LM, "num_hidden_layers": 1000, "hidden_size": 8192}),
     "ARMKIT_MAX_MODEL_GB"),
    ("needs terabytes by experts", at(*CONFIG)({**LM, "model_type": "qwen2_moe", "num_experts": 2**24,
                                                "moe_intermediate_size": 64}), "float32 parameters"),
    ("layers past any LM", at(*CONFIG, "num_hidden_layers")(10**7), "num_hidden_layers = 10000000"),
    ("positions past any LM", at(*CONFIG, "max_position_embeddings")(2**40), "max_position_embeddings"),
    ("vocab.visual 0", at("vocab", "visual")(0), "vocab.visual"),
    ("vocab.visual disagrees", at("vocab", "visual")(999), "vocab.visual"),
    ("vocab a list", at("vocab")([]), "vocab"),
    ("tokenizer a list", at("tokenizer")([]), "tokenizer"),
    ("tokenizer grid negative", at("tokenizer", "grid")([4, -4]), "tokenizer.grid"),
    ("tokenizer path a number", at("tokenizer", "path")(3), "tokenizer.path"),
]


def tampered(valid, tmp_path: Path, edit) -> Path:
    folder = Path(shutil.copytree(valid[0], tmp_path / "export"))
    path = folder / "config.json"
    if getattr(edit, "raw", False):
        text = edit(path.read_text())
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
    else:
        config = json.loads(path.read_text())
        edit(config)
        path.write_text(json.dumps(config))  # NaN / inf are written as the literals NaN / Infinity
    return folder


@pytest.mark.parametrize("edit, key", [f[1:] for f in EXPORT_FAULTS], ids=[f[0] for f in EXPORT_FAULTS])
def test_tampered_export_is_one_line_naming_file_and_key(valid, tmp_path, capsys, edit, key):
    folder = tampered(valid, tmp_path, edit)
    refused(capsys, generate(folder, tmp_path / "out"), str(folder / "config.json"), key)
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("name", ["zero heads", "needs terabytes", "NaN literal", "format_version a string"])
def test_eval_ar_refuses_the_same_exports(valid, tmp_path, capsys, name):
    _, edit, key = next(f for f in EXPORT_FAULTS if f[0] == name)
    folder = tampered(valid, tmp_path, edit)
    refused(capsys, eval_ar(folder, tmp_path), str(folder / "config.json"), key)


def test_memory_cap_is_the_environments_and_the_estimate_is_close(valid, tmp_path, capsys, monkeypatch):
    from armkit.recipes.ar.export import load_ar

    monkeypatch.setenv("ARMKIT_MAX_MODEL_GB", "0.0001")  # 100 kB: the tiny model (~365 kB in float32) is over it
    line = refused(capsys, generate(valid[0], tmp_path / "out"), "config.json", "cap 100.0 kB", "float32 parameters")
    estimated = int(re.search(r"\(([\d,]+) float32 parameters", line)[1].replace(",", ""))
    actual = sum(p.numel() for p in ARModel(codebook_size=1000, levels=[8, 5, 5, 5], max_grid=8,
                                            config=dict(LM)).parameters())
    assert abs(estimated - actual) <= 0.01 * actual, (estimated, actual)  # biases and norms aside, exact
    monkeypatch.setenv("ARMKIT_MAX_MODEL_GB", "nan")
    refused(capsys, generate(valid[0], tmp_path / "out"), "ARMKIT_MAX_MODEL_GB")
    monkeypatch.delenv("ARMKIT_MAX_MODEL_GB")
    assert load_ar(valid[0]).model.vocab.codebook_size == 1000  # the untampered export loads


def test_weight_files_past_the_cap_are_refused_unread(valid, tmp_path, capsys, monkeypatch):
    folder = Path(shutil.copytree(valid[0], tmp_path / "export"))
    with open(folder / "model.safetensors", "ab") as f:
        f.write(b"\0" * 100_000)  # 365 kB of weights + 100 kB: over a 400 kB cap, which the config itself is under
    monkeypatch.setenv("ARMKIT_MAX_MODEL_GB", "0.0004")
    refused(capsys, generate(folder, tmp_path / "out"), str(folder / "model.safetensors"), "over 400.0 kB")
    monkeypatch.setenv("ARMKIT_MAX_MODEL_GB", "0.00005")  # a checkpoint may be 4x the cap (optimizer state)
    refused(capsys, generate(valid[1], tmp_path / "out"), str(valid[1]), "over 200.0 kB (4 x the model cap")


def test_missing_or_foreign_files_are_one_line(valid, tmp_path, capsys):
    folder = Path(shutil.copytree(valid[0], tmp_path / "export"))
    (folder / "model.safetensors").write_bytes(b"\x80\x04junk")
    refused(capsys, generate(folder, tmp_path / "out"), "model.safetensors", "pickle")
    (folder / "model.safetensors").unlink()
    refused(capsys, generate(folder, tmp_path / "out"), "model.safetensors", "missing")
    (folder / "config.json").unlink()
    refused(capsys, generate(folder, tmp_path / "out"), "config.json", "missing")


# -- checkpoints ----------------------------------------------------------------------------------------------------
SPEC = ("armkit", "ar", "init_args")


def drop_state_dict(checkpoint):
    del checkpoint["state_dict"]


def rename_state(checkpoint):
    checkpoint["state_dict"] = {k.replace("model.", "policy.", 1): v for k, v in checkpoint["state_dict"].items()}


CHECKPOINT_FAULTS = [
    ("no state_dict", drop_state_dict, "'state_dict' is missing"),
    ("state_dict a list", at("state_dict")([1, 2]), "state_dict"),
    ("a value not a tensor", at("state_dict", "model.visual_head.weight")("weights"),
     "state_dict['model.visual_head.weight']"),
    ("a key not a string", at("state_dict", 7)(torch.zeros(1)), "state_dict key"),
    ("no model.* key", rename_state, "model.*"),
    ("armkit a list", at("armkit")([1]), "armkit"),
    ("codebook a string", at(*SPEC, "codebook_size")("1000"), "codebook_size"),
    ("zero heads", at(*SPEC, "config", "num_attention_heads")(0), "num_attention_heads"),
    ("NaN in the config", at(*SPEC, "config", "rope_theta")(float("nan")), "rope_theta"),
    ("needs terabytes", at(*SPEC, "config", "hidden_size")(2**20), "TB"),
    ("both config and path", at(*SPEC, "path")("/somewhere"), "give exactly one of config:"),
    ("codes tokenizer a list", at("armkit", "codes_tokenizer")([1]), "armkit.codes_tokenizer"),
    ("global_step a string", at("global_step")("three"), "global_step"),
]


def tampered_ckpt(valid, tmp_path: Path, edit) -> Path:
    checkpoint = torch.load(str(valid[1]), weights_only=True)
    edit(checkpoint)
    path = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("edit, key", [f[1:] for f in CHECKPOINT_FAULTS], ids=[f[0] for f in CHECKPOINT_FAULTS])
def test_tampered_checkpoint_is_one_line_from_export(valid, tmp_path, capsys, edit, key):
    ckpt = tampered_ckpt(valid, tmp_path, edit)
    refused(capsys, ["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "out")], str(ckpt), key)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["no state_dict", "a value not a tensor", "needs terabytes"])
@pytest.mark.parametrize("command", [generate, eval_ar])
def test_generate_and_eval_ar_refuse_the_same_checkpoints(valid, tmp_path, capsys, name, command):
    _, edit, key = next(f for f in CHECKPOINT_FAULTS if f[0] == name)
    ckpt = tampered_ckpt(valid, tmp_path, edit)
    refused(capsys, command(ckpt, tmp_path / "out"), str(ckpt), key)


def test_a_pickle_with_code_is_one_line(valid, tmp_path, capsys):
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"armkit": {"ar": {}}, "state_dict": {}, "hook": Path("/etc")}, ckpt)  # a class: not weights-only
    refused(capsys, generate(ckpt, tmp_path / "out"), str(ckpt), "refused to unpickle")


def test_untampered_checkpoint_exports_and_loads(valid, tmp_path, capsys):
    from armkit.recipes.ar.export import load_ar

    assert main(["export", "--ckpt", str(valid[1]), "--out", str(tmp_path / "out")]) == 0
    a, b = load_ar(valid[1]).model.state_dict(), load_ar(tmp_path / "out").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
