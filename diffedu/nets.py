"""Small networks for 2D diffusion (lessons 03-04), two short training helpers, and the
sinusoidal embedding that every network of the course uses for its noise label.

A network sees a noisy point x (B, 2) and a noise label c (B,): an integer time step t
in 1..T (DDPM) or a noise level sigma > 0 (NCSN). The label enters through a
sinusoidal embedding (Vaswani et al. 2017; Ho et al. 2020):

    emb(c)_i = sin(c * f_i),  emb(c)_{i + d/2} = cos(c * f_i),  f_i = max_period^(-2i/d)   (1)

(first the d/2 sines, then the d/2 cosines: the shipped MNIST U-Net and noise-aware classifier
were trained with exactly this layout), with c = t for time steps and c = 100 * log(sigma) for
noise levels (so neighbouring levels get neighbouring embeddings, as neighbouring steps do).

What the output means is fixed by `predict`:
* "eps": the noise, eps_hat(x_t, t). Score s = -eps_hat / sigma (NCSN, sigma = noise std)
  or s = -eps_hat / sqrt(1 - alpha_bar_t) (DDPM).
* "x0": the clean point, x0_hat(x_t, t); convert with eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab).
* "v": the velocity v = sqrt(ab) eps - sqrt(1 - ab) x0 of Salimans & Ho (2022); then
  x0 = sqrt(ab) x_t - sqrt(1 - ab) v and eps = sqrt(ab) v + sqrt(1 - ab) x_t, so neither end of the
  schedule amplifies its error (progressive distillation, diffedu.distill).

Training losses (the lesson writes the loop itself; these helpers are for reuse):
    denoising score matching    E || net(x0 + sigma eps, sigma) - eps ||^2            (2)
    DDPM L_simple               E || net(sqrt(ab_t) x0 + sqrt(1-ab_t) eps, t) - eps ||^2 (3)

The 2D nets compute in float32 and return their output in the input's dtype, so float64 points
are fine; the losses refuse x0 with NaN or infinite entries, and a seed in place of a generator.
"""
import math

import torch
from torch import nn
from tqdm.auto import tqdm

from . import _validate
from .forward import check_x0, eps_from_x0, q_sample

PREDICTIONS = ("eps", "x0", "v")
CONDITIONS = ("t", "sigma")


def sinusoidal_embedding(c, dim, max_period=10000.0):
    """Embedding (1) of a batch of scalars c (B,) -> (B, dim): [sin(c f_0..), cos(c f_0..)]."""
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}.")
    half = dim // 2
    f = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=c.device) / half)
    arg = c.float()[:, None] * f[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class ScoreMLP(nn.Module):
    """MLP for 2D points: [x, emb(c)] -> hidden (SiLU) x depth -> 2 outputs.

    The embedding is added again inside every hidden layer, so that the noise label
    can change the function at every depth.
    """

    def __init__(self, hidden=128, depth=3, emb_dim=32, cond="t", predict="eps", dim=2):
        super().__init__()
        if cond not in CONDITIONS:
            raise ValueError(f"cond must be one of {CONDITIONS}, got {cond!r}.")
        if predict not in PREDICTIONS:
            raise ValueError(f"predict must be one of {PREDICTIONS}, got {predict!r}.")
        _validate.positive_int("hidden", hidden)
        _validate.positive_int("depth", depth)
        self.cond, self.predict, self.dim, self.emb_dim = cond, predict, dim, emb_dim
        self.config = dict(hidden=hidden, depth=depth, emb_dim=emb_dim, cond=cond, predict=predict, dim=dim)
        self.emb = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.emb_proj = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.out = nn.Linear(hidden, dim)

    def label(self, c):
        """Scalar fed to the embedding: t itself, or 100 * log(sigma)."""
        c = torch.as_tensor(c, device=self.inp.weight.device)
        if self.cond == "sigma":
            if (c <= 0).any():
                raise ValueError("noise levels sigma must be positive.")
            return 100.0 * torch.log(c.float())
        return c.float()

    def forward(self, x, c):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}.")
        c = torch.as_tensor(c, device=x.device)
        if c.ndim == 0:
            c = c.expand(x.shape[0])
        if c.shape != (x.shape[0],):
            raise ValueError(f"noise label must be a scalar or shape ({x.shape[0]},), got {tuple(c.shape)}.")
        e = self.emb(sinusoidal_embedding(self.label(c), self.emb_dim))
        h = self.inp(x.float())
        for layer, proj in zip(self.layers, self.emb_proj):
            h = layer(nn.functional.silu(h + proj(e)))
        return self.out(nn.functional.silu(h)).to(x.dtype)


