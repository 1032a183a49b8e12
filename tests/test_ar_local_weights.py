"""An ARModel from a local transformers folder (weights + tokenizer): weights and text vocabulary kept, and the
export rebuilds it without that folder."""

from __future__ import annotations

import torch

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.backbones.codec import HFCodec


def local_llama(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    words = ["<eos>", "<unk>", "a", "red", "blue", "circle", "square", "make", "it"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")
    config = AutoConfig.for_model("llama", vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(5)
    lm = AutoModelForCausalLM.from_config(config)
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return lm


def test_local_weights_keep_the_lm_and_its_vocabulary_and_export_without_the_folder(tmp_path):
    from armkit.recipes.ar.export import load_ar, save_ar

    lm = local_llama(tmp_path / "llama")
    model = ARModel(path=str(tmp_path / "llama"), codebook_size=12, levels=[3, 4], head="factorized", max_grid=2)
    assert isinstance(model.codec, HFCodec) and model.vocab.text_size == 16
    assert model.codec.encode("a red circle") == [2, 3, 5] and model.codec.eos == 0
    for k, v in lm.state_dict().items():
        assert torch.equal(model.lm.state_dict()[k], v), k  # the local weights, not a random init
    ids = torch.tensor([[2, 3, 5]])
    assert torch.allclose(model.text_logits(model.trunk(ids).hidden)[..., :16], lm(ids).logits, atol=1e-5)

    save_ar(model, tmp_path / "export", tokenizer={"fingerprint": "x"})
    (tmp_path / "llama" / "model.safetensors").unlink()  # the export must not need the original folder
    again = load_ar(tmp_path / "export").model
    v = model.vocab
    seq = S.text_to_image(v, model.codec.encode("a blue square"), [1, 5, 7, 11], (2, 2))
    batch = S.collate(v, [seq])
    assert torch.allclose(model.eval()(*batch).loss, again(*batch).loss)
    assert again.codec.encode("make it red") == [7, 8, 3]
