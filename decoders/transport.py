"""The rectified-flow objective, independent of any network (in the manner of SiT's `transport/`).

Linear path between noise x0 ~ N(0, I) and data x1:  x_t = t * x1 + (1 - t) * x0,  t in [0, 1] (0 noise, 1 data).
The loss is always the mean squared error of the velocity dx_t/dt = x1 - x0 (the paper's L_pix). What the network
outputs is the prediction type:
- "velocity": v itself (the paper).
- "x": the clean image x1 ("Back to Basics: Let Denoising Generative Models Denoise", Li & He 2025, `denoiser.py`);
  v = (x_hat - x_t) / (1 - t), and the target is written the same way, (x1 - x_t) / (1 - t), with 1 - t clamped at
  `t_clamp` (0.05) in both, so near t = 1 the loss is an x-loss weighted by 1 / 0.05^2 instead of dividing by zero.
  Clean images lie near a low-dimensional manifold and noise does not: a network that outputs an image only has to
  model that manifold, which is why x-prediction stays stable when each patch token carries many values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as nnf

TIME_SAMPLINGS = ("uniform", "logit_normal")
PREDICTIONS = ("velocity", "x")

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
    (SD3; it spends more training on the middle of the path, where the velocity is hardest to predict; Back to
    Basics uses mean -0.8, std 0.8, i.e. more time near the noise end). prediction: "velocity" (the paper) or "x"
    (the network outputs the clean image; see the module docstring); t_clamp: the floor of 1 - t for "x".
    """

    def __init__(self, *, time_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0,
                 prediction: str = "velocity", t_clamp: float = 0.05) -> None:
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {time_sampling!r}")
        if logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {logit_std}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if not 0 < t_clamp < 1:
            raise ValueError(f"t_clamp must lie in (0, 1), got {t_clamp}")
        self.time_sampling = time_sampling
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)
        self.prediction = prediction
        self.t_clamp = float(t_clamp)

    def __repr__(self) -> str:
        return (f"RectifiedFlow(time_sampling={self.time_sampling!r}, logit_mean={self.logit_mean}, "
                f"logit_std={self.logit_std}, prediction={self.prediction!r}, t_clamp={self.t_clamp})")

    def to_velocity(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's output at (x_t, t [B]) -> the velocity it implies (identity for "velocity")."""
        if self.prediction == "velocity":
            return out
        return (out - xt) / self.one_minus_t(t, xt)

    def one_minus_t(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """1 - t, clamped at t_clamp and shaped to broadcast over `like`."""
        return (1 - t).clamp_min(self.t_clamp).view(-1, *([1] * (like.ndim - 1))).to(like.dtype)

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
        """E ||v(x_t, t | cond) - v_target||^2 over noise and time -> (loss, logs). x1 is data in the model's space;
        `velocity_fn` is the network, whose output is read as `prediction` says."""
        x0 = rand(tuple(x1.shape), generator=generator, device=x1.device, normal=True).to(x1.dtype)
        t = self.sample_t(x1.shape[0], generator=generator, device=x1.device)
        xt, target = self.path(x0, x1, t)
        out = velocity_fn(xt, t, cond)
        if self.prediction == "x":  # both sides through the same clamped 1 - t (Back to Basics' denoiser.py)
            target = (x1 - xt) / self.one_minus_t(t, xt)
        loss = nnf.mse_loss(self.to_velocity(out.float(), xt.float(), t), target.float())
        logs = {"flow_mse": loss.detach()}
        if self.prediction == "x":
            logs["x_mse"] = nnf.mse_loss(out.detach().float(), x1.float())
        return loss, logs
