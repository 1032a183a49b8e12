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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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


class Heads(NamedTuple):
    """The loss heads evaluation reads: the first SigmoidLoss and CaptionLoss, and whether each trained."""

    sig_name: str | None
    sig: SigmoidLoss | None
    sig_trained: bool
    cap_name: str | None
    cap: CaptionLoss | None
    cap_trained: bool

    @classmethod
    def of(cls, loaded: Loaded) -> Heads:
        sig_name, sig = first_of_type(loaded, SigmoidLoss)
        cap_name, cap = first_of_type(loaded, CaptionLoss)
        return cls(sig_name, sig, sig is not None and sig.enabled, cap_name, cap, cap is not None and cap.enabled)


@dataclass
class Pass:
    """What the one pass over the eval shards accumulates; every metric is computed from it afterwards."""

    codes: CodeHistogram  # codebook histogram of every token
    count: int = 0  # images seen
    labels: list[torch.Tensor] = field(default_factory=list)  # [B] per batch (.cls, -1: none)
    pooled_z: list[torch.Tensor] = field(default_factory=list)  # [B, D]: Z mean over tokens, for the probe
    cos_sum: float = 0.0  # sum of per-token cos(Z, encoder features), where their widths match
    cos_count: int = 0
    image_emb: list[torch.Tensor] = field(default_factory=list)  # [B, E]: the trained sigmoid head's embedding
    texts: list[str] = field(default_factory=list)  # the sigmoid loss's texts, one per image
    teacher_emb: list[torch.Tensor] = field(default_factory=list)  # [B, E]: Z through the teacher's pooling head
    teacher_note: str | None = None  # why teacher zero-shot is skipped (None: it runs)
    nll_sum: float = 0.0  # caption NLL summed over caption tokens
    nll_tokens: float = 0.0


def accumulate(tok: Any, reader: ShardReader, heads: Heads, recon: ReconstructionMetrics | None,
               protocol: Protocol, *, size: int, device: str) -> Pass:
    """One pass over the shards: encode each batch at the encoder's size; decode it (one generator seeded
    `protocol.seed`, drawn batch after batch) into `recon`, compared at `size`; gather what the metrics need."""
    sig, cap = heads.sig, heads.cap
    pool, note = teacher_pool(tok, sig)
    acc = Pass(codes=CodeHistogram(tok.codebook_size), teacher_note=note)
    gen = torch.Generator(device=device).manual_seed(protocol.seed)
    for batch in reader:
        images = batch["image"].to(device)  # [B, 3, E, E]: what training encodes
        out = tok(images)
        acc.count += images.shape[0]
        acc.codes.update(out.indices)
        acc.labels.append(batch["cls"].cpu())
        acc.pooled_z.append(out.z.float().mean(dim=1).cpu())  # [B, D] for the linear probe
        if out.z.shape == out.features.shape:
            cos = nnf.cosine_similarity(out.z.float(), out.features.float(), dim=-1)  # [B, N]
            acc.cos_sum, acc.cos_count = acc.cos_sum + float(cos.double().sum()), acc.cos_count + cos.numel()
        if recon is not None:
            x_hat = tok.decode(out.indices, steps=protocol.steps, sampler=protocol.sampler,
                               guidance=protocol.guidance, generator=gen)
            recon.update(x_hat, to_size(images, size))  # compared at the decoder's size S
        if pool is not None:
            try:
                acc.teacher_emb.append(nnf.normalize(pool(out.z).float(), dim=-1).cpu())  # [B, E]
            except NotImplementedError as e:
                pool, acc.teacher_note = None, f"the teacher's pooling head cannot pool Z: {e}"
        if sig is not None:
            acc.texts += [str(t) for t in batch[sig.text_key]]
        if heads.sig_trained:
            acc.image_emb.append(sig.image_embedding(out.z, tok).float().cpu())  # [B, E]
        if heads.cap_trained:
            loss, n = caption_nll(cap, out, batch, tok)
            acc.nll_sum, acc.nll_tokens = acc.nll_sum + loss * n, acc.nll_tokens + n
    return acc


Scores = tuple[dict[str, Any], dict[str, str]]  # (metrics, skipped: {metric: why it has no value})


def reconstruction_scores(recon: ReconstructionMetrics | None) -> Scores:
    """psnr / ssim (/ lpips / rfid) of the decoded images."""
    if recon is None:
        return {}, dict.fromkeys(("psnr", "ssim", "lpips", "rfid"), "the tokenizer has no decoder")
    return recon.compute(), {k: r["skipped"] for k, r in recon.records.items() if "skipped" in r}


