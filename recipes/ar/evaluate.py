"""Evaluation of an AR model with its protocol, offline: `armkit eval-ar --model M --codes CODES --images SHARDS`.

Metrics (each defined again in the JSON's "protocol"):
- text-to-image: Fréchet distance between generated images and the real held-out images, in the pooled features of
  a pretrained network (default EfficientNet-Lite0 ImageNet, the one pretrained image network installable offline
  here; note it is also the demo tokenizer's teacher, so it may favour that tokenizer's images). Real images are
  first brought to the tokenizer's output size, so both sides have the same resolution.
- category accuracy of generated images: a linear probe trained on the *real* training images' features (not on
  anything the AR model produced) labels each generated image; the target is the label of the held-out sample whose
  caption was the prompt. The probe's accuracy on real held-out images is reported beside it as its ceiling.
- understanding: teacher-forced caption NLL (nats per token) and next-token accuracy on held-out captions.
- editing: feature distance (1 - cosine) and pixel MSE between each edit and the real target variant, with the
  same distances for the unedited source as the baseline an edit should beat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.backbones.generate import Sampling, generate_image
from armkit.common.weights import load_state_dict_file, local_path
from armkit.recipes.ar.codes import CodeReader
from armkit.recipes.data.reader import ShardReader
from armkit.recipes.evaluation.probe import fit_probe, to_linear

TOP_K_100 = Sampling(temperature=1.0, top_k=100)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class PretrainedFeatures(nn.Module):
    """images [B, 3, H, W] in [0, 1] -> pooled features [B, D] of a timm network (classifier removed), read at
    `size` px. `weights`: a local file (e.g. `asset:efficientnet_lite0`); None: random init (tests only)."""

    def __init__(self, *, model_name: str = "efficientnet_lite0", weights: str | None = None, size: int = 224) -> None:
        super().__init__()
        import timm

        self.net = timm.create_model(model_name, pretrained=False, num_classes=0).eval()
        if weights is not None:
            state = {k: v for k, v in load_state_dict_file(local_path(weights)).items()
                     if not k.startswith("classifier.")}
            self.net.load_state_dict(state, strict=True)
        self.size, self.source = size, weights or "random init"
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """In chunks of `batch_size`: 2,000 images at 224 px in one forward need over 20 GB of activations."""
        out = []
        for chunk in images.split(batch_size):
            x = nnf.interpolate(chunk.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
            out.append(self.net((x - self.mean) / self.std).float())
        return torch.cat(out) if out else images.new_zeros(0, self.net.num_features)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features a [N, D] and b [M, D] (pytorch-fid's formula)."""
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():  # singular product: nudge both diagonals, as pytorch-fid does
        eps = np.eye(cov_a.shape[0]) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def train_probe(features: torch.Tensor, labels: torch.Tensor, *, classes: int, steps: int = 300,
                seed: int = 0) -> nn.Linear:
    """A linear softmax probe on standardised features: evaluation/probe.py's `fit_probe` with its seeded AdamW
    solver (full-batch, lr 1e-2, weight decay 1e-3), as an nn.Linear."""
    return to_linear(fit_probe(features, labels, classes, solver="adamw", steps=steps, lr=1e-2, l2=1e-3, seed=seed,
                               standardise=False))


@torch.no_grad()
def caption_metrics(model: ARModel, samples: list[dict[str, Any]], *, batch_size: int = 16) -> dict[str, float]:
    """Teacher-forced NLL per caption token (eos included) and next-token accuracy, on understanding sequences."""
    v, codec = model.vocab, model.codec
    nll, correct, count = 0.0, 0, 0
    rows = [s for s in samples if s["caption"]]
    for start in range(0, len(rows), batch_size):
        seqs = [S.understanding(v, s["codes"].tolist(), s["grid"], codec.encode(s["caption"]), codec.eos)
                for s in rows[start:start + batch_size]]
        ids, mask, labels = (t.to(next(model.parameters()).device) for t in S.collate(v, seqs))
        hidden = model.trunk(ids, mask).hidden[:, :-1]
        targets = labels[:, 1:]
        keep = targets != S.IGNORE
        logits = model.text_logits(hidden[keep]).float()
        nll += nnf.cross_entropy(logits, targets[keep], reduction="sum").item()
        correct += int((logits.argmax(-1) == targets[keep]).sum())
        count += int(keep.sum())
    return {"caption_nll": nll / max(count, 1), "caption_token_accuracy": correct / max(count, 1),
            "caption_tokens": count, "captions": len(rows)}


