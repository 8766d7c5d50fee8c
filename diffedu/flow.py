r"""Flow matching: learn the velocity of a path from noise to data (Lipman et al. 2023; Liu et al.
2023, rectified flow; Albergo & Vanden-Eijnden 2023, stochastic interpolants).

Time runs the other way from diffusion: t in [0, 1], t = 0 is noise and t = 1 is data.

    x_t = a_t x_1 + b_t x_0,        x_0 ~ N(0, I) (noise),  x_1 ~ p_data (data)          (1)

Differentiating (1) along one pair (x_0, x_1) gives the conditional velocity

    u_t(x | x_0, x_1) = a'_t x_1 + b'_t x_0                                              (2)

and conditional flow matching (CFM) regresses a network on it, t ~ U[0, 1]:

    L_CFM(theta) = E || v_theta(x_t, t) - (a'_t x_1 + b'_t x_0) ||^2                       (3)

A least-squares fit is the conditional mean, so the minimiser of (3) is the marginal velocity

    u_t(x) = E[ a'_t x_1 + b'_t x_0 | x_t = x ]                                            (4)

whose ODE dx/dt = u_t(x) carries p_0 onto p_1 = p_data (the continuity equation holds for each
pair, and (4) averages it over the pairs that pass through x).

Paths (``path(name)``):
* "ot": a_t = t, b_t = 1 - t. Rectified flow / the optimal-transport path of Lipman et al.
  Straight lines at constant speed x_1 - x_0; p_0 = N(0, I) exactly.
* "vp": a_t = alpha_bar(1 - t)^(1/2), b_t = (1 - a_t^2)^(1/2), with the continuous linear VP
  schedule alpha_bar(s) = exp(-beta_min s - (beta_max - beta_min) s^2 / 2), beta(s) from 0.1 to
  20: the T -> infinity limit of NoiseSchedule.linear(1000) (diffedu.sde eq. 1), with s = 1 - t.
  At t = 0, a_0 = e^(-5.025) = 0.0066: noise up to 0.7 %. At t = 1, b'_t is infinite
  (b_t ~ (0.1 (1 - t))^(1/2)), but b_t b'_t = -a_t a'_t is not, and that product is all (7) needs.
* "ve": a_t = 1, b_t = sigma_min (sigma_max / sigma_min)^(1 - t), the geometric noise levels of
  NCSN / the VE-SDE (Song et al. 2021), as Lipman et al. write it. Geometric, because equal time
  goes to each factor of noise (log b_t is linear, b'_t / b_t = -log(sigma_max / sigma_min) is a
  constant); sigma_min > 0 so that b_t stays positive and (7) stays finite at t = 1 (the path
  ends at the data blurred by sigma_min = 0.01, a blur that the oracle includes exactly). VE is
  NOT pure noise at t = 0: x_0-time samples are x_1 + sigma_max x_0, so a sampler that starts from
  sigma_max z drops the data's mean and spread, an error small only while |x_1| << sigma_max
  (|x_1| up to about 3 for the lesson mixture, sigma_max = 10 by default).

The exact velocity of a Gaussian mixture p_data = sum_k w_k N(mu_k, Sigma_k). Within component
k, (x_1, x_0) is Gaussian and (1), (2) are linear in it, so x_t and u are jointly Gaussian:

    p_t = sum_k w_k N(a_t mu_k, C_k),        C_k = a_t^2 Sigma_k + b_t^2 I                  (5)
    E[u | k] = a'_t mu_k,                    Cov(u, x_t | k) = a_t a'_t Sigma_k + b_t b'_t I   (6)

and Gaussian conditioning, E[u | x] = E[u] + Cov(u, x) Cov(x)^-1 (x - E[x]), gives

    E[u | x_t = x, k] = a'_t mu_k + (a_t a'_t Sigma_k + b_t b'_t I) C_k^-1 (x - a_t mu_k)     (7)
    u_t(x) = sum_k r_k(x) E[u | x_t = x, k],   r_k(x) = w_k N(x; a_t mu_k, C_k) / p_t(x)      (8)

Score and velocity. Tweedie: grad log p_t(x) = E[-(x - a_t x_1) / b_t^2 | x_t = x] = -eps_hat / b_t,
with eps_hat(x) = E[x_0 | x_t = x]; then E[x_1 | x_t = x] = (x - b_t eps_hat) / a_t and (4) reads

    u_t(x) = (a'_t / a_t) x + (b'_t - a'_t b_t / a_t) eps_hat(x)                             (9)
           = (a'_t / a_t) x + b_t (a'_t b_t / a_t - b'_t) grad log p_t(x)                     (10)

(a_t > 0). OT: u = (x + (1 - t) grad log p_t) / t. VP (b_t b'_t = -a_t a'_t): u = (a'_t / a_t)
(x + grad log p_t) with a'_t / a_t = beta(1 - t) / 2: the probability-flow ODE of diffedu.sde
eq. 3, run forwards in t. An eps-model of the VP diffusion at alpha_bar = a_t^2 is eps_hat; for
any path, x_t / s_t with s_t = (a_t^2 + b_t^2)^(1/2) is the VP variable at alpha_bar = a_t^2 / s_t^2
and has the same noise x_0, so eps_hat(x) = eps*(x / s_t, a_t^2 / s_t^2) (toy.eps_star).   (11)

Sampling: N steps of size h = 1/N on the grid t_i = i/N, from x at t = 0 to t = 1:

    Euler:  x_{i+1} = x_i + h v(x_i, t_i)                                 N evaluations     (12)
    Heun:   x~ = x_i + h v(x_i, t_i),  x_{i+1} = x_i + h/2 [v(x_i, t_i) + v(x~, t_{i+1})]
                                                                          2N evaluations    (13)

Heun's last corrector is kept (2N, not 2N - 1): here every path's u_t is finite at t = 1, unlike
the probability-flow ODE of diffedu.sde, whose last corrector would divide by sqrt(1 - alpha_bar_1).
"""
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import _validate, nets
from .nets import ScoreMLP
from .toy import GaussianMixture

