"""`LatentDiT`: the same token-conditioned DiT and flow objective, run on the latents of a frozen diffusers VAE.

The paper trains the tokenizer through the small pixel DiT, then renders final images with a larger latent DiT
conditioned on the same Z (28 steps, guidance 1.5). Both are `FlowDecoder`s, so the swap is a config change:

    decoder: {class_path: armkit.decoders.dit.PixelDiT, init_args: {...}}      # while training the tokenizer
    decoder: {class_path: armkit.decoders.latent.LatentDiT, init_args: {vae_path: /models/sd-vae, ...}}   # rendering
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from armkit.decoders.dit import DiT, as_hw, dit_dims
from armkit.decoders.flow import FlowDecoder


def load_vae(vae_path: str | None, vae_config: dict[str, Any] | None, subfolder: str | None) -> nn.Module:
    """A diffusers AutoencoderKL from a local folder (never the hub), or at random init from a config dict."""
    from diffusers import AutoencoderKL  # imported here: diffusers takes seconds to import and `tokenizer` must not

    if (vae_path is None) == (vae_config is None):
        raise ValueError("LatentDiT needs exactly one of vae_path (a local AutoencoderKL folder) or vae_config")
    if vae_config is not None:
        return AutoencoderKL.from_config(dict(vae_config))
    folder = Path(vae_path) / (subfolder or "")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"vae_path: no AutoencoderKL config.json in {folder}")
    from armkit.common.remote_code import no_remote_code

    no_remote_code(folder)  # diffusers' AutoencoderKL runs no folder code, but a folder carrying code is refused alike
    return AutoencoderKL.from_pretrained(vae_path, subfolder=subfolder, local_files_only=True)


class LatentDiT(FlowDecoder):
    """A DiT on scaled VAE latents: x1 = (E(image) - shift_factor) * scaling_factor, decoded by the frozen VAE.

    vae_path: a local diffusers AutoencoderKL folder (vae_subfolder for a pipeline folder's "vae"); vae_config: a
    config dict for a random-init VAE (tests). The VAE is frozen and kept in eval mode; its weights are part of this
    module's state_dict. image_size is in pixels and must be divisible by the VAE's downscale factor times patch_size.
    Other arguments as PixelDiT. The paper renders with 28 steps and guidance 1.5.
    """

    def __init__(self, *, vae_path: str | None = None, vae_config: dict[str, Any] | None = None,
                 vae_subfolder: str | None = None, image_size: int | list[int] = 256, patch_size: int = 2,
                 cond_dim: int = 1152, size: str = "B", width: int | None = None, depth: int | None = None,
                 heads: int | None = None, mlp_ratio: float = 4.0, cond_grid: list[int] | None = None,
                 cond_dropout: float = 0.1, time_sampling: str = "logit_normal", logit_mean: float = 0.0,
                 logit_std: float = 1.0, sample_shift: float = 1.0, prediction: str = "velocity",
                 t_clamp: float = 0.05, attention: str = "auto") -> None:
        super().__init__(cond_dim=cond_dim, cond_dropout=cond_dropout, time_sampling=time_sampling,
                         logit_mean=logit_mean, logit_std=logit_std, sample_shift=sample_shift,
                         prediction=prediction, t_clamp=t_clamp)
        self.vae = load_vae(vae_path, vae_config, vae_subfolder).requires_grad_(False).eval()
        cfg = self.vae.config
        self.scaling_factor = float(cfg.scaling_factor)
        self.shift_factor = float(cfg.shift_factor or 0.0)
        self.image_size = as_hw(image_size)
        factor = 2 ** (len(cfg.block_out_channels) - 1)
        if self.image_size[0] % factor or self.image_size[1] % factor:
            raise ValueError(f"image_size {list(self.image_size)} is not divisible by the VAE's downscale {factor}")
        self.latent_size = (self.image_size[0] // factor, self.image_size[1] // factor)
        self.latent_channels = int(cfg.latent_channels)
        width, depth, heads = dit_dims(size, width, depth, heads)
        self.net = DiT(in_channels=self.latent_channels, input_size=self.latent_size, patch_size=patch_size,
                       cond_dim=self.cond_dim, width=width, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                       cond_grid=as_hw(cond_grid, "cond_grid") if cond_grid is not None else None, attention=attention)

    def train(self, mode: bool = True) -> LatentDiT:
        super().train(mode)
        self.vae.eval()  # frozen: no dropout, no norm statistics
        return self

    @property
    def space_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, *self.latent_size)

    @torch.no_grad()
    def to_space(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        latents = self.vae.encode((images * 2 - 1).to(dtype)).latent_dist.sample(generator)  # [B, c, h, w]
        return ((latents - self.shift_factor) * self.scaling_factor).float()

    @torch.no_grad()
    def from_space(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.vae.parameters()).dtype
        images = self.vae.decode((x / self.scaling_factor + self.shift_factor).to(dtype)).sample
        return ((images.float() + 1) / 2).clamp(0, 1)
