"""benchmarks/mfu.py's FLOP accounting, per-block compile, and the random-init stand-ins (CPU, tiny shapes)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as nnf
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from armkit.recipes.training.compile import compile_blocks, repeated_blocks
from benchmarks import mfu, stand_ins


def attention_flops(mapping: dict | None, backend: SDPBackend, backward: bool) -> int:
    q, k, v = (torch.randn(2, 3, 40, 16, requires_grad=True) for _ in range(3))
    with sdpa_kernel(backend), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        out = nnf.scaled_dot_product_attention(q, k, v)
        if backward:
            out.sum().backward()
    return counter.get_total_flops()


def test_cpu_attention_is_counted_as_torch_counts_the_math_path():
    """The CPU flash kernel, counted through the mapped formulas, costs what torch counts for the same attention
    written as matmuls (the math backend); its backward also recomputes Q K^T once (2*B*H*Nq*Nk*D)."""
    flash_fwd = attention_flops(mfu.CPU_SDPA_FORMULAS, SDPBackend.FLASH_ATTENTION, backward=False)
    math_fwd = attention_flops(None, SDPBackend.MATH, backward=False)
    assert flash_fwd == math_fwd == 2 * (2 * 2 * 3 * 40 * 40 * 16)
    flash_all = attention_flops(mfu.CPU_SDPA_FORMULAS, SDPBackend.FLASH_ATTENTION, backward=True)
    math_all = attention_flops(None, SDPBackend.MATH, backward=True)
    assert flash_all == math_all + 2 * 2 * 3 * 40 * 40 * 16


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("mfu") / "mfu.json"
    args = ["--config", "recipes/tokenizer/tiny.yaml", "--batch-size", "4", "--compile", "off", "--repeats", "1",
            "--peak-size", "128", "--out", str(out)]
    mfu.main(args)
    return {**json.loads(out.read_text()), "args": args}


def test_parts_partition_the_step_and_match_the_closed_form(tiny_result):
    r = tiny_result
    parts = r["flops_by_part"]
    assert sum(parts.values()) == r["flops_per_step"] > 0
    assert set(parts) == {"encoder (frozen forward)", "projections + FSQ (fwd + bwd)", "loss caption (fwd + bwd)",
                          "loss pixel (fwd + bwd)", "loss sigmoid (fwd + bwd)", "loss distill (fwd + bwd)"}
    # tiny.yaml: 16 tokens of width 64 per image; down = Linear(64,64), Linear(64,4); up = Linear(4,64),
    # Linear(64,64). Backward doubles each matmul, except the input gradient of the first one: the frozen encoder
    # needs none.
    n = 16
    forward = 2 * n * (64 * 64 + 64 * 4 + 4 * 64 + 64 * 64)
    assert parts["projections + FSQ (fwd + bwd)"] == 4 * (3 * forward - 2 * n * 64 * 64)
    assert parts["loss distill (fwd + bwd)"] == 0  # a cosine: no matmul


def test_mfu_row_is_flops_over_time_over_peak(tiny_result):
    r = tiny_result
    ok = [row for row in r["rows"] if row["status"] == "ok"]
    assert [(row["compile"], row["attention"]) for row in ok] == [("off", "sdpa")]
    row = ok[0]
    assert row["mfu"] == pytest.approx(r["flops_per_step"] / (row["ms"] / 1000) / r["peak_flops"])
    assert row["images_per_s"] == pytest.approx(4 / (row["ms"] / 1000))
    skipped = [row for row in r["rows"] if row["attention"] == "xformers"]
    assert skipped and skipped[0]["status"].startswith("skipped: xformers runs on CUDA only")
    assert r["device"].startswith("cpu") and r["versions"]["torch"]
    assert r["command"].endswith("benchmarks/mfu.py " + " ".join(r["args"]))


def test_matmul_peak_is_a_positive_rate():
    assert mfu.matmul_peak(torch.device("cpu"), torch.float32, 64, seconds=0.05) > 0


def test_compile_blocks_picks_transformer_blocks_and_keeps_outputs_and_names():
    from armkit.decoders import PixelDiT
    from armkit.tokenizer.projections import make_projection

    model = torch.nn.ModuleDict({
        "dit": PixelDiT(size="tiny", image_size=16, patch_size=8, cond_dim=8, cond_dropout=0.0),
        "proj": make_projection(8, 4, kind="transformer", width=16, depth=2, heads=2),
        "mlp": make_projection(8, 4, kind="mlp", width=16)})  # Linear, GELU, Linear: no block to compile
    assert [name for name, _ in repeated_blocks(model)] == ["dit.net.blocks.0", "dit.net.blocks.1", "proj.1",
                                                            "proj.2"]
    x, t, cond = torch.randn(2, 3, 16, 16), torch.rand(2), torch.randn(2, 4, 8)
    keys = list(model.state_dict())
    with torch.no_grad():
        eager = model["dit"].net(x, t, cond), model["proj"](cond)
    assert compile_blocks(model, backend="aot_eager") == ["dit.net.blocks.0", "dit.net.blocks.1", "proj.1", "proj.2"]
    with torch.no_grad():
        compiled = model["dit"].net(x, t, cond), model["proj"](cond)
    assert list(model.state_dict()) == keys
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b)


def test_random_init_replaces_every_weight_file(tmp_path, monkeypatch):
    from armkit.backbones import HFCausalLM

    monkeypatch.setitem(stand_ins.LM_PRESETS, "tiny-qwen", {
        "model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "tie_word_embeddings": True})
    tree = {"model": {"tokenizer": {"encoder": {"class_path": "armkit.tokenizer.encoders.OpenCLIPEncoder",
                                                "init_args": {"model_name": "x", "weights": "/no/such.safetensors"}}},
                      "lm": {"class_path": "armkit.backbones.HFCausalLM", "init_args": {"path": "/data/Tiny-Qwen"}},
                      "tower": {"init_args": {"weights": "/no/t.bin", "tokenizer_path": "/no/tok"}}}}
    out = stand_ins.random_init(tree, tmp_path)
    assert tree["model"]["lm"]["init_args"]["path"] == "/data/Tiny-Qwen"  # the input is not changed
    assert out["model"]["tokenizer"]["encoder"]["init_args"]["weights"] is None
    assert out["model"]["tower"]["init_args"]["weights"] is None
    lm = HFCausalLM(out["model"]["lm"]["init_args"]["path"])
    assert lm.hidden_size == 32 and lm.vocab_size == 300
    ids, mask = lm.tokenize(["héllo"], max_length=16)
    assert ids.shape == (1, 7) and mask.all()  # one token per UTF-8 byte (é is two), then end-of-text
    assert ids[0, -1] == lm.eos_id
    with pytest.raises(ValueError, match="no LM preset"):
        stand_ins.random_init({"model": {"lm": {"class_path": "armkit.backbones.HFCausalLM",
                                                "init_args": {"path": "/data/Llama-70B"}}}}, tmp_path)
