"""The VP-SDE view of a discrete noise schedule (lesson 04; Song et al. 2021).

As T -> infinity, DDPM's forward chain x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z
becomes the variance-preserving SDE on s = t / T in [0, 1]:

    dx = -1/2 beta(s) x ds + sqrt(beta(s)) dw,          beta(s) ~= T * beta_t          (1)

with alpha_bar(s) = exp(-int_0^s beta(u) du). Anderson (1982): time runs backwards under

    dx = [-1/2 beta(s) x - beta(s) grad log p_s(x)] ds + sqrt(beta(s)) dw_bar          (2)

and the deterministic probability-flow ODE has the same marginals p_s:

    dx/ds = -1/2 beta(s) [x + grad log p_s(x)]                                         (3)

The score comes from the noise prediction: grad log p_s(x) = -eps(x, t) / sqrt(1 - alpha_bar_t).

Integration clock. We step between integer time steps t > t' and measure time by
lambda = -log alpha_bar, for which d lambda = beta(s) ds. One step then uses the exact
integral of beta over the interval, B = log(alpha_bar_t' / alpha_bar_t) > 0, so no
discretization of beta(s) is needed (this matters for the cosine schedule, whose betas
jump near t = T). Euler-Maruyama for (2) and Euler/Heun for (3) read

    SDE: x' = x + B (x / 2 + score) + sqrt(B) z                                        (4)
    ODE: x' = x + B / 2 (x + score)                                                    (5)

Both samplers stop at t = 1 and return the denoised x0_hat = (x - sqrt(1-ab_1) eps) / sqrt(ab_1)
(diffedu.forward.x0_from_eps).
"""
import math

import torch
from tqdm.auto import tqdm

from . import _validate
from .forward import noise_like, x0_from_eps
from .samplers import start_noise, timestep_batch


# ----------------------------------------------------------------------------- the SDE

def beta_continuous(schedule, s):
    """beta(s) of (1) for s in [0, 1], piecewise constant on ((t-1)/T, t/T]:

        beta(s) = T log(alpha_bar_{t-1} / alpha_bar_t) = -T log(1 - beta_t) ~= T beta_t,

    chosen so that exp(-int_0^{t/T} beta) is exactly alpha_bar_t (T beta_t alone is right
    only to first order in beta_t). Linear schedule, T = 1000: beta(s) from 0.1 to 20.2.
    """
    s = torch.as_tensor(s, dtype=torch.float64)
    if (s < 0).any() or (s > 1).any():
        raise ValueError("continuous time s must lie in [0, 1].")
    t = torch.clamp(torch.ceil(s * schedule.T - 1e-6).long(), 1, schedule.T)  # 1e-6: rounding of s = t / T
    return -schedule.T * torch.log1p(-schedule.betas[t])


def alpha_bar_continuous(schedule, s):
    """alpha_bar(s) = exp(-int_0^s beta): log alpha_bar interpolated linearly between steps."""
    s = torch.as_tensor(s, dtype=torch.float64)
    if (s < 0).any() or (s > 1).any():
        raise ValueError("continuous time s must lie in [0, 1].")
    u = s * schedule.T
    lo = torch.clamp(torch.floor(u).long(), 0, schedule.T - 1)
    w = u - lo
    log_ab = torch.log(schedule.alpha_bar)
    return torch.exp((1 - w) * log_ab[lo] + w * log_ab[lo + 1])


def time_grid(T, steps):
    """Integer time steps T = t_0 > t_1 > ... > t_steps = 1, evenly spaced (rounded)."""
    _validate.int_in("steps", steps, 1, T - 1)
    return torch.linspace(T, 1, steps + 1, dtype=torch.float64).round().long()


def score_from_eps(eps, t, schedule):
    """grad log p_t(x_t) = -eps / sqrt(1 - alpha_bar_t) (t: int or LongTensor (B,))."""
    t = schedule.check_t(t)  # a clear error for t outside 0..T
    if (t < 1).any():
        raise ValueError("the score of p_t needs t >= 1 (at t = 0 there is no noise to predict)")
    ab = schedule.at(schedule.alpha_bar, t, eps)
    return -eps / (1 - ab).sqrt()


