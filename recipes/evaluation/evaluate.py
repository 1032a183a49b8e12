"""One pass over the eval shards -> every metric, the pinned protocol and what was evaluated, as one JSON-ready dict.

Per batch: x at the encoder's input size (what training encodes) -> tokenizer -> indices, Z (codebook histogram,
feature cosine); decode(indices) with one seeded generator, compared with x resized to the decoder's size as the pixel
loss resizes it -> PSNR / SSIM (/ LPIPS / rFID); the sigmoid head's image embedding of Z (zero-shot, retrieval; only
if that loss trained); Z through the teacher's own pooling head (teacher zero-shot, where it has one); the mean of Z
over tokens (linear probe, fitted on the train split); the caption head's teacher-forced loss. Batches come in shard
order from one `ShardReader` in this process, so the same command on the same files gives the same numbers (on the
same device and versions).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf

from armkit.recipes.data.reader import ShardReader
from armkit.recipes.evaluation.load import Loaded
from armkit.recipes.evaluation.metrics import CodeHistogram, code_perplexity, codebook_usage, retrieval_r1
from armkit.recipes.evaluation.probe import linear_probe
from armkit.recipes.evaluation.protocol import DEFINITIONS, RESIZE, Protocol
from armkit.recipes.evaluation.provenance import git_state, package_versions, shards_fingerprint
from armkit.recipes.evaluation.reconstruction import ReconstructionMetrics
from armkit.recipes.evaluation.zeroshot import class_names, label_stats, read_meta, zero_shot
from armkit.tokenizer.losses import CaptionLoss, SigmoidLoss

FORMAT = "armkit.eval"
FORMAT_VERSION = 1


def first_of_type(loaded: Loaded, cls: type) -> tuple[str, Any] | tuple[None, None]:
    found = loaded.heads.of_type(cls) if loaded.heads is not None else []
    return found[0] if found else (None, None)


def square(size: tuple[int, int], what: str) -> int:
    h, w = (int(v) for v in size)
    if h != w:
        raise ValueError(f"the {what} is {h}x{w}; armkit eval uses square images (the shard reader centre-crops "
                         "squares)")
    return h


def encoder_size(loaded: Loaded) -> int:
    """E: the encoder's (square) input size, what training encodes; eval reads the images at E."""
    return square(loaded.tokenizer.encoder.image_size, "encoder's input size")


def compared_size(loaded: Loaded) -> int:
    """S: the decoder's (square) image size, else the encoder's input size; reconstructions are compared at S."""
    return square(loaded.tokenizer.image_size, "tokenizer's image size")


