r"""Samplers: turn a noise-prediction network into samples, one visible update at a time.

Every sampler takes ``eps_model(x_t, t) -> eps_hat`` with ``t`` a LongTensor of shape (B,)
holding values in 1..T, and a :class:`~diffedu.schedules.NoiseSchedule`. Conditioning and
guidance are closures around the network, so the loops stay the same everywhere.

DDPM ancestral sampling (Ho et al., 2020, algorithm 2), with sigma_t^2 = beta_t:

.. math::  x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}
           \,\varepsilon_\theta(x_t, t)\Big) + \sigma_t z

written here in the equivalent form "predict x0, then take the posterior mean" so that
x0 can be clipped. DDIM (Song et al., 2021, eq. 12) jumps from t to an earlier t':

.. math::  x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0
           + \sqrt{1-\bar\alpha_{t'}-\sigma^2}\,\varepsilon_\theta + \sigma z,\quad
   \sigma = \eta\sqrt{\tfrac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}}\sqrt{1-\tfrac{\bar\alpha_t}{\bar\alpha_{t'}}}
"""
import torch
from tqdm.auto import tqdm

from .forward import _noise_like, q_posterior, x0_from_eps
from .schedules import NoiseSchedule


def _tvec(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def _clip(x0, clip_x0):
    return x0 if clip_x0 is None else x0.clamp(-clip_x0, clip_x0)


def _start(shape, generator, device):
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


@torch.no_grad()
def ddpm_step(eps_model, x_t, t: int, schedule: NoiseSchedule, generator=None, clip_x0=None):
    """One ancestral step x_t -> x_{t-1}. Returns ``(x_prev, x0_hat)``."""
    eps = eps_model(x_t, _tvec(t, x_t))
    x0_hat = _clip(x0_from_eps(x_t, t, eps, schedule), clip_x0)
    mean, var = q_posterior(x0_hat, x_t, t, schedule)
    if t == 1:  # the last step returns the mean, no noise (algorithm 2)
        return mean, x0_hat
    return mean + var.sqrt() * _noise_like(x_t, generator), x0_hat


@torch.no_grad()
def ddpm_sample(eps_model, schedule: NoiseSchedule, shape, generator=None, device=None,
                clip_x0=None, trajectory=False, progress=True):
    """Algorithm 2: start from x_T ~ N(0, I) and take all T ancestral steps.

    ``trajectory=True`` also returns the list of ``(t, x_t, x0_hat)`` visited.
    """
    x = _start(shape, generator, device or "cpu")
    traj = []
    for t in tqdm(range(schedule.T, 0, -1), desc="DDPM", disable=not progress, leave=False):
        x_prev, x0_hat = ddpm_step(eps_model, x, t, schedule, generator, clip_x0)
        if trajectory:
            traj.append((t, x, x0_hat))
        x = x_prev
    return (x, traj) if trajectory else x


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """The evenly spaced subsequence T, T - k, ..., k (k = T / steps) that DDIM visits."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if T % steps:
        raise ValueError(f"steps={steps} does not divide the schedule's T={T}; "
                         f"choose a divisor of {T}, e.g. {[d for d in (10, 20, 25, 50, 100) if T % d == 0]}")
    k = T // steps
    return list(range(T, 0, -k))


def ddim_step(x_t, t: int, t_prev: int, eps, schedule: NoiseSchedule, eta=0.0, generator=None, clip_x0=None):
    """One DDIM update x_t -> x_{t_prev} from a noise prediction ``eps``. Returns ``(x_prev, x0_hat)``."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    ab, ab_prev = schedule.alpha_bar[t].item(), schedule.alpha_bar[t_prev].item()
    x0_hat = _clip(x0_from_eps(x_t, t, eps, schedule), clip_x0)
    if clip_x0 is not None:  # keep eps consistent with the clipped x0
        eps = (x_t - ab**0.5 * x0_hat) / (1 - ab) ** 0.5
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
    x_prev = ab_prev**0.5 * x0_hat + max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        x_prev = x_prev + sigma * _noise_like(x_t, generator)
    return x_prev, x0_hat


@torch.no_grad()
def ddim_sample(eps_model, schedule: NoiseSchedule, shape, steps=50, eta=0.0, generator=None,
                device=None, clip_x0=None, trajectory=False, progress=True):
    """DDIM with ``steps`` network calls (eta = 0: deterministic; eta = 1: DDPM-like noise)."""
    ts = ddim_timesteps(schedule.T, steps)
    x = _start(shape, generator, device or "cpu")
    traj = []
    for t, t_prev in tqdm(list(zip(ts, ts[1:] + [0])), desc=f"DDIM-{steps}", disable=not progress, leave=False):
        eps = eps_model(x, _tvec(t, x))
        x_prev, x0_hat = ddim_step(x, t, t_prev, eps, schedule, eta, generator, clip_x0)
        if trajectory:
            traj.append((t, x, x0_hat))
        x = x_prev
    return (x, traj) if trajectory else x