def eps_model_from_score(score_fn, schedule):
    """eps_model(x_t, t) = -sqrt(1 - alpha_bar_t) * score_fn(x_t, t): use a score with the samplers."""
    def eps_model(x_t, t):
        ab = schedule.at(schedule.alpha_bar, t, x_t)  # checks that t lies in 0..T
        return -(1 - ab).sqrt() * score_fn(x_t, t)
    return eps_model


# ----------------------------------------------------------------------------- samplers

def _eps(eps_model, x, t):
    """eps_model(x, t) at one step t for every sample, checked to be shaped like x."""
    eps = eps_model(x, timestep_batch(t, x))
    if not isinstance(eps, torch.Tensor) or eps.shape != x.shape:
        raise ValueError(f"eps_model must return a tensor shaped like x_t {tuple(x.shape)}.")
    return eps.to(x.dtype)


def _denoise(eps_model, x, schedule):
    """The last step: x0_hat from x_1."""
    return x0_from_eps(x, 1, _eps(eps_model, x, 1), schedule)


def reverse_sde_sample(eps_model, schedule, shape, steps=100, generator=None, device=None,
                       dtype=torch.float32, trajectory=False, progress=True):
    """Euler-Maruyama (4) for the reverse SDE (2) from x_T ~ N(0, I); `steps` model calls + 1."""
    _validate.generator("generator", generator)
    grid = time_grid(schedule.T, steps)
    x = start_noise(shape, generator, device, dtype)
    log_ab = torch.log(schedule.alpha_bar)
    traj = [x.clone()]
    for t, t_prev in tqdm(zip(grid[:-1].tolist(), grid[1:].tolist()), total=steps,
                          desc="reverse SDE", disable=not progress, leave=False):
        B = (log_ab[t_prev] - log_ab[t]).item()
        score = score_from_eps(_eps(eps_model, x, t), t, schedule)
        z = noise_like(x, generator)
        x = x + B * (0.5 * x + score) + math.sqrt(B) * z
        traj.append(x.clone())
    x0 = _denoise(eps_model, x, schedule)
    return (x0, torch.stack(traj + [x0])) if trajectory else x0


def probability_flow_sample(eps_model, schedule, shape, steps=100, method="heun", generator=None,
                            device=None, dtype=torch.float32, x_T=None, trajectory=False, progress=True):
    """Integrate the probability-flow ODE (3) from t = T to t = 1, Euler or Heun steps of (5).

    Deterministic given x_T (drawn from N(0, I) with `generator` unless given).
    Heun's last step is an Euler step (as in Karras et al. 2022): its corrector would need
    the score at t = 1, where a learned eps error is divided by sqrt(1 - alpha_bar_1) = 0.01.
    Model calls: steps + 1 (Euler) or 2 * steps (Heun).
    """
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}.")
    _validate.generator("generator", generator)
    grid = time_grid(schedule.T, steps)
    x = start_noise(shape, generator, device, dtype) if x_T is None else x_T.clone()
    log_ab = torch.log(schedule.alpha_bar)

    def f(x, t):  # dx/d(-lambda) in (5): 1/2 (x + score)
        return 0.5 * (x + score_from_eps(_eps(eps_model, x, t), t, schedule))

    traj = [x.clone()]
    for t, t_prev in tqdm(zip(grid[:-1].tolist(), grid[1:].tolist()), total=steps,
                          desc="probability-flow ODE", disable=not progress, leave=False):
        B = (log_ab[t_prev] - log_ab[t]).item()
        d = f(x, t)
        x_euler = x + B * d
        # Heun's corrector; skipped on the last step, where it would need the score at t = 1
        last = t_prev == grid[-1].item()
        x = x_euler if method == "euler" or last else x + 0.5 * B * (d + f(x_euler, t_prev))
        traj.append(x.clone())
    x0 = _denoise(eps_model, x, schedule)
    return (x0, torch.stack(traj + [x0])) if trajectory else x0
