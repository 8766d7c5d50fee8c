"""Langevin dynamics and annealed Langevin dynamics (lesson 02).

Langevin dynamics turns a score s(x) = grad_x log p(x) into samples of p:

    x <- x + eps * s(x) + sqrt(2 eps) * z,        z ~ N(0, I)                     (1)

For a small step eps and many steps the chain's distribution tends to p. But in a
mixture of well-separated modes the chain almost never crosses the empty space
between them, so the mode weights stay whatever the starting points made them.

Annealed Langevin dynamics (Song & Ermon 2019, "NCSN") runs (1) on a ladder of smoothed
densities p_sigma = p * N(0, sigma^2 I), sigma_1 > sigma_2 > ... > sigma_L, with step

    eps_i = step_lr * sigma_i^2 / sigma_L^2                                      (2)

and n_steps_each steps per level. At large sigma the modes overlap, samples move
freely between them and settle in the right proportions; the later, smaller sigmas
only sharpen each mode.
"""
import math

import torch
from tqdm.auto import tqdm

from ._validate import generator as check_generator, positive_float, positive_int
from .forward import noise_like


# ----------------------------------------------------------------------------- checks

def _check_x(x):
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise TypeError("x must be a floating-point torch.Tensor of starting points, shape (N, D).")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got shape {tuple(x.shape)}.")
    return x


def _check_score(score, x):
    if not isinstance(score, torch.Tensor) or score.shape != x.shape:
        got = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
        raise ValueError(f"score_fn must return a tensor shaped like x {tuple(x.shape)}, got {got}.")
    return score


def check_sigmas(sigmas):
    """Return sigmas as a float64 tensor; raise unless positive and strictly decreasing."""
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if s.numel() == 0 or not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"sigmas must be positive finite noise levels, got {s.tolist()}.")
    if s.numel() > 1 and not (s[1:] < s[:-1]).all():
        raise ValueError("sigmas must be strictly decreasing (largest noise level first).")
    return s


# ----------------------------------------------------------------------------- ladder

def noise_ladder(sigma_max, sigma_min, n):
    """Geometric ladder sigma_1 = sigma_max > ... > sigma_n = sigma_min (float64, shape (n,)).

    Song & Ermon choose sigma_max about the largest distance between data points, so
    that p_sigma_1 covers all modes, and sigma_min small enough to be invisible.
    """
    sigma_max = positive_float("sigma_max", sigma_max)
    sigma_min = positive_float("sigma_min", sigma_min)
    n = positive_int("n", n)
    if n < 2 or sigma_min >= sigma_max:
        raise ValueError("noise_ladder needs n >= 2 and sigma_max > sigma_min "
                         f"(got n={n}, sigma_max={sigma_max}, sigma_min={sigma_min}).")
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), n, dtype=torch.float64)


def smoothed(mixture, sigma):
    """The exact smoothed density p_sigma = p * N(0, sigma^2 I) of a Gaussian mixture.

    Convolving a Gaussian with N(0, sigma^2 I) adds sigma^2 I to its covariance, so
    p_sigma is again a mixture: same weights and means, covariances Sigma_k + sigma^2 I.
    """
    sigma = positive_float("sigma", float(sigma))
    eye = torch.eye(mixture.means.shape[-1], dtype=mixture.covs.dtype)
    return type(mixture)(mixture.weights, mixture.means, mixture.covs + sigma ** 2 * eye)


def smoothed_score_fn(mixture):
    """score_fn(x, sigma) = grad log p_sigma(x), exact, for annealed_langevin."""
    def score_fn(x, sigma):
        return smoothed(mixture, sigma).score(x)
    return score_fn


# ----------------------------------------------------------------------------- dynamics

def langevin_step(score_fn, x, step, z):
    """One step of (1) with given noise z: x + step * score_fn(x) + sqrt(2 step) z."""
    return x + step * _check_score(score_fn(x), x) + math.sqrt(2.0 * step) * z


def langevin(score_fn, x, step, n_steps, generator=None, progress=True, trajectory=False,
             save_every=1):
    """Run n_steps of Langevin dynamics (1) from x (N, D) with the score score_fn(x).

    Returns the final points, or (points, traj) with traj of shape (n_saved, N, D)
    holding the start and every `save_every`-th step when trajectory=True.
    """
    x = _check_x(x)
    step = positive_float("step", step)
    check_generator("generator", generator)
    n_steps = positive_int("n_steps", n_steps)
    save_every = positive_int("save_every", save_every)
    traj = [x.clone()]
    for i in tqdm(range(n_steps), desc="Langevin", disable=not progress, leave=False):
        z = noise_like(x, generator)
        x = langevin_step(score_fn, x, step, z)
        if trajectory and (i + 1) % save_every == 0:
            traj.append(x.clone())
    return (x, torch.stack(traj)) if trajectory else x


def annealed_langevin(score_fn, x, sigmas, step_lr, n_steps_each, generator=None,
                      progress=True, trajectory=False, save_every=1):
    """Annealed Langevin dynamics: (1) with score_fn(x, sigma) at each sigma_i, step (2).

    sigmas: positive, strictly decreasing noise levels (see noise_ladder).
    Returns the final points, or (points, traj) as in `langevin`.
    """
    x = _check_x(x)
    sigmas = check_sigmas(sigmas)
    step_lr = positive_float("step_lr", step_lr)
    n_steps_each = positive_int("n_steps_each", n_steps_each)
    check_generator("generator", generator)
    save_every = positive_int("save_every", save_every)
    traj, i = [x.clone()], 0
    sigma_L = sigmas[-1].item()
    for sigma in tqdm(sigmas.tolist(), desc="annealed Langevin", disable=not progress, leave=False):
        eps = step_lr * sigma ** 2 / sigma_L ** 2
        for _ in range(n_steps_each):
            z = noise_like(x, generator)
            x = langevin_step(lambda y: score_fn(y, sigma), x, eps, z)
            i += 1
            if trajectory and i % save_every == 0:
                traj.append(x.clone())
    return (x, torch.stack(traj)) if trajectory else x
