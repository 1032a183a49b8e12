"""One pass over the eval shards -> every metric, the pinned protocol and what was evaluated, as one JSON-ready dict.

Per batch: x -> tokenizer -> indices, Z (codebook histogram, feature cosine); decode(indices) with one seeded
generator -> PSNR / SSIM (/ LPIPS / rFID); the sigmoid head's image embedding of Z (zero-shot, retrieval); the caption
head's teacher-forced loss. Batches come in shard order from one `ShardReader` in this process, so the same command
on the same files gives the same numbers (on the same device and versions).
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf

from armkit.recipes.data.reader import ShardReader
from armkit.recipes.evaluation.load import Loaded
from armkit.recipes.evaluation.metrics import (
    CodeHistogram,
    balanced_top1,
    code_perplexity,
    codebook_usage,
    retrieval_r1,
    topk_correct,
)
from armkit.recipes.evaluation.protocol import DEFINITIONS, RESIZE, Protocol
from armkit.recipes.evaluation.provenance import git_state, package_versions, shards_fingerprint
from armkit.recipes.evaluation.reconstruction import ReconstructionMetrics
from armkit.recipes.evaluation.zeroshot import class_names, read_meta, text_classifier
from armkit.tokenizer.losses import CaptionLoss, SigmoidLoss

FORMAT = "armkit.eval"
FORMAT_VERSION = 1


def first_of_type(loaded: Loaded, cls: type) -> tuple[str, Any] | tuple[None, None]:
    found = loaded.heads.of_type(cls) if loaded.heads is not None else []
    return found[0] if found else (None, None)


def compared_size(loaded: Loaded) -> int:
    """S: the decoder's (square) image size, else the encoder's input size."""
    h, w = loaded.tokenizer.image_size
    if h != w:
        raise ValueError(f"the tokenizer's images are {h}x{w}; armkit eval compares square images (the shard reader "
                         "centre-crops squares)")
    return int(h)


def batched(texts: list[str], size: int):
    for i in range(0, len(texts), size):
        yield texts[i:i + size]


@torch.no_grad()
def evaluate(loaded: Loaded, data: str | Path, protocol: Protocol, *, classes: list[str] | None = None,
             lpips_weights: str | Path | None = None, fid_weights: str | Path | None = None,
             device: str = "cpu", command: str | None = None) -> dict[str, Any]:
    """Evaluate `loaded` on the shards `data` (a folder's `{protocol.split}-*.tar`, a .tar, a glob or a pattern)."""
    started = time.time()
    torch.manual_seed(protocol.seed)
    tok = loaded.tokenizer.to(device).eval()
    if loaded.heads is not None:
        loaded.heads.to(device).eval()
    sig_name, sig = first_of_type(loaded, SigmoidLoss)
    cap_name, cap = first_of_type(loaded, CaptionLoss)
    size = compared_size(loaded)
    reader = ShardReader(str(data), image_size=size, batch_size=protocol.batch_size, limit=protocol.limit,
                         split=protocol.split)
    # The encoder reads each image at its own input size, as in training, not the S x S target blown up to it.
    enc_size = tuple(tok.encoder.image_size)
    enc_reader = None
    if enc_size != (size, size) and enc_size[0] == enc_size[1]:
        enc_reader = ShardReader(str(data), image_size=enc_size[0], batch_size=protocol.batch_size,
                                 limit=protocol.limit, split=protocol.split)
    meta = read_meta(data)
    names, names_from = class_names(meta, classes)

    skipped: dict[str, str] = {}
    recon = None
    if tok.decoder is not None:
        recon = ReconstructionMetrics(image_size=(size, size), lpips_net=protocol.lpips_net,
                                      lpips_weights=lpips_weights, fid_weights=fid_weights, device=device)
        skipped.update({k: r["skipped"] for k, r in recon.records.items() if "skipped" in r})
    else:
        for key in ("psnr", "ssim", "lpips", "rfid"):
            skipped[key] = "the tokenizer has no decoder"
    gen = torch.Generator(device=device).manual_seed(protocol.seed)
    codes = CodeHistogram(tok.codebook_size)
    image_emb, texts, labels = [], [], []
    nll_sum, nll_tokens, cos_sum, cos_count, count = 0.0, 0.0, 0.0, 0, 0
    for batch, enc_batch in zip(reader, enc_reader or itertools.repeat(None)):
        images = batch["image"].to(device)  # [B, 3, S, S]
        if enc_batch is not None and list(enc_batch["key"]) != list(batch["key"]):
            raise RuntimeError("armkit eval: the encoder-size and target-size readers went out of step")
        out = tok(enc_batch["image"].to(device) if enc_batch is not None else images)
        count += images.shape[0]
        codes.update(out.indices)
        if out.z.shape == out.features.shape:
            cos = nnf.cosine_similarity(out.z.float(), out.features.float(), dim=-1)  # [B, N]
            cos_sum, cos_count = cos_sum + float(cos.double().sum()), cos_count + cos.numel()
        if recon is not None:
            x_hat = tok.decode(out.indices, steps=protocol.steps, sampler=protocol.sampler,
                               guidance=protocol.guidance, generator=gen)
            recon.update(x_hat, images)
        if sig is not None:
            image_emb.append(sig.image_embedding(out.z).float().cpu())  # [B, E]
            texts += [str(t) for t in batch[sig.text_key]]
            labels.append(batch["cls"].cpu())
        if cap is not None:
            loss, n = caption_nll(cap, out, batch, tok)
            nll_sum, nll_tokens = nll_sum + loss * n, nll_tokens + n
    if count == 0:
        raise ValueError(f"no samples to evaluate in {data} (split {protocol.split!r}, limit {protocol.limit})")

    bits = tok.quantizer.bits_per_token
    metrics: dict[str, Any] = {
        "psnr": None, "ssim": None, "lpips": None, "rfid": None,
        "zeroshot_top1": None, "zeroshot_top1_balanced": None, "zeroshot_top5": None,
        "retrieval_i2t_r1": None, "retrieval_t2i_r1": None,
        "caption_nll": None,
        "feature_cosine": cos_sum / cos_count if cos_count else None,
        "codebook_usage": 100.0 * codebook_usage(codes.counts),
        "code_perplexity": code_perplexity(codes.counts),
        "code_perplexity_normalised": code_perplexity(codes.counts) / tok.codebook_size,
        "codebook_size": tok.codebook_size, "tokens_counted": codes.tokens,
        "tokens_per_image": tok.num_tokens, "bits_per_token": bits, "bits_per_image": tok.num_tokens * bits,
    }
    if not cos_count:
        skipped["feature_cosine"] = "Z and the encoder's features differ in width"
    if recon is not None:
        metrics.update(recon.compute())
    zeroshot: dict[str, Any] = {"classes_from": names_from}
    if sig is None:
        for key in ("zeroshot_top1", "zeroshot_top1_balanced", "zeroshot_top5", "retrieval_i2t_r1",
                    "retrieval_t2i_r1"):
            skipped[key] = loaded.heads_note or "the loss heads hold no SigmoidLoss"
    else:
        image = torch.cat(image_emb)  # [n, E]
        text = torch.cat([sig.text_embedding(t).float().cpu() for t in batched(texts, protocol.batch_size)])
        similarity = image @ text.T  # [n, n]
        metrics["retrieval_i2t_r1"] = 100.0 * retrieval_r1(similarity, texts, texts)
        metrics["retrieval_t2i_r1"] = 100.0 * retrieval_r1(similarity.T, texts, texts)
        zeroshot.update(zero_shot(sig, image, torch.cat(labels), names, protocol, metrics, skipped))
    if cap is None:
        skipped["caption_nll"] = loaded.heads_note or "the loss heads hold no CaptionLoss"
    elif nll_tokens:
        metrics["caption_nll"] = nll_sum / nll_tokens

    shards = reader.shards
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "metrics": metrics,
        "skipped": skipped,
        "definitions": dict(DEFINITIONS),
        "protocol": {
            **protocol.as_dict(),
            "data": {"path": str(Path(str(data)).expanduser().resolve()), "split": protocol.split, "count": count,
                     "skipped_samples": reader.skipped, "shards": [Path(s).name for s in shards],
                     "fingerprint": shards_fingerprint(shards),
                     "source": (meta or {}).get("source"), "licence": (meta or {}).get("licence")},
            "image_size": [size, size], "resize": RESIZE,
            "decode": {"sampler": protocol.sampler, "steps": protocol.steps, "guidance": protocol.guidance,
                       "generator": f"one torch.Generator on {device} seeded {protocol.seed}, drawn batch after batch "
                                    f"of {protocol.batch_size}"},
            "zeroshot": zeroshot,
            "heads": {"sigmoid": sig_name, "sigmoid_text_key": getattr(sig, "text_key", None),
                      "caption": cap_name, "caption_text_key": getattr(cap, "text_key", None)},
            "reconstruction": recon.records if recon is not None else None,
            "device": device, "versions": package_versions(), "git": git_state(), "command": command,
        },
        "tokenizer": loaded.source,
        "timing": {"seconds": round(time.time() - started, 3), "note": "wall time; not part of the result"},
    }


