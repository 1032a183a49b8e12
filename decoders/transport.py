"""The rectified-flow objective, independent of any network (in the manner of SiT's `transport/`).

Linear path between noise x0 ~ N(0, I) and data x1:  x_t = t * x1 + (1 - t) * x0,  t in [0, 1] (0 noise, 1 data).
The network predicts the velocity dx_t/dt = x1 - x0; the loss is its mean squared error (the paper's L_pix).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as nnf

TIME_SAMPLINGS = ("uniform", "logit_normal")

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t [B], cond) -> v like x_t


def rand(shape: tuple[int, ...], *, generator: torch.Generator | None = None, device: torch.device | str | None = None,
         normal: bool = False) -> torch.Tensor:
    """Uniform (or standard normal) float32 noise drawn on the generator's device, then moved to `device`."""
    draw = torch.randn if normal else torch.rand
    where = generator.device if generator is not None else device
    return draw(shape, generator=generator, device=where).to(device)


class RectifiedFlow:
    """Path, timestep sampling and loss of rectified flow.

    time_sampling="uniform": t ~ U[0, 1] (the paper). "logit_normal": t = sigmoid(n), n ~ N(logit_mean, logit_std^2)
    (SD3; it spends more training on the middle of the path, where the velocity is hardest to predict).
    """

    def __init__(self, *, time_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0) -> None:
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {time_sampling!r}")
        if logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {logit_std}")
        self.time_sampling = time_sampling
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)

    def __repr__(self) -> str:
        return (f"RectifiedFlow(time_sampling={self.time_sampling!r}, logit_mean={self.logit_mean}, "
                f"logit_std={self.logit_std})")

    def sample_t(self, batch: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """Training times t [batch] in [0, 1], float32."""
        if self.time_sampling == "uniform":
            return rand((batch,), generator=generator, device=device)
        n = rand((batch,), generator=generator, device=device, normal=True)
        return torch.sigmoid(n * self.logit_std + self.logit_mean)

    @staticmethod
    def path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (x_t, target velocity x1 - x0); t [B] broadcasts over the other dimensions."""
        tb = t.view(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)
        return tb * x1 + (1 - tb) * x0, x1 - x0

    def loss(self, velocity_fn: VelocityFn, x1: torch.Tensor, cond: torch.Tensor, *,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """E ||v(x_t, t | cond) - (x1 - x0)||^2 over noise and time -> (loss, logs). x1 is data in the model's space."""
        x0 = rand(tuple(x1.shape), generator=generator, device=x1.device, normal=True).to(x1.dtype)
        t = self.sample_t(x1.shape[0], generator=generator, device=x1.device)
        xt, target = self.path(x0, x1, t)
        pred = velocity_fn(xt, t, cond)
        loss = nnf.mse_loss(pred.float(), target.float())
        return loss, {"flow_mse": loss.detach()}
