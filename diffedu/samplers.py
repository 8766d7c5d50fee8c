r"""Samplers: turn a noise-prediction network into samples, one visible update at a time.

A sampler never sees the network. Every loop in the course reads the same two lines,

    eps = eps_model(x_t, t)                                  # the network, t a LongTensor (B,)
    x_t, x0_hat = ddpm_step(x_t, t, eps, schedule, ...)      # or ddim_step(..., t_prev=t')

so the steps have one signature, ``step(x_t, t, eps, schedule, ...)``, like the ``step()`` of a
diffusers scheduler, and conditioning and guidance are closures around the network.

DDPM ancestral sampling (Ho et al., 2020, algorithm 2) with sigma_t^2 = beta_tilde_t:

.. math::  x_{t-1} = \tilde\mu_t(x_t, \hat x_0) + \sigma_t z, \qquad
           \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}}   (1)

("predict x0, then take the posterior mean" of :func:`diffedu.forward.q_posterior`, which equals
:math:`\frac{1}{\sqrt{\alpha_t}}(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\varepsilon_\theta)` and lets
x0_hat be clipped). DDIM (Song et al., 2021, eqs. 12 and 16) jumps from t to an earlier t':

.. math::  x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0
           + \sqrt{1-\bar\alpha_{t'}-\sigma^2}\,\varepsilon_\theta + \sigma z,\quad
   \sigma = \eta\sqrt{\tfrac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}}\sqrt{1-\tfrac{\bar\alpha_t}{\bar\alpha_{t'}}}   (2)

Glossary, from the names in the code to the papers' symbols:

    x_t       x_t, the current sample          t        the current step t (1..T)
    t_prev    t' < t, the step we go to        eps      eps_theta(x_t, t), the network's noise prediction
    x0_hat    "predicted x_0" of DDIM eq. (12) (f_theta(x_t) in DDIM's sec. 4.1)
    ab        alpha_bar_t of DDPM, which the DDIM paper calls alpha_t (mind the clash)
    ab_prev   alpha_bar_t'                     sigma    sigma_t of eq. (2) (DDIM's sigma_t(eta), eq. 16)
    mean, var the posterior mean mu_tilde and variance beta_tilde of eqs. 6-7 of DDPM
    z         z ~ N(0, I) (``noise=`` supplies it, diffusers' ``variance_noise``)

The same samplers in diffusers (their steps count from 0, see :mod:`diffedu.schedules`):

    ========================  ====================================  ===========================================
    what                      diffedu                               diffusers
    ========================  ====================================  ===========================================
    DDIM grid, S steps        ``ddim_timesteps(T, S)``: T, T - T/S,  ``timestep_spacing="trailing"``: T - 1,
                              ..., T/S                              ..., T/S - 1
    last DDIM step            to t' = 0, alpha_bar_0 = 1            ``set_alpha_to_one=True``
    ``clip_x0=1.0`` in DDIM   clip x0_hat, re-derive eps from it    ``clip_sample=True`` and
                                                                    ``step(..., use_clipped_model_output=True)``
    DDPM variance             beta_tilde_t (the posterior's)        ``variance_type="fixed_small"``
    DDPM last step            t = 1 -> 0 returns the mean           t = 0 adds no noise
    ========================  ====================================  ===========================================

The default DDIM grid of diffusers, ``"leading"`` (0, T/S, ..., T - T/S, plus ``steps_offset``),
is a different set of steps. tests/test_conventions.py pins diffedu's numbers, computed by hand,
and names the diffusers settings that reproduce them.

Arguments are checked where they enter, before the first network call: ``clip_x0`` is None or a
positive finite number, ``eta`` a finite number >= 0, ``generator`` None or a torch.Generator.
"""
import torch
from tqdm.auto import tqdm

from . import _validate
from .forward import eps_from_x0, noise_like, q_posterior, x0_from_eps
from .schedules import NoiseSchedule