def caption_nll(cap: CaptionLoss, out: Any, batch: dict[str, Any], tok: Any) -> tuple[float, float]:
    """(mean NLL per caption token, caption tokens) of the whole batch: the loss's `max_samples` training-cost knob
    is lifted, so that every eval caption counts."""
    kept, cap.max_samples = getattr(cap, "max_samples", None), None
    try:
        loss, logs = cap(out, batch, tok)
    finally:
        cap.max_samples = kept
    return float(loss), float(logs["tokens"])


def zero_shot(sig: SigmoidLoss, image: torch.Tensor, labels: torch.Tensor, names: list[str] | None,
              protocol: Protocol, metrics: dict[str, Any], skipped: dict[str, str]) -> dict[str, Any]:
    """Fills zeroshot_top1/top5 in `metrics` (or reasons in `skipped`); returns what the protocol records."""
    if names is None:
        for key in ("zeroshot_top1", "zeroshot_top1_balanced", "zeroshot_top5"):
            skipped[key] = "no class names (meta.json 'classes' or --classes)"
        return {}
    keep = (labels >= 0) & (labels < len(names))  # [n]
    if labels.max() >= len(names):
        raise ValueError(f"sample label {int(labels.max())} has no class name: {len(names)} names given")
    if not keep.any():
        for key in ("zeroshot_top1", "zeroshot_top1_balanced", "zeroshot_top5"):
            skipped[key] = "no eval sample has a class label (.cls)"
        return {"classes": names}
    classifier = text_classifier(sig.text_embedding, names, protocol.templates).cpu()  # [C, E]
    scores = image[keep] @ classifier.T  # [m, C]
    m = int(keep.sum())
    metrics["zeroshot_top1"] = 100.0 * topk_correct(scores, labels[keep], 1) / m
    metrics["zeroshot_top1_balanced"] = 100.0 * balanced_top1(scores, labels[keep])
    if len(names) >= 5:
        metrics["zeroshot_top5"] = 100.0 * topk_correct(scores, labels[keep], 5) / m
    else:
        skipped["zeroshot_top5"] = f"only {len(names)} classes"
    majority = 100.0 * float(torch.bincount(labels[keep]).max()) / m  # always guessing the commonest class
    return {"classes": names, "labelled": m, "chance_top1": 100.0 / len(names), "majority_top1": majority}


def finite_or_none(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings (a perfect reconstruction has PSNR inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value


def save_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write metrics.json (sorted keys, 2-space indent, inf/nan as strings); returns the path."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite_or_none(report), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path
