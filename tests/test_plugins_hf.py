"""HFVisionEncoder, HFSentenceEncoder and HFCausalLM on tiny random-init transformers models saved to tmp."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as nnf
import transformers as hf
from tokenizers import Tokenizer, models, pre_tokenizers

from armkit.backbones.hf_lm import HFCausalLM
from armkit.tokenizer import build, to_spec
from armkit.tokenizer.encoders.hf_encoder import HFVisionEncoder
from armkit.tokenizer.text.hf_text import HFSentenceEncoder

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
WORDS = ["a", "the", "cat", "dog", "sat", "on", "mat", "red", "blue", "small", "big", "photo", "of", "is",
         "sleeping", "sofa"]


def saved(folder, model, *extras):
    torch.manual_seed(0)
    model.eval().save_pretrained(str(folder))
    for extra in extras:
        extra.save_pretrained(str(folder))
    return str(folder)


def images(b: int = 2) -> torch.Tensor:
    return torch.rand(b, 3, 40, 56, generator=torch.Generator().manual_seed(1))


# ---- vision -------------------------------------------------------------------------------------------------------

def test_siglip_vision_tokens_and_processor_settings(tmp_path):
    torch.manual_seed(0)
    model = hf.SiglipVisionModel(hf.SiglipVisionConfig(**TINY, image_size=32, patch_size=8)).eval()
    proc = hf.SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.2, 0.3, 0.4], image_std=[0.5] * 3)
    enc = HFVisionEncoder(saved(tmp_path, model, proc))
    assert enc.mean == (0.2, 0.3, 0.4) and enc.std == (0.5, 0.5, 0.5) and enc.grid == (4, 4) and enc.width == 32
    x = images()
    pixels = enc.preprocess(x)
    torch.testing.assert_close(pixels[:, 0], (nnf.interpolate(x, size=(32, 32), mode="bicubic", antialias=True)[:, 0]
                                              - 0.2) / 0.5)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), model(pixel_values=pixels).last_hidden_state)  # SigLIP: no prefix
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())


def test_dinov2_registers_and_class_token_are_dropped(tmp_path):
    torch.manual_seed(0)
    cfg = hf.Dinov2WithRegistersConfig(**TINY, image_size=32, patch_size=8, num_register_tokens=4)
    model = hf.Dinov2WithRegistersModel(cfg).eval()
    enc = HFVisionEncoder(saved(tmp_path, model))
    x = images()
    with torch.no_grad():
        full = model(pixel_values=enc.preprocess(x)).last_hidden_state
        assert full.shape[1] == 1 + 4 + 16
        torch.testing.assert_close(enc(x), full[:, 5:])
    assert enc.mean == (0.485, 0.456, 0.406)  # no processor config: ImageNet stats
    assert HFVisionEncoder(str(tmp_path), image_size=48)(x).shape == (2, 36, 32)  # other sizes: resampled positions


def test_dual_clip_model_keeps_its_vision_tower(tmp_path):
    torch.manual_seed(0)
    cfg = hf.CLIPConfig(vision_config=dict(**TINY, image_size=32, patch_size=8),
                        text_config=dict(**TINY, vocab_size=50, bos_token_id=0, eos_token_id=1), projection_dim=16)
    model = hf.CLIPModel(cfg).eval()
    enc = HFVisionEncoder(saved(tmp_path, model), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x = images()
    with torch.no_grad():
        expected = model.vision_model(pixel_values=enc.preprocess(x)).last_hidden_state[:, 1:]
    torch.testing.assert_close(enc(x), expected)
    assert not any("text" in name for name, _ in enc.named_parameters())
    torch.testing.assert_close(build(to_spec(enc))(x), enc(x))


def test_vision_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        HFVisionEncoder(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="preprocessor_config.json"):
        HFVisionEncoder(str(tmp_path))


# ---- sentence encoder ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = hf.BertTokenizerFast(vocab_file=str(vocab))
    torch.manual_seed(0)
    model = hf.BertModel(hf.BertConfig(**TINY, vocab_size=len(WORDS) + 5, max_position_embeddings=64))
    saved(folder, model, tokenizer)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12}))
    return folder, model.eval(), tokenizer


def test_sentence_encoder_mean_pools_real_tokens_only(bert_folder):
    folder, model, tokenizer = bert_folder
    tower = HFSentenceEncoder(str(folder))
    assert tower.width == 32 and tower.max_length == 12
    short, long = "a red cat", "the small dog sat on the big blue mat"
    got = tower([short, long])  # the short sentence is padded in this batch
    with torch.no_grad():
        alone = model(**tokenizer([short], return_tensors="pt")).last_hidden_state[0]  # [T, C], no padding
    torch.testing.assert_close(got[0], alone.mean(0))
    torch.testing.assert_close(tower([short])[0], got[0])
    assert not any(p.requires_grad for p in tower.parameters())
    assert HFSentenceEncoder(str(folder), max_length=4).max_length == 4


def test_sentence_encoder_refuses_other_pooling(bert_folder, tmp_path):
    folder, _, _ = bert_folder
    (folder / "1_Pooling").mkdir(exist_ok=True)
    try:
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                      "pooling_mode_mean_tokens": False}))
        with pytest.raises(ValueError, match="mean"):
            HFSentenceEncoder(str(folder))
    finally:
        (folder / "1_Pooling" / "config.json").unlink()


# ---- causal LM -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "[EOS]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = hf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                           eos_token="[EOS]")
    torch.manual_seed(0)
    cfg = hf.LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=None, eos_token_id=2, pad_token_id=1)
    model = hf.LlamaForCausalLM(cfg)
    saved(folder, model, tokenizer)
    return str(folder), model.eval()


def test_tokenize_right_pads_and_ends_with_eos(llama_folder):
    lm = HFCausalLM(llama_folder[0])
    word = {w: i + 3 for i, w in enumerate(WORDS)}  # ids 0-2: [UNK], [PAD], [EOS]
    ids, mask = lm.tokenize(["a cat sat on the mat", "the red dog"], max_length=16)
    assert ids.tolist() == [[word[w] for w in ["a", "cat", "sat", "on", "the", "mat"]] + [2],
                            [word[w] for w in ["the", "red", "dog"]] + [2, 1, 1, 1]]
    assert mask.tolist() == [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]
    ids, mask = lm.tokenize(["a cat sat on the mat"], max_length=3)
    assert ids.tolist() == [[word["a"], word["cat"], 2]] and mask.tolist() == [[1, 1, 1]]


def test_prefix_loss_equals_cross_entropy_of_the_plain_sequence(llama_folder):
    path, model = llama_folder
    lm = HFCausalLM(path)
    assert lm.hidden_size == 32 and lm.vocab_size == 19
    seq = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 3, 4]])
    k = 3  # the first k tokens become the prefix, as embeddings
    text, mask = seq[:, k:], torch.ones_like(seq[:, k:])
    mask[1, -2:] = 0  # padding in row 1 is ignored
    out = lm(lm.embed_tokens(seq[:, :k]), text, mask)
    with torch.no_grad():
        logits = model(input_ids=seq).logits  # [B, 8, V] on the plain token sequence
    per_token = nnf.cross_entropy(logits[:, k - 1:-1].transpose(1, 2), text, reduction="none")  # [B, 5]
    expected = (per_token * mask).sum() / mask.sum()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)
    assert out.logits.shape == (2, 5, 19)
    torch.testing.assert_close(out.logits[0], logits[0, k - 1:-1], rtol=1e-5, atol=1e-5)


def test_frozen_lm_passes_gradients_to_the_prefix_only(llama_folder):
    lm = HFCausalLM(llama_folder[0])
    lm.train()
    assert not lm.training
    prefix = torch.randn(2, 4, 32, requires_grad=True)
    ids, mask = lm.tokenize(["a cat", "the big red dog is sleeping"], max_length=8)
    lm(prefix, ids, mask).loss.backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
    assert all(p.grad is None for p in lm.parameters())
    with pytest.raises(ValueError, match="prefix"):
        lm(torch.randn(2, 4, 31), ids, mask)
    spec = to_spec(lm)
    assert spec["init_args"] == {"path": llama_folder[0], "frozen": True, "dtype": "float32"}
    assert build(spec).vocab_size == 19


def test_lm_dtype_and_unfrozen(llama_folder):
    lm = HFCausalLM(llama_folder[0], dtype="bfloat16", frozen=False)
    assert next(lm.parameters()).dtype == torch.bfloat16 and lm.training
    ids, mask = lm.tokenize(["a cat"], max_length=8)
    assert lm(torch.randn(1, 2, 32), ids, mask).loss.dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        HFCausalLM(llama_folder[0], dtype="int8")