PATHS = ("ot", "vp", "ve")
METHODS = ("euler", "heun")


# ----------------------------------------------------------------------------- paths (1), (2)

@dataclass(frozen=True)
class Path:
    """x_t = a_t x_1 + b_t x_0: a_t, b_t and their time derivatives, functions of a float64 t."""
    name: str
    a: Callable
    b: Callable
    da: Callable
    db: Callable
    b_db: Callable  # b_t b'_t, finite even where b'_t is not (vp at t = 1)

    def __call__(self, t):
        """(a_t, b_t, a'_t, b'_t) as float64 tensors shaped like t (t checked to lie in [0, 1])."""
        t = check_time(t)
        return self.a(t), self.b(t), self.da(t), self.db(t)


def path(name="ot", beta_min=0.1, beta_max=20.0, sigma_min=0.01, sigma_max=10.0) -> Path:
    """The path called ``name``: "ot" | "vp" (uses beta_min, beta_max) | "ve" (sigma_min, sigma_max)."""
    _validate.one_of("path", name, PATHS)
    if name == "ot":
        one = torch.ones_like
        return Path("ot", lambda t: t, lambda t: 1 - t, one, lambda t: -one(t), lambda t: t - 1)
    if name == "vp":
        _validate.positive_float("beta_min", beta_min)
        _validate.positive_float("beta_max", beta_max)
        B = lambda t: beta_min * (1 - t) + (beta_max - beta_min) * (1 - t) ** 2 / 2   # int_0^{1-t} beta
        a = lambda t: torch.exp(-B(t) / 2)
        b = lambda t: torch.sqrt(-torch.expm1(-B(t)))                                  # sqrt(1 - a^2)
        da = lambda t: a(t) * (beta_min + (beta_max - beta_min) * (1 - t)) / 2        # a beta(1 - t) / 2
        return Path("vp", a, b, da, lambda t: -a(t) * da(t) / b(t), lambda t: -a(t) * da(t))
    _validate.positive_float("sigma_min", sigma_min)
    if not _validate.positive_float("sigma_max", sigma_max) > sigma_min:
        raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}.")
    log_r = math.log(sigma_max / sigma_min)
    b = lambda t: sigma_min * torch.exp(log_r * (1 - t))
    return Path("ve", torch.ones_like, b, torch.zeros_like, lambda t: -log_r * b(t),
                lambda t: -log_r * b(t) ** 2)


