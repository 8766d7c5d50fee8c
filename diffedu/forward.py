r"""The forward (noising) process q and its closed forms.

One step (Ho et al., 2020, eq. 2):

.. math::  q(x_t \mid x_{t-1}) = \mathcal N\big(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big)

Many steps at once (eq. 4), because Gaussians compose:

.. math::  q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big),
           \qquad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon

The posterior given x_0 is Gaussian too (eqs. 6-7):

.. math::  q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I),\quad
   \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t} x_0
               + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t,\quad
   \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t

and so is the posterior of a jump to any earlier step t' < t (a "respaced" chain that visits
only some steps, Nichol & Dhariwal 2021): the same formulas with t - 1 replaced by t' and
the step's alpha_t, beta_t replaced by those of the jump,

.. math::  \alpha_{t' \to t} = \bar\alpha_t / \bar\alpha_{t'}, \qquad
           \beta_{t' \to t} = 1 - \alpha_{t' \to t}.                                    (8)

All functions take ``t`` as an int or a LongTensor of shape (B,) with values in the
schedule's range (see :mod:`diffedu.schedules`). ``q_sample`` takes clean data x0 in any
floating dtype (float32 images, float64 2D points) and returns x_t in that dtype; it refuses
integer x0 (use ``x0.float()``) and x0 with NaN or infinite entries. A network then checks that
x_t has its own dtype (the U-Net and the classifiers of :mod:`diffedu.images` do).
"""
import torch

from . import _validate
from .schedules import NoiseSchedule


def noise_like(x, generator=None):
    """Fresh N(0, I) noise shaped like x, drawn from `generator` (on its device) when given."""
    _validate.generator("generator", generator)
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)


def check_x0(x0, name: str = "x0") -> torch.Tensor:
    """Clean data: a floating-point tensor of finite numbers."""
    if not torch.is_tensor(x0) or not x0.dtype.is_floating_point:
        got = x0.dtype if torch.is_tensor(x0) else type(x0).__name__
        raise TypeError(f"{name} must be a floating-point tensor, got {got}; use {name}.float().")
    return _validate.finite_tensor(name, x0, " (clean data must be finite: check how it was made)")


def q_sample(x0: torch.Tensor, t, schedule: NoiseSchedule, eps=None, generator=None):
    """Jump straight to step t: ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``.

    Returns ``(x_t, eps)`` so that a training loop can regress eps.
    """
    _validate.generator("generator", generator)
    check_x0(x0)
    eps = noise_like(x0, generator) if eps is None else eps
    if eps.shape != x0.shape:
        raise ValueError(f"eps has shape {tuple(eps.shape)} but x0 has shape {tuple(x0.shape)}")
    ab = schedule.at(schedule.alpha_bar, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, eps


def q_step(x_prev: torch.Tensor, t, schedule: NoiseSchedule, generator=None) -> torch.Tensor:
    """One step of the chain: ``x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z`` (t >= 1)."""
    _validate.generator("generator", generator)
    beta = schedule.at(schedule.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise_like(x_prev, generator)


def q_posterior(x0: torch.Tensor, x_t: torch.Tensor, t, schedule: NoiseSchedule, t_prev=None):
    """Mean and variance of ``q(x_{t'} | x_t, x0)``, t' = t_prev (default t - 1), eqs. 6-7 and (8).

    Needs 0 <= t' < t. Returns ``(mean, var)``; var is shaped to broadcast against x_t.
    """
    if x0.shape != x_t.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
    t = schedule.check_t(t)
    if (t < 1).any():
        raise ValueError("the posterior q(x_{t-1} | x_t, x0) needs t >= 1")
    t_prev = t - 1 if t_prev is None else schedule.check_t(t_prev)
    if (t_prev >= t).any():
        raise ValueError(f"need 0 <= t_prev < t, got t={t.tolist()}, t_prev={t_prev.tolist()}.")
    ab, ab_prev = schedule.at(schedule.alpha_bar, t, x_t), schedule.at(schedule.alpha_bar, t_prev, x_t)
    if bool((t_prev == t - 1).all()):  # one step: the schedule's own alpha_t and beta_t
        alpha, beta = schedule.at(schedule.alphas, t, x_t), schedule.at(schedule.betas, t, x_t)
    else:  # a jump t' -> t, eq. (8)
        alpha = ab / ab_prev
        beta = 1 - alpha
    mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + (alpha.sqrt() * (1 - ab_prev) / (1 - ab)) * x_t
    var = (1 - ab_prev) / (1 - ab) * beta
    return mean, var


def x0_from_eps(x_t: torch.Tensor, t, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Invert the closed form: ``x0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)``."""
    ab = schedule.at(schedule.alpha_bar, t, x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def eps_from_x0(x_t: torch.Tensor, t, x0: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """The noise that takes x0 to x_t: ``eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t)``."""
    ab = schedule.at(schedule.alpha_bar, t, x_t)
    return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