def code_scores(tok: Any, acc: Pass) -> Scores:
    """Feature cosine, codebook usage and perplexity, and the token budget."""
    bits = tok.quantizer.bits_per_token
    metrics = {
        "feature_cosine": acc.cos_sum / acc.cos_count if acc.cos_count else None,
        "codebook_usage": 100.0 * codebook_usage(acc.codes.counts),
        "code_perplexity": code_perplexity(acc.codes.counts),
        "code_perplexity_normalised": code_perplexity(acc.codes.counts) / tok.codebook_size,
        "codebook_size": tok.codebook_size, "tokens_counted": acc.codes.tokens,
        "tokens_per_image": tok.num_tokens, "bits_per_token": bits, "bits_per_image": tok.num_tokens * bits,
    }
    skipped = {} if acc.cos_count else {"feature_cosine": "Z and the encoder's features differ in width"}
    return metrics, skipped


def head_scores(loaded: Loaded, heads: Heads, acc: Pass, labels: torch.Tensor, names: list[str] | None,
                protocol: Protocol) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Zero-shot and retrieval through the trained sigmoid head; also returns what the protocol records."""
    metrics: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    keys = ("zeroshot_top1", "zeroshot_top1_balanced", "zeroshot_top5", "retrieval_i2t_r1", "retrieval_t2i_r1")
    sig = heads.sig
    if sig is None:
        return metrics, dict.fromkeys(keys, loaded.heads_note or "the loss heads hold no SigmoidLoss"), {}
    if not heads.sig_trained:
        return metrics, dict.fromkeys(keys, f"the sigmoid loss {heads.sig_name!r} was disabled in training: its "
                                            "head is at random init, at chance by construction (see "
                                            "teacher_zeroshot_* and probe_*)"), {}
    image = torch.cat(acc.image_emb)  # [n, E]
    texts = acc.texts
    text = torch.cat([sig.text_embedding(t).float().cpu() for t in batched(texts, protocol.batch_size)])
    similarity = image @ text.T  # [n, n]
    metrics["retrieval_i2t_r1"] = 100.0 * retrieval_r1(similarity, texts, texts)
    metrics["retrieval_t2i_r1"] = 100.0 * retrieval_r1(similarity.T, texts, texts)
    record = zero_shot(sig.text_embedding, image, labels, names, protocol, metrics, skipped)
    return metrics, skipped, record


def teacher_scores(heads: Heads, acc: Pass, labels: torch.Tensor, names: list[str] | None,
                   protocol: Protocol) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Zero-shot of Z through the frozen teacher's own pooling head and the sigmoid loss's text tower."""
    metrics: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    note, sig = acc.teacher_note, heads.sig
    if note is None and acc.teacher_emb and acc.teacher_emb[0].shape[-1] != sig.text_tower.width:
        note = (f"the teacher's pooled width {acc.teacher_emb[0].shape[-1]} differs from the text tower's "
                f"{sig.text_tower.width}")
    if note is not None:
        return metrics, dict.fromkeys(("teacher_zeroshot_top1", "teacher_zeroshot_top1_balanced"), note), {}
    record = zero_shot(sig.text_embedding, torch.cat(acc.teacher_emb), labels, names, protocol, metrics, skipped,
                       prefix="teacher_", top5=False)
    return metrics, skipped, record


def probe_scores(tok: Any, data: str | Path, protocol: Protocol, acc: Pass, labels: torch.Tensor, device: str, *,
                 eval_shards: list[str], image_size: int) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """The linear probe on pooled Z (probe.py), fitted on the probe split, scored on the eval samples."""
    metrics: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    record = linear_probe(tok, data, protocol, torch.cat(acc.pooled_z), labels, device, metrics, skipped,
                          eval_shards=eval_shards, image_size=image_size)
    return metrics, skipped, record


def caption_scores(loaded: Loaded, heads: Heads, acc: Pass) -> Scores:
    """The caption head's teacher-forced NLL per caption token."""
    if heads.cap is None:
        return {}, {"caption_nll": loaded.heads_note or "the loss heads hold no CaptionLoss"}
    if not heads.cap_trained:
        return {}, {"caption_nll": f"the caption loss {heads.cap_name!r} was disabled in training: its adapter is "
                                   "untrained"}
    return ({"caption_nll": acc.nll_sum / acc.nll_tokens} if acc.nll_tokens else {}), {}


METRIC_KEYS = ("psnr", "ssim", "lpips", "rfid", "zeroshot_top1", "zeroshot_top1_balanced", "zeroshot_top5",
               "teacher_zeroshot_top1", "teacher_zeroshot_top1_balanced", "probe_top1", "probe_top1_balanced",
               "retrieval_i2t_r1", "retrieval_t2i_r1", "caption_nll")  # None unless measured (then: skipped[key])