# ----------------------------------------------------------------------------- adapters

def eps_model(net, schedule):
    """eps_model(x_t, t) for the samplers, from a net predicting eps, x0 or v at time steps t."""
    if net.cond != "t":
        raise ValueError("eps_model needs a net conditioned on time steps (cond='t').")
    if net.predict == "eps":
        return net

    def from_x0(x_t, t):
        return eps_from_x0(x_t, t, net(x_t, t), schedule)  # checks that t lies in 0..T

    def from_v(x_t, t):
        ab = schedule.at(schedule.alpha_bar, t, x_t)        # checks that t lies in 0..T
        return (ab.sqrt() * net(x_t, t) + (1 - ab).sqrt() * x_t).to(x_t.dtype)
    return from_x0 if net.predict == "x0" else from_v


def score_fn(net):
    """score_fn(x, sigma) = -net(x, sigma) / sigma for an eps-predicting noise-level net."""
    if net.cond != "sigma" or net.predict != "eps":
        raise ValueError("score_fn needs a net with cond='sigma' and predict='eps'.")

    def score(x, sigma):
        return -net(x, torch.full((x.shape[0],), float(sigma), device=x.device)) / float(sigma)
    return score


# ----------------------------------------------------------------------------- losses

def dsm_loss(net, x0, sigmas, generator=None):
    """Denoising score matching (2) with sigma drawn uniformly from the ladder `sigmas`."""
    _validate.generator("generator", generator)
    check_x0(x0)
    sigmas = torch.as_tensor(sigmas, dtype=x0.dtype)
    i = torch.randint(len(sigmas), (x0.shape[0],), generator=generator)
    sigma = sigmas[i].to(x0.device)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x = x0 + sigma[:, None] * eps
    return (net(x, sigma) - eps).pow(2).sum(1).mean()


def ddpm_loss(net, x0, schedule, generator=None):
    """DDPM loss (3) with t ~ U{1..T}; for an x0-net the target is x0, for a v-net v, instead of eps."""
    _validate.generator("generator", generator)
    check_x0(x0)
    t = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator)
    x_t, eps = q_sample(x0, t, schedule, generator=generator)
    ab = schedule.at(schedule.alpha_bar, t, x0)
    target = {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[net.predict]
    return (net(x_t, t.to(x0.device)) - target).pow(2).sum(1).mean()


def train_loop(net, loss_fn, sample_fn, steps, batch_size, lr, generator, progress, desc):
    """Adam with a cosine learning rate: each step loss_fn(x0) on fresh data x0 = sample_fn(n, generator)."""
    _validate.positive_int("steps", steps)
    _validate.positive_int("batch_size", batch_size)
    _validate.positive_float("lr", lr)
    _validate.generator("generator", generator)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        x0 = sample_fn(batch_size, generator).float()
        loss = loss_fn(x0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def train_dsm(net, sample_fn, sigmas, steps=2000, batch_size=512, lr=2e-3, generator=None, progress=True):
    """Train a noise-level net with loss (2); fresh data x0 = sample_fn(n, generator) each step.

    Returns the list of losses. Adam with a cosine learning-rate decay.
    """
    return train_loop(net, lambda x0: dsm_loss(net, x0, sigmas, generator), sample_fn,
                  steps, batch_size, lr, generator, progress, "DSM")


def train_ddpm_2d(net, sample_fn, schedule, steps=2000, batch_size=512, lr=2e-3, generator=None,
                  progress=True):
    """Train a time-step net with loss (3); returns the list of losses."""
    return train_loop(net, lambda x0: ddpm_loss(net, x0, schedule, generator), sample_fn,
                  steps, batch_size, lr, generator, progress, "DDPM")