def _path(p) -> Path:
    return p if isinstance(p, Path) else path(p)


def check_time(t) -> torch.Tensor:
    """t as a float64 tensor of shape () or (N,), every entry in [0, 1] (0 = noise, 1 = data)."""
    if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
        raise TypeError(f"t must be a number or a tensor of times in [0, 1], got {type(t).__name__}.")
    t = torch.as_tensor(t, dtype=torch.float64).cpu()
    if t.ndim > 1:
        raise ValueError(f"t must be a scalar or have shape (N,), got shape {tuple(t.shape)}.")
    if torch.isnan(t).any():
        raise ValueError("t contains NaN; times must lie in [0, 1].")
    if t.numel() and (t.min() < 0 or t.max() > 1):
        raise ValueError(f"t must lie in [0, 1] (0 = noise, 1 = data), got values in "
                         f"[{t.min().item():g}, {t.max().item():g}].")
    return t


def _points(name, x, d=None):
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a float tensor of shape (N, D), got {type(x).__name__}.")
    if x.ndim != 2 or (d is not None and x.shape[1] != d):
        raise ValueError(f"{name} must have shape (N, {d if d is not None else 'D'}), got {tuple(x.shape)}.")
    return _validate.finite_tensor(name, x, "")


def _coefficients(p, t, x):
    """a, b, a', b', b b' of path p at t, each (N, 1) float64 for points x (N, D)."""
    p, t = _path(p), check_time(t)
    if t.ndim == 1 and t.shape[0] != x.shape[0]:
        raise ValueError(f"got {t.shape[0]} times for {x.shape[0]} points; t must be a scalar or shape (N,).")
    t = t.expand(x.shape[0]).to(x.device)[:, None]
    return p.a(t), p.b(t), p.da(t), p.db(t), p.b_db(t)


def interpolate(x1, x0, t, p="ot"):
    """x_t = a_t x_1 + b_t x_0, eq. (1)."""
    x1 = _points("x1", x1)
    x0 = _points("x0", x0, x1.shape[1])
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have one shape, got {tuple(x0.shape)} and {tuple(x1.shape)}.")
    a, b = _coefficients(p, t, x1)[:2]
    return (a * x1 + b * x0).to(x1.dtype)


def conditional_velocity(x1, x0, t, p="ot"):
    """u_t(x | x_0, x_1) = a'_t x_1 + b'_t x_0, eq. (2): the regression target of CFM."""
    x1 = _points("x1", x1)
    x0 = _points("x0", x0, x1.shape[1])
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have one shape, got {tuple(x0.shape)} and {tuple(x1.shape)}.")
    da, db = _coefficients(p, t, x1)[2:4]
    return (da * x1 + db * x0).to(x1.dtype)


def cfm_loss(velocity, x1, p="ot", generator=None):
    """L_CFM of eq. (3) on a batch of data x1 (N, D), with t ~ U[0, 1) and x_0 ~ N(0, I)."""
    x1, generator = _points("x1", x1), _validate.generator("generator", generator)
    t = torch.rand(x1.shape[0], generator=generator, dtype=torch.float64)
    x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype).to(x1.device)
    x_t, target = interpolate(x1, x0, t, p), conditional_velocity(x1, x0, t, p)
    return (velocity(x_t, t.to(x1.device, x1.dtype)) - target).pow(2).sum(1).mean()


