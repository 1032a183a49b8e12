"""A tokenizer's AR-friendliness: how well a FIXED small AR model learns its codes in a fixed number of steps.

    train split --tokenizer--> codes (once, in memory) --> `steps` AdamW steps of a random-init Qwen2 probe (seeded;
        full head over the codebook) on text-to-image sequences `GEN caption BOI H W codes EOI`, 10 % caption dropout
    val split --tokenizer--> codes --> the probe's teacher-forced NLL of every visual token given the caption

ar_probe_nll_bits is the mean over held-out images of the summed visual-token NLL over the grid / ln 2 (lower: the
codes are easier to predict); ar_probe_class_accuracy is, when the classes are Fashion-MNIST's, the % of CFG samples
(prompted with one training caption per class, decoded by the tokenizer) that the independent judge
(classifier.py: a small CNN on real pixels, fixed steps and seed) labels as the prompt's class. A tiny probe for a few
hundred steps ranks tokenizers by how fast a small AR model learns their codes; it is not gFID.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import cache, partial
from pathlib import Path
from typing import Any

import torch

from armkit.backbones import sequence as S
from armkit.backbones.ar import ARModel
from armkit.recipes.training.schedule import lr_factor

MAX_TEXT = 64  # caption bytes kept
KEYS = ("ar_probe_nll_bits", "ar_probe_nll_bits_per_token", "ar_probe_class_accuracy")
DEFINITIONS = {
    "ar_probe_nll_bits": "AR-friendliness (recipes/evaluation/ar_probe.py): a fixed random-init Qwen2 probe "
                         "(ar_probe.width, .layers; full head over the codebook) trained for ar_probe.steps AdamW "
                         "steps on text-to-image sequences of the train split's codes (caption-conditioned, 10 % "
                         "caption dropout); its teacher-forced NLL of the held-out images' codes given their caption, "
                         "summed over the grid, in bits per image, averaged over images. Lower: easier to model",
    "ar_probe_nll_bits_per_token": "ar_probe_nll_bits / tokens per image",
    "ar_probe_class_accuracy": "% of the probe's CFG samples (one training caption per class, samples_per_class "
                               "each, decoded by the tokenizer) that the independent Fashion-MNIST judge "
                               "(classifier.py, real pixels, judge_steps, judge_seed) labels as the prompt's class; "
                               "only for Fashion-MNIST's classes and a tokenizer with a decoder",
}


@dataclass(frozen=True)
class ARProbe:
    """The probe's settings (recorded under protocol.ar_probe). steps 0: off. Limits: samples read per split."""

    steps: int = 300
    seed: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    train_limit: int | None = 2000
    val_limit: int | None = 500
    width: int = 128
    layers: int = 2
    text_dropout: float = 0.1
    samples_per_class: int = 10
    guidance: float = 2.0
    decode_steps: int = 25
    judge_steps: int = 600
    judge_seed: int = 0
    train_split: str = "train"
    val_split: str = "val"

    def __post_init__(self) -> None:
        bad = [f"{k}={getattr(self, k)}" for k in ("steps", "decode_steps", "judge_steps", "samples_per_class")
               if int(getattr(self, k)) < 0]
        bad += [f"{k}={getattr(self, k)}" for k in ("batch_size", "layers") if int(getattr(self, k)) < 1]
        bad += [f"{k}={getattr(self, k)}" for k in ("train_limit", "val_limit")
                if getattr(self, k) is not None and int(getattr(self, k)) < 1]
        if self.width < 32 or self.width % 32 or not 0 <= self.text_dropout < 1 or self.lr <= 0:
            bad.append(f"width={self.width} (a multiple of 32), text_dropout={self.text_dropout}, lr={self.lr}")
        if bad:
            raise ValueError(f"ar_probe: bad setting(s) {bad}")

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None, *, where: str = "ar_probe") -> ARProbe:
        mapping = dict(mapping or {})
        unknown = sorted(set(mapping) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**mapping)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def encode_split(tok: Any, shards: str | Path, split: str, limit: int | None, batch_size: int,
                 device: str) -> tuple[torch.Tensor, list[str], torch.Tensor, list[str]]:
    """(codes [n, N], captions, labels [n], shard files) of the first `limit` samples of `split`."""
    from armkit.recipes.data.reader import ShardReader

    size = tok.encoder.image_size
    size = int(size if isinstance(size, int) else size[0])
    reader = ShardReader(str(shards), image_size=size, batch_size=batch_size, limit=limit, split=split)
    codes, captions, labels = [], [], []
    for batch in reader:
        codes.append(tok.encode(batch["image"].to(device)).cpu())
        captions += [str(t) for t in batch["txt"]]
        labels.append(batch["cls"])
    if not codes:
        raise ValueError(f"ar_probe: no samples in {shards} (split {split!r})")
    codes = torch.cat(codes)
    if codes.dim() != 2:
        raise ValueError(f"ar_probe: codes of shape {list(codes.shape)}; the probe reads one codebook ([B, N])")
    return codes, captions, torch.cat(labels), list(reader.shards)


