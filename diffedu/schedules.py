r"""Noise schedules: how much noise is added at each step of the forward process.

The forward process adds Gaussian noise in ``T`` small steps with variances
:math:`\beta_1, \dots, \beta_T`. Writing :math:`\alpha_t = 1 - \beta_t` and

.. math::  \bar\alpha_t = \prod_{s=1}^{t} \alpha_s ,

the noisy sample at step ``t`` is :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon`.

Indexing follows the paper: ``t = 1..T`` are the noising steps and index ``0`` is the
clean data, so every tensor here has length ``T + 1`` with ``betas[0] = 0`` and
``alpha_bar[0] = 1``. Tensors are float64 (``alpha_bar`` gets very close to 0);
``at()`` casts to the dtype of the data.

* linear (Ho et al., 2020): betas evenly spaced from 1e-4 to 0.02 (for T = 1000).
* cosine (Nichol & Dhariwal, 2021): :math:`\bar\alpha_t = f(t)/f(0)` with
  :math:`f(t) = \cos^2\big(\tfrac{t/T + s}{1 + s}\tfrac{\pi}{2}\big)`, betas clipped at 0.999.

``NoiseSchedule.from_name("linear" | "cosine", T)`` builds one from a training config.

The same schedules in diffusers. diffusers counts the noising steps from 0, so its step
``t - 1`` is our step ``t`` (and it has no index for the clean data):

    ======================  ==============================  ==========================================
    what                    diffedu                         diffusers
    ======================  ==============================  ==========================================
    noising steps           t = 1..T (0 = clean data)       t = 0..T-1
    alpha_bar at step t     ``schedule.alpha_bar[t]``       ``scheduler.alphas_cumprod[t - 1]``
    beta at step t          ``schedule.betas[t]``           ``scheduler.betas[t - 1]``
    linear                  ``NoiseSchedule.linear(T)``     ``beta_schedule="linear"`` (1e-4 .. 0.02)
    cosine                  ``NoiseSchedule.cosine(T)``     ``beta_schedule="squaredcos_cap_v2"``
    the network sees        ``eps_model(x_t, t)``           ``unet(x_t, t - 1)``
    ======================  ==============================  ==========================================

diffusers keeps its tensors in float32 and diffedu in float64, so the two agree to float32
precision (about 1e-7), not bit for bit. tests/test_conventions.py pins the numbers.
"""
import math

import torch

from . import _validate


class NoiseSchedule:
    """The betas, alphas and alpha_bars of a discrete diffusion, indexed ``0..T``."""

    def __init__(self, betas: torch.Tensor, name: str = "custom"):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError(f"betas must be a 1-D tensor of length T >= 1, got shape {tuple(betas.shape)}")
        if not ((betas > 0) & (betas < 1)).all():
            raise ValueError("every beta_t must lie strictly between 0 and 1")
        self.name = name
        self.T = len(betas)
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])  # betas[0] = 0: clean data
        self.alphas = 1.0 - self.betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)  # alpha_bar[0] = 1

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """Linearly spaced betas (the DDPM paper's choice for T = 1000)."""
        _check_T(T)
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64), name="linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """alpha_bar_t = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2); beta clipped at max_beta."""
        _check_T(T)
        t = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
        return cls(betas, name="cosine")

    @classmethod
    def from_name(cls, name: str = "linear", T: int = 1000) -> "NoiseSchedule":
        """The schedule a training config names: ``"schedule": "linear" | "cosine"`` and ``"T"``."""
        _validate.one_of("schedule", name, ("linear", "cosine"))
        return cls.linear(T) if name == "linear" else cls.cosine(T)

    def __repr__(self):
        return f"NoiseSchedule({self.name}, T={self.T}, alpha_bar_T={self.alpha_bar[-1].item():.2e})"

    def snr(self, t=None) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) (infinite at t = 0)."""
        ab = self.alpha_bar if t is None else self.alpha_bar[self.check_t(t)]
        return ab / (1 - ab)

    def sigma(self, t=None) -> torch.Tensor:
        """Noise standard deviation sqrt(1 - alpha_bar_t) of q(x_t | x_0)."""
        ab = self.alpha_bar if t is None else self.alpha_bar[self.check_t(t)]
        return (1 - ab).sqrt()

    def check_t(self, t):
        """Return ``t`` as a LongTensor after checking that every entry is an integer in 0..T."""
        t_tensor = torch.as_tensor(t)
        if t_tensor.is_floating_point() or t_tensor.dtype == torch.bool:
            raise TypeError(f"timesteps must be integers in 0..{self.T}, got dtype {t_tensor.dtype}")
        if t_tensor.numel() and (t_tensor.min() < 0 or t_tensor.max() > self.T):
            raise ValueError(f"timestep out of range: got values in [{int(t_tensor.min())}, "
                             f"{int(t_tensor.max())}], the schedule has t = 0..{self.T}")
        return t_tensor.long().cpu()

    def at(self, values: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
        """``values[t]`` shaped to broadcast against ``x``: (B,) -> (B, 1, 1, ...), in x's dtype/device."""
        t = self.check_t(t)
        v = values[t].to(device=x.device, dtype=x.dtype)
        if t.ndim == 0:
            return v
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"got {t.shape[0]} timesteps for a batch of {x.shape[0]}")
        return v.reshape(-1, *([1] * (x.ndim - 1)))


def _check_T(T):
    _validate.positive_int("T", T)