# ----------------------------------------------------------------------------- the exact answer (5)-(11)

def marginal(mixture: GaussianMixture, t, p="ot") -> GaussianMixture:
    """p_t of eq. (5) at one time t: the mixture with means a_t mu_k and covariances C_k."""
    t = check_time(t)
    if t.ndim:
        raise ValueError("marginal needs one time t (a number), not a batch of times.")
    a, b = (c.item() for c in _path(p)(t)[:2])
    eye = torch.eye(mixture.D, dtype=torch.float64)
    return GaussianMixture(mixture.weights, a * mixture.means, a**2 * mixture.covs + b**2 * eye)


def exact_velocity(mixture: GaussianMixture, x, t, p="ot"):
    """The marginal velocity u_t(x) of eqs. (7)-(8), shape (N, D); t a number or shape (N,)."""
    x = _points("x", x, mixture.D)
    a, b, da, _, b_db = (c[:, :, None] for c in _coefficients(p, t, x))    # (N, 1, 1)
    x64, mu, S = x.double(), mixture.means.to(x.device), mixture.covs.to(x.device)
    eye = torch.eye(mixture.D, dtype=torch.float64, device=x.device)
    C = a[..., None] ** 2 * S + b[..., None] ** 2 * eye                     # C_k (N, K, D, D), eq. (5)
    L = torch.linalg.cholesky(C)
    diff = (x64[:, None, :] - a * mu)[..., None]                            # x - a_t mu_k (N, K, D, 1)
    maha = torch.linalg.solve_triangular(L, diff, upper=False).pow(2).sum((-2, -1))
    logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    r = torch.softmax(torch.log(mixture.weights.to(x.device)) - 0.5 * (maha + logdet), dim=1)  # r_k (8)
    cross = (a * da)[..., None] * S + b_db[..., None] * eye                 # Cov(u, x_t | k), eq. (6)
    u_k = da * mu + (cross @ torch.cholesky_solve(diff, L)).squeeze(-1)     # eq. (7), (N, K, D)
    return (r[..., None] * u_k).sum(1).to(x.dtype)                          # eq. (8)


def noise_level(t, p="ot"):
    """(alpha_bar, s_t) of eq. (11): x_t / s_t is the VP variable at alpha_bar = a_t^2 / s_t^2."""
    a, b = _path(p)(t)[:2]
    s2 = a**2 + b**2
    return a**2 / s2, s2.sqrt()


def _identity_coefficients(x, t, p, what):
    a, b, da, db, b_db = _coefficients(p, t, x)
    if (a <= 0).any():
        raise ValueError(f"{what} needs a_t > 0: at t = 0 of the '{_path(p).name}' path x_t is pure noise and "
                         f"says nothing about x_1 (there u_0(x) = a'_0 E[x_1] + b'_0 x).")
    return a, b, da, db, b_db


def velocity_from_score(score, x, t, p="ot"):
    """u_t(x) = (a'_t / a_t) x + (a'_t b_t^2 / a_t - b_t b'_t) grad log p_t(x), eq. (10)."""
    x = _points("x", x)
    if not isinstance(score, torch.Tensor) or score.shape != x.shape:
        raise ValueError(f"score must be a tensor shaped like x {tuple(x.shape)}.")
    a, b, da, _, b_db = _identity_coefficients(x, t, p, "velocity_from_score")
    return ((da / a) * x + (da * b**2 / a - b_db) * score).to(x.dtype)


def velocity_from_eps(eps, x, t, p="ot"):
    """u_t(x) = (a'_t / a_t) x + (b'_t - a'_t b_t / a_t) eps_hat(x), eq. (9): an eps-model as a velocity."""
    x = _points("x", x)
    if not isinstance(eps, torch.Tensor) or eps.shape != x.shape:
        raise ValueError(f"eps must be a tensor shaped like x {tuple(x.shape)}.")
    a, b, da, db, _ = _identity_coefficients(x, t, p, "velocity_from_eps")
    if not torch.isfinite(db).all():
        raise ValueError(f"velocity_from_eps needs t < 1 on the '{_path(p).name}' path: b'_t is infinite at t = 1.")
    return ((da / a) * x + (db - da * b / a) * eps).to(x.dtype)


