"""armkit eval encodes each image as training does, at the encoder's input size, and compares the decode with the
image at the decoder's size. Before, a 32 px decoder meant the encoder saw 32 px images blown up to its 128 px input,
features the tokenizer never trained on (on the demo's emoji: relative L2 difference 0.49 from the training input's)."""

from __future__ import annotations

import torch
import torch.nn.functional as nnf


def test_eval_encodes_at_the_encoders_size_and_compares_at_the_decoders(tiny_shards):
    from armkit.decoders import PixelDiT
    from armkit.recipes.data.reader import ShardReader
    from armkit.recipes.evaluation.evaluate import evaluate
    from armkit.recipes.evaluation.load import Loaded
    from armkit.recipes.evaluation.protocol import Protocol
    from armkit.tokenizer import Tokenizer
    from armkit.tokenizer.encoders import TimmEncoder

    enc = TimmEncoder("vit_tiny_patch16_224", image_size=64, model_kwargs={"depth": 1})
    tok = Tokenizer(encoder=enc, levels=[8, 5, 5], projection="mlp", proj_width=32,
                    decoder=PixelDiT(size="tiny", image_size=32, patch_size=8, cond_dim=enc.width)).eval()
    found = evaluate(Loaded(tok, None, {"kind": "test"}, "no heads"), tiny_shards,
                     Protocol(batch_size=5, steps=2))["metrics"]

    x64 = torch.cat([b["image"] for b in ShardReader(str(tiny_shards), image_size=64, batch_size=5, split="val")])
    with torch.no_grad():
        out = tok(x64)
    expected = nnf.cosine_similarity(out.z, out.features, dim=-1).mean().item()
    assert abs(found["feature_cosine"] - expected) < 1e-5, (found["feature_cosine"], expected)
    assert found["psnr"] is not None  # decodes were compared, at 32 px