def build_probe(tok: Any, p: ARProbe) -> ARModel:
    heads = p.width // 32
    config = {"model_type": "qwen2", "hidden_size": p.width, "intermediate_size": 3 * p.width,
              "num_hidden_layers": p.layers, "num_attention_heads": heads, "num_key_value_heads": heads,
              "max_position_embeddings": MAX_TEXT + tok.num_tokens + 8}
    return ARModel(codebook_size=tok.codebook_size, head="full", config=config, max_grid=max(tok.grid), seed=p.seed)


def train_probe(model: ARModel, codes: torch.Tensor, texts: list[list[int]], grid: tuple[int, int],
                p: ARProbe) -> list[float]:
    """`p.steps` AdamW steps on seeded random batches (warmup, cosine to 10 %, clip 1.0); returns the losses."""
    gen = torch.Generator().manual_seed(p.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=0.0)
    warm = max(1, p.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(  # the recipes' own schedule: warmup, then cosine to 0.1 at the end
        opt, partial(lr_factor, warmup_steps=warm, cosine_steps=p.steps - warm))
    model.train()
    losses = []
    with torch.enable_grad():
        for _ in range(p.steps):
            idx = torch.randint(0, len(codes), (p.batch_size,), generator=gen).tolist()
            drop = (torch.rand(p.batch_size, generator=gen) < p.text_dropout).tolist()
            seqs = [S.text_to_image(model.vocab, texts[i], codes[i].tolist(), grid, drop_text=d)
                    for i, d in zip(idx, drop)]
            out = model(*S.collate(model.vocab, seqs))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(out.loss.item())
    return losses


@torch.no_grad()
def heldout_nll(model: ARModel, codes: torch.Tensor, texts: list[list[int]], grid: tuple[int, int],
                batch_size: int = 64) -> tuple[float, int]:
    """(summed visual-token NLL in nats, visual tokens) of the sequences, conditioned on their captions."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(codes), batch_size):
        seqs = [S.text_to_image(model.vocab, t, c.tolist(), grid)
                for c, t in zip(codes[start:start + batch_size], texts[start:start + batch_size])]
        out = model(*S.collate(model.vocab, seqs))
        total, tokens = total + float(out.visual_loss) * out.num_visual, tokens + out.num_visual
    return total, tokens


def judge_files() -> bool:
    """Fashion-MNIST's raw files are already on this machine (the judge never downloads)."""
    from armkit.common.cache import cache_root
    from armkit.recipes.data.fashion_mnist import FILES, SYSTEM_DIR

    names = [f for pair in FILES.values() for f in pair]
    return any(all((d / f).is_file() for f in names) for d in (SYSTEM_DIR, cache_root() / "fashion-mnist"))


@cache
def judge(steps: int, seed: int) -> tuple[Any, float]:
    """The independent judge and its % accuracy on the 10,000 real test images (trained once per process)."""
    from armkit.recipes.evaluation.classifier import accuracy, fashion_mnist_judge, fashion_mnist_pixels

    model = fashion_mnist_judge(steps=steps, seed=seed)
    return model, 100.0 * accuracy(model, *fashion_mnist_pixels("val"))


@torch.no_grad()
def class_accuracy(model: ARModel, tok: Any, prompts: list[list[int]], p: ARProbe) -> float:
    """% of `samples_per_class` CFG samples per prompt (prompt c = class c) the judge labels as class c."""
    from armkit.backbones.generate import SAMPLE, generate_image
    from armkit.recipes.evaluation.classifier import predict, to_gray32

    model.eval()
    grid, gen = tuple(tok.grid), torch.Generator().manual_seed(p.seed)
    rows = [c for c in range(len(prompts)) for _ in range(p.samples_per_class)]
    images = []
    for start in range(0, len(rows), 50):
        chunk = rows[start:start + 50]
        cond = [S.text_to_image_prompt(model.vocab, prompts[c], grid) for c in chunk]
        uncond = [S.text_to_image_prompt(model.vocab, [], grid)] * len(chunk)
        codes = generate_image(model, cond, grid, weaker=[uncond], scales=[p.guidance], sampling=SAMPLE,
                               generator=gen)
        images.append(to_gray32(tok.decode(codes, steps=p.decode_steps, generator=gen).cpu().clamp(0, 1)))
    pred = predict(judge(p.judge_steps, p.judge_seed)[0], torch.cat(images))
    return 100.0 * float((pred == torch.tensor(rows)).float().mean())


def ar_friendliness(tok: Any, shards: str | Path, *, classes: list[str] | None = None, device: str = "cpu",
                    probe: ARProbe | None = None, **settings: Any) -> dict[str, Any]:
    """{"metrics": KEYS' values, "skipped": {key: why}, "protocol": what the numbers depend on}. `settings`: ARProbe
    fields (steps, seed, batch_size, train_limit, val_limit, width, layers, samples_per_class, ...)."""
    from armkit.recipes.data.fashion_mnist import CLASSES
    from armkit.recipes.evaluation.zeroshot import read_meta

    p = ARProbe(**{**(probe.as_dict() if probe is not None else {}), **settings})
    tok = tok.to(device).eval()
    train, captions, labels, train_shards = encode_split(tok, shards, p.train_split, p.train_limit, p.batch_size,
                                                         device)
    val, val_captions, _, val_shards = encode_split(tok, shards, p.val_split, p.val_limit, p.batch_size, device)
    if set(train_shards) & set(val_shards):
        raise ValueError(f"ar_probe: the {p.train_split!r} and {p.val_split!r} shards of {shards} overlap; give a "
                         f"folder with {p.train_split}-*.tar and {p.val_split}-*.tar")
    model = build_probe(tok, p).to(device)
    texts = [model.codec.encode(c)[:MAX_TEXT] for c in captions]
    grid = tuple(tok.grid)
    losses = train_probe(model, train.to(device), texts, grid, p)
    nats, tokens = heldout_nll(model, val.to(device), [model.codec.encode(c)[:MAX_TEXT] for c in val_captions], grid)
    metrics = {"ar_probe_nll_bits": nats / len(val) / math.log(2), "ar_probe_nll_bits_per_token":
               nats / tokens / math.log(2), "ar_probe_class_accuracy": None}
    record = {**p.as_dict(), "train_count": len(train), "val_count": len(val), "tokens_per_image": tok.num_tokens,
              "uniform_bits_per_image": tok.num_tokens * math.log2(tok.codebook_size),
              "parameters": sum(t.numel() for t in model.parameters()), "final_train_loss": losses[-1] if losses
              else None, "judge": None}
    classes = classes or (read_meta(shards) or {}).get("classes")
    firsts = {int(y): i for i, y in reversed(list(enumerate(labels.tolist())))}
    why = ("the classes are not Fashion-MNIST's (the judge is a Fashion-MNIST classifier)" if classes != CLASSES
           else "the tokenizer has no decoder" if tok.decoder is None
           else "samples_per_class is 0" if p.samples_per_class == 0
           else "not every class has a training sample" if set(firsts) != set(range(len(CLASSES)))
           else "Fashion-MNIST's raw files are not on this machine (armkit data fashion-mnist fetches them)"
           if not judge_files() else None)
    skipped = {"ar_probe_class_accuracy": why} if why else {}
    if why is None:
        metrics["ar_probe_class_accuracy"] = class_accuracy(model, tok, [texts[firsts[c]] for c in range(10)], p)
        record["judge"] = {"network": "SmallCNN (classifier.py) on the real training pixels", "steps": p.judge_steps,
                           "seed": p.judge_seed, "real_test_accuracy": judge(p.judge_steps, p.judge_seed)[1],
                           "prompts": [captions[firsts[c]] for c in range(10)], "chance": 10.0}
    return {"metrics": metrics, "skipped": skipped, "protocol": record}