def decode(tok: Any, codes: torch.Tensor, *, steps: int, seed: int, batch_size: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([tok.decode(codes[i:i + batch_size], steps=steps, generator=gen).cpu()
                      for i in range(0, len(codes), batch_size)])


def real_images(shards: str, split: str, size: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor, list]:
    images, labels, keys = [], [], []
    for batch in ShardReader(shards, image_size=size, batch_size=64, limit=limit, split=split):
        images.append(batch["image"])
        labels.append(batch["cls"])
        keys += batch["key"]
    return torch.cat(images), torch.cat(labels), keys


@torch.no_grad()
def evaluate_ar(*, model: ARModel, tok: Any, codes: str, images: str, features: nn.Module, limit: int = 64,
                probe_limit: int | None = 2000, steps: int = 25, seed: int = 0, guidance: float = 1.5,
                image_guidance: float = 1.25, sampling: Sampling = TOP_K_100,
                batch_size: int = 16) -> dict[str, Any]:
    """The metrics of the module docstring on up to `limit` held-out samples (and edit pairs)."""
    v, codec, grid = model.vocab, model.codec, tuple(tok.grid)
    size = int(tok.image_size[0])
    held = list(CodeReader(codes, image_size=1, split="val"))
    plain = [s for s in held if s["edit"] is None][:limit]
    pairs = [s for s in held if s["edit"] is not None][:limit]
    result: dict[str, Any] = {"understanding": caption_metrics(model, plain, batch_size=batch_size)}

    # text-to-image: one image per held-out caption, against the real held-out images
    gen = torch.Generator().manual_seed(seed)
    generated = []
    for start in range(0, len(plain), batch_size):
        chunk = plain[start:start + batch_size]
        cond = [S.text_to_image_prompt(v, codec.encode(s["caption"]), grid) for s in chunk]
        uncond = [S.text_to_image_prompt(v, [], grid)] * len(chunk)
        generated.append(generate_image(model, cond, grid, weaker=[uncond], scales=[guidance], sampling=sampling,
                                        generator=gen))
    fake = decode(tok, torch.cat(generated), steps=steps, seed=seed)
    real, real_labels, real_keys = real_images(images, "val", size, None)
    by_key = {k: i for i, k in enumerate(real_keys)}
    f_fake, f_real = features(fake), features(real)
    train, train_labels, _ = real_images(images, "train", size, probe_limit)
    classes = int(max(train_labels.max(), real_labels.max())) + 1
    f_train = features(train)
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    with torch.enable_grad():
        probe = train_probe((f_train - mu) / sd, train_labels, classes=classes, seed=seed)
    want = torch.tensor([s["label"] for s in plain])
    result["text_to_image"] = {
        "samples": len(plain), "real_images": len(real),
        "frechet_distance": frechet_distance(f_fake, f_real),
        "frechet_distance_real_train_vs_val": frechet_distance(f_train[: len(real)], f_real),
        "probe_accuracy_generated": float((probe((f_fake - mu) / sd).argmax(-1) == want).float().mean()),
        "probe_accuracy_real_val": float((probe((f_real - mu) / sd).argmax(-1) == real_labels).float().mean()),
        "chance": 1.0 / classes,
    }

    # editing: the edit against the real target variant, and the unedited source as the baseline
    if pairs:
        edited, sources, targets = [], [], []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            args = [(s["edit"]["source"].tolist(), s["edit"]["source_grid"], codec.encode(s["edit"]["instruction"]))
                    for s in chunk]
            full = [S.editing_prompt(v, src, sg, ins, grid) for src, sg, ins in args]
            img_only = [S.editing_prompt(v, src, sg, ins, grid, drop_text=True) for src, sg, ins in args]
            none = [S.editing_prompt(v, src, sg, ins, grid, drop_text=True, drop_image=True) for src, sg, ins in args]
            edited.append(generate_image(model, full, grid, weaker=[img_only, none],
                                         scales=[guidance, image_guidance], sampling=sampling, generator=gen))
            sources += [s["edit"]["source"] for s in chunk]
            targets += [s["key"].removeprefix("edit-") for s in chunk]
        out = decode(tok, torch.cat(edited), steps=steps, seed=seed)
        src = decode(tok, torch.stack(sources), steps=steps, seed=seed)
        known = [i for i, k in enumerate(targets) if k in by_key]
        if known:
            tgt = real[[by_key[targets[i]] for i in known]]
            f_t, f_o, f_s = features(tgt), features(out[known]), features(src[known])
            result["editing"] = {
                "pairs": len(known),
                "feature_distance_edit_to_target": float(1 - nnf.cosine_similarity(f_o, f_t).mean()),
                "feature_distance_source_to_target": float(1 - nnf.cosine_similarity(f_s, f_t).mean()),
                "pixel_mse_edit_to_target": float(((out[known] - tgt) ** 2).mean()),
                "pixel_mse_source_to_target": float(((src[known] - tgt) ** 2).mean()),
            }
    result["protocol"] = {
        "held_out": "the val split of the code shards (never trained on) and the image shards' val split",
        "limit": limit, "seed": seed, "decoder_steps": steps, "guidance": guidance, "image_guidance": image_guidance,
        "sampling": sampling._asdict(), "features": getattr(features, "source", "given"),
        "features_note": "EfficientNet-Lite0 (ImageNet) is also the demo tokenizer's teacher",
        "frechet_distance": "‖μa−μb‖² + tr(Σa + Σb − 2(ΣaΣb)^½) on pooled features (pytorch-fid's formula)",
        "probe": "linear softmax probe, AdamW 300 full-batch steps, on standardised features of up to "
                 f"{probe_limit} real training images; generated images are labelled by their prompt's sample",
        "caption_nll": "teacher-forced mean NLL per caption token (eos included), nats",
        "editing": "1 - cosine of pooled features and pixel MSE to the real target variant at the decoder's size",
    }
    return result