# ----------------------------------------------------------------------------- small helpers
def timestep_batch(t: int, x: torch.Tensor) -> torch.Tensor:
    """The step t once per sample of x: a LongTensor (B,), what a network takes as its t."""
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def start_noise(shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """x_T ~ N(0, I) of the given shape (N, ...), drawn on the generator's device, then moved to device."""
    _validate.generator("generator", generator)
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 2:
        raise ValueError(f"shape must be a tuple (N, D, ...), got {shape!r}.")
    if generator is None:
        return torch.randn(tuple(shape), device=device or "cpu", dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device or "cpu")


def check_clip(clip_x0):
    """clip_x0 must be None (no clipping) or a positive finite number (0 would clip every x0_hat to 0)."""
    if clip_x0 is None:
        return None
    return _validate.positive_float("clip_x0", clip_x0, " (x0_hat is clipped to [-clip_x0, clip_x0]: 1.0 for "
                                                        "images in [-1, 1]); use None for no clipping")


def check_eta(eta) -> float:
    """DDIM's eta must be a finite number >= 0 (0: deterministic; 1: DDPM-like noise)."""
    return _validate.nonnegative_float("eta", eta, " (0 = deterministic DDIM, 1 = DDPM-like noise)")


def clip(x0_hat: torch.Tensor, clip_x0: float | None) -> torch.Tensor:
    """x0_hat clipped to [-clip_x0, clip_x0] (the data range; None leaves it alone)."""
    clip_x0 = check_clip(clip_x0)
    return x0_hat if clip_x0 is None else x0_hat.clamp(-clip_x0, clip_x0)


# ----------------------------------------------------------------------------- DDPM
def ddpm_step(x_t, t: int, eps, schedule: NoiseSchedule, t_prev: int | None = None, generator=None,
              clip_x0=None, noise=None):
    """One ancestral step x_t -> x_{t'} of eq. (1), t' = t_prev (default t - 1). Returns ``(x_prev, x0_hat)``.

    A t_prev below t - 1 takes the posterior of a jump (a respaced chain, eq. 8 of diffedu.forward).
    """
    _validate.generator("generator", generator)
    clip_x0 = check_clip(clip_x0)
    # 1. get previous step value
    t_prev = t - 1 if t_prev is None else t_prev
    # 2. the predicted x0 from the predicted noise, clipped to the data range if asked
    x0_hat = clip(x0_from_eps(x_t, t, eps, schedule), clip_x0)
    # 3. mean and variance of the posterior q(x_{t'} | x_t, x0_hat)
    mean, var = q_posterior(x0_hat, x_t, t, schedule, t_prev)
    # 4. the last step returns the mean, without noise (algorithm 2)
    if t_prev == 0:
        return mean, x0_hat
    # 5. x_{t'} = mean + sigma z
    z = noise_like(x_t, generator) if noise is None else noise
    return mean + var.sqrt() * z, x0_hat


@torch.no_grad()
def ddpm_sample(eps_model, schedule: NoiseSchedule, shape, generator=None, device=None,
                clip_x0=None, trajectory=False, progress=True):
    """Algorithm 2: start from x_T ~ N(0, I) and take all T ancestral steps.

    ``trajectory=True`` also returns the list of ``(t, x_t, x0_hat)`` visited.
    """
    clip_x0 = check_clip(clip_x0)
    x = start_noise(shape, generator, device)
    traj = []
    for t in tqdm(range(schedule.T, 0, -1), desc="DDPM", disable=not progress, leave=False):
        eps = eps_model(x, timestep_batch(t, x))
        x_prev, x0_hat = ddpm_step(x, t, eps, schedule, generator=generator, clip_x0=clip_x0)
        if trajectory:
            traj.append((t, x, x0_hat))
        x = x_prev
    return (x, traj) if trajectory else x


# ----------------------------------------------------------------------------- DDIM
def ddim_timesteps(T: int, steps: int) -> list[int]:
    """The evenly spaced subsequence T, T - k, ..., k (k = T / steps) that DDIM visits."""
    _validate.positive_int("steps", steps)
    if T % steps:
        raise ValueError(f"steps={steps} does not divide the schedule's T={T}; "
                         f"choose a divisor of {T}, e.g. {[d for d in (10, 20, 25, 50, 100) if T % d == 0]}")
    k = T // steps
    return list(range(T, 0, -k))


def ddim_step(x_t, t: int, eps, schedule: NoiseSchedule, *, t_prev: int, eta=0.0, generator=None,
              clip_x0=None, noise=None):
    """One DDIM update x_t -> x_{t'} of eq. (2), t' = t_prev < t. Returns ``(x_prev, x0_hat)``.

    eta = 0: deterministic; eta = 1 with t' = t - 1: the DDPM step of eq. (1).
    """
    eta = check_eta(eta)
    _validate.generator("generator", generator)
    clip_x0 = check_clip(clip_x0)
    # 1. get previous step value: t' = t_prev, the next step of the grid
    # 2. compute alphas: alpha_bar_t and alpha_bar_t'
    ab, ab_prev = schedule.alpha_bar[t].item(), schedule.alpha_bar[t_prev].item()
    # 3. the "predicted x_0" of eq. (12), from the predicted noise
    x0_hat = clip(x0_from_eps(x_t, t, eps, schedule), clip_x0)
    # 4. a clipped x0_hat changes the noise it implies: re-derive eps from it, so the step stays consistent
    if clip_x0 is not None:
        eps = eps_from_x0(x_t, t, x0_hat, schedule)
    # 5. sigma_t(eta), eq. (16)
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
    # 6. the "direction pointing to x_t" of eq. (12)
    direction = max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
    # 7. x_{t'} without the random noise, eq. (12)
    x_prev = ab_prev**0.5 * x0_hat + direction
    # 8. add the random noise sigma z (eta > 0)
    if sigma > 0:
        x_prev = x_prev + sigma * (noise_like(x_t, generator) if noise is None else noise)
    return x_prev, x0_hat


@torch.no_grad()
def ddim_sample(eps_model, schedule: NoiseSchedule, shape, steps=50, eta=0.0, generator=None,
                device=None, clip_x0=None, trajectory=False, progress=True):
    """DDIM with ``steps`` network calls (eta = 0: deterministic; eta = 1: DDPM-like noise)."""
    ts = ddim_timesteps(schedule.T, steps)
    eta, clip_x0 = check_eta(eta), check_clip(clip_x0)
    x = start_noise(shape, generator, device)
    traj = []
    for t, t_prev in tqdm(list(zip(ts, ts[1:] + [0])), desc=f"DDIM-{steps}", disable=not progress, leave=False):
        eps = eps_model(x, timestep_batch(t, x))
        x_prev, x0_hat = ddim_step(x, t, eps, schedule, t_prev=t_prev, eta=eta, generator=generator,
                                   clip_x0=clip_x0)
        if trajectory:
            traj.append((t, x, x0_hat))
        x = x_prev
    return (x, traj) if trajectory else x