# ----------------------------------------------------------------------------- samplers (12), (13)

def nfe(method, steps):
    """Velocity evaluations of ``sample``: steps (Euler) or 2 * steps (Heun)."""
    _validate.one_of("method", method, METHODS)
    return _validate.positive_int("steps", steps) * (2 if method == "heun" else 1)


def _v(velocity, x, t):
    """velocity(x, t) at one time t for every sample (t a tensor (N,) in x's dtype), shaped like x."""
    v = velocity(x, torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device))
    if not isinstance(v, torch.Tensor) or v.shape != x.shape:
        raise ValueError(f"velocity must return a tensor shaped like x {tuple(x.shape)}.")
    return v.to(x.dtype)


@torch.no_grad()
def sample(velocity, x_0, steps=100, method="euler", trajectory=False, progress=False):
    """Integrate dx/dt = velocity(x, t) from x_0 at t = 0 to t = 1: N = steps Euler (12) or Heun (13) steps.

    x_0 (N, D) is the start, N(0, I) noise for "ot" and "vp" (b_0 x_0 for "ve"). Returns x at t = 1
    (and the (steps + 1, N, D) trajectory with trajectory=True). nfe(method, steps) counts the calls.
    """
    x = _points("x_0", x_0).clone()
    _validate.one_of("method", method, METHODS)
    ts = torch.linspace(0, 1, _validate.positive_int("steps", steps) + 1, dtype=torch.float64).tolist()
    traj = [x.clone()]
    for t, t_next in tqdm(list(zip(ts[:-1], ts[1:])), desc=f"flow {method}", disable=not progress, leave=False):
        h = t_next - t
        d = _v(velocity, x, t)                                # the network at (x_i, t_i)
        x_euler = x + h * d                                   # eq. (12)
        x = x_euler if method == "euler" else x + 0.5 * h * (d + _v(velocity, x_euler, t_next))  # eq. (13)
        traj.append(x.clone())
    return (x, torch.stack(traj)) if trajectory else x


# ----------------------------------------------------------------------------- a network trained by (3)

class VelocityMLP(nn.Module):
    """v_theta(x, t), t in [0, 1]: nets.ScoreMLP (its 2 outputs read as a velocity) fed the label 1000 t.

    ScoreMLP's sinusoidal embedding (nets eq. 1) has frequencies 10^-4 .. 1, made for labels 1..1000;
    t itself in [0, 1] would barely turn its slow sines, so the label is t scaled to that range.
    """

    def __init__(self, hidden=64, depth=3, emb_dim=32, dim=2, time_scale=1000.0):
        super().__init__()
        self.time_scale = _validate.positive_float("time_scale", time_scale)
        self.net = ScoreMLP(hidden=hidden, depth=depth, emb_dim=emb_dim, cond="t", predict="eps", dim=dim)
        self.config = dict(self.net.config, time_scale=time_scale, predict="velocity")

    def forward(self, x, t):
        t = check_time(t).to(x.device)
        return self.net(x, self.time_scale * t)


def train_cfm(net, sample_fn, p="ot", steps=2000, batch_size=512, lr=2e-3, generator=None, progress=True):
    """Train a velocity net by CFM (3) on fresh data x1 = sample_fn(n, generator) each step; returns the losses.

    Adam with a cosine learning-rate decay, as nets.train_ddpm_2d.
    """
    p, generator = _path(p), _validate.generator("generator", generator)
    return nets.train_loop(net, lambda x1: cfm_loss(net, x1, p, generator), sample_fn, steps, batch_size, lr,
                           generator, progress, f"CFM ({p.name})")
