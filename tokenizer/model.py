"""The tokenizer: frozen encoder -> down-projection -> FSQ -> up-projection -> quantized embeddings Z.

    images [B,3,H,W] in [0,1] --encoder--> F [B,N,C] --down--> [B,N,K] --FSQ--> codes [B,N,K], indices [B,N]
                                                              codes --up--> Z [B,N,D]   (D = C unless embed_dim says)
    decode: indices -> Z -> decoder.sample(Z) -> images [B,3,H',W'] in [0,1]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from armkit.common.buildable import Buildable
from armkit.decoders.base import Decoder
from armkit.tokenizer.encoders.base import VisionEncoder
from armkit.tokenizer.projections import make_projection
from armkit.tokenizer.quantizer import FSQQuantizer


class TokenizerOutput(NamedTuple):
    features: torch.Tensor  # F [B, N, C]: the teacher's tokens
    codes: torch.Tensor  # [B, N, K]: quantized values (straight-through), K = num_codebooks * len(levels)
    indices: torch.Tensor  # [B, N] (or [B, N, G] with G codebooks), int64 in [0, codebook_size)
    z: torch.Tensor  # Z [B, N, D]: quantized embeddings, what every loss and decoder reads


class Tokenizer(Buildable, nn.Module):
    """A discrete image tokenizer over a frozen teacher. Construct with keywords; see the module docstring."""

    def __init__(self, *, encoder: VisionEncoder, levels: list[int] = (8, 8, 8, 5, 5, 5), num_codebooks: int = 1,
                 bound: str = "tanh", projection: str = "linear", proj_width: int | None = None, proj_depth: int = 1,
                 proj_heads: int = 4, embed_dim: int | None = None, decoder: Decoder | None = None) -> None:
        super().__init__()
        if not isinstance(encoder, VisionEncoder):
            raise TypeError(f"encoder must be a VisionEncoder, got {type(encoder).__name__}")
        self.encoder = encoder
        self.quantizer = FSQQuantizer(levels=list(levels), num_codebooks=num_codebooks, bound=bound)
        self.embed_dim = int(embed_dim or encoder.width)
        proj = dict(kind=projection, width=proj_width, depth=proj_depth, heads=proj_heads)
        self.down = make_projection(encoder.width, self.quantizer.dim, **proj)
        self.up = make_projection(self.quantizer.dim, self.embed_dim, **proj)
        if decoder is not None and decoder.cond_dim != self.embed_dim:
            raise ValueError(f"decoder.cond_dim={decoder.cond_dim} does not match the tokenizer's embed_dim="
                             f"{self.embed_dim} (encoder width {encoder.width} unless embed_dim is set)")
        self.decoder = decoder

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.encoder.grid)

    @property
    def image_size(self) -> tuple[int, int]:
        """Size of the images `decode` returns (the decoder's), else the encoder's input size."""
        return tuple(self.decoder.image_size if self.decoder is not None else self.encoder.image_size)

    def forward(self, images: torch.Tensor, features: torch.Tensor | None = None) -> TokenizerOutput:
        """features: the frozen encoder's output for these images when already known (a feature cache); the
        encoder then does not run."""
        if features is None:
            features = self.encoder(images)  # [B, N, C]
        elif not getattr(self.encoder, "frozen", False):
            raise ValueError("features given, but the encoder trains: cached features need a frozen encoder")
        codes, indices = self.quantizer(self.down(features))  # [B, N, K], [B, N]
        return TokenizerOutput(features, codes, indices, self.up(codes))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> indices LongTensor [B, N] (or [B, N, G])."""
        return self(images).indices

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, N(, G)] -> Z [B, N, D]."""
        codes = self.quantizer.indices_to_codes(indices)
        return self.up(codes.to(next(self.up.parameters()).dtype))

    @torch.no_grad()
    def decode(self, indices: torch.Tensor, *, steps: int = 25, sampler: str = "euler", guidance: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """indices -> images [B, 3, H, W] in [0, 1] through the decoder's sampler."""
        if self.decoder is None:
            raise RuntimeError("this tokenizer has no decoder; build it with decoder=... to decode")
        return self.decoder.sample(self.embed(indices), steps=steps, sampler=sampler, guidance=guidance,
                                   generator=generator)

    def save_pretrained(self, directory: str | Path, *, include_encoder: bool = True,
                        card: dict | None = None) -> Path:
        """Write a self-contained folder (config.json, model.safetensors, README.md); see tokenizer/hub.py."""
        from armkit.tokenizer import hub  # imported here: hub imports this module

        return hub.save_pretrained(self, directory, include_encoder=include_encoder, card=card)

    def push_to_hub(self, repo_id: str, *, private: bool = True, token: str | None = None,
                    include_encoder: bool = True, card: dict | None = None) -> str:
        """Export to a temporary folder and upload it to the Hugging Face Hub (needs network and huggingface_hub)."""
        import tempfile

        from armkit.tokenizer import remote

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "export", include_encoder=include_encoder, card=card)
            return remote.push_to_hub(folder, repo_id, private=private, token=token)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, trust: Sequence[str] = (),
                        encoder_weights: str | Path | None = None, paths: Sequence[str | Path] = (),
                        revision: str | None = None) -> Tokenizer:
        """Load a folder written by save_pretrained or `armkit export` (or a hub id such as 'org/name'), without
        unpickling; see tokenizer/hub.py. `trust=["mylab"]` lets the export use classes from your own package
        `mylab`; `paths` lets its config.json name files in those folders (only the export folder and the asset
        cache otherwise)."""
        from armkit.tokenizer import hub

        tok = hub.from_pretrained(directory, trust=trust, encoder_weights=encoder_weights, paths=paths,
                                  revision=revision)
        if not isinstance(tok, cls):
            raise hub.ExportError(f"{directory} holds a {type(tok).__name__}, not a {cls.__name__}")
        return tok
