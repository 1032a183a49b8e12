"""`FlowDecoder`: the half every rectified-flow decoder shares, whatever its network and working space.

It owns the objective (`RectifiedFlow`), the learned null condition for classifier-free guidance, condition dropout
while training, and sampling. A subclass sets `self.net` (x, t [B], Z [B, N, D] -> velocity like x), `image_size`,
and says how images map to its working space: `to_space`, `from_space`, `space_shape` (pixels in [-1, 1] for
PixelDiT, scaled VAE latents for LatentDiT). So swapping decoders on the same tokens is a config change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

from armkit.decoders.base import Decoder
from armkit.decoders.samplers import guided, solve
from armkit.decoders.transport import RectifiedFlow, rand


class FlowDecoder(Decoder):
    """Base of PixelDiT and LatentDiT; see the module docstring."""

    net: nn.Module

    def __init__(self, *, cond_dim: int, cond_dropout: float = 0.1, time_sampling: str = "uniform",
                 logit_mean: float = 0.0, logit_std: float = 1.0, sample_shift: float = 1.0,
                 prediction: str = "velocity", t_clamp: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must lie in [0, 1), got {cond_dropout}")
        if sample_shift <= 0:
            raise ValueError(f"sample_shift must be > 0, got {sample_shift}")
        self.cond_dim = int(cond_dim)
        self.cond_dropout = float(cond_dropout)
        self.sample_shift = float(sample_shift)
        self.flow = RectifiedFlow(time_sampling=time_sampling, logit_mean=logit_mean, logit_std=logit_std,
                                  prediction=prediction, t_clamp=t_clamp)
        self.null_cond = nn.Parameter(torch.randn(self.cond_dim) * 0.02)  # stands in for Z when unconditional

    @property
    def space_shape(self) -> tuple[int, ...]:
        """Shape of one sample in the working space, e.g. (3, H, W)."""
        raise NotImplementedError

    def to_space(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> data x1 in the working space."""
        raise NotImplementedError

    def from_space(self, x: torch.Tensor) -> torch.Tensor:
        """working space -> images [B, 3, H, W] in [0, 1]."""
        raise NotImplementedError

    def check_cond(self, cond: torch.Tensor) -> None:
        if cond.ndim != 3 or cond.shape[-1] != self.cond_dim:
            raise ValueError(f"{type(self).__name__} expects cond [B, N, {self.cond_dim}], got {tuple(cond.shape)}")

    def drop_cond(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Replace each sample's Z by the null condition with probability cond_dropout."""
        drop = rand((cond.shape[0],), generator=generator, device=cond.device) < self.cond_dropout  # [B]
        return torch.where(drop[:, None, None], self.null_cond.to(cond.dtype).expand_as(cond), cond)

    def loss(self, images: torch.Tensor, cond: torch.Tensor, *,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Rectified-flow loss on images [B, 3, h, w] in [0, 1] (resized to image_size if needed), cond [B, N, D]."""
        self.check_cond(cond)
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] != cond.shape[0]:
            raise ValueError(f"{type(self).__name__}.loss expects images [B, 3, H, W] with B = cond's "
                             f"{cond.shape[0]}, got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != tuple(self.image_size):
            images = nnf.interpolate(images, size=self.image_size, mode="bicubic", antialias=True,
                                     align_corners=False).clamp(0, 1)
        x1 = self.to_space(images, generator)
        if self.training and self.cond_dropout > 0:
            cond = self.drop_cond(cond, generator)
        return self.flow.loss(self.net, x1, cond, generator=generator)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, *, steps: int = 25, sampler: str = "euler", guidance: float = 1.0,
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """cond [B, N, D] -> images [B, 3, H, W] in [0, 1]; guidance is the CFG scale (1 = none). `noise`
        [B, *space_shape] fixes the start (an exported decode graph takes it as an input)."""
        self.check_cond(cond)
        if noise is None:
            noise = rand((cond.shape[0], *self.space_shape), generator=generator, device=cond.device, normal=True)

        def model(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # integrate in fp32
            return self.flow.to_velocity(self.net(x.to(c.dtype), t, c).float(), x, t)

        velocity = guided(model, cond, self.null_cond.to(cond.dtype).expand_as(cond), float(guidance))
        return self.from_space(solve(velocity, noise, steps=steps, sampler=sampler, shift=self.sample_shift))