@torch.no_grad()
def evaluate(loaded: Loaded, data: str | Path, protocol: Protocol, *, classes: list[str] | None = None,
             lpips_weights: str | Path | None = None, fid_weights: str | Path | None = None,
             device: str = "cpu", command: str | None = None, ar_probe: Any = None) -> dict[str, Any]:
    """Evaluate `loaded` on the shards `data` (a folder's `{protocol.split}-*.tar`, a .tar, a glob or a pattern).
    ar_probe: an `ar_probe.ARProbe` with steps > 0 adds the AR-friendliness metrics (ar_probe.py), trained on the
    folder's train split and scored on its held-out split."""
    started = time.time()
    torch.manual_seed(protocol.seed)
    tok = loaded.tokenizer.to(device).eval()
    if loaded.heads is not None:
        loaded.heads.to(device).eval()
    heads = Heads.of(loaded)
    enc_size, size = encoder_size(loaded), compared_size(loaded)
    reader = ShardReader(str(data), image_size=enc_size, batch_size=protocol.batch_size, limit=protocol.limit,
                         split=protocol.split)
    meta = read_meta(data)
    names, names_from = class_names(meta, classes)
    recon = None
    if tok.decoder is not None:
        recon = ReconstructionMetrics(image_size=(size, size), lpips_net=protocol.lpips_net,
                                      lpips_weights=lpips_weights, fid_weights=fid_weights, device=device)

    acc = accumulate(tok, reader, heads, recon, protocol, size=size, device=device)
    if acc.count == 0:
        raise ValueError(f"no samples to evaluate in {data} (split {protocol.split!r}, limit {protocol.limit})")
    labels = torch.cat(acc.labels)

    metrics: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    skipped: dict[str, str] = {}
    for part_metrics, part_skipped in (reconstruction_scores(recon), code_scores(tok, acc)):
        metrics.update(part_metrics)
        skipped.update(part_skipped)
    zeroshot: dict[str, Any] = {"classes_from": names_from, "head_trained": heads.sig_trained,
                                **(label_stats(labels, names) if names is not None else {})}
    records = []
    for part_metrics, part_skipped, record in (
            head_scores(loaded, heads, acc, labels, names, protocol),
            teacher_scores(heads, acc, labels, names, protocol),
            probe_scores(tok, data, protocol, acc, labels, device, eval_shards=reader.shards, image_size=enc_size)):
        metrics.update(part_metrics)
        skipped.update(part_skipped)
        records.append(record)
    zeroshot.update(records[0])
    zeroshot.update(records[1])
    part_metrics, part_skipped = caption_scores(loaded, heads, acc)
    metrics.update(part_metrics)
    skipped.update(part_skipped)
    definitions, probe_record = dict(DEFINITIONS), None
    if ar_probe is not None and ar_probe.steps > 0:
        from armkit.recipes.evaluation.ar_probe import DEFINITIONS as AR_DEFINITIONS
        from armkit.recipes.evaluation.ar_probe import ar_friendliness

        result = ar_friendliness(tok, data, classes=names, device=device, probe=ar_probe)
        metrics.update(result["metrics"])
        skipped.update(result["skipped"])
        definitions.update(AR_DEFINITIONS)
        probe_record = result["protocol"]

    shards = reader.shards
    sig, cap = heads.sig, heads.cap
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "metrics": metrics,
        "skipped": skipped,
        "definitions": definitions,
        "protocol": {
            **protocol.as_dict(),
            "data": {"path": str(Path(str(data)).expanduser().resolve()), "split": protocol.split,
                     "count": acc.count, "skipped_samples": reader.skipped, "shards": [Path(s).name for s in shards],
                     "fingerprint": shards_fingerprint(shards),
                     "source": (meta or {}).get("source"), "licence": (meta or {}).get("licence")},
            "image_size": [size, size], "encoder_image_size": [enc_size, enc_size], "resize": RESIZE,
            "decode": {"sampler": protocol.sampler, "steps": protocol.steps, "guidance": protocol.guidance,
                       "generator": f"one torch.Generator on {device} seeded {protocol.seed}, drawn batch after batch "
                                    f"of {protocol.batch_size}"},
            "zeroshot": zeroshot,
            "probe": records[2],
            **({"ar_probe": probe_record} if probe_record is not None else {}),
            "heads": {"sigmoid": heads.sig_name, "sigmoid_text_key": getattr(sig, "text_key", None),
                      "sigmoid_trained": heads.sig_trained, "sigmoid_image_head": getattr(sig, "image_head", None),
                      "caption": heads.cap_name, "caption_text_key": getattr(cap, "text_key", None),
                      "caption_trained": heads.cap_trained},
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