def to_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """images [B, 3, h, w] in [0, 1] -> [B, 3, size, size], resized as the pixel loss resizes them in training."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return nnf.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def batched(texts: list[str], size: int):
    for i in range(0, len(texts), size):
        yield texts[i:i + size]


def teacher_pool(tok: Any, sig: SigmoidLoss | None) -> tuple[Callable | None, str | None]:
    """(the frozen teacher's pooling head, None) or (None, why teacher zero-shot is skipped)."""
    pool = getattr(tok.encoder, "pool_tokens", None)
    if not callable(pool):
        return None, f"the teacher {type(tok.encoder).__name__} has no pooling head (pool_tokens)"
    if sig is None:
        return None, "no text tower: the loss heads hold no SigmoidLoss"
    return pool, None


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
    sig_trained = sig is not None and sig.enabled
    cap_trained = cap is not None and cap.enabled
    enc_size, size = encoder_size(loaded), compared_size(loaded)
    reader = ShardReader(str(data), image_size=enc_size, batch_size=protocol.batch_size, limit=protocol.limit,
                         split=protocol.split)
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
    pool, pool_note = teacher_pool(tok, sig)
    gen = torch.Generator(device=device).manual_seed(protocol.seed)
    codes = CodeHistogram(tok.codebook_size)
    image_emb, teacher_emb, pooled_z, texts, labels = [], [], [], [], []
    nll_sum, nll_tokens, cos_sum, cos_count, count = 0.0, 0.0, 0.0, 0, 0
    for batch in reader:
        images = batch["image"].to(device)  # [B, 3, E, E]: what training encodes
        out = tok(images)
        count += images.shape[0]
        codes.update(out.indices)
        labels.append(batch["cls"].cpu())
        pooled_z.append(out.z.float().mean(dim=1).cpu())  # [B, D] for the linear probe
        if out.z.shape == out.features.shape:
            cos = nnf.cosine_similarity(out.z.float(), out.features.float(), dim=-1)  # [B, N]
            cos_sum, cos_count = cos_sum + float(cos.double().sum()), cos_count + cos.numel()
        if recon is not None:
            x_hat = tok.decode(out.indices, steps=protocol.steps, sampler=protocol.sampler,
                               guidance=protocol.guidance, generator=gen)
            recon.update(x_hat, to_size(images, size))  # compared at the decoder's size S
        if pool is not None:
            try:
                teacher_emb.append(nnf.normalize(pool(out.z).float(), dim=-1).cpu())  # [B, E]
            except NotImplementedError as e:
                pool, pool_note = None, f"the teacher's pooling head cannot pool Z: {e}"
        if sig is not None:
            texts += [str(t) for t in batch[sig.text_key]]
        if sig_trained:
            image_emb.append(sig.image_embedding(out.z, tok).float().cpu())  # [B, E]
        if cap_trained:
            loss, n = caption_nll(cap, out, batch, tok)
            nll_sum, nll_tokens = nll_sum + loss * n, nll_tokens + n
    if count == 0:
        raise ValueError(f"no samples to evaluate in {data} (split {protocol.split!r}, limit {protocol.limit})")
    labels = torch.cat(labels)

    bits = tok.quantizer.bits_per_token
    metrics: dict[str, Any] = {
        "psnr": None, "ssim": None, "lpips": None, "rfid": None,
        "zeroshot_top1": None, "zeroshot_top1_balanced": None, "zeroshot_top5": None,
        "teacher_zeroshot_top1": None, "teacher_zeroshot_top1_balanced": None,
        "probe_top1": None, "probe_top1_balanced": None,
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
    zeroshot: dict[str, Any] = {"classes_from": names_from, "head_trained": sig_trained,
                                **(label_stats(labels, names) if names is not None else {})}
    head_keys = ("zeroshot_top1", "zeroshot_top1_balanced", "zeroshot_top5", "retrieval_i2t_r1", "retrieval_t2i_r1")
    if sig is None:
        skipped.update(dict.fromkeys(head_keys, loaded.heads_note or "the loss heads hold no SigmoidLoss"))
    elif not sig_trained:
        skipped.update(dict.fromkeys(head_keys, f"the sigmoid loss {sig_name!r} was disabled in training: its head "
                                                "is at random init, at chance by construction (see "
                                                "teacher_zeroshot_* and probe_*)"))
    else:
        image = torch.cat(image_emb)  # [n, E]
        text = torch.cat([sig.text_embedding(t).float().cpu() for t in batched(texts, protocol.batch_size)])
        similarity = image @ text.T  # [n, n]
        metrics["retrieval_i2t_r1"] = 100.0 * retrieval_r1(similarity, texts, texts)
        metrics["retrieval_t2i_r1"] = 100.0 * retrieval_r1(similarity.T, texts, texts)
        zeroshot.update(zero_shot(sig.text_embedding, image, labels, names, protocol, metrics, skipped))
    teacher_keys = ("teacher_zeroshot_top1", "teacher_zeroshot_top1_balanced")
    if pool is not None and teacher_emb and teacher_emb[0].shape[-1] != sig.text_tower.width:
        pool_note = (f"the teacher's pooled width {teacher_emb[0].shape[-1]} differs from the text tower's "
                     f"{sig.text_tower.width}")
    if pool_note is not None:
        skipped.update(dict.fromkeys(teacher_keys, pool_note))
    else:
        zeroshot.update(zero_shot(sig.text_embedding, torch.cat(teacher_emb), labels, names, protocol, metrics,
                                  skipped, prefix="teacher_", top5=False))
    probe = linear_probe(tok, data, protocol, torch.cat(pooled_z), labels, device, metrics, skipped,
                         eval_shards=reader.shards, image_size=enc_size)
    if cap is None:
        skipped["caption_nll"] = loaded.heads_note or "the loss heads hold no CaptionLoss"
    elif not cap_trained:
        skipped["caption_nll"] = f"the caption loss {cap_name!r} was disabled in training: its adapter is untrained"
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
            "image_size": [size, size], "encoder_image_size": [enc_size, enc_size], "resize": RESIZE,
            "decode": {"sampler": protocol.sampler, "steps": protocol.steps, "guidance": protocol.guidance,
                       "generator": f"one torch.Generator on {device} seeded {protocol.seed}, drawn batch after batch "
                                    f"of {protocol.batch_size}"},
            "zeroshot": zeroshot,
            "probe": probe,
            "heads": {"sigmoid": sig_name, "sigmoid_text_key": getattr(sig, "text_key", None),
                      "sigmoid_trained": sig_trained, "sigmoid_image_head": getattr(sig, "image_head", None),
                      "caption": cap_name, "caption_text_key": getattr(cap, "text_key", None),
                      "caption_trained": cap_trained},
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
