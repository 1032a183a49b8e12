"""The pinned evaluation protocol: every setting a number depends on, and what each metric means, in words.

A `Protocol` is written into metrics.json under "protocol" (with the data and package versions, see provenance.py),
so that a number can be reproduced by running the same command on the same files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

DEFAULT_TEMPLATES = ("a photo of a {}.", "an emoji of {}.", "{}")
SAMPLERS = ("euler", "heun")
LPIPS_NETS = ("alex", "vgg", "squeeze")

RESIZE = ("each image is decoded to RGB (alpha composited on white), its shorter side resized to S with PIL's "
          "antialiased bicubic filter, then centre-cropped to S x S, S = the decoder's image size (the encoder's "
          "input size when there is no decoder); pixels in [0, 1]. The encoder reads the same image, decoded the same "
          "way, at its own (square) input size, as training reads it. Reconstructions are compared at S x S.")

DEFINITIONS = {
    "psnr": "mean over images of 10*log10(1 / MSE(x, x_hat)) in dB, x the image at S x S, x_hat = "
            "decode(encode(x)) clamped to [0, 1], both in [0, 1] (torchmetrics PeakSignalNoiseRatio, data_range=1, "
            "per image, then averaged)",
    "ssim": "mean over images of SSIM(x, x_hat) (torchmetrics StructuralSimilarityIndexMeasure: Gaussian window 11, "
            "sigma 1.5, k1=0.01, k2=0.03, data_range=1), same pairs as psnr",
    "lpips": "mean over images of LPIPS(x, x_hat) (torchmetrics LearnedPerceptualImagePatchSimilarity, its bundled "
             "linear layers on a torchvision backbone loaded from the given local file, inputs in [0, 1])",
    "rfid": "FID (torchmetrics FrechetInceptionDistance, 2048-d Inception pool features from the given local weights) "
            "between the eval images and their reconstructions; biased upwards for small sets, compare at equal count",
    "zeroshot_top1": "% of labelled eval images whose own class scores highest. Class classifier: the text tower's "
                     "L2-normalised embeddings of every template filled with the class name, averaged over templates "
                     "and renormalised; image: the sigmoid head's normalised embedding of pooled Z "
                     "(SigmoidLoss.image_embedding); score = cosine (the learned scale and bias do not change ranks)",
    "zeroshot_top1_balanced": "as zeroshot_top1, averaged per class (mean over the classes present of the share of "
                              "their images classified right): always guessing one class gives 100 / classes, "
                              "however unbalanced the eval set (emoji categories are)",
    "zeroshot_top5": "as zeroshot_top1, correct when the own class is among the 5 highest (only with >= 5 classes)",
    "retrieval_i2t_r1": "% of eval images whose highest-scoring text, among the texts of all eval images "
                        "(batch[text_key] of the sigmoid loss), is its own; a text identical to its own counts as "
                        "correct, since several images can share one text",
    "retrieval_t2i_r1": "% of eval texts whose highest-scoring image is its own image or one with an identical text",
    "caption_nll": "the caption head's teacher-forced cross-entropy of every eval caption (batch[text_key] of the "
                   "caption loss, cut to its max_length tokens) given Z, in nats per caption token, token-weighted "
                   "over batches; the loss's max_samples training knob is lifted",
    "feature_cosine": "mean over tokens of cosine(Z, F), F the frozen encoder's features (what L_feat pulls up)",
    "codebook_usage": "% of the codebook's codes that occur at least once among all eval tokens (every position and "
                      "codebook of every eval image); bounded by tokens_counted / codebook_size",
    "code_perplexity": "exp(H), H the entropy in nats of the empirical code distribution over the same tokens; "
                       "between 1 and min(tokens_counted, codebook_size)",
    "code_perplexity_normalised": "code_perplexity / codebook_size, in (0, 1] (the ARM paper reports 0.21 and 0.28 "
                                  "without a definition; a value below 1 suggests a normalised one like this)",
    "tokens_per_image": "token positions per image (the encoder's grid)",
    "bits_per_token": "num_codebooks * sum(log2(levels)): the information one token position can carry",
    "bits_per_image": "tokens_per_image * bits_per_token",
    "heads": "zero-shot, retrieval and caption metrics use the trained loss heads; a head whose loss was disabled in "
             "training is untrained (random init) and its numbers are at chance level, as the paper's 0.2% zero-shot "
             "for caption + pixel",
}


class ProtocolError(ValueError):
    """A protocol setting that cannot be used; names the key."""


@dataclass(frozen=True)
class Protocol:
    """The evaluation settings. split: which shards of a folder (its `{split}-*.tar`). limit: at most this many samples
    read (in shard order; None: all). seed: the decoder's noise generator (and torch's global seed). sampler / steps /
    guidance: the decoder's ODE sampler. templates: zero-shot prompts, each with one "{}" for the class name.
    lpips_net: torchvision backbone of LPIPS."""

    split: str = "val"
    limit: int | None = None
    batch_size: int = 32
    seed: int = 0
    sampler: str = "euler"
    steps: int = 25
    guidance: float = 1.0
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    lpips_net: str = "alex"

    def __post_init__(self) -> None:
        object.__setattr__(self, "templates", tuple(str(t) for t in self.templates))
        if self.limit is not None and int(self.limit) < 1:
            raise ProtocolError(f"limit must be >= 1 (or null for all samples), got {self.limit}")
        if int(self.batch_size) < 1:
            raise ProtocolError(f"batch_size must be >= 1, got {self.batch_size}")
        if int(self.steps) < 1:
            raise ProtocolError(f"steps must be >= 1, got {self.steps}")
        if self.sampler not in SAMPLERS:
            raise ProtocolError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.lpips_net not in LPIPS_NETS:
            raise ProtocolError(f"lpips_net must be one of {LPIPS_NETS}, got {self.lpips_net!r}")
        if not self.templates:
            raise ProtocolError("templates must hold at least one prompt, e.g. 'a photo of a {}.'")
        for t in self.templates:
            if t.count("{}") != 1:
                raise ProtocolError(f"template {t!r} must contain exactly one '{{}}' for the class name")

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None, *, where: str = "protocol") -> Protocol:
        """Build from a plain mapping (YAML); unknown keys are an error naming them."""
        mapping = dict(mapping or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ProtocolError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**mapping)

    def replace(self, **changes: Any) -> Protocol:
        """A copy with the settings in `changes` that are not None."""
        return Protocol.from_mapping({**asdict(self), **{k: v for k, v in changes.items() if v is not None}})

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["templates"] = list(self.templates)
        return d
